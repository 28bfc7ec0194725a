// Every public message of protocol/ has an inspect() that covers every field
// (round trip with distinct non-default values, and members counted against
// the fields inspect() passes): see tests/support/inspect_check.hpp.
#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "support/inspect_check.hpp"

#include <catch2/catch.hpp>

using namespace embedrt;
using namespace std::chrono_literals;
using embedrt::test::check_inspect_covers_every_field;

namespace {

log_histogram histogram_of(std::initializer_list<int64_t> values) {
  log_histogram h;
  for (auto v : values)
    h.record(v);
  return h;
}

upstream_health sample_upstream_health(int32_t base) {
  return {"up-" + std::to_string(base),
          "https://u" + std::to_string(base) + ".example/v1",
          "half_open",
          base + 1,
          base + 2,
          base + 3,
          base + 4,
          base + 5,
          base + 6,
          base + 7,
          base + 8,
          base + 9,
          base + 10,
          base + 11,
          base + 12,
          base + 13,
          base + 14,
          base + 15,
          base + 16};
}

upstream_metrics sample_upstream_metrics() {
  return {"up-a",
          "unresponsive",
          1,
          2,
          3,
          4,
          5,
          6,
          7,
          8,
          9,
          10,
          11,
          12,
          13,
          breaker_half_open,
          {{breaker_open, breaker_half_open, 14}},
          {{"error", "rate_limited", 15}},
          histogram_of({16, 17}),
          histogram_of({18000}),
          histogram_of({19, 20, 21}),
          22,
          23,
          24,
          25,
          26,
          27,
          28,
          29};
}

} // namespace

TEST_CASE("inspect covers every field of the public messages",
          "[messages][inspect]") {
  SECTION("embed_request") {
    check_inspect_covers_every_field(embed_request{
        "model-x", {"a", "b"}, {{17, 4}}, 256, "user-7", 1500ms, "req-9"});
  }
  SECTION("token_usage") {
    check_inspect_covers_every_field(token_usage{11, 23, 5});
  }
  SECTION("embed_result") {
    check_inspect_covers_every_field(embed_result{
        "model-y", {{0.5f, -1.25f}, {3.0f, 4.5f}}, {7, 9}, "up-b", "req-3"});
  }
  SECTION("upstream_health") {
    check_inspect_covers_every_field(sample_upstream_health(10));
  }
  SECTION("health_report") {
    check_inspect_covers_every_field(health_report{
        true, {sample_upstream_health(20), sample_upstream_health(40)}});
  }
}

TEST_CASE("inspect covers every field of the metrics messages",
          "[metrics][inspect]") {
  SECTION("log_histogram") {
    check_inspect_covers_every_field(histogram_of({3, 700, 70000}));
  }
  SECTION("request_counter") {
    check_inspect_covers_every_field(request_counter{
        "up-a", "model-z", "error", "deadline_exceeded", 3, 4, 5});
  }
  SECTION("request_latency") {
    check_inspect_covers_every_field(
        request_latency{"up-a", "model-z", "ok", histogram_of({1000, 2000})});
  }
  SECTION("upstream_call_counter") {
    check_inspect_covers_every_field(
        upstream_call_counter{"error", "auth_failed", 6});
  }
  SECTION("breaker_transition_counter") {
    check_inspect_covers_every_field(
        breaker_transition_counter{breaker_open, breaker_half_open, 8});
  }
  SECTION("upstream_metrics") {
    check_inspect_covers_every_field(sample_upstream_metrics());
  }
  SECTION("process_metrics") {
    check_inspect_covers_every_field(
        process_metrics{1.5, 4096, 8192, 12, 1700000000.25});
  }
  SECTION("metrics_snapshot") {
    check_inspect_covers_every_field(metrics_snapshot{
        false,
        17,
        {request_counter{"up-a", "m", "ok", "none", 1, 2, 3}},
        {request_latency{"up-a", "m", "ok", histogram_of({5})}},
        {sample_upstream_metrics()},
        process_metrics{2.5, 1, 2, 3, 4.0},
        cache_metrics{true, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}});
  }
  SECTION("cache_metrics") {
    check_inspect_covers_every_field(
        cache_metrics{true, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31});
  }
  SECTION("request_record") {
    check_inspect_covers_every_field(
        request_record{"up-a", "model-q", 4, 12, 345678, 2});
  }
  SECTION("upstream_call_record") {
    check_inspect_covers_every_field(upstream_call_record{
        "up-b", true, 5, 1234, 6, {70, 80}, 9, 10, 11, 12});
  }
  SECTION("breaker_transition_event") {
    check_inspect_covers_every_field(
        breaker_transition_event{"up-c", breaker_half_open, breaker_open});
  }
}
