#include "serve/replies.hpp"

#include "embedrt/protocol/errc.hpp"

#include <algorithm>
#include <cctype>

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

bool host_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-'
      || c == '_';
}

/// Where the URL starting at `i` ("scheme://...") ends.
std::size_t url_end(std::string_view text, std::size_t i) {
  while (i < text.size()) {
    char c = text[i];
    if (std::isspace(static_cast<unsigned char>(c)) || c == ')' || c == ','
        || c == ';' || c == '\'' || c == '"' || c == '>')
      break;
    ++i;
  }
  return i;
}

/// If a host:port (`api.example.com:443`, `10.0.0.1:8080`, `[::1]:80`,
/// `localhost:80`) starts at `i`,
/// where it ends; else `i`.
std::size_t host_port_end(std::string_view text, std::size_t i) {
  std::size_t j = i;
  bool named = false;
  if (text[j] == '[') {
    auto close = text.find(']', j);
    if (close == std::string_view::npos || close - j > 48)
      return i;
    j = close + 1;
    named = true;
  } else {
    // A dotted name or address, or localhost: "word:12" alone is too often
    // something else (a marker, a time).
    bool dot = false;
    while (j < text.size() && host_char(text[j])) {
      dot = dot || text[j] == '.';
      ++j;
    }
    named = (dot && j - i > 2) || text.substr(i, j - i) == "localhost";
  }
  if (!named || j >= text.size() || text[j] != ':')
    return i;
  auto k = j + 1;
  while (k < text.size() && k - j <= 5
         && std::isdigit(static_cast<unsigned char>(text[k])))
    ++k;
  if (k == j + 1 || k - j > 6 || (k < text.size() && host_char(text[k])))
    return i;
  return k;
}

/// If a JSON object or array with a string member starts at `i` (`{"` or
/// `["`), where it ends (after its closing bracket, or the end of `text`);
/// else `i`.
std::size_t json_end(std::string_view text, std::size_t i) {
  if (i + 1 >= text.size() || text[i + 1] != '"')
    return i;
  int depth = 0;
  bool in_string = false;
  for (std::size_t k = i; k < text.size(); ++k) {
    char c = text[k];
    if (in_string) {
      if (c == '\\')
        ++k;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth == 0) {
      return k + 1;
    }
  }
  return text.size();
}

} // namespace

std::string client_message(std::string_view detail) {
  constexpr std::string_view address = "[upstream]";
  constexpr std::string_view body = "[body omitted]";
  std::string out;
  out.reserve(std::min(detail.size(), max_client_message));
  for (std::size_t i = 0; i < detail.size();) {
    bool boundary = i == 0 || !host_char(detail[i - 1]);
    if (boundary && std::isalpha(static_cast<unsigned char>(detail[i]))) {
      auto scheme = detail.find("://", i);
      if (scheme != std::string_view::npos
          && std::all_of(detail.begin() + i, detail.begin() + scheme,
                         [](char c) {
                           return std::isalpha(static_cast<unsigned char>(c));
                         })) {
        out += address;
        i = url_end(detail, scheme + 3);
        continue;
      }
    }
    if (boundary) {
      if (auto end = host_port_end(detail, i); end != i) {
        out += address;
        i = end;
        continue;
      }
    }
    if (detail[i] == '{' || detail[i] == '[') {
      if (auto end = json_end(detail, i); end != i) {
        out += body;
        i = end;
        continue;
      }
    }
    out += detail[i++];
  }
  if (out.size() > max_client_message) {
    // Cut on a UTF-8 character boundary.
    auto cut = max_client_message - 3;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80)
      --cut;
    out.resize(cut);
    out += "...";
  }
  return out;
}

front_reply reply_for_error(const caf::error& err, upstream_detail detail) {
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
  auto r = error_reply(m.status,
                       detail == upstream_detail::full
                           ? error_detail(err)
                           : client_message(error_detail(err)),
                       m.type, code_name);
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

front_reply reply_for_result(embed_result&& res, openai::encoding enc,
                             std::shared_ptr<void> keep) {
  openai::embeddings_response out;
  out.model = std::move(res.model);
  out.data = std::move(res.embeddings);
  out.usage = res.usage;
  front_reply r;
  if (!res.request_id.empty())
    r.headers.emplace_back("x-request-id", std::move(res.request_id));
  std::size_t values = 0;
  for (const auto& v : out.data)
    values += v.size();
  // Float text takes up to about 12 bytes a number, base64 5.3.
  auto estimate
      = enc == openai::encoding::base64 ? values * 16 / 3 : values * 12;
  if (estimate <= stream_threshold) {
    r.body = openai::encode_response(out, enc);
    return r;
  }
  auto writer = std::make_shared<openai::response_writer>(std::move(out), enc);
  r.source = [writer, keep = std::move(keep)](std::string& piece) {
    return writer->next(piece, stream_piece_bytes);
  };
  return r;
}

} // namespace embedrt::serve
