#include "mock/mock_handler.hpp"

#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/openai.hpp"
#include "embedrt/protocol/provider.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace embedrt::mock {

namespace {

constexpr std::string_view rejection_marker = "[[mock:400]]";
/// `[[mock:delay-ms=N]]` in an input: the answer waits at least N ms.
constexpr std::string_view delay_marker = "[[mock:delay-ms=";
constexpr double max_latency_ms = 600000.0;

std::string_view path_of(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

std::optional<double> to_double(std::string_view text) {
  double x = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()
      || !std::isfinite(x))
    return std::nullopt;
  return x;
}

std::chrono::nanoseconds from_ms(double ms) {
  return std::chrono::nanoseconds{static_cast<int64_t>(ms * 1e6)};
}

/// Encodes a response body where values may be NaN: the JSON literal NaN in
/// the float encoding, the NaN bit pattern in base64. Only used by the `nan`
/// fault; normal bodies use openai::encode_response.
std::string encode_with_nan(const openai::embeddings_response& resp,
                            openai::encoding enc) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>,
                    rapidjson::UTF8<>, rapidjson::CrtAllocator,
                    rapidjson::kWriteNanAndInfFlag>
      w{buf};
  w.StartObject();
  w.Key("object");
  w.String("list");
  w.Key("data");
  w.StartArray();
  for (std::size_t i = 0; i < resp.data.size(); ++i) {
    w.StartObject();
    w.Key("object");
    w.String("embedding");
    w.Key("index");
    w.Uint64(i);
    w.Key("embedding");
    if (enc == openai::encoding::base64) {
      auto text = openai::encode_base64_floats(resp.data[i]);
      w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
    } else {
      w.StartArray();
      for (float x : resp.data[i]) {
        // Shortest float32 rendering, as openai::encode_response writes.
        std::array<char, 32> num;
        if (std::isnan(x)) {
          w.RawValue("NaN", 3, rapidjson::kNumberType);
          continue;
        }
        auto [end, ec] = std::to_chars(num.data(), num.data() + num.size(), x);
        (void)ec; // 32 bytes always hold a float32
        w.RawValue(num.data(), static_cast<std::size_t>(end - num.data()),
                   rapidjson::kNumberType);
      }
      w.EndArray();
    }
    w.EndObject();
  }
  w.EndArray();
  w.Key("model");
  w.String(resp.model.data(),
           static_cast<rapidjson::SizeType>(resp.model.size()));
  w.Key("usage");
  w.StartObject();
  w.Key("prompt_tokens");
  w.Int64(resp.usage.prompt_tokens);
  w.Key("total_tokens");
  w.Int64(resp.usage.total_tokens);
  w.EndObject();
  w.EndObject();
  return std::string{buf.GetString(), buf.GetSize()};
}

int64_t ceil_ms(std::chrono::nanoseconds d) {
  return std::chrono::ceil<std::chrono::milliseconds>(d).count();
}

int64_t ceil_seconds(int64_t ms) {
  return (ms + 999) / 1000;
}

} // namespace

void mock_reply::clear() {
  what = action::respond;
  status = 200;
  headers.clear();
  body.clear();
  close = false;
  delay = std::chrono::nanoseconds{0};
}

mock_handler::mock_handler(const mock_options& opts)
    : opts_(opts),
      fault_rng_(opts.seed),
      // A second stream, so that latency draws do not shift fault draws.
      latency_rng_(opts.seed ^ 0x9E3779B97F4A7C15ull),
      limiter_(opts.rpm, opts.tpm, rate_limiter::clock::now()) {
  // nop
}

void mock_handler::handle(const mock_request& req, mock_reply& out) {
  out.clear();
  auto path = path_of(req.target);
  if (path == "/stats" || path == "/stats/reset") {
    stats_endpoint(req, out);
    return;
  }
  if (path == "/outage") {
    outage_endpoint(req, out);
    return;
  }
  if (path == "/latency") {
    latency_endpoint(req, out);
    return;
  }
  counters_.request();
  if (path == "/v1/embeddings" || path == "/embeddings") {
    if (req.method != "POST") {
      out.headers.emplace_back("allow", "POST");
      error(out, 405,
            "Method " + std::string{req.method} + " is not allowed on "
                + std::string{path} + " (use POST)",
            "invalid_request_error", nullptr, nullptr);
    } else {
      embeddings(req, out);
    }
  } else {
    error(out, 404,
          "Invalid URL (" + std::string{req.method} + " " + std::string{path}
              + ")",
          "invalid_request_error", nullptr, nullptr);
  }
  if (out.what == mock_reply::action::respond)
    counters_.response(out.status);
}

void mock_handler::body_too_large(mock_reply& out) {
  out.clear();
  counters_.request();
  error(out, 413,
        "Request body too large: the limit is "
            + std::to_string(opts_.max_body_bytes) + " bytes",
        "invalid_request_error", nullptr, "request_too_large");
  out.close = true;
  counters_.response(out.status);
}

void mock_handler::bad_http(std::string_view what, mock_reply& out) {
  out.clear();
  counters_.request();
  error(out, 400, "Malformed HTTP request: " + std::string{what},
        "invalid_request_error", nullptr, nullptr);
  out.close = true;
  counters_.response(out.status);
}

void mock_handler::stats_endpoint(const mock_request& req, mock_reply& out) {
  auto path = path_of(req.target);
  if (path == "/stats") {
    if (req.method != "GET") {
      out.headers.emplace_back("allow", "GET");
      error(out, 405, "Use GET /stats", "invalid_request_error", nullptr,
            nullptr);
      return;
    }
    respond_json(out, 200, to_json(counters_.snapshot()));
    return;
  }
  if (req.method != "POST") {
    out.headers.emplace_back("allow", "POST");
    error(out, 405, "Use POST /stats/reset", "invalid_request_error", nullptr,
          nullptr);
    return;
  }
  counters_.reset();
  respond_json(out, 200, "{\"reset\":true}");
}

void mock_handler::set_outage(fault f) noexcept {
  outage_.store(static_cast<uint64_t>(f.kind) << 32
                | static_cast<uint32_t>(f.status));
}

fault mock_handler::outage() const noexcept {
  auto packed = outage_.load();
  fault f;
  f.kind = static_cast<fault_kind>(packed >> 32);
  f.status = static_cast<int>(packed & 0xffffffffu);
  return f;
}

void mock_handler::outage_endpoint(const mock_request& req, mock_reply& out) {
  if (req.method == "GET") {
    respond_json(out, 200, "{\"outage\":\"" + to_string(outage()) + "\"}");
    return;
  }
  if (req.method != "POST") {
    out.headers.emplace_back("allow", "GET, POST");
    error(out, 405, "Use GET or POST /outage", "invalid_request_error", nullptr,
          nullptr);
    return;
  }
  // The body is a fault as in x-mock-fault ("500", "reset", ...) or "none".
  std::string spec{req.body};
  while (!spec.empty() && (spec.back() == '\n' || spec.back() == ' '))
    spec.pop_back();
  fault f;
  if (spec != "none" && !spec.empty()) {
    auto parsed = parse_fault(spec);
    if (!parsed) {
      error(out, 400, "outage: " + parsed.error, "invalid_request_error",
            nullptr, nullptr);
      return;
    }
    f = *parsed.value;
  }
  set_outage(f);
  respond_json(out, 200, "{\"outage\":\"" + to_string(f) + "\"}");
}

void mock_handler::set_latency(std::optional<latency_model> m) {
  std::lock_guard<std::mutex> guard{mtx_};
  latency_override_ = m.value_or(latency_model{});
  latency_set_.store(m.has_value());
}

void mock_handler::latency_endpoint(const mock_request& req, mock_reply& out) {
  auto current = [this] {
    std::lock_guard<std::mutex> guard{mtx_};
    return latency_set_.load() ? latency_spec_ : std::string{"default"};
  };
  if (req.method == "GET") {
    respond_json(out, 200, "{\"latency\":\"" + current() + "\"}");
    return;
  }
  if (req.method != "POST") {
    out.headers.emplace_back("allow", "GET, POST");
    error(out, 405, "Use GET or POST /latency", "invalid_request_error",
          nullptr, nullptr);
    return;
  }
  // The body is a latency as in --latency ("fixed:80", "lognormal:50:200",
  // "120") or "default" (the configured one again).
  std::string spec{req.body};
  while (!spec.empty() && (spec.back() == '\n' || spec.back() == ' '))
    spec.pop_back();
  if (spec == "default" || spec.empty()) {
    set_latency(std::nullopt);
  } else {
    auto parsed = parse_latency_spec(spec);
    if (!parsed) {
      error(out, 400, "latency: " + parsed.error, "invalid_request_error",
            nullptr, nullptr);
      return;
    }
    set_latency(*parsed.value);
    std::lock_guard<std::mutex> guard{mtx_};
    latency_spec_ = spec;
  }
  respond_json(out, 200, "{\"latency\":\"" + current() + "\"}");
}

void mock_handler::respond_json(mock_reply& out, int status, std::string body) {
  out.status = status;
  out.headers.emplace_back("content-type", "application/json");
  add_request_id(out);
  out.body = std::move(body);
}

void mock_handler::add_request_id(mock_reply& out) {
  auto id = next_request_id_.fetch_add(1, std::memory_order_relaxed);
  out.headers.emplace_back("x-request-id", "mock-" + std::to_string(id));
}

void mock_handler::error(mock_reply& out, int status, std::string message,
                         const char* type, const char* param,
                         const char* code) {
  openai::api_error err;
  err.message = std::move(message);
  err.type = type;
  if (param != nullptr)
    err.param = param;
  if (code != nullptr)
    err.code = code;
  respond_json(out, status, openai::encode_error(err));
}

void mock_handler::injected_error(const fault& f, mock_reply& out) {
  switch (f.kind) {
    case fault_kind::rate_limit: {
      auto ms = opts_.retry_after_ms;
      out.headers.emplace_back("retry-after", std::to_string(ceil_seconds(ms)));
      out.headers.emplace_back("retry-after-ms", std::to_string(ms));
      error(out, 429,
            "Rate limit reached for requests (injected by the mock). Please "
            "try again in "
                + std::to_string(ms) + "ms.",
            "requests", nullptr, "rate_limit_exceeded");
      return;
    }
    case fault_kind::quota:
      error(out, 429,
            "You exceeded your current quota, please check your plan and "
            "billing details (injected by the mock).",
            "insufficient_quota", nullptr, "insufficient_quota");
      return;
    default: {
      auto status = f.status;
      const char* type
          = status >= 500 ? "server_error" : "invalid_request_error";
      const char* code = status == 401 ? "invalid_api_key" : nullptr;
      error(out, status,
            "The mock injected a " + std::to_string(status) + " error", type,
            nullptr, code);
      return;
    }
  }
}

fault mock_handler::draw_fault() {
  if (opts_.faults.empty())
    return fault{};
  uint64_t bits = 0;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    bits = fault_rng_();
  }
  // 53 random bits -> a uniform double in [0, 1).
  auto u = static_cast<double>(bits >> 11) * 0x1.0p-53;
  double cumulative = 0.0;
  for (const auto& f : opts_.faults) {
    cumulative += f.probability;
    if (u < cumulative)
      return f.what;
  }
  return fault{};
}

std::chrono::nanoseconds mock_handler::draw_latency() {
  using shape = latency_model::shape;
  latency_model set;
  bool overridden = latency_set_.load();
  if (overridden) {
    std::lock_guard<std::mutex> guard{mtx_};
    set = latency_override_;
  }
  const auto& lat = overridden ? set : opts_.latency;
  switch (lat.kind) {
    case shape::none: return std::chrono::nanoseconds{0};
    case shape::fixed: return from_ms(lat.fixed_ms);
    case shape::lognormal: {
      // ln X ~ N(ln median, sigma); the 99th percentile of N(0,1) is 2.3263.
      auto sigma = std::log(lat.p99_ms / lat.median_ms) / 2.3263;
      double z = 0.0;
      {
        std::lock_guard<std::mutex> guard{mtx_};
        z = std::normal_distribution<double>{0.0, 1.0}(latency_rng_);
      }
      auto ms = lat.median_ms * std::exp(sigma * z);
      return from_ms(std::min(ms, max_latency_ms));
    }
  }
  return std::chrono::nanoseconds{0};
}

void mock_handler::embeddings(const mock_request& req, mock_reply& out) {
  counters_.embedding_request();
  auto decoded = openai::decode_request(req.body);
  if (!decoded) {
    error(out, 400, error_detail(decoded.error()), "invalid_request_error",
          nullptr, nullptr);
    return;
  }
  auto& body = *decoded;
  if (opts_.refuse_base64 && body.encoding_format == openai::encoding::base64) {
    // Like OpenAI-compatible servers that only produce floats.
    error(out, 400,
          "encoding_format 'base64' is not supported by this server; use "
          "'float'",
          "invalid_request_error", "encoding_format", nullptr);
    return;
  }
  // Latency: the request's override, else the model.
  std::chrono::nanoseconds delay{0};
  if (req.latency_header) {
    auto ms = to_double(*req.latency_header);
    if (!ms || *ms < 0.0 || *ms > max_latency_ms) {
      error(out, 400,
            "x-mock-latency-ms must be a number of milliseconds in [0, "
                + std::to_string(static_cast<int64_t>(max_latency_ms)) + "]",
            "invalid_request_error", nullptr, nullptr);
      return;
    }
    delay = from_ms(*ms);
  } else {
    delay = draw_latency();
  }
  out.delay = delay;
  auto dims = body.dimensions.value_or(opts_.dims_default);
  if (dims > opts_.dims_max) {
    error(out, 400,
          "dimensions " + std::to_string(dims) + " is above the maximum of "
              + std::to_string(opts_.dims_max),
          "invalid_request_error", "dimensions", nullptr);
    return;
  }
  // Each input's tokens: estimate_tokens of a text, the number of ids of a
  // token array (usage is their sum, so it is additive per input).
  std::vector<int64_t> input_tokens;
  auto invalid = body.token_input.empty()
      ? openai::validate_inputs(body.input, profile_for(provider_kind::openai),
                                false, &input_tokens)
      : openai::validate_token_inputs(body.token_input,
                                      profile_for(provider_kind::openai), false,
                                      &input_tokens);
  if (invalid) {
    error(out, 400, error_detail(invalid), "invalid_request_error", "input",
          nullptr);
    return;
  }
  // A token array is embedded as its ids written out: "17 4 9".
  for (const auto& ids : body.token_input) {
    std::string text;
    for (auto id : ids)
      text += (text.empty() ? "" : " ") + std::to_string(id);
    body.input.push_back(std::move(text));
  }
  int64_t tokens = 0;
  for (auto n : input_tokens)
    tokens += n;
  {
    if (tokens > opts_.max_tokens_per_request) {
      // OpenAI's answer when a request's inputs are too many tokens in total.
      error(out, 400,
            "Requested " + std::to_string(tokens) + " tokens, max "
                + std::to_string(opts_.max_tokens_per_request)
                + " tokens per request",
            "max_tokens_per_request", nullptr, "max_tokens_per_request");
      return;
    }
  }
  for (std::size_t i = 0; i < body.input.size(); ++i) {
    const auto& in = body.input[i];
    if (in.find("[[mock:") == std::string::npos)
      continue;
    if (in.find(rejection_marker) != std::string::npos) {
      error(out, 400,
            "input[" + std::to_string(i) + "] is rejected by the mock",
            "invalid_request_error", "input", nullptr);
      return;
    }
    if (auto at = in.find(delay_marker); at != std::string::npos) {
      auto from = at + delay_marker.size();
      auto to = in.find("]]", from);
      auto ms = to == std::string::npos
          ? std::nullopt
          : to_double(std::string_view{in}.substr(from, to - from));
      if (!ms || *ms < 0.0 || *ms > max_latency_ms) {
        error(out, 400,
              "input[" + std::to_string(i)
                  + "]: [[mock:delay-ms=N]] needs N in [0, "
                  + std::to_string(static_cast<int64_t>(max_latency_ms)) + "]",
              "invalid_request_error", "input", nullptr);
        return;
      }
      out.delay = std::max(out.delay, from_ms(*ms));
    }
  }
  counters_.inputs(body.input.size());
  if (body.encoding_format == openai::encoding::base64)
    counters_.base64_request();
  fault f;
  if (req.fault_header) {
    auto parsed = parse_fault(*req.fault_header);
    if (!parsed) {
      error(out, 400, "x-mock-fault: " + parsed.error, "invalid_request_error",
            nullptr, nullptr);
      return;
    }
    f = *parsed.value;
  } else if (auto o = outage(); o.kind != fault_kind::none) {
    f = o;
  } else {
    f = draw_fault();
  }
  switch (f.kind) {
    case fault_kind::status:
    case fault_kind::rate_limit:
    case fault_kind::quota:
      counters_.injected(f);
      injected_error(f, out);
      return;
    case fault_kind::hang:
      counters_.injected(f);
      out.what = mock_reply::action::hang;
      return;
    default: break;
  }
  if (limiter_.enabled()) {
    auto now = rate_limiter::clock::now();
    std::lock_guard<std::mutex> guard{mtx_};
    auto d = limiter_.admit(tokens, now);
    limiter_.headers([&out](std::string name, std::string value) {
      out.headers.emplace_back(std::move(name), std::move(value));
    });
    if (!d.allowed) {
      if (d.too_large) {
        out.headers.emplace_back("x-should-retry", "false");
        error(out, 429,
              "Request too large for the tokens per min (TPM) limit: Limit "
                  + std::to_string(opts_.tpm) + ", Requested "
                  + std::to_string(tokens) + ".",
              "tokens", nullptr, "rate_limit_exceeded");
        return;
      }
      auto ms = ceil_ms(d.retry_after);
      out.headers.emplace_back("retry-after", std::to_string(ceil_seconds(ms)));
      out.headers.emplace_back("retry-after-ms", std::to_string(ms));
      bool on_requests = std::string_view{d.limit} == "requests";
      error(out, 429,
            std::string{"Rate limit reached for "} + d.limit + " per min ("
                + (on_requests ? "RPM" : "TPM") + "): Limit "
                + std::to_string(on_requests ? opts_.rpm : opts_.tpm)
                + ". Please try again in " + std::to_string(ms) + "ms.",
            d.limit, nullptr, "rate_limit_exceeded");
      return;
    }
  }
  openai::embeddings_response resp;
  resp.model = opts_.model.empty() ? std::move(body.model) : opts_.model;
  resp.data.reserve(body.input.size());
  for (const auto& text : body.input)
    resp.data.push_back(hash_embed(text, static_cast<std::size_t>(dims)));
  resp.usage.prompt_tokens = tokens;
  resp.usage.total_tokens = tokens;
  counters_.tokens(static_cast<uint64_t>(tokens));
  switch (f.kind) {
    case fault_kind::baddims: {
      // The last vector loses (or, at one dimension, gains) a value: with
      // several inputs the dimensions are inconsistent, with one it differs
      // from the requested (or default) dimension.
      auto& v = resp.data.back();
      if (v.size() > 1)
        v.pop_back();
      else
        v.push_back(0.0f);
      break;
    }
    case fault_kind::nan: {
      auto& v = resp.data.back();
      v[v.size() / 2] = std::numeric_limits<float>::quiet_NaN();
      break;
    }
    default: break;
  }
  if (f.kind == fault_kind::nan)
    respond_json(out, 200, encode_with_nan(resp, body.encoding_format));
  else
    respond_json(out, 200, openai::encode_response(resp, body.encoding_format));
  switch (f.kind) {
    case fault_kind::malformed:
      // A truncated body: never valid JSON (the closing brace is missing).
      out.body.resize(out.body.size() / 2);
      break;
    case fault_kind::close: out.close = true; break;
    case fault_kind::reset: out.what = mock_reply::action::reset; break;
    default: break;
  }
  if (f.kind != fault_kind::none)
    counters_.injected(f);
}

} // namespace embedrt::mock
