// The pacer (pacer.hpp) and the adaptive concurrency limit
// (concurrency_limit.hpp) on their own, in virtual time: every step passes
// its `now`, nothing sleeps.
#include "concurrency_limit.hpp"
#include "pacer.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

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

TEST_CASE("a charged call (the health check's) takes a request and its tokens "
          "from the buckets") {
  pacer p{pacer_config{true, 2, 60}, 0}; // 2 requests, 60 tokens a minute
  p.charge(10, 0);
  CHECK(p.tokens_available(0) == 50);
  CHECK(p.wait_ns(1, 0) == 0);
  p.on_send(1, 10, 0);
  // Both requests of the minute are used: the next waits 30 s.
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

TEST_CASE("another client's use of the key lowers the refill rate") {
  // The upstream: 60,000 tokens per minute (1,000 per second). Every 100 ms
  // the pacer sends 60 tokens, answered at once with what remains; another
  // client takes `other` tokens per 100 ms, seen only in that remaining.
  pacer p{pacer_config{}, 0};
  double upstream = 20'000.0;
  uint64_t seq = 0;
  int64_t now = 0;
  auto step = [&](double other) {
    now += 100 * ms;
    upstream += 100.0 - other - 60.0;
    p.on_send(++seq, 60, now);
    p.on_answer(seq, tokens_hint(60'000, static_cast<int64_t>(upstream)), false,
                0, now);
  };
  SECTION("measured over the last seconds, and forgotten when it stops") {
    for (int i = 0; i < 30; ++i)
      step(25.0);
    // 250 tokens per second: 15,000 per minute.
    CHECK(p.tokens().others() == Approx(15'000.0).epsilon(0.02));
    CHECK(p.tokens().rate() == Approx(45'000.0).epsilon(0.01));
    // A wait for tokens counts the rate left to this pacer, and leaves a
    // second of the other client's use in the bucket: 450 tokens and 250
    // at 45,000 per minute, 0.93 s.
    auto level = p.tokens().level();
    CHECK(p.tokens().reserve() == Approx(250.0).epsilon(0.02));
    CHECK(p.wait_ns(static_cast<int64_t>(level) + 450, now)
          == Approx(933 * ms).epsilon(0.03));
    CHECK(p.tokens_available(now)
          == Approx(level - p.tokens().reserve()).margin(1.0));
    for (int i = 0; i < 60; ++i)
      step(0.0);
    CHECK(p.tokens().others() == Approx(0.0).margin(100.0));
  }
  SECTION("a refused call is not counted as the pacer's own use") {
    for (int i = 0; i < 60; ++i)
      step(25.0);
    // Refused calls: the upstream takes nothing for them, so the pacer's
    // own count must not grow either (or the others' rate would read
    // lower by what they would have taken).
    for (int i = 0; i < 5; ++i) {
      now += 100 * ms;
      upstream += 100.0 - 25.0;
      p.on_send(++seq, 600, now);
      p.on_answer(seq, tokens_hint(60'000, static_cast<int64_t>(upstream)),
                  true, 0, now);
    }
    CHECK(p.tokens().others() == Approx(15'000.0).epsilon(0.02));
  }
  SECTION("not while the bucket is over half full (the refill may be lost)") {
    upstream = 40'000.0;
    for (int i = 0; i < 30; ++i)
      step(25.0);
    CHECK(p.tokens().others() == 0.0);
  }
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

/// A limit and the calls sent to it, numbered in send order.
struct driven {
  concurrency_limit limit;
  uint64_t sent = 0;

  driven(uint32_t min, uint32_t max)
      : limit(concurrency_limit_config{min, max, 0.5, 0.8, 1.5, 2 * ms}) {}

  uint64_t send() {
    return ++sent;
  }

  void sample(limit_sample kind, uint64_t seq, int64_t latency = 10 * ms,
              uint32_t in_flight = 8, int64_t work = 1) {
    limit.on_sample(kind, seq, latency, in_flight, sent, work);
  }

  /// `n` calls sent one after another, each successful after `latency`
  /// carrying `work` tokens.
  void successes(int n, int64_t latency, uint32_t in_flight = 8,
                 int64_t work = 1) {
    for (int i = 0; i < n; ++i)
      sample(limit_sample::success, send(), latency, in_flight, work);
  }

  uint32_t current() const {
    return limit.current();
  }
};

} // namespace

TEST_CASE("the limit starts at the maximum and halves on a 429") {
  driven l{1, 8};
  CHECK(l.current() == 8);
  l.sample(limit_sample::overload, l.send());
  CHECK(l.current() == 4);
}

TEST_CASE("at most one decrease per round trip") {
  driven l{1, 16};
  // Eight calls sent before any answer all come back 429: they saw the
  // same limit.
  std::vector<uint64_t> calls;
  for (int i = 0; i < 8; ++i)
    calls.push_back(l.send());
  for (auto seq : calls)
    l.sample(limit_sample::overload, seq);
  CHECK(l.current() == 8);
  // A call sent after that decrease counts again.
  l.sample(limit_sample::overload, l.send());
  CHECK(l.current() == 4);
}

TEST_CASE("the limit stays within its bounds") {
  driven l{3, 8};
  for (int i = 0; i < 10; ++i)
    l.sample(limit_sample::overload, l.send());
  CHECK(l.current() == 3);
  l.successes(2000, 10 * ms);
  CHECK(l.current() == 8);
  // Bounds given the wrong way round still make a valid limit.
  concurrency_limit odd{concurrency_limit_config{9, 4, 0.5, 0.8, 1.5, 2 * ms}};
  CHECK(odd.current() == 4);
}

TEST_CASE("the limit grows back only while it is used") {
  driven l{1, 8};
  l.sample(limit_sample::overload, l.send());
  l.sample(limit_sample::overload, l.send());
  REQUIRE(l.current() == 2);
  // Nothing else in flight: the limit is not what holds calls back.
  l.successes(100, 10 * ms, 0);
  CHECK(l.current() == 2);
  // Busy: +1/limit per call, about +1 per round trip (limit calls).
  l.successes(2 + 3 + 4, 10 * ms);
  CHECK(l.current() >= 4);
  CHECK(l.current() <= 5);
  l.successes(40, 10 * ms);
  CHECK(l.current() == 8);
}

TEST_CASE("ignored outcomes move nothing") {
  driven l{1, 8};
  l.sample(limit_sample::ignored, l.send(), 5 * sec);
  CHECK(l.current() == 8);
  CHECK(l.limit.baseline_ns() == 0);
}

TEST_CASE("latency doubling lowers the limit, its return raises it again") {
  driven l{1, 8};
  l.successes(200, 50 * ms);
  REQUIRE(l.current() == 8);
  REQUIRE(l.limit.baseline_ns() == 50 * ms);
  // The upstream takes twice as long: within a few dozen calls the limit
  // is down.
  l.successes(40, 100 * ms);
  CHECK(l.current() <= 4);
  // Back to normal: the recent latency falls below the tolerance and the
  // limit climbs back while it is used.
  l.successes(200, 50 * ms);
  CHECK(l.current() == 8);
}

TEST_CASE("calls that take longer because batching made them larger are not "
          "congestion") {
  driven l{1, 8};
  // An upstream whose time grows with the call: 1,000 tokens take 10 ms...
  l.successes(200, 10 * ms, 8, 1000);
  REQUIRE(l.current() == 8);
  // ...and 4,000 (more inputs merged into each call) 40 ms: no slower for
  // their size, the limit stays.
  l.successes(200, 40 * ms, 8, 4000);
  CHECK(l.current() == 8);
  CHECK(l.limit.baseline_ns(4000) == 40 * ms);
  // The same 4,000 tokens in twice the time: congestion.
  l.successes(40, 80 * ms, 8, 4000);
  CHECK(l.current() <= 4);
  // Back to their usual time: the limit climbs back.
  l.successes(300, 40 * ms, 8, 4000);
  CHECK(l.current() == 8);
}

TEST_CASE("against an upstream whose time does not grow with the call, "
          "larger and smaller calls alike are no congestion") {
  driven l{1, 8};
  // Calls of 500 to 8,000 tokens, all 20 ms, in changing mixes (batches
  // grow and shrink with the load).
  for (int round = 0; round < 20; ++round) {
    l.successes(30, 20 * ms, 8, 8000);
    l.successes(30, 20 * ms, 8, 500);
    l.successes(10, 20 * ms, 8, 2000);
  }
  CHECK(l.current() == 8);
  // And a slower upstream is still seen, whatever the sizes.
  for (int i = 0; i < 15; ++i) {
    l.successes(1, 40 * ms, 8, 8000);
    l.successes(1, 40 * ms, 8, 500);
  }
  CHECK(l.current() <= 4);
}

TEST_CASE("a sub-millisecond upstream's jitter is not congestion") {
  driven l{1, 8};
  // 0.2 ms, then 0.6 ms: three times the baseline, but 0.4 ms is noise.
  l.successes(100, 200'000);
  l.successes(100, 600'000);
  CHECK(l.current() == 8);
}

TEST_CASE("a stall that delays the calls in flight once is not congestion") {
  driven l{1, 8};
  l.successes(200, 300'000);
  REQUIRE(l.limit.baseline_ns() == 300'000);
  // This process stalls for 30 ms: the eight calls in flight all come back
  // a hundred times slower than usual...
  for (int round = 0; round < 3; ++round) {
    std::vector<uint64_t> caught;
    for (int i = 0; i < 8; ++i)
      caught.push_back(l.send());
    for (auto seq : caught)
      l.sample(limit_sample::success, seq, 30 * ms);
    CHECK(l.current() == 8);
    // ...and the calls sent after it are as fast as before.
    for (int i = 0; i < 50; ++i) {
      l.successes(1, 300'000);
      CHECK(l.current() == 8);
    }
  }
  CHECK(l.limit.decreases_latency() == 0);
  // A rise that lasts is still congestion: the calls sent after it began
  // are slow too.
  l.successes(20, 30 * ms);
  CHECK(l.current() <= 4);
  CHECK(l.limit.decreases_latency() >= 2);
  CHECK(l.limit.decreases_overload() == 0);
}

TEST_CASE("noise within the tolerance does not lower the limit") {
  driven l{1, 8};
  for (int i = 0; i < 1000; ++i)
    l.successes(1, (i % 3 == 0 ? 65 : 45) * ms);
  CHECK(l.current() == 8);
}
