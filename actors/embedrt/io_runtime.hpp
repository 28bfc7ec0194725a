// The I/O side of the actor/Asio bridge: one `boost::asio::io_context` run by
// a fixed number of threads, started once and never grown. Connection actors
// post their socket work onto it; completion handlers only send messages back
// to the owning actor (see docs/architecture.md, "The Asio bridge").
//
// The threads are either the io_runtime's own (`io_runtime(n)`) or the actor
// system's CAF workers (`io_runtime(on_actor_workers)` and
// `run_on_actor_workers` before the actor system is created): each worker
// then runs the io_context whenever it has no actor to run, so a request's
// socket work and its actors' messages are handled on the same thread without
// a hand-off between threads (docs/architecture.md, "I/O on the actor
// workers").
//
// Lifetime: the io_runtime must outlive every actor that owns a socket on it
// (a socket destroyed after its io_context is undefined behaviour). Create it
// before the actor system (or keep it in an object that is destroyed after
// `await_all_actors_done()`).
#pragma once

#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace caf {
class actor_system;
class actor_system_config;
} // namespace caf

namespace embedrt {

class io_runtime {
 public:
  struct on_actor_workers_t {};
  /// Tag of the constructor that starts no threads.
  static constexpr on_actor_workers_t on_actor_workers{};

  /// Starts `threads` (>= 1) I/O threads running one io_context.
  explicit io_runtime(std::size_t threads = 1);

  /// Starts no thread: the io_context is run by the CAF workers of the actor
  /// system whose configuration `run_on_actor_workers` was given this
  /// io_runtime. Until that actor system starts, nothing runs it.
  explicit io_runtime(on_actor_workers_t);

  /// Stops the io_context and joins the I/O threads. If the last owner lets
  /// go on one of the I/O threads themselves, a short-lived reaper thread
  /// joins them and destroys the io_context instead (a thread cannot join
  /// itself); the process waits for its reapers when it ends (at most 5 s,
  /// before OpenSSL's exit cleanup).
  ~io_runtime();

  io_runtime(const io_runtime&) = delete;
  io_runtime& operator=(const io_runtime&) = delete;

  /// The shared io_context.
  boost::asio::io_context& context() noexcept;

  /// Number of the io_runtime's own I/O threads (0 on the actor workers).
  std::size_t threads() const noexcept {
    return threads_.size();
  }

  /// Stops the io_context and joins the threads (idempotent). On the actor
  /// workers it only stops the io_context: the workers go on running actors.
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::vector<std::thread> threads_;
};

/// Makes the CAF workers of the actor system created from `cfg` run `io`'s
/// io_context (an `io_runtime(io_runtime::on_actor_workers)`) between actor
/// jobs, with one shared job queue: a worker with no actor to run waits in
/// the io_context (epoll) instead of sleeping, and a message sent from a
/// completion handler is picked up by the same thread when the handler
/// returns. `scheduler.max-threads` sets the number of workers, which are
/// then all the threads that do I/O. Call before creating the actor system;
/// it replaces the `scheduler.policy` setting, and sets
/// `scheduler.max-throughput` to 64 unless set (CAF's default lets one
/// actor keep a worker, and so its sockets, while messages keep coming). A
/// handler that computes for long holds its worker's sockets as long: keep
/// handlers short, or give the I/O threads of its own.
void run_on_actor_workers(caf::actor_system_config& cfg,
                          std::shared_ptr<io_runtime> io);

/// The io_runtime that `sys`'s workers run (see run_on_actor_workers), or
/// null if its scheduler is CAF's own.
std::shared_ptr<io_runtime> io_runtime_of(caf::actor_system& sys) noexcept;

} // namespace embedrt
