#include "serve/clients.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

namespace embedrt::serve {

namespace {

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size())
    return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i]))
        != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

/// Label values in the Prometheus text format: \, " and newline escaped.
std::string label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

} // namespace

bool token_matches(std::string_view given, std::string_view expected) {
  if (expected.empty())
    return false;
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (std::size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given[i])
        ^ static_cast<unsigned char>(expected[i % expected.size()]);
  return diff == 0;
}

void minute_bucket::refill(std::chrono::steady_clock::time_point now) {
  if (last == std::chrono::steady_clock::time_point{}) {
    level = static_cast<double>(per_minute);
    last = now;
    return;
  }
  auto ms = std::chrono::duration<double, std::milli>(now - last).count();
  if (ms <= 0)
    return;
  level = std::min(static_cast<double>(per_minute),
                   level + ms * static_cast<double>(per_minute) / 60000.0);
  last = now;
}

std::chrono::milliseconds minute_bucket::wait_for(double n) const {
  if (level >= n || per_minute == 0)
    return std::chrono::milliseconds{0};
  auto ms = (n - level) * 60000.0 / static_cast<double>(per_minute);
  return std::chrono::milliseconds{static_cast<int64_t>(std::ceil(ms))};
}

client_registry::client_registry(std::vector<client_spec> specs) {
  for (auto& s : specs) {
    auto st = std::make_unique<state>();
    st->requests.per_minute = s.rpm;
    st->tokens.per_minute = s.tpm;
    st->spec = std::move(s);
    clients_.push_back(std::move(st));
  }
}

std::optional<std::size_t>
client_registry::identify(std::string_view authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  if (!iequals_prefix(authorization, scheme))
    return std::nullopt;
  authorization.remove_prefix(scheme.size());
  while (!authorization.empty() && authorization.front() == ' ')
    authorization.remove_prefix(1);
  while (!authorization.empty() && authorization.back() == ' ')
    authorization.remove_suffix(1);
  std::optional<std::size_t> found;
  for (std::size_t i = 0; i < clients_.size(); ++i)
    if (token_matches(authorization, clients_[i]->spec.token) && !found)
      found = i;
  return found;
}

std::optional<front_reply> client_registry::admit(std::size_t client,
                                                  uint64_t tokens,
                                                  clock::time_point now) {
  auto& st = *clients_[client];
  const auto& spec = st.spec;
  if (spec.rpm == 0 && spec.tpm == 0)
    return std::nullopt;
  std::lock_guard<std::mutex> guard{st.mtx};
  std::string kind;
  std::string message;
  std::chrono::milliseconds wait{0};
  if (spec.rpm != 0) {
    st.requests.refill(now);
    if (auto w = st.requests.wait_for(1.0); w.count() > 0) {
      kind = "requests";
      wait = w;
      message = "Rate limit reached for client " + spec.name
          + " on requests per min (RPM): Limit " + std::to_string(spec.rpm);
    }
  }
  if (kind.empty() && spec.tpm != 0) {
    st.tokens.refill(now);
    auto need = static_cast<double>(tokens);
    if (tokens > spec.tpm) {
      kind = "tokens";
      wait = std::chrono::milliseconds{60000};
      message = "Request too large for client " + spec.name
          + " on tokens per min (TPM): Limit " + std::to_string(spec.tpm)
          + ", Requested " + std::to_string(tokens)
          + " (estimated); send fewer inputs per request";
    } else if (auto w = st.tokens.wait_for(need); w.count() > 0) {
      kind = "tokens";
      wait = w;
      message = "Rate limit reached for client " + spec.name
          + " on tokens per min (TPM): Limit " + std::to_string(spec.tpm)
          + ", Requested " + std::to_string(tokens) + " (estimated)";
    }
  }
  if (kind.empty()) {
    if (spec.rpm != 0)
      st.requests.level -= 1.0;
    if (spec.tpm != 0)
      st.tokens.level -= static_cast<double>(tokens);
    return std::nullopt;
  }
  ++(kind == "requests" ? st.limited_requests : st.limited_tokens);
  auto secs = (wait.count() + 999) / 1000;
  message += ". Please try again in " + std::to_string(wait.count()) + "ms.";
  auto r = error_reply(429, message, kind, "rate_limit_exceeded");
  r.headers.emplace_back("retry-after",
                         std::to_string(std::max<int64_t>(1, secs)));
  r.headers.emplace_back("retry-after-ms", std::to_string(wait.count()));
  return r;
}

void client_registry::count(std::optional<std::size_t> client, int status) {
  auto& counts = client ? clients_[*client]->replies : anonymous_;
  auto i = status >= 100 && status < 600 ? static_cast<std::size_t>(status) : 0;
  counts[i].fetch_add(1, std::memory_order_relaxed);
}

std::string client_registry::render_metrics() const {
  std::string out;
  out += "# HELP embedrt_gateway_requests_total Replies of the gateway by "
         "client (\"\": no client token) and HTTP status.\n"
         "# TYPE embedrt_gateway_requests_total counter\n";
  auto replies = [&out](const std::string& name, const status_counts& counts) {
    for (std::size_t i = 0; i < counts.size(); ++i)
      if (auto n = counts[i].load(std::memory_order_relaxed); n != 0)
        out += "embedrt_gateway_requests_total{client=\"" + label(name)
            + "\",status=\"" + std::to_string(i) + "\"} " + std::to_string(n)
            + "\n";
  };
  replies("", anonymous_);
  for (const auto& c : clients_)
    replies(c->spec.name, c->replies);
  out += "# HELP embedrt_gateway_rate_limited_total Requests refused with "
         "429 by a client's own limit (limit: requests or tokens).\n"
         "# TYPE embedrt_gateway_rate_limited_total counter\n";
  for (const auto& c : clients_) {
    if (c->spec.rpm != 0)
      out += "embedrt_gateway_rate_limited_total{client=\""
          + label(c->spec.name) + "\",limit=\"requests\"} "
          + std::to_string(c->limited_requests.load()) + "\n";
    if (c->spec.tpm != 0)
      out += "embedrt_gateway_rate_limited_total{client=\""
          + label(c->spec.name) + "\",limit=\"tokens\"} "
          + std::to_string(c->limited_tokens.load()) + "\n";
  }
  return out;
}

} // namespace embedrt::serve
