#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/headers.hpp"

#include <catch2/catch.hpp>
#include <map>
#include <string>

using namespace embedrt;
using namespace std::chrono;
using namespace std::chrono_literals;

namespace {

// 1994-11-06T08:49:37Z, the RFC 7231 example date.
const auto rfc_example = system_clock::time_point{seconds{784111777}};

template <class T>
void check_rejected(const caf::expected<T>& res, const std::string& value) {
  REQUIRE_FALSE(res);
  CHECK(error_code(res.error()) == errc::invalid_response);
  CHECK(error_detail(res.error()).find("'" + value + "'") != std::string::npos);
}

nanoseconds duration_of(std::string_view text) {
  auto res = parse_duration(text);
  REQUIRE(res);
  return *res;
}

header_lookup lookup_in(const std::map<std::string, std::string>& headers) {
  return [&headers](std::string_view name) -> std::optional<std::string_view> {
    auto i = headers.find(std::string{name});
    if (i == headers.end())
      return std::nullopt;
    return std::string_view{i->second};
  };
}

} // namespace

TEST_CASE("parse_duration reads Go-style durations", "[headers]") {
  CHECK(duration_of("1s") == 1s);
  CHECK(duration_of("6m0s") == 6min);
  CHECK(duration_of("12ms") == 12ms);
  CHECK(duration_of("0.5s") == 500ms);
  CHECK(duration_of("1h2m3.5s") == 1h + 2min + 3500ms);
  CHECK(duration_of("1us") == 1us);
  CHECK(duration_of("1\xC2\xB5s") == 1us); // micro sign
  CHECK(duration_of("1\xCE\xBCs") == 1us); // Greek mu
  CHECK(duration_of("100ns") == 100ns);
  CHECK(duration_of("2h") == 2h);
  CHECK(duration_of("1.5m") == 90s);
  CHECK(duration_of(".5s") == 500ms);
  CHECK(duration_of("5.s") == 5s);
  CHECK(duration_of("0") == 0ns);
  CHECK(duration_of("20") == 20s); // bare number: seconds
  CHECK(duration_of("2.25") == 2250ms);
  CHECK(duration_of(" 7ms ") == 7ms);
  CHECK(duration_of("1m1m") == 2min);
  CHECK(duration_of("0.0000000001s") == 1ns); // rounded up, never to zero
  CHECK(duration_of("2562047h") == 2562047h);
}

TEST_CASE("parse_duration rejects malformed durations", "[headers]") {
  for (auto bad :
       {"", "   ", "-1s", "+1s", "1x", "s", "1.2.3s", "1s5", ".s", "1 s", "ms",
        "1sec", "2562048h", "99999999999999999999s", "9223372036854775807s"}) {
    INFO(bad);
    check_rejected(parse_duration(bad), bad);
  }
}

TEST_CASE("parse_http_date reads the three HTTP-date forms", "[headers]") {
  for (auto text :
       {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994"}) {
    INFO(text);
    auto res = parse_http_date(text);
    REQUIRE(res);
    CHECK(*res == rfc_example);
  }
  auto leap_day = parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT");
  REQUIRE(leap_day);
  CHECK(*leap_day == system_clock::time_point{seconds{1709251199}});
  auto far = parse_http_date("Wed, 01 Jan 2200 00:00:00 GMT");
  REQUIRE(far);
  CHECK(*far == system_clock::time_point{seconds{7258118400}});
  auto epoch = parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT");
  REQUIRE(epoch);
  CHECK(*epoch == system_clock::time_point{});
  auto asctime_two_digit = parse_http_date("Wed Dec 31 23:59:59 2025");
  REQUIRE(asctime_two_digit);
  CHECK(*asctime_two_digit == system_clock::time_point{seconds{1767225599}});
  // RFC 850 two-digit years: "more than 50 years in the future" is the past.
  auto y2k = parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT");
  REQUIRE(y2k);
  CHECK(*y2k == system_clock::time_point{seconds{946684800}});
}

TEST_CASE("parse_http_date rejects malformed dates", "[headers]") {
  for (auto bad :
       {"", "yesterday", "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT", // no 31 November
        "Tue, 29 Feb 2023 00:00:00 GMT", // not a leap year
        "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT", "Sun, 06 Nov 1994 08:49:37 GMT extra",
        "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun Nov 6 08:49:37 1994",
        "1994-11-06T08:49:37Z",
        // Outside the range of system_clock's nanoseconds.
        "Sun, 06 Nov 0997 08:49:37 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"}) {
    INFO(bad);
    check_rejected(parse_http_date(bad), bad);
  }
}

TEST_CASE("parse_retry_after reads seconds and dates", "[headers]") {
  auto secs = parse_retry_after("120", rfc_example);
  REQUIRE(secs);
  CHECK(*secs == 120s);
  auto frac = parse_retry_after("1.5", rfc_example);
  REQUIRE(frac);
  CHECK(*frac == 1500ms);
  auto tiny = parse_retry_after("0.0001", rfc_example);
  REQUIRE(tiny);
  CHECK(*tiny == 1ms); // rounded up
  auto zero = parse_retry_after("0", rfc_example);
  REQUIRE(zero);
  CHECK(*zero == 0ms);
  auto future = parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", rfc_example);
  REQUIRE(future);
  CHECK(*future == 30s);
  auto sub_second
      = parse_retry_after("Sun, 06 Nov 1994 08:49:38 GMT", rfc_example + 250ms);
  REQUIRE(sub_second);
  CHECK(*sub_second == 750ms);
  auto past = parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", rfc_example);
  REQUIRE(past);
  CHECK(*past == 0ms);
  for (auto bad :
       {"", "-1", "soon", "1.5.2", "12s", "1e3", "99999999999999999999"}) {
    INFO(bad);
    check_rejected(parse_retry_after(bad, rfc_example), bad);
  }
}

TEST_CASE("parse_retry_after_ms and parse_should_retry", "[headers]") {
  auto ms = parse_retry_after_ms("250");
  REQUIRE(ms);
  CHECK(*ms == 250ms);
  auto frac = parse_retry_after_ms("20.2");
  REQUIRE(frac);
  CHECK(*frac == 21ms); // rounded up
  for (auto bad : {"", "-5", "abc", "5ms", "1,5"}) {
    INFO(bad);
    check_rejected(parse_retry_after_ms(bad), bad);
  }
  for (auto yes : {"true", "TRUE", "True", " true "}) {
    auto b = parse_should_retry(yes);
    REQUIRE(b);
    CHECK(*b);
  }
  for (auto no : {"false", "FALSE", "False"}) {
    auto b = parse_should_retry(no);
    REQUIRE(b);
    CHECK_FALSE(*b);
  }
  for (auto bad : {"", "1", "yes", "truee"}) {
    INFO(bad);
    check_rejected(parse_should_retry(bad), bad);
  }
}

TEST_CASE("parse_response_hints extracts every hint", "[headers]") {
  std::map<std::string, std::string> headers{
      {"retry-after", "3"},
      {"x-should-retry", "false"},
      {"x-ratelimit-limit-requests", "3000"},
      {"x-ratelimit-limit-tokens", "1000000"},
      {"x-ratelimit-remaining-requests", "2999"},
      {"x-ratelimit-remaining-tokens", "999980"},
      {"x-ratelimit-reset-requests", "20ms"},
      {"x-ratelimit-reset-tokens", "6m0s"},
      {"x-request-id", "req_abc123"},
  };
  auto hints = parse_response_hints(lookup_in(headers), rfc_example);
  REQUIRE(hints.retry_after);
  CHECK(*hints.retry_after == 3s);
  REQUIRE(hints.should_retry);
  CHECK_FALSE(*hints.should_retry);
  const auto& rl = hints.rate_limit;
  CHECK(rl.limit_requests == 3000);
  CHECK(rl.limit_tokens == 1000000);
  CHECK(rl.remaining_requests == 2999);
  CHECK(rl.remaining_tokens == 999980);
  CHECK(rl.reset_requests == nanoseconds{20ms});
  CHECK(rl.reset_tokens == nanoseconds{6min});
  CHECK(hints.request_id == "req_abc123");
  CHECK(hints.malformed.empty());
}

TEST_CASE("parse_response_hints prefers retry-after-ms", "[headers]") {
  std::map<std::string, std::string> headers{{"retry-after", "3"},
                                             {"retry-after-ms", "1250"}};
  auto hints = parse_response_hints(lookup_in(headers), rfc_example);
  REQUIRE(hints.retry_after);
  CHECK(*hints.retry_after == 1250ms);
  // A malformed retry-after-ms falls back to retry-after.
  headers["retry-after-ms"] = "soon";
  hints = parse_response_hints(lookup_in(headers), rfc_example);
  REQUIRE(hints.retry_after);
  CHECK(*hints.retry_after == 3s);
  CHECK(hints.malformed == "retry-after-ms='soon'");
  // An HTTP-date retry-after is relative to `now`.
  headers.erase("retry-after-ms");
  headers["retry-after"] = "Sun, 06 Nov 1994 08:49:47 GMT";
  hints = parse_response_hints(lookup_in(headers), rfc_example);
  REQUIRE(hints.retry_after);
  CHECK(*hints.retry_after == 10s);
}

TEST_CASE("parse_response_hints skips and records malformed values",
          "[headers]") {
  std::map<std::string, std::string> headers{
      {"retry-after", "later"},
      {"x-should-retry", "maybe"},
      {"x-ratelimit-limit-requests", "-1"},
      {"x-ratelimit-limit-tokens", "1.5"},
      {"x-ratelimit-remaining-requests", "12"},
      {"x-ratelimit-remaining-tokens", "lots"},
      {"x-ratelimit-reset-requests", "1x"},
      {"x-ratelimit-reset-tokens", "1s"},
      {"x-request-id", "id-1"},
  };
  auto hints = parse_response_hints(lookup_in(headers), rfc_example);
  CHECK_FALSE(hints.retry_after);
  CHECK_FALSE(hints.should_retry);
  CHECK_FALSE(hints.rate_limit.limit_requests);
  CHECK_FALSE(hints.rate_limit.limit_tokens);
  CHECK(hints.rate_limit.remaining_requests == 12);
  CHECK_FALSE(hints.rate_limit.remaining_tokens);
  CHECK_FALSE(hints.rate_limit.reset_requests);
  CHECK(hints.rate_limit.reset_tokens == nanoseconds{1s});
  CHECK(hints.request_id == "id-1");
  CHECK(hints.malformed
        == "retry-after='later'; x-should-retry='maybe'; "
           "x-ratelimit-limit-requests='-1'; x-ratelimit-limit-tokens='1.5'; "
           "x-ratelimit-remaining-tokens='lots'; "
           "x-ratelimit-reset-requests='1x'");
}

TEST_CASE("parse_response_hints with no headers and hostile values",
          "[headers]") {
  std::map<std::string, std::string> none;
  auto hints = parse_response_hints(lookup_in(none), rfc_example);
  CHECK_FALSE(hints.retry_after);
  CHECK_FALSE(hints.should_retry);
  CHECK_FALSE(hints.rate_limit.limit_requests);
  CHECK(hints.request_id.empty());
  CHECK(hints.malformed.empty());
  // Control characters cannot forge log lines; long values are cut.
  std::map<std::string, std::string> hostile{
      {"retry-after", "1\r\nX-Injected: yes"},
      {"x-should-retry", std::string(500, 'z')}};
  hints = parse_response_hints(lookup_in(hostile), rfc_example);
  CHECK(hints.malformed.find('\n') == std::string::npos);
  CHECK(hints.malformed.find("retry-after='1??X-Injected: yes'")
        != std::string::npos);
  CHECK(hints.malformed.find(std::string(64, 'z') + "...'")
        != std::string::npos);
  CHECK(hints.malformed.size() < 200);
}
