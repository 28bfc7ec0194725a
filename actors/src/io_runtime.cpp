#include "embedrt/io_runtime.hpp"

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <optional>
#include <pthread.h>

namespace embedrt {

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

io_runtime::~io_runtime() {
  stop();
}

boost::asio::io_context& io_runtime::context() noexcept {
  return impl_->ctx;
}

void io_runtime::stop() {
  if (threads_.empty())
    return;
  impl_->guard.reset();
  impl_->ctx.stop();
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
    std::thread{[impl = std::move(impl_),
                 threads = std::move(threads_)]() mutable {
      for (auto& t : threads)
        if (t.joinable())
          t.join();
    }}.detach();
    threads_.clear();
    return;
  }
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
  threads_.clear();
}

} // namespace embedrt
