#include "classify.hpp"

#include "embedrt/protocol/errc.hpp"
#include "http_transport.hpp"

#include <chrono>

namespace embedrt::detail {

namespace {

/// The upstream's error message; for a body that is not an OpenAI error
/// (an HTML page of a proxy, e.g. "The plain HTTP request was sent to HTTPS
/// port") its first bytes, on one line.
std::string upstream_message(const http_outcome& out) {
  if (!out.error_text.empty())
    return out.error_text;
  constexpr std::size_t max_snippet = 160;
  std::string text;
  bool space = false;
  for (char c : out.body) {
    if (text.size() >= max_snippet)
      break;
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      space = !text.empty();
      continue;
    }
    if (space)
      text += ' ';
    space = false;
    text += u < 0x80 ? c : '?'; // ASCII only: never a broken UTF-8 sequence
  }
  if (text.empty())
    return "no error message";
  return "no OpenAI error in the body: " + text
      + (out.body.size() > max_snippet ? "..." : "");
}

/// A 400/422 that refuses `encoding_format: base64` (OpenAI-compatible
/// servers that only produce floats name the parameter or the value).
bool refuses_base64(const http_outcome& out) {
  auto names = [](const std::string& s) {
    return s.find("encoding_format") != std::string::npos
        || s.find("base64") != std::string::npos;
  };
  return out.error_param == "encoding_format" || names(out.error_text)
      || (out.error_text.empty() && names(out.body));
}

} // namespace

call_result classify_outcome(http_outcome&& out,
                             const openai::response_expectation& expect,
                             const std::string& upstream_name) {
  call_result r;
  r.connected = out.connected;
  r.reused = out.reused;
  r.upstream_ns = out.total_ns;
  r.upstream_request_id = std::move(out.request_id);
  r.ratelimit_remaining_requests = out.ratelimit_remaining_requests;
  r.ratelimit_remaining_tokens = out.ratelimit_remaining_tokens;
  r.ratelimit_limit_requests = out.ratelimit_limit_requests;
  r.ratelimit_limit_tokens = out.ratelimit_limit_tokens;
  r.ratelimit_reset_requests_ns = out.ratelimit_reset_requests_ns;
  r.ratelimit_reset_tokens_ns = out.ratelimit_reset_tokens_ns;
  if (out.retry_after_ms > 0)
    r.retry_after_ms = out.retry_after_ms;
  auto fail
      = [&](errc code, std::string detail, bool retryable, int32_t status = 0) {
          r.error = make_error(code, std::move(detail), status,
                               std::chrono::milliseconds{r.retry_after_ms});
          r.retryable = retryable;
          if (out.should_retry >= 0)
            r.retryable = out.should_retry == 1;
        };
  auto terr = out.transport_error;
  r.timed_out = terr == transport_errc::timeout;
  if (terr != transport_errc::none) {
    auto what = upstream_name + ": " + out.error_message;
    switch (terr) {
      case transport_errc::tls_failed:
        fail(errc::tls_failed, std::move(what), false);
        break;
      case transport_errc::body_too_large:
        fail(errc::invalid_response, std::move(what), false);
        break;
      case transport_errc::cancelled:
        fail(errc::cancelled, std::move(what), true);
        break;
      default: fail(errc::connection_failed, std::move(what), true); break;
    }
    return r;
  }
  auto status = out.status;
  if (status == 200) {
    auto decoded = openai::decode_response(out.body, expect);
    if (!decoded) {
      fail(errc::invalid_response,
           upstream_name + ": " + error_detail(decoded.error()), true);
      return r;
    }
    r.model = std::move(decoded->model);
    r.embeddings = std::move(decoded->data);
    r.usage = decoded->usage;
    return r;
  }
  auto detail = upstream_name + " answered " + std::to_string(status) + ": "
      + upstream_message(out);
  r.names_param = !out.error_param.empty();
  if ((status == 400 || status == 422)
      && expect.encoding_format == openai::encoding::base64
      && refuses_base64(out)) {
    r.base64_refused = true;
    r.request_level = true;
    fail(errc::invalid_input, std::move(detail), false, status);
    return r;
  }
  switch (status) {
    case 401:
    case 403: fail(errc::auth_failed, std::move(detail), false, status); break;
    case 429:
      if (out.error_code == "insufficient_quota")
        fail(errc::quota_exceeded, std::move(detail), false, status);
      else
        fail(errc::rate_limited, std::move(detail), true, status);
      break;
    case 413:
      r.too_large = true;
      fail(errc::invalid_input, std::move(detail), false, status);
      break;
    case 400:
      // OpenAI: {"code": "max_tokens_per_request"} when a request's inputs
      // are too many tokens in total (each may be fine alone).
      r.too_large = out.error_code == "max_tokens_per_request";
      r.request_level = !r.too_large && !out.error_param.empty()
          && out.error_param != "input";
      fail(errc::invalid_input, std::move(detail), false, status);
      break;
    case 422:
      fail(errc::invalid_input, std::move(detail), false, status);
      break;
    case 408:
    case 409:
      fail(errc::upstream_error, std::move(detail), true, status);
      break;
    default:
      fail(errc::upstream_error, std::move(detail), status >= 500, status);
      break;
  }
  return r;
}

} // namespace embedrt::detail
