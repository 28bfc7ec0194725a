// Deterministic tests of what operators see of the upstreams (issue 14): the
// active health check of a pool and what it tells the service, the open
// sockets a pool reports, and the routing order across upstreams serving the
// same model. Pools run on CAF's test_coordinator in virtual time with
// scripted connections: no sleeps, no sockets.
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/provider.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "health_check.hpp"
#include "pool_actor.hpp"
#include "routing.hpp"
#include "virtual_time.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <set>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;

using embedrt::testing::virtual_time;

namespace {

/// The upstream behind the scripted connections: whether it answers, and
/// what it was asked.
struct fake_upstream {
  /// Health checks (and calls) fail with this error (none: they succeed).
  errc failing = errc::none;
  /// Whether a connection keeps its socket open after a call.
  bool keep_alive = true;
  /// When each health check arrived, and with which model.
  std::vector<caf::actor_clock::time_point> checks;
  std::vector<std::string> check_models;
  int calls = 0;
};

std::shared_ptr<pool_env> make_env(std::shared_ptr<fake_upstream> up,
                                   uint32_t connections,
                                   std::chrono::milliseconds interval) {
  auto env = std::make_shared<pool_env>();
  env->cfg.name = "fake";
  env->cfg.connections = connections;
  env->cfg.health_check_interval = interval;
  env->cfg.models = {"m"};
  env->cfg.model_map = {{"m", "upstream-m"}};
  env->profile = profile_for(provider_kind::openai);
  env->batching = false;
  env->connection_behavior
      = [up](connection_impl::pointer self) -> connection_impl::behavior_type {
    return {
        [self, up](call_atom, connection_call& call) {
          call_result r;
          r.call_id = call.call_id;
          bool check = call.inputs.size() == 1
              && call.inputs.front() == health_check_input;
          if (check) {
            up->checks.push_back(self->clock().now());
            up->check_models.push_back(call.model);
          } else {
            ++up->calls;
          }
          if (up->failing != errc::none) {
            r.error = make_error(up->failing, "fake failure", 500);
          } else {
            for (std::size_t i = 0; i < call.inputs.size(); ++i)
              r.embeddings.push_back({1.0f, 0.0f});
            r.open_after = up->keep_alive;
            r.connected = true;
          }
          self->send(
              caf::actor_cast<connection_listener>(self->current_sender()),
              result_atom_v, std::move(r));
        },
        [](io_done_atom, http_outcome&) {},
    };
  };
  return env;
}

upstream_health health_of(virtual_time& vt, caf::scoped_actor& self,
                          const pool_impl& pool) {
  auto h = self->request(pool, caf::infinite, health_atom_v);
  vt.sched->run();
  upstream_health out;
  h.receive(
      [&](upstream_health& x) {
        out = std::move(x);
      },
      [](caf::error& err) {
        FAIL(caf::to_string(err));
      });
  return out;
}

/// The availability messages a pool sent its watcher (in order).
std::vector<bool> availability(caf::scoped_actor& watcher) {
  std::vector<bool> out;
  while (!watcher->mailbox().empty())
    watcher->receive([&](avail_atom, bool ok) {
      out.push_back(ok);
    });
  return out;
}

upstream_call make_call(std::string text) {
  upstream_call call;
  call.model = "upstream-m";
  call.inputs = {std::move(text)};
  call.tokens = 2;
  return call;
}

/// Sends the pool one call of `text` and checks that it succeeds.
void call_succeeds(virtual_time& vt, caf::scoped_actor& self,
                   const pool_impl& pool, std::string text) {
  self->send(pool, call_atom_v, make_call(std::move(text)));
  vt.sched->run();
  self->receive(
      [](call_result& r) {
        CHECK(!r.error);
      },
      [](caf::error& err) {
        FAIL(caf::to_string(err));
      });
}

} // namespace

TEST_CASE("health check: a failing check marks the upstream unhealthy at "
          "once, without traffic, and checks repeat at the interval") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  up->failing = errc::auth_failed;
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_env(up, 4, 1000ms)});
  caf::scoped_actor watcher{*vt.sys};
  caf::anon_send(pool, watch_atom_v, caf::actor_cast<pool_watcher>(watcher));
  auto start = vt.now();
  vt.sched->run();
  // The first check goes out at start, with the upstream's name of the
  // first model it serves, and fails: unhealthy, not available.
  REQUIRE(up->checks.size() == 1);
  CHECK(up->checks[0] == start);
  CHECK(up->check_models[0] == "upstream-m");
  CHECK(up->calls == 0);
  CHECK(availability(watcher) == std::vector<bool>{true, false});
  caf::scoped_actor self{*vt.sys};
  CHECK(health_of(vt, self, pool).state == "unhealthy");
  // The next check exactly one interval after the previous one completed.
  vt.sched->advance_time(999ms);
  vt.sched->run();
  CHECK(up->checks.size() == 1);
  vt.sched->advance_time(1ms);
  vt.sched->run();
  REQUIRE(up->checks.size() == 2);
  CHECK(up->checks[1] == start + 1000ms);
  CHECK(availability(watcher).empty()); // no change, no message
  // The upstream recovers: the next check brings it back.
  up->failing = errc::none;
  vt.sched->advance_time(1000ms);
  vt.sched->run();
  REQUIRE(up->checks.size() == 3);
  CHECK(health_of(vt, self, pool).state == "up");
  CHECK(availability(watcher) == std::vector<bool>{true});
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE(
    "health check: a rate-limited check passes, and a successful call ends "
    "an unhealthy period before the next check") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  up->failing = errc::rate_limited;
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_env(up, 2, 60000ms)});
  caf::scoped_actor self{*vt.sys};
  vt.sched->run();
  CHECK(health_of(vt, self, pool).state == "up");
  // Fails now: unhealthy after the next check.
  up->failing = errc::connection_failed;
  vt.sched->advance_time(60000ms);
  vt.sched->run();
  CHECK(health_of(vt, self, pool).state == "unhealthy");
  // Unhealthy pools still take calls (the service routes them last); one
  // that succeeds is proof enough.
  up->failing = errc::none;
  call_succeeds(vt, self, pool, "hello");
  CHECK(health_of(vt, self, pool).state == "up");
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("health check: off at interval 0") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  up->failing = errc::auth_failed;
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_env(up, 2, 0ms)});
  vt.sched->run();
  vt.sched->advance_time(3600s);
  vt.sched->run();
  CHECK(up->checks.empty());
  caf::scoped_actor self{*vt.sys};
  CHECK(health_of(vt, self, pool).state == "up");
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("health check: the model asked for") {
  upstream_config cfg;
  CHECK(health_check_model(cfg) == "text-embedding-3-small");
  cfg.model_map = {{"small", "text-embedding-3-small-deployment"}};
  CHECK(health_check_model(cfg) == "text-embedding-3-small-deployment");
  cfg.models = {"bge", "small"};
  CHECK(health_check_model(cfg) == "bge");
  cfg.health_check_model = "probe-model";
  CHECK(health_check_model(cfg) == "probe-model");
}

TEST_CASE("pool: the socket gauge counts open sockets, not connection "
          "actors") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_env(up, 16, 0ms)});
  caf::scoped_actor self{*vt.sys};
  vt.sched->run();
  auto before = health_of(vt, self, pool);
  CHECK(before.connections == 16);
  CHECK(before.sockets == 0); // connection actors connect lazily
  call_succeeds(vt, self, pool, "one");
  auto after = health_of(vt, self, pool);
  CHECK(after.connections == 16);
  CHECK(after.idle_connections == 16);
  CHECK(after.sockets == 1);
  // A connection the upstream closed (Connection: close, an error) is no
  // open socket any more.
  up->keep_alive = false;
  call_succeeds(vt, self, pool, "two");
  CHECK(health_of(vt, self, pool).sockets == 0);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

// -- routing -----------------------------------------------------------------

TEST_CASE("routing: with two upstreams the one with fewer requests "
          "outstanding per weight goes first, the other next") {
  std::mt19937_64 rng{42};
  std::vector<route_load> loads{{true, 5, 1}, {true, 2, 1}};
  for (int i = 0; i < 100; ++i)
    CHECK(order_routes(loads, {0, 1}, rng) == std::vector<std::size_t>{1, 0});
  // Weight 4 with 5 outstanding (5/4) beats weight 1 with 2 (2/1).
  loads[0].weight = 4;
  for (int i = 0; i < 100; ++i)
    CHECK(order_routes(loads, {0, 1}, rng) == std::vector<std::size_t>{0, 1});
}

TEST_CASE("routing: unavailable upstreams go last, in configuration order, and "
          "with none available all are still tried") {
  std::mt19937_64 rng{7};
  std::vector<route_load> loads{
      {false, 0, 1}, {true, 9, 1}, {false, 0, 5}, {true, 1, 1}};
  for (int i = 0; i < 100; ++i)
    CHECK(order_routes(loads, {0, 1, 2, 3}, rng)
          == std::vector<std::size_t>{3, 1, 0, 2});
  for (auto& l : loads)
    l.available = false;
  auto all = order_routes(loads, {0, 1, 2, 3}, rng);
  CHECK(all.size() == 4);
  CHECK(std::set<std::size_t>(all.begin(), all.end())
        == std::set<std::size_t>{0, 1, 2, 3});
  // Only the candidates serving the model are ordered.
  CHECK(order_routes(loads, {2}, rng) == std::vector<std::size_t>{2});
}

TEST_CASE("routing: idle upstreams share the traffic by weight") {
  std::mt19937_64 rng{1234};
  std::vector<route_load> loads{{true, 0, 3}, {true, 0, 1}, {true, 0, 0}};
  std::map<std::size_t, int> firsts;
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i)
    ++firsts[order_routes(loads, {0, 1, 2}, rng).front()];
  // Weights 3 : 1 : 1 (0 counts as 1). Two draws by weight, the first on a
  // tie: the first draw alone decides, so shares are 3/5, 1/5, 1/5.
  CHECK(firsts[0] == Approx(n * 3 / 5).epsilon(0.05));
  CHECK(firsts[1] == Approx(n / 5).epsilon(0.1));
  CHECK(firsts[2] == Approx(n / 5).epsilon(0.1));
}

TEST_CASE("routing: among many upstreams, two random choices avoid the "
          "busiest") {
  std::mt19937_64 rng{99};
  std::vector<route_load> loads{
      {true, 100, 1}, {true, 0, 1}, {true, 0, 1}, {true, 0, 1}};
  int busiest_first = 0;
  for (int i = 0; i < 1000; ++i)
    if (order_routes(loads, {0, 1, 2, 3}, rng).front() == 0)
      ++busiest_first;
  // It loses every comparison it is drawn into.
  CHECK(busiest_first == 0);
}

TEST_CASE("routing: a higher priority is a fallback, used first only when no "
          "upstream of a lower one is available") {
  std::mt19937_64 rng{5};
  std::vector<route_load> loads{
      {true, 50, 1, 0}, {true, 0, 1, 1}, {true, 10, 1, 0}};
  for (int i = 0; i < 100; ++i)
    CHECK(order_routes(loads, {0, 1, 2}, rng)
          == std::vector<std::size_t>{2, 0, 1});
  loads[0].available = false;
  loads[2].available = false;
  CHECK(order_routes(loads, {0, 1, 2}, rng)
        == std::vector<std::size_t>{1, 0, 2});
}
