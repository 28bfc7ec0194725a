#include "embedrt/io_runtime.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <optional>

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
    threads_.emplace_back([this] {
      impl_->ctx.run();
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
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
  threads_.clear();
}

} // namespace embedrt
