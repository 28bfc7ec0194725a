#include "bench/bench_report.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace embedrt::bench {

int64_t nearest_rank(const std::vector<int64_t>& sorted, double p) {
  auto n = sorted.size();
  // p * n / 100 in this order, minus a tolerance, so that percentiles like
  // 99.9 (not exact in binary) do not round up past an exact rank.
  auto rank = static_cast<std::size_t>(
      std::ceil(p * static_cast<double>(n) / 100.0 - 1e-9));
  rank = std::clamp<std::size_t>(rank, 1, n);
  return sorted[rank - 1];
}

latency_summary summarize(const std::vector<int64_t>& ns) {
  log_histogram h;
  for (auto x : ns)
    h.record(x);
  return summarize_histogram(h);
}

latency_summary summarize_exact(std::vector<int64_t>& ns) {
  latency_summary s;
  s.count = ns.size();
  if (ns.empty())
    return s;
  std::sort(ns.begin(), ns.end());
  auto ms = [](int64_t x) {
    return static_cast<double>(x) / 1e6;
  };
  s.p50_ms = ms(nearest_rank(ns, 50));
  s.p95_ms = ms(nearest_rank(ns, 95));
  s.p99_ms = ms(nearest_rank(ns, 99));
  s.p999_ms = ms(nearest_rank(ns, 99.9));
  s.max_ms = ms(ns.back());
  s.mean_ms
      = static_cast<double>(std::accumulate(ns.begin(), ns.end(), int64_t{0}))
      / static_cast<double>(ns.size()) / 1e6;
  return s;
}

latency_summary summarize_histogram(const log_histogram& ns) {
  latency_summary s;
  s.count = static_cast<std::size_t>(ns.count);
  if (ns.count == 0)
    return s;
  auto ms = [](uint64_t x) {
    return static_cast<double>(x) / 1e6;
  };
  s.p50_ms = ms(ns.percentile(50));
  s.p95_ms = ms(ns.percentile(95));
  s.p99_ms = ms(ns.percentile(99));
  s.p999_ms = ms(ns.percentile(99.9));
  s.max_ms = ms(ns.max);
  s.mean_ms = static_cast<double>(ns.sum) / static_cast<double>(ns.count) / 1e6;
  return s;
}

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr const char* filler_words[] = {
    "actor",   "message", "vector",  "latency",  "keep",     "alive",
    "pool",    "batch",   "breaker", "upstream", "deadline", "retry",
    "lexical", "hash",    "token",   "socket",   "thread",   "queue",
    "model",   "embed",   "search",  "query",    "document", "index",
};

} // namespace

std::string bench_text(uint64_t seed, uint64_t request, uint32_t input,
                       std::size_t bytes) {
  std::string text
      = "bench text " + std::to_string(request) + "-" + std::to_string(input);
  if (text.size() >= bytes)
    return text;
  uint64_t state = seed ^ (request * 0x100000001b3ULL) ^ input;
  constexpr auto n_words = sizeof(filler_words) / sizeof(filler_words[0]);
  while (text.size() < bytes) {
    text += ' ';
    text += filler_words[splitmix64(state) % n_words];
  }
  text.resize(bytes);
  if (text.back() == ' ')
    text.back() = 'z';
  return text;
}

uint64_t bench_report::failed() const noexcept {
  uint64_t n = 0;
  for (const auto& kv : errors)
    n += kv.second;
  return n;
}

namespace {

using writer = rapidjson::Writer<rapidjson::StringBuffer>;

void key(writer& w, const char* k) {
  w.Key(k);
}

void number(writer& w, const char* k, double v) {
  key(w, k);
  if (std::isfinite(v))
    w.Double(v);
  else
    w.Null();
}

void maybe(writer& w, const char* k, const std::optional<int64_t>& v) {
  key(w, k);
  if (v)
    w.Int64(*v);
  else
    w.Null();
}

void latency(writer& w, const latency_summary& s, const char* p50,
             const char* p95, const char* p99, const char* p999,
             const char* max, const char* mean) {
  auto put = [&](const char* k, double v) {
    if (k == nullptr)
      return;
    key(w, k);
    if (s.count > 0)
      w.Double(v);
    else
      w.Null();
  };
  put(p50, s.p50_ms);
  put(p95, s.p95_ms);
  put(p99, s.p99_ms);
  put(p999, s.p999_ms);
  put(max, s.max_ms);
  put(mean, s.mean_ms);
}

} // namespace

std::string to_json(const bench_report& r) {
  rapidjson::StringBuffer buf;
  writer w{buf};
  // Microsecond resolution for milliseconds; enough for rates (seconds get
  // six places below).
  w.SetMaxDecimalPlaces(4);
  w.StartObject();
  key(w, "requests");
  w.Uint64(r.requests);
  key(w, "concurrency");
  w.Uint64(r.concurrency);
  key(w, "inputs");
  w.Uint(r.inputs);
  key(w, "dims");
  w.Int(r.dims);
  key(w, "connections");
  w.Uint(r.connections);
  key(w, "batching");
  w.Bool(r.batching);
  key(w, "metrics");
  w.Bool(r.metrics);
  key(w, "cache");
  w.Bool(r.cache);
  key(w, "model");
  w.String(r.model.data(), static_cast<rapidjson::SizeType>(r.model.size()));
  key(w, "warmup");
  w.Uint64(r.warmup);
  key(w, "text_bytes");
  w.Uint64(r.text_bytes);
  key(w, "deadline_ms");
  w.Int64(r.deadline_ms);
  key(w, "workers");
  w.Uint64(r.workers);
  key(w, "scheduler");
  w.String(r.scheduler.data(),
           static_cast<rapidjson::SizeType>(r.scheduler.size()));
  key(w, "io_threads");
  w.Uint64(r.io_threads);
  key(w, "seed");
  w.Uint64(r.seed);
  key(w, "embedded_upstream");
  w.Bool(r.embedded_upstream);

  key(w, "ok");
  w.Uint64(r.ok);
  key(w, "errors");
  w.StartObject();
  for (const auto& [kind, n] : r.errors) {
    w.Key(kind.data(), static_cast<rapidjson::SizeType>(kind.size()));
    w.Uint64(n);
  }
  w.EndObject();
  // Microseconds: RapidJSON truncates to the decimal places, and at 4 a run
  // of a few milliseconds lost over 1 % (req_per_s no longer matched
  // requests / seconds).
  w.SetMaxDecimalPlaces(6);
  number(w, "seconds", r.seconds);
  w.SetMaxDecimalPlaces(4);
  auto answered = static_cast<double>(r.ok + r.failed());
  auto per_s = [&](double n) {
    return r.seconds > 0 ? n / r.seconds : std::nan("");
  };
  number(w, "req_per_s", per_s(answered));
  number(w, "texts_per_s",
         per_s(static_cast<double>(r.ok) * static_cast<double>(r.inputs)));
  latency(w, r.ok_latency, "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
          "mean_ms");
  latency(w, r.ok_latency_exact, "exact_p50_ms", "exact_p95_ms", "exact_p99_ms",
          "exact_p999_ms", nullptr, nullptr);
  latency(w, r.error_latency, "error_p50_ms", nullptr, "error_p99_ms", nullptr,
          nullptr, nullptr);
  key(w, "threads_start");
  w.Uint64(r.threads_start);
  key(w, "threads_peak");
  w.Uint64(r.threads_peak);
  key(w, "threads_end");
  w.Uint64(r.threads_end);
  maybe(w, "connections_opened", r.connections_opened);
  maybe(w, "upstream_requests", r.upstream_requests);
  key(w, "reuse");
  if (r.upstream_requests && r.connection_reuses && *r.upstream_requests > 0)
    w.Double(static_cast<double>(*r.connection_reuses)
             / static_cast<double>(*r.upstream_requests));
  else
    w.Null();
  maybe(w, "restarts", r.restarts);
  maybe(w, "rejected", r.rejected);
  maybe(w, "limit_decreases_overload", r.limit_decreases_overload);
  maybe(w, "limit_decreases_latency", r.limit_decreases_latency);
  number(w, "cpu_s", r.cpu_s);
  number(w, "cpu_s_process", r.cpu_s_process);
  number(w, "cpu_ms_per_1k",
         answered > 0 ? r.cpu_s * 1e6 / answered : std::nan(""));
  number(w, "max_rss_mb", r.max_rss_mb);
  w.EndObject();
  return std::string{buf.GetString(), buf.GetSize()};
}

} // namespace embedrt::bench
