#include "embedrt/io_runtime.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/policy/unprofiled.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/coordinator.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <openssl/crypto.h>
#include <optional>
#include <pthread.h>

namespace embedrt {

namespace {

/// Reapers at work (`io_runtime::stop`): each joins an io_runtime's threads
/// and destroys its io_context after the last owner let go on one of those
/// threads. A reaper still at work when the process ends would race with the
/// exit: with static destructors, and with OpenSSL's exit handler, which
/// frees the library's state while the reaper's io_context may still hold
/// TLS streams to free (its pending handlers go with it). So the process
/// waits for them: an exit handler registered after OpenSSL's (whose
/// initialisation is forced first) runs before it. A counter, not a lock:
/// the reapers are detached, and nothing but process exit waits for them.
std::atomic<int> reapers_at_work{0};

/// The exit handler: waits until no reaper is at work, at most 5 s (a reaper
/// stuck behind the exiting thread itself is left to the process's end).
void wait_for_reapers() {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
  while (reapers_at_work.load() > 0
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
}

/// Runs `fn` on a detached reaper thread that the process's exit waits for.
template <class F>
void start_reaper(F fn) {
  static const bool exit_waits = [] {
    // OpenSSL registers its exit handler when it is first initialised:
    // forced here, so that ours (registered after it) runs before it.
    OPENSSL_init_crypto(0, nullptr);
    return std::atexit(wait_for_reapers) == 0;
  }();
  (void)exit_waits;
  ++reapers_at_work;
  std::thread{[fn = std::move(fn)]() mutable {
    fn();
    // The thread's OpenSSL state goes now, not at its exit (which the
    // process does not wait for).
    OPENSSL_thread_stop();
    --reapers_at_work;
  }}.detach();
}

} // namespace

struct io_runtime::impl {
  boost::asio::io_context ctx;
  std::optional<
      boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      guard;
  explicit impl(int concurrency_hint) : ctx(concurrency_hint) {
    guard.emplace(ctx.get_executor());
  }
};

io_runtime::io_runtime(std::size_t threads)
    : impl_(
        std::make_unique<impl>(static_cast<int>(threads < 1 ? 1 : threads))) {
  if (threads < 1)
    threads = 1;
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([ctx = &impl_->ctx] {
      // Named for profilers and `top -H` (threads otherwise inherit the
      // process name); at most 15 characters.
      pthread_setname_np(pthread_self(), "embedrt.io");
      ctx->run();
    });
}

io_runtime::io_runtime(on_actor_workers_t)
    : impl_(std::make_unique<impl>(BOOST_ASIO_CONCURRENCY_HINT_SAFE)) {
  // nop
}

io_runtime::~io_runtime() {
  stop();
}

boost::asio::io_context& io_runtime::context() noexcept {
  return impl_->ctx;
}

void io_runtime::stop() {
  if (!impl_)
    return; // handed to a reaper
  impl_->guard.reset();
  impl_->ctx.stop();
  if (threads_.empty())
    return;
  auto self_id = std::this_thread::get_id();
  auto own = std::any_of(threads_.begin(), threads_.end(),
                         [&](const std::thread& t) {
                           return t.get_id() == self_id;
                         });
  if (own) {
    // The last owner let go on one of our own I/O threads (e.g. a completion
    // handler held the last reference to a connection actor). That thread
    // cannot join itself, and the io_context must outlive its run() call:
    // hand the threads and the io_context to a reaper that joins them all
    // (this one once its handler returned) and then destroys the context.
    start_reaper(
        [impl = std::move(impl_), threads = std::move(threads_)]() mutable {
          for (auto& t : threads)
            if (t.joinable())
              t.join();
          impl.reset(); // the io_context, before the reaper is done
        });
    threads_.clear();
    return;
  }
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
  threads_.clear();
}

namespace {

/// A CAF scheduling policy (the concept of caf::policy::work_sharing) whose
/// workers run an io_context whenever they have no actor job: one job queue
/// shared by the workers; a worker with nothing queued waits in
/// `io_context::run_one` (Asio's epoll), which returns after one completion
/// handler (or a wake-up posted by `enqueue`), and looks at the queue again.
/// A handler that sends to an actor queues the actor's job on the same
/// thread, which runs it as soon as the handler returns: no thread is woken.
/// Its queue's mutex (with the condition variable used once the I/O has
/// stopped) is the one lock in actors/: the bridge between CAF's scheduler
/// and Asio's io_context, taken only to push or pop a job, never while an
/// actor or a handler runs (docs/architecture.md, "The Asio bridge").
class io_sharing : public caf::policy::unprofiled {
 public:
  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {
      // nop
    }
    std::shared_ptr<io_runtime> io;
    boost::asio::io_context* ctx = nullptr;
    std::mutex lock;
    std::condition_variable cv;
    std::deque<caf::resumable*> queue;
    /// Workers in run_one or waiting on `cv` (guarded by `lock`).
    std::size_t waiting = 0;
  };

  struct worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator*) {
      // nop
    }
    /// Jobs run since the io_context last ran on this worker.
    std::size_t jobs_since_io = 0;
  };

  /// After this many jobs in a row a worker polls the io_context once, so
  /// that a stream of actor jobs cannot starve the sockets.
  static constexpr std::size_t io_poll_interval = 32;

  /// Messages an actor handles before its worker turns to other jobs and
  /// the io_context (unless `scheduler.max-throughput` says otherwise).
  static constexpr std::size_t max_throughput = 64;

  /// The coordinator whose worker this thread is (null: none).
  static thread_local const coordinator_data* current;

  template <class Coordinator>
  void enqueue(Coordinator* self, caf::resumable* job) {
    auto& d = self->data();
    bool wake = false;
    boost::asio::io_context* ctx = nullptr;
    {
      std::lock_guard<std::mutex> guard{d.lock};
      d.queue.push_back(job);
      // A worker queueing its first job runs it when its current job or
      // handler returns; anything more, or from another thread, may need a
      // waiting worker.
      wake = d.waiting > 0 && (current != &d || d.queue.size() > 1);
      ctx = d.ctx;
    }
    if (wake) {
      d.cv.notify_one();
      if (ctx && !ctx->stopped())
        boost::asio::post(*ctx, [] {});
    }
  }

  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    enqueue(self, job);
  }

  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& d = self->parent()->data();
    auto& w = self->data();
    current = &d;
    if (++w.jobs_since_io > io_poll_interval) {
      w.jobs_since_io = 0;
      d.ctx->poll_one();
    }
    std::unique_lock<std::mutex> guard{d.lock};
    for (;;) {
      if (!d.queue.empty()) {
        auto job = d.queue.front();
        d.queue.pop_front();
        return job;
      }
      ++d.waiting;
      if (d.ctx->stopped()) {
        // The I/O has stopped (shutdown): an ordinary worker from now on.
        d.cv.wait(guard, [&] {
          return !d.queue.empty();
        });
        --d.waiting;
        continue;
      }
      guard.unlock();
      w.jobs_since_io = 0;
      d.ctx->run_one();
      guard.lock();
      --d.waiting;
    }
  }

  template <class Worker, class UnaryFunction>
  void foreach_resumable(Worker*, UnaryFunction) {
    // nop: the workers have no queues of their own
  }

  template <class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator* self, UnaryFunction f) {
    auto& d = self->data();
    std::unique_lock<std::mutex> guard{d.lock};
    while (!d.queue.empty()) {
      auto job = d.queue.front();
      d.queue.pop_front();
      f(job);
    }
  }
};

thread_local const io_sharing::coordinator_data* io_sharing::current = nullptr;

/// CAF's coordinator with the policy above; lets go of the io_runtime once
/// its workers have ended, so that the io_context goes while the actor
/// system still exists (as with I/O threads of its own) if nothing else
/// holds it.
class io_coordinator : public caf::scheduler::coordinator<io_sharing> {
 public:
  io_coordinator(caf::actor_system& sys, std::shared_ptr<io_runtime> io)
      : coordinator(sys) {
    data().ctx = &io->context();
    data().io = std::move(io);
  }

 protected:
  void stop() override {
    coordinator::stop();
    std::shared_ptr<io_runtime> io;
    {
      std::lock_guard<std::mutex> guard{data().lock};
      data().ctx = nullptr;
      io = std::move(data().io);
    }
    if (io)
      io->stop();
  }
};

} // namespace

void run_on_actor_workers(caf::actor_system_config& cfg,
                          std::shared_ptr<io_runtime> io) {
  // CAF lets an actor handle its whole mailbox in one go by default; here
  // that would hold the worker's sockets for as long as messages keep
  // coming (an actor sending to itself: forever). After this many messages
  // it goes to the back of the queue.
  if (!caf::get_if<std::size_t>(&cfg, "scheduler.max-throughput"))
    cfg.set("scheduler.max-throughput", io_sharing::max_throughput);
  cfg.module_factories.push_back(
      [io](caf::actor_system& sys) -> caf::actor_system::module* {
        return new io_coordinator(sys, io);
      });
}

std::shared_ptr<io_runtime> io_runtime_of(caf::actor_system& sys) noexcept {
  if (auto c = dynamic_cast<io_coordinator*>(&sys.scheduler())) {
    std::lock_guard<std::mutex> guard{c->data().lock};
    return c->data().io;
  }
  return nullptr;
}

} // namespace embedrt
