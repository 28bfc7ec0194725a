#include "embedrt/protocol/headers.hpp"
#include "embedrt/protocol/provider.hpp"
#include "mock/mock_server.hpp"
#include "mock/rate_limiter.hpp"
#include "mock_test_client.hpp"
#include "mock_test_util.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

using namespace embedrt;
using namespace embedrt::test;
using embedrt::mock::format_go_duration;
using embedrt::mock::mock_options;
using embedrt::mock::rate_limiter;
using embedrt::mock::token_bucket;
using std::chrono::nanoseconds;

TEST_CASE("format_go_duration matches Go's Duration.String") {
  using namespace std::chrono;
  CHECK(format_go_duration(nanoseconds{0}) == "0s");
  CHECK(format_go_duration(nanoseconds{1}) == "1ns");
  CHECK(format_go_duration(nanoseconds{999}) == "999ns");
  CHECK(format_go_duration(nanoseconds{1500}) == "1.5\xC2\xB5s");
  CHECK(format_go_duration(milliseconds{12}) == "12ms");
  CHECK(format_go_duration(microseconds{1200}) == "1.2ms");
  CHECK(format_go_duration(seconds{1}) == "1s");
  CHECK(format_go_duration(milliseconds{1500}) == "1.5s");
  CHECK(format_go_duration(seconds{59}) == "59s");
  CHECK(format_go_duration(minutes{6}) == "6m0s");
  CHECK(format_go_duration(seconds{61} + milliseconds{1}) == "1m1.001s");
  CHECK(format_go_duration(hours{1}) == "1h0m0s");
  CHECK(format_go_duration(hours{1} + minutes{2} + milliseconds{3500})
        == "1h2m3.5s");
  CHECK(format_go_duration(-milliseconds{5}) == "-5ms");
  // The runtime's parser reads back what the mock writes.
  for (auto d : {nanoseconds{milliseconds{12}}, nanoseconds{seconds{1}},
                 nanoseconds{minutes{6}}, nanoseconds{milliseconds{61001}},
                 nanoseconds{hours{2} + milliseconds{1}}}) {
    auto parsed = parse_duration(format_go_duration(d));
    REQUIRE(parsed);
    CHECK(*parsed == d);
  }
}

TEST_CASE("token buckets refill continuously") {
  using namespace std::chrono;
  auto t0 = token_bucket::clock::time_point{} + hours{1};
  token_bucket b{60, t0}; // one token per second
  CHECK(b.available() == 60.0);
  CHECK(b.time_until_full() == nanoseconds{0});
  b.take(60);
  CHECK(b.time_until(1) == seconds{1});
  CHECK(b.time_until_full() == minutes{1});
  b.refill(t0 + milliseconds{500});
  CHECK(b.available() == Approx(0.5));
  CHECK(b.time_until(1) == milliseconds{500});
  b.refill(t0 + hours{1});
  CHECK(b.available() == 60.0); // capped at the capacity
  b.refill(t0);                 // time never runs backwards
  CHECK(b.available() == 60.0);
}

TEST_CASE("rate_limiter admits within both limits and reports the wait") {
  using namespace std::chrono;
  auto t0 = rate_limiter::clock::time_point{} + hours{1};
  rate_limiter limiter{2, 600, t0}; // 2 requests/min, 10 tokens/s
  CHECK(limiter.enabled());
  CHECK(limiter.admit(100, t0).allowed);
  CHECK(limiter.admit(100, t0).allowed);
  auto third = limiter.admit(100, t0);
  CHECK_FALSE(third.allowed);
  CHECK(std::string{third.limit} == "requests");
  CHECK(third.retry_after == seconds{30});
  // 30 s later one request is back; tokens are plentiful.
  CHECK(limiter.admit(100, t0 + seconds{30}).allowed);
  // Tokens: 400 left at t0 + 30 s (full again); ask for more than remains.
  rate_limiter tokens_only{0, 600, t0};
  CHECK(tokens_only.admit(500, t0).allowed);
  auto over = tokens_only.admit(200, t0);
  CHECK_FALSE(over.allowed);
  CHECK(std::string{over.limit} == "tokens");
  CHECK(over.retry_after == seconds{10}); // 100 missing at 10 tokens/s
  auto huge = tokens_only.admit(601, t0);
  CHECK_FALSE(huge.allowed);
  CHECK(huge.too_large);
  CHECK_FALSE((rate_limiter{0, 0, t0}.enabled()));
}

TEST_CASE("the rpm limit emits x-ratelimit headers and 429 when exceeded") {
  mock_options opts;
  opts.rpm = 3;
  running_mock m{opts};
  http_client client{m.port};
  for (int i = 0; i < 3; ++i) {
    auto res = client.embed(embed_body({"r"}, 8));
    REQUIRE(res.status == 200);
    CHECK(res.header("x-ratelimit-limit-requests") == "3");
    CHECK(res.header("x-ratelimit-remaining-requests")
          == std::to_string(2 - i));
    auto reset = parse_duration(res.header("x-ratelimit-reset-requests"));
    REQUIRE(reset);
    CHECK(*reset > std::chrono::seconds{0});
    CHECK(*reset <= std::chrono::seconds{60});
    CHECK_FALSE(res.has_header("x-ratelimit-limit-tokens"));
  }
  auto res = client.embed(embed_body({"r"}, 8));
  CHECK(res.status == 429);
  error_message(res.body, "requests");
  CHECK(error_field(res.body, "code") == "rate_limit_exceeded");
  auto retry_ms = parse_retry_after_ms(res.header("retry-after-ms"));
  REQUIRE(retry_ms);
  // One request refills every 20 s; a little time has passed.
  CHECK(*retry_ms > std::chrono::seconds{15});
  CHECK(*retry_ms <= std::chrono::seconds{20});
  CHECK(res.header("retry-after") == "20");
  CHECK(res.header("x-ratelimit-remaining-requests") == "0");
  CHECK(m.server.stats().status_count(429) == 1);
  CHECK(m.server.stats().faults.empty()); // a real limit, not a fault
}

TEST_CASE("the tpm limit caps tokens per minute") {
  mock_options opts;
  opts.tpm = 60;
  running_mock m{opts};
  http_client client{m.port};
  std::string text = "one two three four five six seven eight nine ten";
  auto tokens = static_cast<int64_t>(estimate_tokens(text));
  REQUIRE(tokens * 2 <= 60);
  REQUIRE(tokens * 3 > 60);
  CHECK(client.embed(embed_body({text}, 8)).status == 200);
  auto second = client.embed(embed_body({text}, 8));
  CHECK(second.status == 200);
  CHECK(second.header("x-ratelimit-limit-tokens") == "60");
  CHECK(second.header("x-ratelimit-remaining-tokens")
        == std::to_string(60 - 2 * tokens));
  auto third = client.embed(embed_body({text}, 8));
  CHECK(third.status == 429);
  error_message(third.body, "tokens");
  CHECK(third.has_header("retry-after-ms"));
  // A request that can never fit is refused without a retry hint.
  auto huge = client.embed(embed_body({text, text, text, text}, 8));
  CHECK(huge.status == 429);
  CHECK(huge.header("x-should-retry") == "false");
}
