#include "thread_pool.h"

#include <algorithm>
#include <atomic>

namespace saverkit {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads < 1) num_threads = 1;
  for (int i = 0; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Schedule(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void ThreadPool::WorkerLoop() {
  while (true) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

namespace {

int HardwareThreads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::mutex g_pool_mu;
// Deliberately leaked: joining threads from a static destructor at
// interpreter exit can deadlock.
std::shared_ptr<ThreadPool>* g_pool = nullptr;

}  // namespace

std::shared_ptr<ThreadPool> GetIoPool() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (g_pool == nullptr) g_pool = new std::shared_ptr<ThreadPool>(std::make_shared<ThreadPool>(HardwareThreads()));
  return *g_pool;
}

void SetIoThreads(int n) {
  if (n <= 0) n = HardwareThreads();
  std::shared_ptr<ThreadPool> old;
  {
    std::lock_guard<std::mutex> lock(g_pool_mu);
    if (g_pool != nullptr && (*g_pool)->num_threads() == n) return;
    if (g_pool == nullptr) g_pool = new std::shared_ptr<ThreadPool>();
    old = *g_pool;
    *g_pool = std::make_shared<ThreadPool>(n);
  }
  // `old` is released here; if no call is using it its workers are joined now.
}

int GetIoThreads() { return GetIoPool()->num_threads(); }

// Both TaskGroup and RunParallel let the calling thread run tasks itself
// while it waits, and hand the pool only "helper" jobs that claim the next
// unclaimed task: on a loaded machine a call no longer waits for pool
// threads to be scheduled before any work starts, and a helper that starts
// after everything was claimed just returns (it only touches shared state).

struct TaskGroup::State {
  std::mutex mu;
  std::condition_variable done_cv;
  std::deque<std::function<Status()>> queue;  // scheduled, not yet claimed
  size_t running = 0;                        // claimed, not finished
  Status first_error;

  // Claims and runs one queued task; false if there was none.
  bool RunOne() {
    std::function<Status()> task;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (queue.empty()) return false;
      task = std::move(queue.front());
      queue.pop_front();
      ++running;
    }
    Status s = task();
    std::lock_guard<std::mutex> lock(mu);
    if (!s.ok() && first_error.ok()) first_error = s;
    if (--running == 0 && queue.empty()) done_cv.notify_all();
    return true;
  }
};

TaskGroup::TaskGroup() : pool_(GetIoPool()), state_(std::make_shared<State>()) {}

TaskGroup::~TaskGroup() { Wait(); }

void TaskGroup::Schedule(std::function<Status()> task) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->queue.push_back(std::move(task));
  }
  std::shared_ptr<State> state = state_;
  pool_->Schedule([state] { state->RunOne(); });
}

Status TaskGroup::Wait() {
  while (state_->RunOne()) {
  }
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->done_cv.wait(lock, [&] { return state_->running == 0 && state_->queue.empty(); });
  return state_->first_error;
}

Status RunParallel(size_t n, const std::function<Status(size_t)>& task) {
  if (n == 0) return Status::OK();
  if (n == 1) return task(0);  // no hand-off for a single task
  std::shared_ptr<ThreadPool> pool = GetIoPool();
  struct Shared {
    std::atomic<size_t> next{0};
    size_t n = 0;
    const std::function<Status(size_t)>* task = nullptr;  // valid while unclaimed tasks remain
    std::mutex mu;
    std::condition_variable done_cv;
    size_t done = 0;
    Status first_error;

    void RunAll() {
      for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
        Status s = (*task)(i);
        std::lock_guard<std::mutex> lock(mu);
        if (!s.ok() && first_error.ok()) first_error = s;
        if (++done == n) done_cv.notify_all();
      }
    }
  };
  auto shared = std::make_shared<Shared>();
  shared->n = n;
  shared->task = &task;
  const size_t helpers = std::min(n - 1, static_cast<size_t>(pool->num_threads()));
  for (size_t h = 0; h < helpers; ++h) pool->Schedule([shared] { shared->RunAll(); });
  shared->RunAll();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->done_cv.wait(lock, [&] { return shared->done == n; });
  return shared->first_error;
}

}  // namespace saverkit
