// One process-wide pool of I/O threads shared by every save/restore call, so
// concurrent I/O nodes queue behind each other instead of oversubscribing
// the cores.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "status.h"

namespace saverkit {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();  // drains the queue, joins the workers
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()); }
  void Schedule(std::function<void()> fn);

 private:
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// The shared pool. Resizing swaps in a new pool; calls in flight keep the
// old one alive until they finish.
std::shared_ptr<ThreadPool> GetIoPool();
void SetIoThreads(int n);  // n <= 0: hardware cores
int GetIoThreads();

// Tasks scheduled on the shared pool as they come, awaited together: lets a
// caller keep working (e.g. allocating the next buffers) while earlier
// tasks run; Wait() runs still-unclaimed tasks on the calling thread. The
// destructor waits too, so captured state may be destroyed after it.
class TaskGroup {
 public:
  TaskGroup();
  ~TaskGroup();
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  void Schedule(std::function<Status()> task);
  Status Wait();  // first error of any task scheduled so far

 private:
  struct State;
  std::shared_ptr<ThreadPool> pool_;
  std::shared_ptr<State> state_;
};

// Runs tasks[0..n) on the shared pool and the calling thread, and waits;
// returns the first error (remaining tasks still run).
Status RunParallel(size_t n, const std::function<Status(size_t)>& task);

}  // namespace saverkit
