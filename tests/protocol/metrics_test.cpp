// The log-linear histogram and the Prometheus text renderer (protocol/).
#include "../tools/prometheus_checker.hpp"
#include "embedrt/protocol/histogram.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "embedrt/protocol/type_ids.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/message.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;

namespace {

uint64_t exact_rank(std::vector<uint64_t> v, double p) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(
      std::ceil(p * static_cast<double>(v.size()) / 100.0 - 1e-9));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

metrics_snapshot sample_snapshot() {
  metrics_snapshot s;
  s.requests_in_flight = 3;
  s.requests.push_back({"a", "m\"1\\x\ny", "ok", "none", 10, 25, 2});
  s.requests.push_back({"a", "m2", "error", "upstream_error", 4, 4, 6});
  request_latency l;
  l.upstream = "a";
  l.model = "m2";
  l.outcome = "ok";
  for (int i = 1; i <= 1000; ++i)
    l.latency_ns.record(i * 1000 * 1000); // 1 ms .. 1 s
  s.latencies.push_back(l);
  upstream_metrics u;
  u.name = "a";
  u.state = "up";
  u.connections_open = 8;
  u.connections_idle = 6;
  u.connections_busy = 2;
  u.queue_depth = 5;
  u.connects = 8;
  u.limit_decreases_overload = 5;
  u.pacing_others_tpm = 15'000;
  u.pacing_others_rpm = 600;
  u.limit_decreases_latency = 2;
  u.reuses = 100;
  u.ratelimit_remaining_requests = 499;
  u.breaker_state = breaker_open;
  u.breaker_transitions.push_back({breaker_closed, breaker_open, 1});
  u.calls.push_back({"ok", "none", 108});
  u.batch_inputs.record(1, 50);
  u.batch_inputs.record(7, 3);
  u.batch_inputs.record(2048);
  u.upstream_latency_ns.record(250'000);
  u.queue_wait_ns.record(0);
  s.upstreams.push_back(u);
  upstream_metrics b;
  b.name = "b";
  b.state = "down";
  s.upstreams.push_back(b);
  s.process.cpu_seconds = 1.25;
  s.process.resident_bytes = 1 << 20;
  s.process.threads = 7;
  s.process.start_time_seconds = 1.7e9;
  return s;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos
      || text.rfind(line + "\n", 0) == 0;
}

} // namespace

TEST_CASE("histogram buckets bound every value within 12.5 %",
          "[metrics][histogram]") {
  CHECK(log_histogram::bucket_of(0) == 0);
  CHECK(log_histogram::upper_bound(0) == 0);
  for (uint64_t v = 1; v <= 8; ++v)
    CHECK(log_histogram::upper_bound(log_histogram::bucket_of(v)) == v);
  std::mt19937_64 rng{7};
  std::vector<uint64_t> values;
  for (uint64_t v = 1; v < 100000; ++v)
    values.push_back(v);
  for (int i = 0; i < 100000; ++i)
    values.push_back(1 + ((rng() >> 1) >> (rng() % 62)));
  values.push_back(uint64_t{1} << 62);
  for (auto v : values) {
    auto b = log_histogram::bucket_of(v);
    auto hi = log_histogram::upper_bound(b);
    auto lo = log_histogram::upper_bound(b - 1);
    REQUIRE(lo < v);
    REQUIRE(v <= hi);
    // Width relative to the lower bound: at most 1/8 beyond the exact ones.
    if (v > 8)
      REQUIRE(static_cast<double>(hi - lo) <= static_cast<double>(lo) / 8.0);
  }
  // Powers of two and 1.5 x powers of two are bucket bounds (the `le`
  // values of the exposition).
  for (uint32_t k = 2; k < 62; ++k) {
    uint64_t p = uint64_t{1} << k;
    CHECK(log_histogram::upper_bound(log_histogram::bucket_of(p)) == p);
    uint64_t q = uint64_t{3} << (k - 1);
    CHECK(log_histogram::upper_bound(log_histogram::bucket_of(q)) == q);
  }
}

TEST_CASE("histogram percentiles are within one bucket of the exact ones",
          "[metrics][histogram]") {
  std::mt19937_64 rng{42};
  std::lognormal_distribution<double> dist{std::log(2e6), 0.8}; // ~2 ms
  for (std::size_t n : {1u, 2u, 10u, 999u, 1000u, 12345u}) {
    log_histogram h;
    std::vector<uint64_t> v;
    for (std::size_t i = 0; i < n; ++i) {
      auto x = static_cast<uint64_t>(dist(rng));
      v.push_back(x);
      h.record(static_cast<int64_t>(x));
    }
    CHECK(h.count == n);
    CHECK(h.max == *std::max_element(v.begin(), v.end()));
    for (double p : {50.0, 95.0, 99.0, 99.9, 100.0}) {
      auto truth = exact_rank(v, p);
      auto got = h.percentile(p);
      INFO("n=" << n << " p=" << p << " truth=" << truth << " got=" << got);
      // Same bucket, never below the truth.
      CHECK(log_histogram::bucket_of(got) == log_histogram::bucket_of(truth));
      CHECK(got >= truth);
    }
  }
  CHECK(log_histogram{}.percentile(99) == 0);
}

TEST_CASE("histogram merge and count_at_most", "[metrics][histogram]") {
  log_histogram a;
  log_histogram b;
  for (int i = 0; i < 100; ++i)
    a.record(i);
  for (int i = 100; i < 300; ++i)
    b.record(i);
  b.record(-5); // counts as 0
  a.merge(b);
  CHECK(a.count == 301);
  CHECK(a.max == 299);
  CHECK(a.sum == 299 * 300 / 2);
  CHECK(a.count_at_most(0) == 2);
  CHECK(a.count_at_most(8) == 10);
  CHECK(a.count_at_most(128) == 130);
  CHECK(a.count_at_most(192) == 194);
  CHECK(a.count_at_most(1000) == 301);
}

TEST_CASE("render_prometheus writes every family with exact values",
          "[metrics][prometheus]") {
  auto text = render_prometheus(sample_snapshot());
  // Label values are escaped (quote, backslash, newline).
  CHECK(has_line(
      text,
      R"(embedrt_requests_total{upstream="a",model="m\"1\\x\ny",outcome="ok",error="none"} 10)"));
  CHECK(has_line(
      text,
      R"(embedrt_texts_total{upstream="a",model="m2",outcome="error",error="upstream_error"} 4)"));
  CHECK(has_line(text, R"(embedrt_retries_total{upstream="a"} 8)"));
  CHECK(has_line(text, "embedrt_requests_in_flight 3"));
  // 1 ms .. 1 s in 1 ms steps: 500 values <= 0.5 s -- but 0.5 s is not a
  // bound; 2^29 ns = 0.536870912 s is, with 536 values below it.
  CHECK(has_line(
      text,
      R"(embedrt_request_duration_seconds_bucket{upstream="a",model="m2",outcome="ok",le="0.536870912"} 536)"));
  CHECK(has_line(
      text,
      R"(embedrt_request_duration_seconds_bucket{upstream="a",model="m2",outcome="ok",le="+Inf"} 1000)"));
  CHECK(has_line(
      text,
      R"(embedrt_request_duration_seconds_count{upstream="a",model="m2",outcome="ok"} 1000)"));
  CHECK(has_line(
      text,
      R"(embedrt_request_duration_seconds_sum{upstream="a",model="m2",outcome="ok"} 500.5)"));
  CHECK(
      has_line(text, R"(embedrt_batch_inputs_bucket{upstream="a",le="1"} 50)"));
  CHECK(
      has_line(text, R"(embedrt_batch_inputs_bucket{upstream="a",le="6"} 50)"));
  CHECK(
      has_line(text, R"(embedrt_batch_inputs_bucket{upstream="a",le="8"} 53)"));
  CHECK(has_line(text,
                 R"(embedrt_batch_inputs_bucket{upstream="a",le="2048"} 54)"));
  CHECK(has_line(text, R"(embedrt_connections_busy{upstream="a"} 2)"));
  CHECK(has_line(text, R"(embedrt_upstream_up{upstream="b"} 0)"));
  CHECK(has_line(text, R"(embedrt_breaker_state{upstream="a"} 1)"));
  CHECK(has_line(text, R"(embedrt_breaker_state{upstream="b"} 0)"));
  CHECK(has_line(
      text,
      R"(embedrt_breaker_transitions_total{upstream="a",from="closed",to="open"} 1)"));
  CHECK(has_line(
      text,
      R"(embedrt_breaker_transitions_total{upstream="b",from="half_open",to="closed"} 0)"));
  CHECK(has_line(
      text,
      R"(embedrt_concurrency_limit_decreases_total{upstream="a",reason="overload"} 5)"));
  CHECK(has_line(
      text,
      R"(embedrt_concurrency_limit_decreases_total{upstream="a",reason="latency"} 2)"));
  CHECK(has_line(
      text,
      R"(embedrt_concurrency_limit_decreases_total{upstream="b",reason="latency"} 0)"));
  CHECK(has_line(text,
                 R"(embedrt_ratelimit_remaining_requests{upstream="a"} 499)"));
  CHECK(has_line(
      text, R"(embedrt_pacing_others_tokens_per_minute{upstream="a"} 15000)"));
  CHECK(has_line(text,
                 R"(embedrt_pacing_others_tokens_per_minute{upstream="b"} 0)"));
  CHECK(has_line(
      text, R"(embedrt_pacing_others_requests_per_minute{upstream="a"} 600)"));
  CHECK(has_line(
      text, R"(embedrt_pacing_others_requests_per_minute{upstream="b"} 0)"));
  CHECK(text.find("embedrt_ratelimit_remaining_tokens{") == std::string::npos);
  CHECK(has_line(text, "process_cpu_seconds_total 1.25"));
  CHECK(has_line(text, "embedrt_process_threads 7"));
  CHECK(text.find("# TYPE embedrt_request_duration_seconds histogram\n")
        != std::string::npos);
}

TEST_CASE("the Prometheus client's parser accepts the exposition",
          "[metrics][prometheus]") {
  auto snap = sample_snapshot();
  auto [rc, out] = run_checker(render_prometheus(snap));
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(
      out.find(
          R"(embedrt_requests_total{error="none",model="m\"1\\x\ny",outcome="ok",upstream="a"} 10.0)")
      != std::string::npos);
  // An empty snapshot (metrics off, no upstream) is valid too.
  auto [rc2, out2] = run_checker(render_prometheus(metrics_snapshot{}));
  INFO(out2);
  CHECK(rc2 == 0);
  // The checker is not a rubber stamp: a broken exposition fails.
  auto [rc3, out3] = run_checker("# TYPE x counter\nx{a=\"1} 1\n");
  CHECK(rc3 != 0);
}

TEST_CASE("metrics_snapshot round-trips through CAF's serializers",
          "[metrics]") {
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.set("scheduler.max-threads", 1);
  caf::actor_system sys{cfg};
  auto snap = sample_snapshot();
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto msg = caf::make_message(snap);
  REQUIRE_FALSE(sink(msg));
  caf::message back;
  caf::binary_deserializer source{sys, buf};
  REQUIRE_FALSE(source(back));
  REQUIRE(back.match_elements<metrics_snapshot>());
  const auto& y = back.get_as<metrics_snapshot>(0);
  // The rendering covers every field: equal text means equal snapshots.
  CHECK(render_prometheus(y) == render_prometheus(snap));
  auto all = y.all_request_latencies();
  CHECK(all.count == 1000);
  CHECK(all.percentile(50) >= 500'000'000);
}
