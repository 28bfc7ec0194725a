#include "embedrt/io_runtime.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

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

TEST_CASE("io_runtime: the process ends only after a reaper has joined") {
  // The child releases its io_runtime inside a handler on the I/O thread,
  // which then runs 300 ms more; main returns meanwhile. Before the process
  // waited for its reapers, it ended first: the handler never finished, and
  // static destructors and OpenSSL's exit cleanup could run while a reaper
  // still destroyed an io_context (and the TLS streams its handlers held).
  for (int round = 0; round < 3; ++round) {
    std::string out;
    auto* child = popen(EMBEDRT_IO_RUNTIME_EXIT_CHILD, "r");
    REQUIRE(child != nullptr);
    char buf[256];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, child)) > 0)
      out.append(buf, n);
    auto status = pclose(child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(out == "released\nhandler done\n");
  }
}

// ---- The I/O on CAF's workers (run_on_actor_workers) ----------------------

namespace {

using namespace std::chrono_literals;

/// An io_runtime and an actor system whose `workers` CAF workers run it.
struct on_workers {
  explicit on_workers(std::size_t workers)
      : io(std::make_shared<io_runtime>(io_runtime::on_actor_workers)) {
    cfg.set("scheduler.max-threads", workers);
    run_on_actor_workers(cfg, io);
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  std::shared_ptr<io_runtime> io;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
};

/// Answers every integer with the id of the thread that ran it.
caf::behavior thread_reporter(caf::event_based_actor*, int) {
  return {[](int) {
    std::ostringstream os;
    os << std::this_thread::get_id();
    return os.str();
  }};
}

/// Asks a thread_reporter from `self`; the id of the thread that answered
/// ("" after failing the test on an error).
std::string ask(caf::actor_system& sys, caf::scoped_actor& self,
                const caf::actor& reporter, int x) {
  std::string id;
  self->request(reporter, 10s, x)
      .receive(
          [&](const std::string& answer) {
            id = answer;
          },
          [&](const caf::error& err) {
            FAIL(sys.render(err));
          });
  return id;
}

std::string id_of_this_thread() {
  std::ostringstream os;
  os << std::this_thread::get_id();
  return os.str();
}

} // namespace

TEST_CASE("on the actor workers, handlers and actors share the workers' "
          "threads") {
  on_workers f{1};
  auto& [io, cfg, sys] = f;
  CHECK(io->threads() == 0);
  CHECK(io_runtime_of(*sys) == io);
  auto reporter = sys->spawn(thread_reporter, 0);
  // The thread that runs a completion handler, and the one that runs the
  // actor (asked from this thread).
  std::promise<std::string> handler_thread;
  boost::asio::post(io->context(), [&] {
    handler_thread.set_value(id_of_this_thread());
  });
  auto fut = handler_thread.get_future();
  REQUIRE(fut.wait_for(10s) == std::future_status::ready);
  auto handler_id = fut.get();
  caf::scoped_actor self{*sys};
  auto actor_id = ask(*sys, self, reporter, 1);
  // One worker: the handler and the actor ran on it, not on this thread.
  CHECK(handler_id == actor_id);
  CHECK(handler_id != id_of_this_thread());
  caf::anon_send_exit(reporter, caf::exit_reason::user_shutdown);
}

TEST_CASE("on the actor workers, a message from another thread wakes an "
          "idle worker") {
  // The worker waits in the io_context (epoll) with nothing to do; messages
  // from this thread, from a completion handler and from CAF's clock (a
  // delayed message) each reach the actor.
  on_workers f{1};
  auto& [io, cfg, sys] = f;
  auto reporter = sys->spawn(thread_reporter, 0);
  caf::scoped_actor self{*sys};
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(5ms); // the worker goes idle
    REQUIRE_FALSE(ask(*sys, self, reporter, i).empty());
  }
  // From completion handlers, to an actor that counts.
  std::atomic<int> from_handler{0};
  auto relay = sys->spawn(
      [&](caf::event_based_actor*, int) -> caf::behavior {
        return {[&](int) {
          ++from_handler;
        }};
      },
      0); // (a spawn argument: CAF 0.17.6 trips UBSan without one)
  for (int i = 0; i < 20; ++i)
    boost::asio::post(io->context(), [relay, i] {
      caf::anon_send(relay, i);
    });
  for (int i = 0; i < 1000 && from_handler < 20; ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(from_handler == 20);
  // From CAF's clock thread.
  self->delayed_send(self, 20ms, 7);
  bool fired = false;
  self->receive(
      [&](int x) {
        fired = x == 7;
      },
      caf::after(std::chrono::seconds{10}) >> [] {});
  CHECK(fired);
  caf::anon_send_exit(reporter, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
}

TEST_CASE("on the actor workers, a stream of actor jobs does not starve the "
          "sockets") {
  // One worker; an actor sends itself messages without end. A timer on the
  // io_context must still fire: the worker polls the io_context between
  // jobs.
  on_workers f{1};
  auto& [io, cfg, sys] = f;
  std::atomic<bool> stop{false};
  std::atomic<long> spins{0};
  auto spinner = sys->spawn(
      [&](caf::event_based_actor* self, int) -> caf::behavior {
        self->send(self, 0);
        return {[&, self](int) {
          ++spins;
          if (!stop)
            self->send(self, 0);
        }};
      },
      0);
  std::promise<void> fired;
  boost::asio::steady_timer timer{io->context()};
  timer.expires_after(50ms);
  timer.async_wait([&](const boost::system::error_code&) {
    fired.set_value();
  });
  auto fut = fired.get_future();
  CHECK(fut.wait_for(10s) == std::future_status::ready);
  stop = true;
  CHECK(spins > 0);
  caf::anon_send_exit(spinner, caf::exit_reason::user_shutdown);
}

TEST_CASE("on the actor workers, actors keep running after the I/O stopped, "
          "and the actor system lets go of the io_runtime") {
  std::weak_ptr<io_runtime> weak;
  {
    on_workers f{2};
    auto& sys = f.sys;
    weak = f.io;
    auto reporter = sys->spawn(thread_reporter, 0);
    f.io->stop();
    f.io.reset();
    CHECK_FALSE(weak.expired()); // the scheduler still holds it
    caf::scoped_actor self{*sys};
    for (int i = 0; i < 50; ++i)
      REQUIRE_FALSE(ask(*sys, self, reporter, i).empty());
    caf::anon_send_exit(reporter, caf::exit_reason::user_shutdown);
  }
  CHECK(weak.expired());
}

TEST_CASE("on the actor workers, many threads sending to many actors lose "
          "no message") {
  // Two workers, four foreign threads and the actors' own sends: every
  // message is handled exactly once (TSan checks the queue's hand-offs).
  on_workers f{2};
  auto& [io, cfg, sys] = f;
  constexpr int per_thread = 2000;
  std::atomic<int> handled{0};
  auto sink = sys->spawn(
      [&](caf::event_based_actor*, int) -> caf::behavior {
        return {[&](int) {
          ++handled;
        }};
      },
      0);
  auto forwarder = sys->spawn(
      [sink](caf::event_based_actor* self, int) -> caf::behavior {
        return {[self, sink](int x) {
          self->send(sink, x);
        }};
      },
      0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        if ((i + t) % 3 == 0)
          boost::asio::post(io->context(), [forwarder, i] {
            caf::anon_send(forwarder, i);
          });
        else
          caf::anon_send(forwarder, i);
      }
    });
  for (auto& t : threads)
    t.join();
  for (int i = 0; i < 1000 && handled < 4 * per_thread; ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(handled == 4 * per_thread);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(forwarder, caf::exit_reason::user_shutdown);
}
