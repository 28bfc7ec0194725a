#include "embedrt/protocol/errc.hpp"

#include <array>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace embedrt {

namespace {

constexpr std::array<const char*, 15> errc_names = {
    "none",
    "invalid_input",
    "overloaded",
    "breaker_open",
    "deadline_exceeded",
    "rate_limited",
    "quota_exceeded",
    "auth_failed",
    "upstream_error",
    "invalid_response",
    "connection_failed",
    "tls_failed",
    "cancelled",
    "node_down",
    "upstream_down",
};

bool is_embedrt(const caf::error& err) {
  return err && err.category() == error_category();
}

} // namespace

const char* to_string(errc x) {
  auto i = static_cast<size_t>(x);
  return i < errc_names.size() ? errc_names[i] : "unknown";
}

errc errc_from_string(const std::string& name) {
  for (size_t i = 1; i < errc_names.size(); ++i)
    if (name == errc_names[i])
      return static_cast<errc>(i);
  return errc::none;
}

caf::atom_value error_category() {
  return caf::atom("embedrt");
}

caf::error make_error(errc code, std::string detail, int32_t http_status,
                      std::chrono::milliseconds retry_after) {
  return caf::error{
      static_cast<uint8_t>(code), error_category(),
      caf::make_message(std::move(detail), http_status,
                        static_cast<int64_t>(retry_after.count()))};
}

errc error_code(const caf::error& err) {
  if (!is_embedrt(err))
    return errc::none;
  return static_cast<errc>(err.code());
}

std::string error_detail(const caf::error& err) {
  if (!err)
    return {};
  if (is_embedrt(err)) {
    const auto& ctx = err.context();
    if (ctx.size() >= 1 && ctx.match_element<std::string>(0))
      return ctx.get_as<std::string>(0);
    return {};
  }
  return caf::to_string(err);
}

int32_t error_http_status(const caf::error& err) {
  if (!is_embedrt(err))
    return 0;
  const auto& ctx = err.context();
  if (ctx.size() >= 2 && ctx.match_element<int32_t>(1))
    return ctx.get_as<int32_t>(1);
  return 0;
}

std::chrono::milliseconds error_retry_after(const caf::error& err) {
  if (!is_embedrt(err))
    return std::chrono::milliseconds{0};
  const auto& ctx = err.context();
  if (ctx.size() >= 3 && ctx.match_element<int64_t>(2))
    return std::chrono::milliseconds{ctx.get_as<int64_t>(2)};
  return std::chrono::milliseconds{0};
}

std::string render_error(const caf::error& err) {
  if (!err)
    return "none";
  if (!is_embedrt(err))
    return caf::to_string(err);
  std::string result = "embedrt.";
  result += to_string(static_cast<errc>(err.code()));
  auto detail = error_detail(err);
  if (!detail.empty()) {
    result += ": ";
    result += detail;
  }
  return result;
}

} // namespace embedrt
