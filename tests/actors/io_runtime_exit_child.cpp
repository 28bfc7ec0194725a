// A child process for io_runtime_test.cpp: the last owner of an io_runtime
// lets go inside a completion handler on its I/O thread (a reaper thread
// then joins that thread), and main returns while the handler still runs.
// Prints "released" once the handler let go, and "handler done" when it
// ends: the process must wait for the reaper, so both arrive.
#include "embedrt/io_runtime.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <thread>

int main() {
  auto io = std::make_shared<embedrt::io_runtime>(1);
  auto* ctx = &io->context();
  std::promise<void> posted;
  auto released = std::make_shared<std::promise<void>>();
  auto was_released = released->get_future();
  boost::asio::post(
      *ctx,
      [io = std::move(io), released,
       was_posted = posted.get_future()]() mutable {
        was_posted.wait(); // post() has returned: nobody else uses the context
        io.reset();        // the last reference, on the I/O thread
        released->set_value();
        std::this_thread::sleep_for(std::chrono::milliseconds{300});
        std::fputs("handler done\n", stdout);
        std::fflush(stdout);
      });
  posted.set_value();
  was_released.wait();
  std::fputs("released\n", stdout);
  std::fflush(stdout);
  return 0;
}
