// The supervision tree over real sockets (docs/architecture.md, "Supervision
// tree"): whatever dies, every caller gets exactly one answer, at once, and
// the runtime comes back. The built-in upstream runs in-process on
// 127.0.0.1 with latency, so calls are really queued and in flight.
#include "embedrt/all.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "integration_fixture.hpp"
#include "mock/mock_server.hpp"

#include <atomic>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

using test::slow_upstream;
using test::start_mock;
using test::system_fixture;

upstream_config upstream(std::string name, const std::string& url,
                         uint32_t connections) {
  upstream_config up;
  up.name = std::move(name);
  up.base_url = url;
  up.connections = connections;
  up.attempt_timeout = 5000ms;
  up.breaker.enabled = false;
  up.batching = false; // one call per request: the queue really fills
  up.max_queue = 5000;
  return up;
}

runtime_config config_with(std::vector<upstream_config> ups) {
  runtime_config rc;
  rc.upstreams = std::move(ups);
  rc.default_timeout = 20000ms;
  rc.retry.max_attempts = 3;
  rc.retry.backoff_base = 5ms;
  rc.retry.backoff_cap = 20ms;
  rc.retry.budget_ratio = 1.0;
  rc.seed = 11;
  return rc;
}

embed_request request(std::string text, caf::timespan timeout = 20000ms) {
  embed_request req;
  req.model = "m";
  req.inputs = {std::move(text)};
  req.dimensions = 8;
  req.timeout = timeout;
  return req;
}

/// Waits (bounded) until the service reports upstream `name` up; returns its
/// health then, or nullopt if it did not come up within `limit`.
std::optional<upstream_health> wait_until_up(client& c, const std::string& name,
                                             std::chrono::milliseconds limit
                                             = 5000ms) {
  auto deadline = steady::now() + limit;
  for (;;) {
    auto h = c.health();
    REQUIRE(h);
    for (auto& u : h->upstreams)
      if (u.name == name && u.state == "up")
        return u;
    if (steady::now() >= deadline)
      return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

using futures = std::vector<std::future<caf::expected<embed_result>>>;

} // namespace

TEST_CASE("a pool that crashes with 1,000 calls queued answers them at once "
          "and they fail over to the second upstream") {
  system_fixture f;
  auto srv_a = start_mock(slow_upstream(50));
  auto srv_b = start_mock();
  service_hooks hooks;
  hooks.pool_crash_marker = "__crash_pool__";
  auto rc = config_with({upstream("a", srv_a->base_url(), 2),
                         upstream("b", srv_b->base_url(), 8)});
  // "b" is the fallback: it only takes what "a" cannot.
  rc.upstreams[1].priority = 1;
  auto svc = spawn_service(*f.sys, rc, hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  futures futs;
  std::vector<std::string> texts;
  for (int i = 0; i < 1000; ++i) {
    texts.push_back("queued " + std::to_string(i));
    futs.push_back(c.embed(request(texts.back(), 120000ms)));
  }
  // 2 connections at 50 ms each: ~25 s of work for "a". Its queue admits
  // what can finish within the deadlines (120 s: all of it, even on a
  // machine slowed down by a sanitizer, where a call takes longer than the
  // upstream's 50 ms). Once the queue holds at least 600, crash a's pool.
  auto fill_limit = steady::now() + 10000ms;
  for (bool queued = false; !queued;) {
    auto h = c.health();
    REQUIRE(h);
    queued = h->upstreams[0].queued_requests >= 600;
    REQUIRE(steady::now() < fill_limit);
  }
  auto crash_at = steady::now();
  auto crash = c.embed(request("__crash_pool__a"));
  std::size_t on_b = 0;
  for (std::size_t i = 0; i < futs.size(); ++i) {
    auto r = futs[i].get();
    INFO("request " << i << ": "
                    << (r ? std::string{"ok"} : render_error(r.error())));
    REQUIRE(r);
    CHECK(r->embeddings[0] == hash_embed(texts[i], 8));
    on_b += r->upstream == "b" ? 1 : 0;
  }
  // The queued calls did not wait for their deadline or for "a".
  CHECK(steady::now() - crash_at < 5000ms);
  CHECK(on_b >= 850);
  // The crash request itself failed over to "b" as well.
  auto cr = crash.get();
  REQUIRE(cr);
  CHECK(cr->upstream == "b");
  // "a" is restarted by the service and serves again.
  CHECK(wait_until_up(c, "a"));
  auto again = c.embed(request("after restart")).get();
  REQUIRE(again);
  CHECK(again->upstream == "a");
}

TEST_CASE("the service respawns a crashing pool under load: every caller is "
          "answered and the pool serves again") {
  system_fixture f;
  auto srv = start_mock(slow_upstream(5));
  service_hooks hooks;
  hooks.pool_crash_marker = "__crash_pool__";
  auto rc = config_with({upstream("only", srv->base_url(), 4)});
  rc.upstreams[0].supervision.restart_backoff = 5ms;
  rc.upstreams[0].supervision.max_restarts = 10;
  auto svc = spawn_service(*f.sys, rc, hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  // Three rounds: each one waits for the pool to be up, sends 200 requests
  // with a crash in the middle of them, and collects every answer.
  constexpr int rounds = 3;
  for (int round = 0; round < rounds; ++round) {
    INFO("round " << round);
    REQUIRE(wait_until_up(c, "only"));
    futures futs;
    std::vector<std::string> texts; // per future
    for (int i = 0; i < 200; ++i) {
      texts.push_back("load " + std::to_string(round) + "/"
                      + std::to_string(i));
      futs.push_back(c.embed(request(texts.back(), 8000ms)));
      if (i == 100) {
        texts.push_back("__crash_pool__only");
        futs.push_back(c.embed(request(texts.back(), 8000ms)));
      }
    }
    auto start = steady::now();
    std::size_t ok = 0;
    std::size_t down = 0;
    for (std::size_t i = 0; i < futs.size(); ++i) {
      auto r = futs[i].get(); // every caller gets exactly one answer
      if (r) {
        ++ok;
        CHECK(r->embeddings[0] == hash_embed(texts[i], 8));
      } else {
        INFO(render_error(r.error()));
        CHECK(error_code(r.error()) == errc::upstream_down);
        ++down;
      }
    }
    // Nobody waited for the 8 s deadline: the crash answered at once.
    CHECK(steady::now() - start < 5000ms);
    CHECK(ok + down == futs.size());
    CHECK(down >= 1); // at least the crashing request itself
  }
  // The pool came back after each crash and serves.
  auto up = wait_until_up(c, "only");
  REQUIRE(up);
  auto r = c.embed(request("after")).get();
  REQUIRE(r);
  CHECK(r->embeddings[0] == hash_embed("after", 8));
}

namespace {

/// The `restart_in_ms` of every `event=pool_down` line in `log`, in order.
std::vector<long> pool_restart_waits(const std::string& log) {
  std::vector<long> out;
  const std::string key = "restart_in_ms=";
  for (auto at = log.find("event=pool_down"); at != std::string::npos;
       at = log.find("event=pool_down", at + 1)) {
    auto line_end = log.find('\n', at);
    auto k = log.find(key, at);
    if (k != std::string::npos && k < line_end)
      out.push_back(std::stol(log.substr(k + key.size())));
  }
  return out;
}

} // namespace

TEST_CASE("the service's restart backoff doubles for crashes close together "
          "and starts again after a quiet period") {
  system_fixture f;
  auto srv = start_mock();
  service_hooks hooks;
  hooks.pool_crash_marker = "__crash_pool__";
  auto rc = config_with({upstream("q", srv->base_url(), 1)});
  auto& sup = rc.upstreams[0].supervision;
  sup.restart_backoff = 5ms;
  sup.restart_backoff_cap = 1000ms;
  sup.max_restarts = 10;
  sup.within = 1000ms;
  auto svc = spawn_service(*f.sys, rc, hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  auto* log_file = std::tmpfile();
  REQUIRE(log_file != nullptr);
  set_log_sink(log_file);
  auto crash = [&] {
    REQUIRE(wait_until_up(c, "q"));
    auto r = c.embed(request("__crash_pool__q")).get();
    REQUIRE(!r);
    CHECK(error_code(r.error()) == errc::upstream_down);
  };
  crash();
  crash(); // within 1 s of the first: the backoff doubles
  REQUIRE(wait_until_up(c, "q"));
  std::this_thread::sleep_for(1100ms); // longer than `within` without a crash
  crash();
  REQUIRE(wait_until_up(c, "q"));
  REQUIRE(flush_log());
  set_log_sink(nullptr);
  std::string log;
  std::rewind(log_file);
  char chunk[4096];
  while (auto n = std::fread(chunk, 1, sizeof(chunk), log_file))
    log.append(chunk, n);
  std::fclose(log_file);
  INFO(log);
  CHECK(pool_restart_waits(log) == std::vector<long>{5, 10, 5});
}

TEST_CASE("the metrics actor dies: it is restarted and metrics go on") {
  std::atomic<int> recorded{0}; // outlives the actor system (hook target)
  system_fixture f;
  auto srv = start_mock();
  service_hooks hooks;
  hooks.on_request_recorded = [&](const request_record& r) {
    ++recorded;
    if (r.texts == 3)
      throw std::runtime_error("chaos: metrics actor crash");
  };
  auto svc = spawn_service(
      *f.sys, config_with({upstream("m", srv->base_url(), 2)}), hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  REQUIRE(c.embed(request("one")).get());
  auto before = c.metrics();
  REQUIRE(before);
  // A request of 3 texts makes the metrics actor throw when it records it.
  auto three = request("x");
  three.inputs = {"a", "b", "c"};
  REQUIRE(c.embed(three).get());
  // A new metrics actor takes over: metrics answer, and count new requests.
  caf::expected<metrics_snapshot> after{caf::error{}};
  auto deadline = steady::now() + 5s;
  do {
    after = c.metrics(2000ms);
  } while (!after && steady::now() < deadline);
  REQUIRE(after);
  for (int i = 0; i < 5; ++i)
    REQUIRE(c.embed(request("more " + std::to_string(i))).get());
  auto later = c.metrics();
  REQUIRE(later);
  int64_t requests = 0;
  for (auto& rc : later->requests)
    requests += rc.requests;
  CHECK(requests >= 5); // counted by the new actor (the old counts are gone)
  CHECK(recorded.load() >= 7);
}

TEST_CASE("stopping the service answers every request cancelled at once and "
          "the actor system ends by itself") {
  auto srv = start_mock(slow_upstream(2000));
  auto start = steady::now();
  {
    system_fixture f;
    auto rc = config_with({upstream("slow", srv->base_url(), 4)});
    rc.retry.backoff_base = 1000ms; // some requests wait in a backoff
    auto svc = spawn_service(*f.sys, rc);
    REQUIRE(svc);
    client c{*f.sys, *svc};
    futures futs;
    for (int i = 0; i < 200; ++i)
      futs.push_back(c.embed(request("slow " + std::to_string(i))));
    for (bool queued = false; !queued;) { // 4 in flight, 196 queued
      auto h = c.health();
      REQUIRE(h);
      queued = h->upstreams[0].queued_requests == 196;
    }
    auto stop_at = steady::now();
    caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
    for (auto& fut : futs) {
      auto r = fut.get();
      REQUIRE(!r);
      CHECK(error_code(r.error()) == errc::cancelled);
    }
    CHECK(steady::now() - stop_at < 1000ms);
  } // ~actor_system: waits for every actor; must not wait for the upstream
  CHECK(steady::now() - start < 3000ms);
}

// -- request actors are reused (docs/architecture.md) -------------------------

namespace {

/// The service's view of requests in flight (busy request actors).
int64_t in_flight(caf::actor_system& sys, const service_actor& svc) {
  caf::scoped_actor self{sys};
  int64_t n = -1;
  self->request(svc, caf::infinite, status_atom_v)
      .receive(
          [&](node_status& s) {
            n = s.in_flight;
          },
          [&](caf::error& err) {
            FAIL(caf::to_string(err));
          });
  return n;
}

/// The number of actors running once it has not changed for 300 ms
/// (bounded: 5 s).
std::size_t settled_running(caf::actor_system& sys) {
  auto deadline = steady::now() + 5000ms;
  auto n = sys.registry().running();
  auto since = steady::now();
  while (steady::now() - since < 300ms && steady::now() < deadline) {
    std::this_thread::sleep_for(5ms);
    auto m = sys.registry().running();
    if (m != n) {
      n = m;
      since = steady::now();
    }
  }
  return n;
}

/// Waits (bounded) until the actor system runs `want` actors; returns the
/// count seen last.
std::size_t running_settles_at(caf::actor_system& sys, std::size_t want) {
  auto deadline = steady::now() + 5000ms;
  auto n = sys.registry().running();
  while (n != want && steady::now() < deadline) {
    std::this_thread::sleep_for(5ms);
    n = sys.registry().running();
  }
  return n;
}

} // namespace

TEST_CASE("request actors are reused: one serves requests in turn, a burst "
          "leaves at most 256 idle, a crashed one is replaced") {
  auto srv = start_mock(slow_upstream(20));
  system_fixture f;
  service_hooks hooks;
  hooks.request_crash_marker = "__crash_request__";
  auto rc = config_with({upstream("up", srv->base_url(), 16)});
  auto svc = spawn_service(*f.sys, rc, hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  REQUIRE(wait_until_up(c, "up"));
  // The first request spawns a request actor; `base` counts it.
  REQUIRE(c.embed(request("first")).get());
  auto base = settled_running(*f.sys);
  // Requests in turn: they all reuse it.
  for (int i = 0; i < 20; ++i) {
    auto r = c.embed(request("in turn " + std::to_string(i))).get();
    REQUIRE(r);
    CHECK(r->embeddings.size() == 1);
  }
  CHECK(settled_running(*f.sys) == base);
  CHECK(in_flight(*f.sys, *svc) == 0);
  // 300 at once: 300 busy request actors; once answered, 256 are kept.
  futures futs;
  for (int i = 0; i < 300; ++i)
    futs.push_back(c.embed(request("burst " + std::to_string(i))));
  for (auto& fut : futs) {
    auto r = fut.get();
    REQUIRE(r);
    CHECK(r->embeddings.size() == 1);
  }
  CHECK(running_settles_at(*f.sys, base + 255) == base + 255);
  CHECK(in_flight(*f.sys, *svc) == 0);
  // A request actor that throws answers its caller and ends; the service
  // forgets it (in flight back to 0) and the next requests are served.
  auto crashed = c.embed(request("__crash_request__")).get();
  REQUIRE(!crashed);
  CHECK(error_code(crashed.error()) == errc::cancelled);
  CHECK(running_settles_at(*f.sys, base + 254) == base + 254);
  CHECK(in_flight(*f.sys, *svc) == 0);
  for (int i = 0; i < 5; ++i)
    CHECK(c.embed(request("after " + std::to_string(i))).get());
  CHECK(in_flight(*f.sys, *svc) == 0);
}
