// Integration tests of the breaker and of continuous batching over real
// sockets, against the built-in upstream run in-process on 127.0.0.1:
// - the upstream fails 100 % and heals: the breaker opens within its
//   threshold, rejects fast while open, closes after the open time and one
//   probe;
// - 1,000 concurrent callers with 1-50 texts each against an upstream with
//   20 % faults and bad-input 400s: every caller gets exactly its own vectors
//   in order, or an error naming only its own bad inputs;
// - an upstream that accepts fewer tokens per request than the profile says:
//   batches shrink and every caller is served.
#include "embedrt/all.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "integration_fixture.hpp"
#include "mock/mock_server.hpp"

#include <algorithm>
#include <atomic>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

using test::start_mock;
using test::system_fixture;

embed_request make_request(std::vector<std::string> inputs, int32_t dims = 16) {
  embed_request req;
  req.model = "test-model";
  req.inputs = std::move(inputs);
  req.dimensions = dims;
  return req;
}

/// Breaker transitions with the time they happened.
struct transition_log {
  struct entry {
    breaker_state from;
    breaker_state to;
    steady::time_point at;
  };
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<entry> entries;

  void add(breaker_state from, breaker_state to) {
    std::lock_guard<std::mutex> guard{mtx};
    entries.push_back({from, to, steady::now()});
    cv.notify_all();
  }

  /// Service hooks that record every breaker transition into `log`.
  static service_hooks hooks(std::shared_ptr<transition_log> log) {
    service_hooks h;
    h.on_breaker_transition
        = [log](const std::string&, breaker_state from, breaker_state to) {
            log->add(from, to);
          };
    return h;
  }

  /// Waits until `n` transitions happened; returns a copy.
  std::vector<entry> wait_for(std::size_t n, std::chrono::milliseconds max) {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait_for(guard, max, [&] {
      return entries.size() >= n;
    });
    return entries;
  }
};

/// Collects callback results with the latency of each (in the caller's
/// clock, from submit to callback).
struct latency_collector {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<caf::expected<embed_result>> results;
  std::vector<steady::duration> latencies;

  void submit(client& c, embed_request req) {
    auto start = steady::now();
    c.embed(std::move(req), [this, start](caf::expected<embed_result> r) {
      auto took = steady::now() - start;
      std::lock_guard<std::mutex> guard{mtx};
      results.push_back(std::move(r));
      latencies.push_back(took);
      cv.notify_all();
    });
  }

  void wait_for(std::size_t n) {
    std::unique_lock<std::mutex> guard{mtx};
    REQUIRE(cv.wait_for(guard, 30s, [&] {
      return results.size() >= n;
    }));
  }
};

double percentile_us(std::vector<steady::duration> xs, double p) {
  std::sort(xs.begin(), xs.end());
  auto idx = static_cast<std::size_t>(p * static_cast<double>(xs.size() - 1));
  return std::chrono::duration<double, std::micro>(xs[idx]).count();
}

} // namespace

TEST_CASE("breaker: a failing upstream opens it within its threshold, "
          "open-state rejections are fast, one probe closes it after the "
          "reset timeout") {
  system_fixture f;
  auto srv = start_mock();
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = srv->base_url();
  up.connections = 1; // one call at a time: the threshold is exact
  up.attempt_timeout = 2000ms;
  up.breaker.consecutive_failures = 5;
  up.breaker.reset_timeout = 1500ms;
  up.breaker.jitter = 0.2;
  rc.upstreams.push_back(up);
  rc.retry.max_attempts = 1; // one request = one upstream call
  rc.default_timeout = 5000ms;
  rc.seed = 11;
  auto log = std::make_shared<transition_log>();
  auto svc = spawn_service(*f.sys, rc, transition_log::hooks(log));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  // Healthy first.
  REQUIRE(c.embed(make_request({"warm"})).get());
  srv->reset_stats();
  srv->set_outage(mock::fault{mock::fault_kind::status, 500});
  // Sequential requests: exactly the first five fail with the upstream's
  // 500 (the pool dispatches nothing while the breaker judges a failure, so
  // its open view always comes first, however loaded the machine).
  int failures = 0;
  caf::error rejection;
  for (int i = 0; i < 10 && !rejection; ++i) {
    auto r
        = c.embed(make_request({"during outage " + std::to_string(i)})).get();
    REQUIRE(!r);
    if (error_code(r.error()) == errc::breaker_open)
      rejection = r.error();
    else {
      CHECK(error_code(r.error()) == errc::upstream_error);
      ++failures;
    }
  }
  REQUIRE(rejection);
  CHECK(failures == 5);
  CHECK(srv->stats().embedding_requests == static_cast<uint64_t>(failures));
  CHECK(error_retry_after(rejection) > 0ms);
  CHECK(error_retry_after(rejection) <= 1800ms);
  auto opened = log->wait_for(1, 1s);
  REQUIRE(opened.size() == 1);
  CHECK(opened[0].from == breaker_state::closed);
  CHECK(opened[0].to == breaker_state::open);
  auto health = c.health();
  REQUIRE(health);
  CHECK(health->upstreams.at(0).state == "breaker_open");
  CHECK(!health->ready);
  // The transition is an event in the metrics too (counter and gauge).
  auto open_metrics = c.metrics();
  REQUIRE(open_metrics);
  REQUIRE(open_metrics->upstreams.size() == 1);
  CHECK(open_metrics->upstreams[0].breaker_state == breaker_open);
  // While open: 1,000 concurrent callers are rejected at once, nothing is
  // sent upstream.
  latency_collector fast;
  for (int i = 0; i < 1000; ++i)
    fast.submit(c, make_request({"rejected " + std::to_string(i)}));
  fast.wait_for(1000);
  for (auto& r : fast.results) {
    REQUIRE(!r);
    CHECK(error_code(r.error()) == errc::breaker_open);
  }
  CHECK(srv->stats().embedding_requests == static_cast<uint64_t>(failures));
  auto burst_p99 = percentile_us(fast.latencies, 0.99);
  // One caller at a time: the latency of a rejection itself (client actor,
  // service, request actor, pool and back).
  std::vector<steady::duration> one_by_one;
  auto loop_start = steady::now();
  for (int i = 0; i < 1000 && steady::now() - loop_start < 1s; ++i) {
    auto start = steady::now();
    auto r = c.embed(make_request({"sequential " + std::to_string(i)})).get();
    one_by_one.push_back(steady::now() - start);
    REQUIRE(!r);
    CHECK(error_code(r.error()) == errc::breaker_open);
  }
  auto p50 = percentile_us(one_by_one, 0.50);
  auto p99 = percentile_us(one_by_one, 0.99);
  // Recorded in docs/benchmarks.md; the target (p99 < 1 ms) is asserted
  // loosely here because this machine is shared and noisy.
  WARN("open-state rejections, one caller at a time ("
       << one_by_one.size() << " calls): p50 " << p50 << " us, p99 " << p99
       << " us; 1000 callers at once: last answered after p99 " << burst_p99
       << " us");
  CHECK(p99 < 20000.0);
  CHECK(srv->stats().embedding_requests == static_cast<uint64_t>(failures));
  // Heal; the breaker turns half-open after its open time (1.5 s, +20 %
  // jitter at most) ...
  srv->set_outage(mock::fault{});
  auto half = log->wait_for(2, 3s);
  REQUIRE(half.size() == 2);
  CHECK(half[1].to == breaker_state::half_open);
  auto open_for = half[1].at - half[0].at;
  CHECK(open_for >= 1490ms);
  CHECK(open_for <= 1800ms + 250ms);
  // ... (the hook sees the transition first; the pool learns it by a
  // message right after) ...
  for (auto until = steady::now() + 1s; steady::now() < until;) {
    auto h = c.health();
    if (h && h->upstreams.at(0).state == "half_open")
      break;
    std::this_thread::sleep_for(1ms);
  }
  // ... and the first request is the probe that closes it.
  auto probe = c.embed(make_request({"probe"})).get();
  INFO("probe: " << (probe ? std::string{"ok"} : f.sys->render(probe.error())));
  REQUIRE(probe);
  CHECK(probe->embeddings.at(0) == hash_embed("probe", 16));
  auto closed = log->wait_for(3, 1s);
  REQUIRE(closed.size() == 3);
  CHECK(closed[2].from == breaker_state::half_open);
  CHECK(closed[2].to == breaker_state::closed);
  CHECK(srv->stats().embedding_requests == static_cast<uint64_t>(failures) + 1);
  // Closed: traffic flows again.
  for (int i = 0; i < 20; ++i) {
    auto r = c.embed(make_request({"after " + std::to_string(i)})).get();
    INFO("after " << i << ": "
                  << (r ? std::string{"ok"} : f.sys->render(r.error())));
    CHECK(r);
  }
  health = c.health();
  REQUIRE(health);
  CHECK(health->upstreams.at(0).state == "up");
  CHECK(health->ready);
  auto m = c.metrics();
  REQUIRE(m);
  const auto& um = m->upstreams.at(0);
  CHECK(um.breaker_state == breaker_closed);
  auto count = [&](uint8_t from, uint8_t to) {
    int64_t n = 0;
    for (auto& t : um.breaker_transitions)
      if (t.from == from && t.to == to)
        n += t.count;
    return n;
  };
  CHECK(count(breaker_closed, breaker_open) == 1);
  CHECK(count(breaker_open, breaker_half_open) == 1);
  CHECK(count(breaker_half_open, breaker_closed) == 1);
  CHECK(count(breaker_half_open, breaker_open) == 0);
  auto text = render_prometheus(*m);
  CHECK(text.find("embedrt_breaker_transitions_total{upstream=\"mock\",from="
                  "\"closed\",to=\"open\"} 1")
        != std::string::npos);
}

TEST_CASE("breaker: Retry-After of a rate-limited upstream sets the open "
          "time") {
  system_fixture f;
  mock::mock_options mo;
  mo.retry_after_ms = 1500; // longer than the reset timeout
  auto srv = start_mock(mo);
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = srv->base_url();
  up.connections = 1;
  up.breaker.consecutive_failures = 3;
  up.breaker.reset_timeout = 200ms;
  up.breaker.jitter = 0.0;
  rc.upstreams.push_back(up);
  rc.retry.max_attempts = 1;
  rc.seed = 3;
  auto log = std::make_shared<transition_log>();
  auto svc = spawn_service(*f.sys, rc, transition_log::hooks(log));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  srv->set_outage(mock::fault{mock::fault_kind::rate_limit, 429});
  caf::error rejection;
  for (int i = 0; i < 6 && !rejection; ++i) {
    auto r = c.embed(make_request({"limited " + std::to_string(i)})).get();
    REQUIRE(!r);
    if (error_code(r.error()) == errc::breaker_open)
      rejection = r.error();
    else
      CHECK(error_code(r.error()) == errc::rate_limited);
  }
  REQUIRE(rejection);
  // The time left follows the upstream's 1.5 s, not the 200 ms backoff.
  CHECK(error_retry_after(rejection) > 1000ms);
  CHECK(error_retry_after(rejection) <= 1500ms);
  srv->set_outage(mock::fault{});
  auto half = log->wait_for(2, 3s);
  REQUIRE(half.size() == 2);
  CHECK(half[1].at - half[0].at >= 1490ms);
}

TEST_CASE("batching: 1,000 concurrent callers with 1-50 texts each and 20 % "
          "upstream faults get exactly their own vectors, or an error naming "
          "only their own bad inputs") {
  system_fixture f;
  mock::mock_options mo;
  mo.seed = 42;
  auto faults = mock::parse_fault_spec("500:0.06,503:0.04,429:0.05,reset:0.05");
  REQUIRE(faults);
  mo.faults = *faults.value;
  mo.retry_after_ms = 5;
  auto srv = start_mock(mo);
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = srv->base_url();
  up.connections = 8;
  up.attempt_timeout = 5000ms;
  // Rate-based only: 20 % failures stay below its 50 %.
  up.breaker.consecutive_failures = 0;
  rc.upstreams.push_back(up);
  rc.retry.max_attempts = 10;
  rc.retry.backoff_base = 2ms;
  rc.retry.backoff_cap = 20ms;
  rc.retry.budget_ratio = 1.0;
  rc.default_timeout = 60000ms;
  rc.seed = 5;
  auto svc = spawn_service(*f.sys, rc);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  std::mt19937 rng{20261126};
  std::uniform_int_distribution<int> count(1, 50);
  std::uniform_int_distribution<int> percent(0, 99);
  constexpr int callers = 1000;
  std::vector<std::vector<std::string>> texts(callers);
  std::vector<std::vector<std::size_t>> bad(callers);
  std::size_t total_inputs = 0;
  for (int i = 0; i < callers; ++i) {
    auto n = count(rng);
    bool has_bad = percent(rng) < 5; // 5 % of callers carry bad inputs
    for (int j = 0; j < n; ++j) {
      auto t = "caller " + std::to_string(i) + " text " + std::to_string(j)
          + " on topic " + std::to_string(percent(rng));
      if (has_bad && (j == n / 2 || (n > 10 && j == n - 1))) {
        t += " [[mock:400]]";
        bad[i].push_back(static_cast<std::size_t>(j));
      }
      texts[i].push_back(std::move(t));
    }
    total_inputs += texts[i].size();
  }
  std::vector<std::future<caf::expected<embed_result>>> futs;
  futs.reserve(callers);
  for (int i = 0; i < callers; ++i)
    futs.push_back(c.embed(make_request(texts[i], 24)));
  std::size_t ok = 0;
  std::size_t rejected = 0;
  for (int i = 0; i < callers; ++i) {
    auto r = futs[i].get();
    INFO("caller " << i);
    if (bad[i].empty()) {
      REQUIRE(r);
      REQUIRE(r->embeddings.size() == texts[i].size());
      for (std::size_t j = 0; j < texts[i].size(); ++j)
        REQUIRE(r->embeddings[j] == hash_embed(texts[i][j], 24));
      ++ok;
    } else {
      REQUIRE(!r);
      CHECK(error_code(r.error()) == errc::invalid_input);
      // "input 7 rejected ..." or "inputs 3, 9 rejected ...": exactly its
      // own bad inputs.
      auto detail = error_detail(r.error());
      std::string want = bad[i].size() == 1 ? "input " : "inputs ";
      for (std::size_t k = 0; k < bad[i].size(); ++k)
        want += (k > 0 ? ", " : "") + std::to_string(bad[i][k]);
      want += " rejected by the upstream";
      CHECK(detail.rfind(want, 0) == 0);
      CHECK(detail.find("rejected by the mock") != std::string::npos);
      ++rejected;
    }
  }
  CHECK(ok + rejected == callers);
  CHECK(rejected > 0);
  auto stats = srv->stats();
  // Faults were really injected, and batching really merged callers: far
  // fewer upstream requests than caller requests despite retries.
  CHECK(stats.fault_count("500") > 0);
  CHECK(stats.fault_count("reset") > 0);
  CHECK(stats.status_count(400) > 0);
  CHECK(stats.inputs >= total_inputs - 200);
  // Vectors travel base64-encoded upstream by default; callers got floats.
  CHECK(stats.base64_requests > 0);
  CHECK(stats.base64_requests
        == stats.embedding_requests - stats.status_count(400));
  WARN("upstream requests: " << stats.embedding_requests << " for " << callers
                             << " callers / " << total_inputs << " inputs");
}

TEST_CASE("batching: an upstream that refuses batches as too many tokens "
          "makes the pool send smaller ones, every caller is served") {
  system_fixture f;
  mock::mock_options mo;
  mo.max_tokens_per_request = 120;
  mo.latency = *mock::parse_latency_spec("fixed:5").value;
  auto srv = start_mock(mo);
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = srv->base_url();
  up.connections = 2;
  rc.upstreams.push_back(up);
  rc.retry.budget_ratio = 1.0;
  rc.seed = 9;
  auto svc = spawn_service(*f.sys, rc);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  // 300 single-text callers (about 10 tokens each) queue up behind two
  // connections and would be merged far beyond 120 tokens.
  std::vector<std::string> texts;
  std::vector<std::future<caf::expected<embed_result>>> futs;
  for (int i = 0; i < 300; ++i) {
    texts.push_back("a sentence of roughly ten tokens, number "
                    + std::to_string(i));
    futs.push_back(c.embed(make_request({texts.back()})));
  }
  // One caller whose own 30 texts are too many tokens for one request.
  std::vector<std::string> big;
  for (int i = 0; i < 30; ++i)
    big.push_back("one of thirty longer inputs of a single caller, number "
                  + std::to_string(i));
  auto big_fut = c.embed(make_request(big));
  for (std::size_t i = 0; i < futs.size(); ++i) {
    auto r = futs[i].get();
    REQUIRE(r);
    REQUIRE(r->embeddings.at(0) == hash_embed(texts[i], 16));
  }
  auto r = big_fut.get();
  REQUIRE(r);
  REQUIRE(r->embeddings.size() == big.size());
  for (std::size_t i = 0; i < big.size(); ++i)
    CHECK(r->embeddings[i] == hash_embed(big[i], 16));
  auto stats = srv->stats();
  CHECK(stats.status_count(400) > 0); // it did refuse some
  CHECK(stats.status_count(200) > 0);
}
