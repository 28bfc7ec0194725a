// The pacer against the built-in upstream's rate limiter (the mock's token
// buckets, as OpenAI enforces its limits, with its x-ratelimit-* headers
// parsed as the connection actor parses them), in virtual time: a dispatcher
// with 8 connections and 200 ms of latency offered 3 x the allowed tokens
// per minute for a minute. With pacing it gets the allowed tokens without a
// single 429; without, a large share of its requests are refused. On a key
// that another client uses too, it leaves that client its share.
#include "embedrt/protocol/headers.hpp"
#include "mock/rate_limiter.hpp"
#include "pacer.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace embedrt;
using namespace embedrt::detail;

namespace {

constexpr int64_t ms = 1'000'000;
constexpr int64_t sec = 1000 * ms;

struct in_flight {
  uint64_t seq = 0;
  int64_t tokens = 0;
  int64_t sent = 0;
  bool admitted = false;
  bool limited = false;
  int64_t retry_after_ns = 0;
  rate_hint hint;
};

struct outcome {
  int64_t accepted_tokens = 0;
  int64_t requests = 0;
  int64_t refused = 0;
  /// Another client of the same key (`run`'s `other_per_s`).
  int64_t other_accepted_tokens = 0;
  int64_t other_requests = 0;
  int64_t other_refused = 0;
};

/// The shape of one simulated minute.
struct setting {
  int64_t rpm = 0;
  int64_t tpm = 0;
  int64_t call_tokens = 0;
  /// Tokens per second another client of the same key sends, in one call
  /// every 100 ms that is never retried (0: none).
  int64_t other_per_s = 0;
};

mock::rate_limiter::clock::time_point at(int64_t ns) {
  return mock::rate_limiter::clock::time_point{std::chrono::nanoseconds{ns}};
}

/// The headers the limiter sends, read back as a response's hints.
rate_hint read_headers(const mock::rate_limiter& lim) {
  std::vector<std::pair<std::string, std::string>> headers;
  lim.headers([&](std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
  });
  auto hints = parse_response_hints(
      [&](std::string_view name) -> std::optional<std::string_view> {
        for (auto& [k, v] : headers)
          if (k == name)
            return std::string_view{v};
        return std::nullopt;
      });
  const auto& rl = hints.rate_limit;
  rate_hint h;
  h.limit_requests = rl.limit_requests.value_or(-1);
  h.limit_tokens = rl.limit_tokens.value_or(-1);
  h.remaining_requests = rl.remaining_requests.value_or(-1);
  h.remaining_tokens = rl.remaining_tokens.value_or(-1);
  h.reset_requests_ns = rl.reset_requests ? rl.reset_requests->count() : -1;
  h.reset_tokens_ns = rl.reset_tokens ? rl.reset_tokens->count() : -1;
  return h;
}

/// One simulated minute in 1 ms steps: calls of `call_tokens` arrive at
/// 3 x the tpm; 8 connections; the upstream admits a call half-way through
/// its 200 ms and answers at the end. A refused call is queued again at the
/// front after the upstream's retry hint.
outcome run(bool pacing, const setting& set) {
  constexpr int64_t latency = 200 * ms;
  constexpr uint32_t connections = 8;
  const auto tpm = set.tpm;
  const auto call_tokens = set.call_tokens;
  mock::rate_limiter upstream{set.rpm, tpm, at(0)};
  std::optional<pacer> pace;
  if (pacing)
    pace.emplace(pacer_config{}, 0);
  std::deque<int64_t> queue; // when each waiting call may go (ns)
  std::vector<in_flight> flying;
  outcome out;
  uint64_t seq = 0;
  double arrivals = 0.0;
  auto per_ms = 3.0 * static_cast<double>(tpm) / 60000.0
      / static_cast<double>(call_tokens);
  for (int64_t now = 0; now < 60 * sec; now += ms) {
    for (arrivals += per_ms; arrivals >= 1.0; arrivals -= 1.0)
      queue.push_back(0);
    if (set.other_per_s > 0 && now % (100 * ms) == 50 * ms) {
      ++out.other_requests;
      if (upstream.admit(set.other_per_s / 10, at(now)).allowed)
        out.other_accepted_tokens += set.other_per_s / 10;
      else
        ++out.other_refused;
    }
    for (auto i = flying.begin(); i != flying.end();) {
      if (!i->admitted && now >= i->sent + latency / 2) {
        i->admitted = true;
        auto d = upstream.admit(i->tokens, at(now));
        ++out.requests;
        if (d.allowed) {
          out.accepted_tokens += i->tokens;
        } else {
          ++out.refused;
          i->limited = true;
          i->retry_after_ns = d.retry_after.count();
        }
        i->hint = read_headers(upstream);
      }
      if (now >= i->sent + latency) {
        if (pace)
          pace->on_answer(i->seq, i->hint, i->limited, i->retry_after_ns, now);
        if (i->limited)
          queue.push_front(now + i->retry_after_ns);
        i = flying.erase(i);
      } else {
        ++i;
      }
    }
    while (flying.size() < connections && !queue.empty() && queue.front() <= now
           && (!pace || pace->wait_ns(call_tokens, now) == 0)) {
      queue.pop_front();
      in_flight f;
      f.seq = ++seq;
      f.tokens = call_tokens;
      f.sent = now;
      flying.push_back(f);
      if (pace)
        pace->on_send(seq, call_tokens, now);
    }
  }
  return out;
}

} // namespace

TEST_CASE("paced, 3x the allowed rate gets the allowed tokens without 429s") {
  auto [rpm, tpm, tokens]
      = GENERATE(std::tuple<int64_t, int64_t, int64_t>{100000, 60000, 100},
                 std::tuple<int64_t, int64_t, int64_t>{600, 1000000, 100});
  CAPTURE(rpm, tpm, tokens);
  auto paced = run(true, {rpm, tpm, tokens});
  // Allowed in the minute: the full bucket at the start and a minute of
  // refill, of whichever limit binds.
  auto allowed = std::min(2 * tpm, 2 * rpm * tokens);
  CHECK(paced.accepted_tokens >= allowed * 95 / 100);
  CHECK(paced.refused == 0);
  auto unpaced = run(false, {rpm, tpm, tokens});
  CHECK(unpaced.refused * 10 > unpaced.requests);
}

TEST_CASE("paced on a key another client uses too, its share is left to it") {
  // A quarter of the limit goes to a client the pacer knows nothing of; its
  // use shows only in the remaining tokens of the answers.
  auto [rpm, tpm, tokens]
      = GENERATE(std::tuple<int64_t, int64_t, int64_t>{100000, 60000, 100},
                 std::tuple<int64_t, int64_t, int64_t>{10000, 600000, 6400});
  CAPTURE(rpm, tpm, tokens);
  setting set{rpm, tpm, tokens, tpm / 60 / 4};
  auto paced = run(true, set);
  CAPTURE(paced.requests, paced.refused, paced.accepted_tokens,
          paced.other_requests, paced.other_refused);
  // The minute's tokens (the full bucket and a minute of refill) less the
  // other client's.
  auto left = 2 * set.tpm - paced.other_accepted_tokens;
  CHECK(paced.accepted_tokens >= left * 95 / 100);
  CHECK(paced.refused * 100 <= paced.requests);
  CHECK(paced.other_refused * 100 <= paced.other_requests);
}
