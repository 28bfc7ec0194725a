// The I/O side of the actor/Asio bridge: one `boost::asio::io_context` run by
// a fixed number of threads, started once and never grown. Connection actors
// post their socket work onto it; completion handlers only send messages back
// to the owning actor (see docs/architecture.md, "The Asio bridge").
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

namespace embedrt {

class io_runtime {
 public:
  /// Starts `threads` (>= 1) I/O threads running one io_context.
  explicit io_runtime(std::size_t threads = 1);

  /// Stops the io_context and joins the I/O threads. If the last owner lets
  /// go on one of the I/O threads themselves, a short-lived reaper thread
  /// joins them and destroys the io_context instead (a thread cannot join
  /// itself).
  ~io_runtime();

  io_runtime(const io_runtime&) = delete;
  io_runtime& operator=(const io_runtime&) = delete;

  /// The shared io_context.
  boost::asio::io_context& context() noexcept;

  /// Number of I/O threads.
  std::size_t threads() const noexcept {
    return threads_.size();
  }

  /// Stops the io_context and joins the threads (idempotent).
  void stop();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::vector<std::thread> threads_;
};

} // namespace embedrt
