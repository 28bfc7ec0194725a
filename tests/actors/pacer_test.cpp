// The pacer (pacer.hpp) and the adaptive concurrency limit
// (concurrency_limit.hpp) on their own, in virtual time: every step passes
// its `now`, nothing sleeps.
#include "concurrency_limit.hpp"
#include "pacer.hpp"

#include <catch2/catch.hpp>
#include <cstdint>

using namespace embedrt::detail;

namespace {

constexpr int64_t ms = 1'000'000;
constexpr int64_t sec = 1000 * ms;

rate_hint tokens_hint(int64_t limit, int64_t remaining) {
  rate_hint h;
  h.limit_tokens = limit;
  h.remaining_tokens = remaining;
  return h;
}

} // namespace

TEST_CASE("a pacer without limits never holds a call") {
  pacer p{pacer_config{}, 0};
  CHECK_FALSE(p.active());
  p.on_send(1, 1'000'000, 0);
  CHECK(p.wait_ns(1'000'000, 0) == 0);
  CHECK(p.tokens_available(0) > 1'000'000'000);
  CHECK(p.drain_ns(1'000'000, 0) == 0);
}

TEST_CASE("configured tpm: a full bucket, then the refill rate") {
  pacer p{pacer_config{true, 0, 600}, 0}; // 10 tokens per second
  REQUIRE(p.active());
  CHECK(p.wait_ns(600, 0) == 0);
  p.on_send(1, 600, 0);
  CHECK(p.tokens_available(0) == 0);
  // 60 tokens come back in 6 s, continuously.
  CHECK(p.wait_ns(60, 0) == 6 * sec);
  CHECK(p.wait_ns(60, 3 * sec) == 3 * sec);
  CHECK(p.tokens_available(3 * sec) == 30);
  CHECK(p.wait_ns(30, 3 * sec) == 0);
  // A call larger than the capacity waits for a full bucket, not forever.
  CHECK(p.wait_ns(10'000, 3 * sec) == 57 * sec);
}

TEST_CASE("configured rpm paces requests whatever their size") {
  pacer p{pacer_config{true, 2, 0}, 0}; // one request per 30 s
  p.on_send(1, 5, 0);
  p.on_send(2, 5, 0);
  CHECK(p.wait_ns(1, 0) == 30 * sec);
  CHECK(p.wait_ns(1, 30 * sec) == 0);
}

TEST_CASE("the headers set the capacity and what is left") {
  pacer p{pacer_config{}, 0};
  p.on_send(1, 100, 0);
  p.on_answer(1, tokens_hint(1000, 100), false, 0, 0);
  REQUIRE(p.active());
  CHECK(p.tokens().capacity() == 1000.0);
  // 50 tokens short at 1000 per minute: 3 s.
  CHECK(p.wait_ns(150, 0) == 3 * sec);
  // A configured tpm is replaced by the upstream's limit.
  pacer q{pacer_config{true, 0, 50}, 0};
  q.on_send(1, 10, 0);
  q.on_answer(1, tokens_hint(6000, 5990), false, 0, 0);
  CHECK(q.tokens().capacity() == 6000.0);
  CHECK(q.wait_ns(5000, 0) == 0);
}

TEST_CASE("calls sent after the answered one are still to be counted") {
  pacer p{pacer_config{}, 0};
  p.on_send(1, 100, 0);
  p.on_send(2, 200, 0);
  p.on_send(3, 300, 0);
  p.on_answer(2, tokens_hint(6000, 1000), false, 0, 0);
  // The upstream counted calls 1 and 2 when it said 1000; call 3 not yet.
  CHECK(p.tokens().level() == 700.0);
}

TEST_CASE("an answer older than one already applied is stale") {
  pacer p{pacer_config{}, 0};
  p.on_send(1, 100, 0);
  p.on_send(2, 100, 0);
  p.on_answer(2, tokens_hint(6000, 400), false, 0, 0);
  p.on_answer(1, tokens_hint(6000, 5900), false, 0, 0);
  CHECK(p.tokens().level() == 400.0);
  // Nor does an answer for a call it never sent (or already forgot) count.
  p.on_answer(7, tokens_hint(6000, 6000), false, 0, 0);
  CHECK(p.tokens().level() == 400.0);
}

TEST_CASE("a 429 holds every send for its retry-after") {
  pacer p{pacer_config{true, 0, 6000}, 0};
  p.on_send(1, 10, 0);
  p.on_answer(1, rate_hint{}, true, 2 * sec, 0);
  CHECK(p.wait_ns(1, 0) == 2 * sec);
  CHECK(p.drain_ns(1, sec) == sec);
  CHECK(p.wait_ns(1, 2 * sec) == 0);
}

TEST_CASE("without a limit header, none remaining holds until the reset") {
  pacer p{pacer_config{}, 0};
  p.on_send(1, 10, 0);
  rate_hint h;
  h.remaining_requests = 0;
  h.reset_requests_ns = 1500 * ms;
  p.on_answer(1, h, false, 0, 0);
  CHECK(p.wait_ns(1, 0) == 1500 * ms);
  CHECK(p.wait_ns(1, 1500 * ms) == 0);
}

TEST_CASE("headers off: only the configured limits count") {
  pacer p{pacer_config{false, 0, 600}, 0};
  p.on_send(1, 100, 0);
  p.on_answer(1, tokens_hint(60000, 60000), false, 0, 0);
  CHECK(p.tokens().capacity() == 600.0);
  CHECK(p.tokens_available(0) == 500);
}

TEST_CASE("a lost call no longer counts as sent after an answer") {
  pacer p{pacer_config{}, 0};
  p.on_send(1, 100, 0);
  p.on_send(2, 200, 0);
  p.on_lost(2);
  p.on_answer(1, tokens_hint(6000, 1000), false, 0, 0);
  CHECK(p.tokens().level() == 1000.0);
}

TEST_CASE("drain time of the queue ahead at the token rate") {
  pacer p{pacer_config{true, 0, 600}, 0};
  CHECK(p.drain_ns(600, 0) == 0);
  CHECK(p.drain_ns(900, 0) == 30 * sec);
}

// -- the adaptive concurrency limit -----------------------------------------

namespace {

concurrency_limit make_limit(uint32_t min, uint32_t max) {
  concurrency_limit_config cfg;
  cfg.min = min;
  cfg.max = max;
  return concurrency_limit{cfg};
}

/// `n` successful calls of `latency`, each sent when the previous one
/// ended, with `in_flight` in flight; returns the time after them.
int64_t successes(concurrency_limit& l, int n, int64_t latency,
                  uint32_t in_flight, int64_t t) {
  for (int i = 0; i < n; ++i) {
    l.on_sample(limit_sample::success, t, latency, in_flight, t + latency);
    t += latency;
  }
  return t;
}

} // namespace

TEST_CASE("the limit starts at the maximum and halves on a 429") {
  auto l = make_limit(1, 8);
  CHECK(l.current() == 8);
  l.on_sample(limit_sample::overload, 0, 0, 8, 10 * ms);
  CHECK(l.current() == 4);
}

TEST_CASE("at most one decrease per round trip") {
  auto l = make_limit(1, 16);
  // Eight calls sent at 0 all come back 429: they saw the same limit.
  for (int i = 0; i < 8; ++i)
    l.on_sample(limit_sample::overload, 0, 0, 16, 50 * ms + i);
  CHECK(l.current() == 8);
  // A call sent after that decrease counts again.
  l.on_sample(limit_sample::overload, 60 * ms, 0, 8, 100 * ms);
  CHECK(l.current() == 4);
}

TEST_CASE("the limit stays within its bounds") {
  auto l = make_limit(3, 8);
  for (int i = 0; i < 10; ++i)
    l.on_sample(limit_sample::overload, i * sec, 0, 8, i * sec);
  CHECK(l.current() == 3);
  successes(l, 2000, 10 * ms, 8, 20 * sec);
  CHECK(l.current() == 8);
}

TEST_CASE("the limit grows back only while it is used") {
  auto l = make_limit(1, 8);
  l.on_sample(limit_sample::overload, 0, 0, 8, 0);
  l.on_sample(limit_sample::overload, 1, 0, 8, 1);
  REQUIRE(l.current() == 2);
  // Nothing else in flight: the limit is not what holds calls back.
  auto t = successes(l, 100, 10 * ms, 0, 10 * ms);
  CHECK(l.current() == 2);
  // Busy: +1/limit per call, about +1 per round trip (limit calls).
  t = successes(l, 2 + 3 + 4, 10 * ms, 8, t);
  CHECK(l.current() >= 4);
  CHECK(l.current() <= 5);
  successes(l, 40, 10 * ms, 8, t);
  CHECK(l.current() == 8);
}

TEST_CASE("ignored outcomes move nothing") {
  auto l = make_limit(1, 8);
  l.on_sample(limit_sample::ignored, 0, 5 * sec, 8, 5 * sec);
  CHECK(l.current() == 8);
  CHECK(l.baseline_ns() == 0);
}

TEST_CASE("latency doubling lowers the limit; its return raises it again") {
  auto l = make_limit(1, 8);
  auto t = successes(l, 200, 50 * ms, 8, 0);
  REQUIRE(l.current() == 8);
  REQUIRE(l.baseline_ns() == 50 * ms);
  // The upstream takes twice as long: within a few dozen calls the limit
  // is down.
  t = successes(l, 40, 100 * ms, 8, t);
  auto low = l.current();
  CHECK(low <= 4);
  // Back to normal: the recent latency falls below the tolerance and the
  // limit climbs back while it is used.
  successes(l, 200, 50 * ms, 8, t);
  CHECK(l.current() == 8);
}

TEST_CASE("noise within the tolerance does not lower the limit") {
  auto l = make_limit(1, 8);
  int64_t t = 0;
  for (int i = 0; i < 1000; ++i)
    t = successes(l, 1, (i % 3 == 0 ? 65 : 45) * ms, 8, t);
  CHECK(l.current() == 8);
}
