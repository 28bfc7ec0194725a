// The breaker's opening rules with their default settings, on the state
// machine alone (no actors, no clock): random failures at 20 % (and the
// chaos test's mix, 21 %) never open it, while an upstream that dies opens it
// after 5 failures, whether it was healthy before or never answered.
#include "breaker.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;

namespace {

constexpr auto F = call_verdict::failure;
constexpr auto S = call_verdict::success;

/// Feeds `calls` verdicts, each a failure with probability `rate` (a seeded
/// generator: the same sequence on every run); returns the number of
/// openings (after each one the breaker is closed again by a probe).
int openings(const breaker_config& cfg, double rate, int calls, uint32_t seed) {
  circuit_breaker cb{cfg, seed};
  std::mt19937 rng{seed};
  std::bernoulli_distribution fails{rate};
  int opened = 0;
  for (int i = 0; i < calls; ++i) {
    auto t = cb.record(fails(rng) ? F : S, 0ms, "x");
    if (t && t->to == breaker_state::open) {
      ++opened;
      REQUIRE(cb.open_time_over());
      REQUIRE(cb.record(S, 0ms, ""));
      REQUIRE(cb.state() == breaker_state::closed);
    }
  }
  return opened;
}

} // namespace

TEST_CASE("breaker defaults: 20 % random failures over 1,000,000 calls never "
          "open the breaker") {
  breaker_config defaults;
  for (uint32_t seed : {1u, 2u, 3u}) {
    INFO("seed " << seed);
    CHECK(openings(defaults, 0.20, 1'000'000, seed) == 0);
    CHECK(openings(defaults, 0.21, 1'000'000, seed) == 0);
  }
  // The same sequences open it again and again with a plain count of 5 and
  // the rate from 20 calls on (the defaults before the chaos test).
  auto plain = defaults;
  plain.random_run_odds = 0.0;
  plain.min_calls = 20;
  CHECK(openings(plain, 0.20, 1'000'000, 1) > 100);
}

TEST_CASE("breaker defaults: the run that opens is 5 on a healthy upstream, "
          "13 at 20 % random failures, 18 at 30 %") {
  breaker_config defaults;
  auto run_after = [&](int failures_per_10) {
    circuit_breaker cb{defaults, 1};
    // 100 calls, `failures_per_10` of every 10 failed, each pattern ending
    // in a success.
    for (int i = 0; i < 100; ++i)
      REQUIRE(!cb.record(i % 10 < failures_per_10 ? F : S, 0ms, "x"));
    return cb.run_to_open();
  };
  CHECK(run_after(0) == 5);
  CHECK(run_after(2) == 13);
  CHECK(run_after(3) == 18);
}

TEST_CASE("breaker defaults: an upstream that dies opens it after 5 "
          "failures, healthy before or never answering") {
  breaker_config defaults;
  SECTION("healthy for 1,000 calls, then every call fails") {
    circuit_breaker cb{defaults, 1};
    for (int i = 0; i < 1000; ++i)
      REQUIRE(!cb.record(S, 0ms, ""));
    for (int i = 0; i < 4; ++i)
      REQUIRE(!cb.record(F, 0ms, "x"));
    auto t = cb.record(F, 0ms, "x");
    REQUIRE(t);
    CHECK(t->to == breaker_state::open);
    CHECK(t->reason.find("5 consecutive failures") != std::string::npos);
  }
  SECTION("no call ever answered") {
    circuit_breaker cb{defaults, 1};
    for (int i = 0; i < 4; ++i)
      REQUIRE(!cb.record(F, 0ms, "x"));
    auto t = cb.record(F, 0ms, "x");
    REQUIRE(t);
    CHECK(t->to == breaker_state::open);
  }
  SECTION("20 % random failures, then every call fails: 13 in a row") {
    circuit_breaker cb{defaults, 1};
    for (int i = 0; i < 100; ++i)
      REQUIRE(!cb.record(i % 5 == 0 ? F : S, 0ms, "x"));
    for (int i = 0; i < 12; ++i)
      REQUIRE(!cb.record(F, 0ms, "x"));
    auto t = cb.record(F, 0ms, "x");
    REQUIRE(t);
    CHECK(t->reason.find("13 consecutive failures") != std::string::npos);
  }
}

TEST_CASE("breaker defaults: half of the calls failing at random opens it "
          "on the rate once 50 calls are in the window") {
  breaker_config defaults;
  circuit_breaker cb{defaults, 1};
  // S F S F ...: never more than one failure in a row.
  for (int i = 0; i < 49; ++i)
    REQUIRE(!cb.record(i % 2 == 0 ? S : F, 0ms, "x"));
  CHECK(cb.window_calls() == 49);
  auto t = cb.record(F, 0ms, "x"); // 25 of 50
  REQUIRE(t);
  CHECK(t->to == breaker_state::open);
  CHECK(t->reason.find("failure rate 25/50") != std::string::npos);
}
