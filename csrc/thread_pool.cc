#include "thread_pool.h"

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

struct TaskGroup::State {
  std::mutex mu;
  std::condition_variable done_cv;
  size_t pending = 0;
  Status first_error;
};

TaskGroup::TaskGroup() : pool_(GetIoPool()), state_(std::make_shared<State>()) {}

TaskGroup::~TaskGroup() { Wait(); }

void TaskGroup::Schedule(std::function<Status()> task) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    ++state_->pending;
  }
  std::shared_ptr<State> state = state_;
  pool_->Schedule([state, task = std::move(task)] {
    Status s = task();
    std::lock_guard<std::mutex> lock(state->mu);
    if (!s.ok() && state->first_error.ok()) state->first_error = s;
    if (--state->pending == 0) state->done_cv.notify_all();
  });
}

Status TaskGroup::Wait() {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->done_cv.wait(lock, [&] { return state_->pending == 0; });
  return state_->first_error;
}

Status RunParallel(size_t n, const std::function<Status(size_t)>& task) {
  if (n == 0) return Status::OK();
  std::shared_ptr<ThreadPool> pool = GetIoPool();
  if (n == 1) return task(0);  // no hand-off for a single task
  struct Shared {
    std::mutex mu;
    std::condition_variable done_cv;
    size_t remaining;
    Status first_error;
  };
  auto shared = std::make_shared<Shared>();
  shared->remaining = n;
  for (size_t i = 0; i < n; ++i) {
    pool->Schedule([shared, &task, i] {
      Status s = task(i);
      std::lock_guard<std::mutex> lock(shared->mu);
      if (!s.ok() && shared->first_error.ok()) shared->first_error = s;
      if (--shared->remaining == 0) shared->done_cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->done_cv.wait(lock, [&] { return shared->remaining == 0; });
  return shared->first_error;
}

}  // namespace saverkit
