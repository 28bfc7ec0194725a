// Metrics after a scripted run against the real built-in upstream (in
// process, real sockets on 127.0.0.1): counters equal the known numbers,
// histogram percentiles are within one bucket of the exact percentiles of
// the recorded samples, and the exposition parses with the Prometheus
// client's parser.
#include "../tools/prometheus_checker.hpp"
#include "embedrt/all.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "integration_fixture.hpp"
#include "mock/mock_server.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using namespace std::chrono_literals;

namespace {

upstream_config upstream(const std::string& name, const std::string& url,
                         const std::string& model, uint32_t connections) {
  upstream_config up;
  up.name = name;
  up.base_url = url;
  up.models = {model};
  up.connections = connections;
  return up;
}

embed_request request(const std::string& model,
                      std::vector<std::string> inputs) {
  embed_request r;
  r.model = model;
  r.inputs = std::move(inputs);
  r.timeout = 10s;
  return r;
}

/// Nearest-rank percentile of the exact samples.
int64_t exact(std::vector<int64_t> v, double p) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(
      std::ceil(p * static_cast<double>(v.size()) / 100.0 - 1e-9));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

const request_counter* find_requests(const metrics_snapshot& s,
                                     const std::string& up,
                                     const std::string& model,
                                     const std::string& error) {
  for (const auto& r : s.requests)
    if (r.upstream == up && r.model == model && r.error == error)
      return &r;
  return nullptr;
}

const upstream_metrics* find_upstream(const metrics_snapshot& s,
                                      const std::string& name) {
  for (const auto& u : s.upstreams)
    if (u.name == name)
      return &u;
  return nullptr;
}

int64_t calls(const upstream_metrics& u, const std::string& error) {
  for (const auto& c : u.calls)
    if (c.error == error)
      return c.calls;
  return 0;
}

struct fixture {
  // Declared before the actor system, so they outlive it: the hook may run
  // on a CAF worker until the system has ended.
  std::mutex mtx;
  std::vector<request_record> recorded;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;

  fixture() {
    register_types(cfg);
    set_log_level(log_level::error);
    sys = std::make_unique<caf::actor_system>(cfg);
  }

  service_hooks hooks() {
    service_hooks h;
    h.on_request_recorded = [this](const request_record& r) {
      std::lock_guard<std::mutex> guard{mtx};
      recorded.push_back(r);
    };
    return h;
  }
};

} // namespace

TEST_CASE_METHOD(fixture,
                 "metrics count a scripted run against the mock exactly",
                 "[metrics][integration]") {
  // "good": lognormal latency so the histograms have a spread.
  mock::mock_options good_opts;
  good_opts.latency.kind = mock::latency_model::shape::lognormal;
  good_opts.latency.median_ms = 1.0;
  good_opts.latency.p99_ms = 8.0;
  auto good = start_mock(good_opts);
  auto err500 = start_mock(faulty({mock::fault_kind::status, 500}));
  auto auth = start_mock(faulty({mock::fault_kind::status, 401}));
  runtime_config rc;
  rc.upstreams.push_back(upstream("good", good->base_url(), "m-ok", 4));
  rc.upstreams.push_back(upstream("err500", err500->base_url(), "m-500", 1));
  rc.upstreams.push_back(upstream("auth", auth->base_url(), "m-auth", 1));
  rc.retry.max_attempts = 2;
  rc.retry.backoff_base = 1ms;
  rc.retry.backoff_cap = 2ms;
  rc.seed = 7;
  auto svc = spawn_service(*sys, rc, hooks());
  REQUIRE(svc);
  client c{*sys, *svc};

  // Phase 1, concurrent: 60 successful requests (40 x 1 input, 20 x 3).
  std::vector<std::future<caf::expected<embed_result>>> futs;
  int64_t ok_texts = 0;
  for (int i = 0; i < 60; ++i) {
    std::vector<std::string> in;
    auto n = i % 3 == 0 ? 3 : 1;
    for (int k = 0; k < n; ++k)
      in.push_back("text " + std::to_string(i) + "-" + std::to_string(k));
    ok_texts += n;
    futs.push_back(c.embed(request("m-ok", std::move(in))));
  }
  for (auto& f : futs) {
    auto r = f.get();
    REQUIRE(r);
  }
  // Phase 2, one at a time (so nothing merges with them): known failures.
  auto expect_error = [&](embed_request req, errc code) {
    auto r = c.embed(std::move(req)).get();
    REQUIRE_FALSE(r);
    CHECK(error_code(r.error()) == code);
  };
  for (int i = 0; i < 3; ++i)
    expect_error(request("m-ok", {"bad [[mock:400]] " + std::to_string(i)}),
                 errc::invalid_input);
  for (int i = 0; i < 2; ++i)
    expect_error(request("m-500", {"x"}), errc::upstream_error);
  for (int i = 0; i < 2; ++i)
    expect_error(request("m-auth", {"x"}), errc::auth_failed);
  for (int i = 0; i < 2; ++i)
    expect_error(request("m-ok", {}), errc::invalid_input);
  expect_error(request("m-nope", {"x"}), errc::invalid_input);

  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK(snap->enabled);
  CHECK(snap->requests_in_flight == 0);

  // -- requests and texts by upstream, model, outcome, error ---------------
  auto* ok = find_requests(*snap, "good", "m-ok", "none");
  REQUIRE(ok != nullptr);
  CHECK(ok->outcome == "ok");
  CHECK(ok->requests == 60);
  CHECK(ok->texts == ok_texts);
  CHECK(ok->retries == 0);
  auto* bad = find_requests(*snap, "good", "m-ok", "invalid_input");
  REQUIRE(bad != nullptr);
  CHECK(bad->outcome == "error");
  CHECK(bad->requests == 3);
  CHECK(bad->texts == 3);
  auto* e500 = find_requests(*snap, "err500", "m-500", "upstream_error");
  REQUIRE(e500 != nullptr);
  CHECK(e500->requests == 2);
  CHECK(e500->retries == 2); // max_attempts 2: one retry each
  auto* e401 = find_requests(*snap, "auth", "m-auth", "auth_failed");
  REQUIRE(e401 != nullptr);
  CHECK(e401->requests == 2);
  CHECK(e401->retries == 0); // 401 is not retried
  auto* local = find_requests(*snap, "none", "m-ok", "invalid_input");
  REQUIRE(local != nullptr);
  CHECK(local->requests == 2);
  CHECK(local->texts == 0);
  auto* unrouted = find_requests(*snap, "none", "m-nope", "invalid_input");
  REQUIRE(unrouted != nullptr);
  CHECK(unrouted->requests == 1);
  CHECK(snap->requests.size() == 6);

  // -- upstream attempts ------------------------------------------------------
  auto* ug = find_upstream(*snap, "good");
  auto* u5 = find_upstream(*snap, "err500");
  auto* ua = find_upstream(*snap, "auth");
  REQUIRE(ug != nullptr);
  REQUIRE(u5 != nullptr);
  REQUIRE(ua != nullptr);
  CHECK(calls(*u5, "upstream_error") == 4);
  CHECK(calls(*ua, "auth_failed") == 2);
  CHECK(calls(*ug, "invalid_input") == 3);
  // Batching may merge the concurrent calls: however they were merged,
  // every input went upstream exactly once.
  auto good_ok_calls = calls(*ug, "none");
  CHECK(good_ok_calls >= 1);
  CHECK(good_ok_calls <= 60);
  CHECK(ug->batch_inputs.count == static_cast<uint64_t>(good_ok_calls + 3));
  CHECK(ug->batch_inputs.sum == static_cast<uint64_t>(ok_texts + 3));
  CHECK(ug->upstream_latency_ns.count == ug->batch_inputs.count);
  // One queue wait per caller call dispatched: 60 + 3.
  CHECK(ug->queue_wait_ns.count == 63);
  CHECK(u5->queue_wait_ns.count == 4);
  // Connection accounting from the pools: every attempt either opened a
  // connection or reused one.
  for (auto* u : {ug, u5, ua}) {
    INFO(u->name);
    CHECK(u->state == "up");
    uint64_t attempts = 0;
    for (const auto& cc : u->calls)
      attempts += static_cast<uint64_t>(cc.calls);
    CHECK(static_cast<uint64_t>(u->connects + u->reuses) == attempts);
    CHECK(u->connects >= 1);
    CHECK(u->connections_open == u->connections_idle);
    CHECK(u->connections_busy == 0);
    CHECK(u->queue_depth == 0);
    CHECK(u->breaker_state == breaker_closed);
  }
  // Open sockets: at most the 4 connection actors, each connected at most
  // once (every connect made a socket that stays open while idle).
  CHECK(ug->connection_actors == 4);
  CHECK(ug->connections_open >= 1);
  CHECK(ug->connections_open <= 4);
  CHECK(ug->connections_open <= ug->connects);
  CHECK(ug->total_tokens > 0);
  CHECK(ug->prompt_tokens > 0);
  CHECK(snap->process.threads > 0);
  CHECK(snap->process.resident_bytes > 0);
  CHECK(snap->process.cpu_seconds > 0);

  // -- percentiles against the exact recorded samples -------------------------
  std::vector<int64_t> samples;
  {
    std::lock_guard<std::mutex> guard{mtx};
    REQUIRE(recorded.size() == 70);
    for (const auto& r : recorded)
      if (r.upstream == "good" && r.error == 0)
        samples.push_back(r.latency_ns);
  }
  REQUIRE(samples.size() == 60);
  const log_histogram* h = nullptr;
  for (const auto& l : snap->latencies)
    if (l.upstream == "good" && l.model == "m-ok" && l.outcome == "ok")
      h = &l.latency_ns;
  REQUIRE(h != nullptr);
  REQUIRE(h->count == 60);
  for (double p : {50.0, 95.0, 99.0, 99.9}) {
    auto truth = static_cast<uint64_t>(exact(samples, p));
    auto got = h->percentile(p);
    auto bt = log_histogram::bucket_of(truth);
    auto bg = log_histogram::bucket_of(got);
    INFO("p" << p << " truth=" << truth << " ns, histogram=" << got << " ns");
    CHECK((bg >= bt ? bg - bt : bt - bg) <= 1);
    CHECK(got >= truth);
  }

  // -- the exposition parses and carries the same numbers ---------------------
  auto text = render_prometheus(*snap);
  auto [rc_check, out] = run_checker(text);
  INFO(out.substr(0, 2000));
  REQUIRE(rc_check == 0);
  CHECK(
      out.find(
          R"(embedrt_requests_total{error="none",model="m-ok",outcome="ok",upstream="good"} 60.0)")
      != std::string::npos);
  CHECK(
      out.find(
          R"(embedrt_upstream_requests_total{error="upstream_error",outcome="error",upstream="err500"} 4.0)")
      != std::string::npos);
  CHECK(out.find(R"(embedrt_retries_total{upstream="err500"} 2.0)")
        != std::string::npos);
  CHECK(
      out.find(
          R"(embedrt_request_duration_seconds_count{model="m-ok",outcome="ok",upstream="good"} 60.0)")
      != std::string::npos);
  CHECK(out.find(R"(embedrt_breaker_state{upstream="good"} 0.0)")
        != std::string::npos);
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
}

TEST_CASE_METHOD(fixture, "with metrics off no request metrics are recorded",
                 "[metrics][integration]") {
  auto good = start_mock({});
  runtime_config rc;
  rc.upstreams.push_back(upstream("good", good->base_url(), "m-ok", 2));
  rc.metrics = false;
  auto svc = spawn_service(*sys, rc, hooks());
  REQUIRE(svc);
  client c{*sys, *svc};
  for (int i = 0; i < 5; ++i)
    REQUIRE(c.embed(request("m-ok", {"t" + std::to_string(i)})).get());
  auto snap = c.metrics();
  REQUIRE(snap);
  CHECK_FALSE(snap->enabled);
  CHECK(snap->requests.empty());
  CHECK(snap->latencies.empty());
  REQUIRE(snap->upstreams.size() == 1);
  const auto& u = snap->upstreams.front();
  // Gauges and pool counters still come from the pool.
  CHECK(u.connection_actors == 2);
  // Sequential requests: one socket was ever opened and stays open.
  CHECK(u.connections_open == 1);
  CHECK(u.connects == 1);
  CHECK(u.connects + u.reuses == 5);
  CHECK(u.calls.empty());
  CHECK(u.batch_inputs.count == 0);
  {
    std::lock_guard<std::mutex> guard{mtx};
    CHECK(recorded.empty());
  }
  auto text = render_prometheus(*snap);
  CHECK(text.find("embedrt_metrics_enabled 0\n") != std::string::npos);
  auto [rc_check, out] = run_checker(text);
  INFO(out);
  CHECK(rc_check == 0);
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
}
