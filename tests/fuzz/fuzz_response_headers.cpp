// libFuzzer target: the parsers of the upstream's response headers
// (protocol/embedrt/protocol/headers.hpp): retry-after (seconds and
// HTTP-dates), retry-after-ms, x-should-retry, Go durations of
// x-ratelimit-reset-*, and `parse_response_hints` over a whole header set.
// Every parser is total: a value is parsed or rejected, never a crash.
//
// Input layout: lines "name: value" (a header set); each value also goes
// through every single-value parser.
#include "embedrt/protocol/headers.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace {

std::map<std::string, std::string, std::less<>>
header_set(std::string_view text) {
  std::map<std::string, std::string, std::less<>> out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{}
                                        : text.substr(nl + 1);
    auto colon = line.find(':');
    if (colon == std::string_view::npos)
      continue;
    auto value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ')
      value.remove_prefix(1);
    out[std::string{line.substr(0, colon)}] = std::string{value};
  }
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  // A fixed "now", so that a run is reproducible.
  std::chrono::system_clock::time_point now{
      std::chrono::seconds{1'800'000'000}};
  auto headers = header_set(text);
  for (const auto& [name, value] : headers) {
    if (auto d = embedrt::parse_duration(value); d && d->count() < 0)
      std::abort();
    if (auto ms = embedrt::parse_retry_after(value, now); ms && ms->count() < 0)
      std::abort();
    if (auto ms = embedrt::parse_retry_after_ms(value); ms && ms->count() < 0)
      std::abort();
    (void)embedrt::parse_should_retry(value);
    (void)embedrt::parse_http_date(value);
  }
  auto hints = embedrt::parse_response_hints(
      [&](std::string_view name) -> std::optional<std::string_view> {
        if (auto i = headers.find(name); i != headers.end())
          return std::string_view{i->second};
        return std::nullopt;
      },
      now);
  if (hints.retry_after && hints.retry_after->count() < 0)
    std::abort();
  return 0;
}
