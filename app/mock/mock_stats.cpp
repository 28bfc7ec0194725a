#include "mock/mock_stats.hpp"

namespace embedrt::mock {

namespace {

constexpr auto relaxed = std::memory_order_relaxed;

static_assert(static_cast<std::size_t>(fault_kind::close) + 1 == 10,
              "mock_counters::named_faults must cover every fault_kind");

} // namespace

uint64_t mock_stats::status_count(int status) const {
  auto i = by_status.find(status);
  return i == by_status.end() ? 0 : i->second;
}

uint64_t mock_stats::fault_count(std::string_view name) const {
  auto i = faults.find(std::string{name});
  return i == faults.end() ? 0 : i->second;
}

std::string to_json(const mock_stats& stats) {
  std::string out;
  out.reserve(256);
  auto field = [&out](const char* name, uint64_t value) {
    out += '"';
    out += name;
    out += "\":";
    out += std::to_string(value);
    out += ',';
  };
  out += '{';
  field("connections_accepted", stats.connections_accepted);
  field("connections_open", stats.connections_open);
  field("requests", stats.requests);
  field("embedding_requests", stats.embedding_requests);
  field("inputs", stats.inputs);
  field("base64_requests", stats.base64_requests);
  field("tokens", stats.tokens);
  out += "\"by_status\":{";
  bool first = true;
  for (const auto& [status, n] : stats.by_status) {
    if (!first)
      out += ',';
    first = false;
    out += '"' + std::to_string(status) + "\":" + std::to_string(n);
  }
  out += "},\"faults\":{";
  first = true;
  // Fault names are digits or lower-case letters: no escaping needed.
  for (const auto& [name, n] : stats.faults) {
    if (!first)
      out += ',';
    first = false;
    out += '"' + name + "\":" + std::to_string(n);
  }
  out += "}}";
  return out;
}

mock_counters::mock_counters() {
  for (auto& x : by_status_)
    x.store(0, relaxed);
  for (auto& x : status_faults_)
    x.store(0, relaxed);
  for (auto& x : kind_faults_)
    x.store(0, relaxed);
}

void mock_counters::connection_opened() noexcept {
  connections_accepted_.fetch_add(1, relaxed);
  connections_open_.fetch_add(1, relaxed);
}

void mock_counters::connection_closed() noexcept {
  connections_open_.fetch_sub(1, relaxed);
}

void mock_counters::request() noexcept {
  requests_.fetch_add(1, relaxed);
}

void mock_counters::embedding_request() noexcept {
  embedding_requests_.fetch_add(1, relaxed);
}

void mock_counters::inputs(uint64_t n) noexcept {
  inputs_.fetch_add(n, relaxed);
}

void mock_counters::base64_request() noexcept {
  base64_requests_.fetch_add(1, relaxed);
}

void mock_counters::tokens(uint64_t n) noexcept {
  tokens_.fetch_add(n, relaxed);
}

void mock_counters::response(int status) noexcept {
  if (status >= 0 && status < max_status)
    by_status_[static_cast<std::size_t>(status)].fetch_add(1, relaxed);
}

void mock_counters::injected(const fault& f) noexcept {
  if (f.kind == fault_kind::status) {
    if (f.status >= 0 && f.status < max_status)
      status_faults_[static_cast<std::size_t>(f.status)].fetch_add(1, relaxed);
    return;
  }
  auto i = static_cast<std::size_t>(f.kind);
  if (i < kind_faults_.size())
    kind_faults_[i].fetch_add(1, relaxed);
}

void mock_counters::reset() noexcept {
  connections_accepted_.store(0, relaxed);
  requests_.store(0, relaxed);
  embedding_requests_.store(0, relaxed);
  inputs_.store(0, relaxed);
  base64_requests_.store(0, relaxed);
  tokens_.store(0, relaxed);
  for (auto& x : by_status_)
    x.store(0, relaxed);
  for (auto& x : status_faults_)
    x.store(0, relaxed);
  for (auto& x : kind_faults_)
    x.store(0, relaxed);
}

mock_stats mock_counters::snapshot() const {
  mock_stats s;
  s.connections_accepted = connections_accepted_.load(relaxed);
  s.connections_open = connections_open_.load(relaxed);
  s.requests = requests_.load(relaxed);
  s.embedding_requests = embedding_requests_.load(relaxed);
  s.inputs = inputs_.load(relaxed);
  s.base64_requests = base64_requests_.load(relaxed);
  s.tokens = tokens_.load(relaxed);
  for (int i = 0; i < max_status; ++i) {
    if (auto n = by_status_[static_cast<std::size_t>(i)].load(relaxed))
      s.by_status[i] = n;
    if (auto n = status_faults_[static_cast<std::size_t>(i)].load(relaxed))
      s.faults[std::to_string(i)] = n;
  }
  for (std::size_t i = 0; i < kind_faults_.size(); ++i) {
    auto kind = static_cast<fault_kind>(i);
    if (kind == fault_kind::none || kind == fault_kind::status)
      continue;
    if (auto n = kind_faults_[i].load(relaxed))
      s.faults[to_string(fault{kind, kind == fault_kind::rate_limit ? 429 : 0})]
          = n;
  }
  return s;
}

} // namespace embedrt::mock
