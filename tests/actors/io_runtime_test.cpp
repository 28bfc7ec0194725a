#include "embedrt/io_runtime.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <set>
#include <thread>

using namespace embedrt;

TEST_CASE("io_runtime runs handlers on its fixed threads") {
  io_runtime io{2};
  CHECK(io.threads() == 2);
  std::atomic<int> done{0};
  std::promise<void> all;
  for (int i = 0; i < 100; ++i)
    boost::asio::post(io.context(), [&] {
      if (++done == 100)
        all.set_value();
    });
  REQUIRE(all.get_future().wait_for(std::chrono::seconds{10})
          == std::future_status::ready);
  io.stop();
  io.stop(); // idempotent
  CHECK(io.threads() == 0);
}

TEST_CASE("io_runtime can be released from one of its own threads") {
  // The last owner may let go inside a completion handler; the runtime must
  // neither join its own thread nor destroy the io_context under it.
  for (int round = 0; round < 20; ++round) {
    auto io = std::make_shared<io_runtime>(2);
    std::promise<void> released;
    std::promise<void> posted;
    auto fut = released.get_future();
    auto* ctx = &io->context();
    boost::asio::post(
        *ctx,
        [io = std::move(io), &released,
         was_posted = posted.get_future()]() mutable {
          was_posted
              .wait(); // post() has returned: nobody else uses the context
          io.reset();  // last reference, on an I/O thread
          released.set_value();
        });
    posted.set_value();
    REQUIRE(fut.wait_for(std::chrono::seconds{10})
            == std::future_status::ready);
  }
}
