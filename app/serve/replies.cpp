#include "serve/replies.hpp"

#include "embedrt/protocol/errc.hpp"

#include <algorithm>

namespace embedrt::serve {

front_reply error_reply(int status, const std::string& message,
                        const std::string& type, const std::string& code,
                        const std::string& param) {
  front_reply r;
  r.status = status;
  r.body = openai::encode_error(openai::api_error{message, type, param, code});
  return r;
}

namespace {

struct mapping {
  int status;
  const char* type;
  /// Sends Retry-After (with a default of 1 s when the runtime has no hint).
  bool retry_after;
};

mapping map(errc code) {
  switch (code) {
    case errc::invalid_input: return {400, "invalid_request_error", false};
    case errc::overloaded:
    case errc::rate_limited: return {429, "rate_limit_error", true};
    case errc::quota_exceeded: return {429, "insufficient_quota", false};
    case errc::breaker_open:
    case errc::upstream_down:
    case errc::cancelled:
    case errc::node_down: return {503, "server_error", true};
    case errc::deadline_exceeded: return {504, "timeout_error", false};
    case errc::auth_failed:
    case errc::upstream_error:
    case errc::invalid_response:
    case errc::connection_failed:
    case errc::tls_failed: return {502, "server_error", false};
    default: return {500, "server_error", false};
  }
}

/// The request parameter an `invalid_input` detail is about, as OpenAI names
/// it in `param`: the quoted name it starts with ('model', 'dimensions',
/// 'input', ...), or `input` for the checks of the inputs themselves
/// ("input[3] is empty", "too many inputs: ...", "inputs 2, 5 rejected by
/// the upstream: ...").
std::string param_of(const std::string& detail) {
  if (detail.size() > 2 && detail.front() == '\'') {
    auto end = detail.find('\'', 1);
    if (end != std::string::npos)
      return detail.substr(1, end - 1);
  }
  for (const char* prefix :
       {"input", "no inputs", "too many inputs", "token-array inputs"})
    if (detail.rfind(prefix, 0) == 0)
      return "input";
  return "";
}

} // namespace

front_reply reply_for_error(const caf::error& err) {
  auto code = error_code(err);
  if (code == errc::none)
    return error_reply(500, "internal error: " + render_error(err),
                       "server_error", "internal_error");
  if (code == errc::invalid_input && error_http_status(err) == 404)
    return error_reply(404, error_detail(err), "invalid_request_error",
                       "model_not_found", "model");
  if (code == errc::invalid_input)
    return error_reply(400, error_detail(err), "invalid_request_error",
                       to_string(code), param_of(error_detail(err)));
  auto m = map(code);
  std::string code_name = code == errc::quota_exceeded ? "insufficient_quota"
      : code == errc::auth_failed                      ? "upstream_auth_failed"
                                                       : to_string(code);
  auto r = error_reply(m.status, error_detail(err), m.type, code_name);
  auto hint = error_retry_after(err).count();
  if (m.retry_after || hint > 0) {
    auto ms = std::max<int64_t>(hint, 0);
    auto secs = std::max<int64_t>(1, (ms + 999) / 1000);
    r.headers.emplace_back("retry-after", std::to_string(secs));
    if (ms > 0)
      r.headers.emplace_back("retry-after-ms", std::to_string(ms));
  }
  return r;
}

front_reply reply_for_result(embed_result&& res, openai::encoding enc) {
  openai::embeddings_response out;
  out.model = std::move(res.model);
  out.data = std::move(res.embeddings);
  out.usage = res.usage;
  front_reply r;
  r.body = openai::encode_response(out, enc);
  if (!res.request_id.empty())
    r.headers.emplace_back("x-request-id", std::move(res.request_id));
  return r;
}

} // namespace embedrt::serve
