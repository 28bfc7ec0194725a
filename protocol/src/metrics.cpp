#include "embedrt/protocol/metrics.hpp"

#include <charconv>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <utility>

namespace embedrt {

const char* breaker_state_name(uint8_t state) {
  switch (state) {
    case breaker_closed: return "closed";
    case breaker_open: return "open";
    case breaker_half_open: return "half_open";
    default: return "unknown";
  }
}

log_histogram metrics_snapshot::all_request_latencies() const {
  log_histogram all;
  for (const auto& l : latencies)
    all.merge(l.latency_ns);
  return all;
}

namespace {

using label = std::pair<const char*, std::string>;

/// Prometheus bucket bounds of a histogram: upper bounds of buckets of
/// log_histogram (so counts are exact), two per power of two.
std::vector<uint64_t> bounds(uint32_t first_pow, uint32_t last_pow) {
  std::vector<uint64_t> out;
  if (first_pow == 0)
    out.push_back(1);
  for (uint32_t k = std::max<uint32_t>(first_pow, 1); k <= last_pow; ++k) {
    if (k >= 2)
      out.push_back(uint64_t{3} << (k - 2)); // 1.5 * 2^(k-1)
    out.push_back(uint64_t{1} << k);
  }
  return out;
}

/// Latencies: 1.024 us .. 137 s (2^10 .. 2^37 ns).
const std::vector<uint64_t>& latency_bounds() {
  static const auto b = [] {
    auto v = bounds(10, 37);
    v.erase(v.begin()); // 1.5 * 2^9 is below the range
    return v;
  }();
  return b;
}

/// Batch sizes: 1 .. 4096 inputs.
const std::vector<uint64_t>& size_bounds() {
  static const auto b = bounds(0, 12);
  return b;
}

class writer {
 public:
  explicit writer(std::string& out) : out_(out) {
    // nop
  }

  /// `# HELP` and `# TYPE` of a family.
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    for (const char* c = help; *c != '\0'; ++c) {
      if (*c == '\\')
        out_ += "\\\\";
      else if (*c == '\n')
        out_ += "\\n";
      else
        out_ += *c;
    }
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  void sample(const char* name, const char* suffix,
              std::initializer_list<label> labels, const char* extra_key,
              const std::string& extra_value, double value) {
    begin(name, suffix, labels, extra_key, extra_value);
    number(value);
    out_ += '\n';
  }

  void sample(const char* name, const char* suffix,
              std::initializer_list<label> labels, const char* extra_key,
              const std::string& extra_value, uint64_t value) {
    begin(name, suffix, labels, extra_key, extra_value);
    out_ += std::to_string(value);
    out_ += '\n';
  }

  template <class T>
  void sample(const char* name, std::initializer_list<label> labels, T value) {
    sample(name, "", labels, nullptr, std::string{}, value);
  }

  void sample(const char* name, std::initializer_list<label> labels,
              int64_t value) {
    begin(name, "", labels, nullptr, std::string{});
    out_ += std::to_string(value);
    out_ += '\n';
  }

  void sample(const char* name, std::initializer_list<label> labels,
              int32_t value) {
    sample(name, labels, static_cast<int64_t>(value));
  }

  /// One histogram series: cumulative buckets at `bnds` (divided by
  /// `scale` for rendering), +Inf, _sum and _count.
  void histogram(const char* name, std::initializer_list<label> labels,
                 const log_histogram& h, const std::vector<uint64_t>& bnds,
                 double scale) {
    for (auto b : bnds) {
      std::string le;
      number_to(le, static_cast<double>(b) / scale);
      sample(name, "_bucket", labels, "le", le, h.count_at_most(b));
    }
    sample(name, "_bucket", labels, "le", "+Inf", h.count);
    if (scale == 1.0)
      sample(name, "_sum", labels, nullptr, std::string{}, h.sum);
    else
      sample(name, "_sum", labels, nullptr, std::string{},
             static_cast<double>(h.sum) / scale);
    sample(name, "_count", labels, nullptr, std::string{}, h.count);
  }

 private:
  void begin(const char* name, const char* suffix,
             std::initializer_list<label> labels, const char* extra_key,
             const std::string& extra_value) {
    out_ += name;
    out_ += suffix;
    bool any = labels.size() > 0 || extra_key != nullptr;
    if (any) {
      out_ += '{';
      bool first = true;
      auto put = [&](const char* k, const std::string& v) {
        if (!first)
          out_ += ',';
        first = false;
        out_ += k;
        out_ += "=\"";
        for (char c : v) {
          if (c == '\\')
            out_ += "\\\\";
          else if (c == '"')
            out_ += "\\\"";
          else if (c == '\n')
            out_ += "\\n";
          else
            out_ += c;
        }
        out_ += '"';
      };
      for (const auto& [k, v] : labels)
        put(k, v);
      if (extra_key != nullptr)
        put(extra_key, extra_value);
      out_ += '}';
    }
    out_ += ' ';
  }

  static void number_to(std::string& out, double v) {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, res.ptr);
  }

  void number(double v) {
    number_to(out_, v);
  }

  std::string& out_;
};

std::string label_or_none(const std::string& s) {
  return s.empty() ? std::string{"none"} : s;
}

constexpr double ns_per_s = 1e9;

// -- requests -----------------------------------------------------------------

void render_request_counts(writer& w, const metrics_snapshot& snap) {
  w.family("embedrt_metrics_enabled", "gauge",
           "1 if request metrics are recorded (runtime_config.metrics), else "
           "0.");
  w.sample("embedrt_metrics_enabled", {}, int64_t{snap.enabled ? 1 : 0});
  w.family("embedrt_requests_in_flight", "gauge",
           "Caller requests accepted by the service and not answered yet.");
  w.sample("embedrt_requests_in_flight", {}, snap.requests_in_flight);
  w.family("embedrt_requests_total", "counter",
           "Caller requests answered, by upstream, model, outcome and error "
           "kind.");
  for (const auto& r : snap.requests)
    w.sample("embedrt_requests_total",
             {{"upstream", label_or_none(r.upstream)},
              {"model", r.model},
              {"outcome", r.outcome},
              {"error", label_or_none(r.error)}},
             r.requests);
  w.family("embedrt_texts_total", "counter",
           "Input texts of the caller requests answered, by upstream, model, "
           "outcome and error kind.");
  for (const auto& r : snap.requests)
    w.sample("embedrt_texts_total",
             {{"upstream", label_or_none(r.upstream)},
              {"model", r.model},
              {"outcome", r.outcome},
              {"error", label_or_none(r.error)}},
             r.texts);
}

void render_retries(writer& w, const metrics_snapshot& snap) {
  // Per upstream: retries (summed over models and outcomes) and retries the
  // retry budget refused.
  std::map<std::string, std::pair<int64_t, int64_t>> retries;
  for (const auto& u : snap.upstreams)
    retries[u.name];
  for (const auto& r : snap.requests)
    retries[label_or_none(r.upstream)].first += r.retries;
  for (const auto& u : snap.upstreams)
    retries[u.name].second += u.retry_budget_rejections;
  w.family("embedrt_retries_total", "counter",
           "Retried upstream attempts made for caller requests.");
  for (const auto& [up, n] : retries)
    w.sample("embedrt_retries_total", {{"upstream", up}}, n.first);
  w.family("embedrt_retry_budget_rejections_total", "counter",
           "Retries refused by the pool's retry budget (the request failed "
           "with the error that made it retry).");
  for (const auto& [up, n] : retries)
    w.sample("embedrt_retry_budget_rejections_total", {{"upstream", up}},
             n.second);
}

void render_request_latencies(writer& w, const metrics_snapshot& snap) {
  w.family("embedrt_request_duration_seconds", "histogram",
           "End-to-end latency of caller requests, from arrival at the "
           "service to the reply.");
  for (const auto& l : snap.latencies)
    w.histogram("embedrt_request_duration_seconds",
                {{"upstream", label_or_none(l.upstream)},
                 {"model", l.model},
                 {"outcome", l.outcome}},
                l.latency_ns, latency_bounds(), ns_per_s);
}

// -- upstreams ----------------------------------------------------------------

// One family with one sample per upstream: `get(u)`.
template <class Get>
void per_upstream(writer& w, const metrics_snapshot& snap, const char* name,
                  const char* type, const char* help, Get get) {
  w.family(name, type, help);
  for (const auto& u : snap.upstreams)
    w.sample(name, {{"upstream", u.name}}, get(u));
}

// A family with one sample per upstream: one member of upstream_metrics.
template <class Field>
struct upstream_field {
  const char* name;
  const char* help;
  Field upstream_metrics::*member;
};

constexpr upstream_field<int32_t> pool_gauges[] = {
    {"embedrt_connections_open",
     "Sockets open to the upstream (busy, or idle and kept alive).",
     &upstream_metrics::connections_open},
    {"embedrt_connections_idle",
     "Sockets open to the upstream without a call (kept alive).",
     &upstream_metrics::connections_idle},
    {"embedrt_connections_busy",
     "Connections with an upstream request in flight.",
     &upstream_metrics::connections_busy},
    {"embedrt_connection_actors",
     "Connection actors alive (the concurrency limit; each opens its socket "
     "on first use).",
     &upstream_metrics::connection_actors},
    {"embedrt_queue_depth",
     "Calls waiting in the pool's queue for an idle connection.",
     &upstream_metrics::queue_depth},
    {"embedrt_concurrency_limit",
     "Upstream calls the pool lets be in flight (adaptive concurrency; else "
     "the connections).",
     &upstream_metrics::concurrency_limit},
};

constexpr upstream_field<int64_t> pool_counters[] = {
    {"embedrt_connects_total",
     "Upstream attempts that opened a new connection.",
     &upstream_metrics::connects},
    {"embedrt_connection_reuses_total",
     "Upstream attempts sent over a kept-alive connection.",
     &upstream_metrics::reuses},
    {"embedrt_connection_restarts_total",
     "Connection actors restarted by the pool's supervisor.",
     &upstream_metrics::restarts},
    {"embedrt_rejected_total",
     "Calls the pool rejected as overloaded (queue full or retry budget).",
     &upstream_metrics::rejected},
    {"embedrt_prompt_tokens_total",
     "Prompt tokens reported by the upstream (usage.prompt_tokens).",
     &upstream_metrics::prompt_tokens},
    {"embedrt_tokens_total",
     "Tokens reported by the upstream (usage.total_tokens).",
     &upstream_metrics::total_tokens},
    {"embedrt_pacing_holds_total",
     "Times the pool held work back for the upstream's rate limits (pacing).",
     &upstream_metrics::pacing_holds},
};

template <class Field, std::size_t N>
void render_fields(writer& w, const metrics_snapshot& snap, const char* type,
                   const upstream_field<Field> (&fields)[N]) {
  for (const auto& f : fields)
    per_upstream(w, snap, f.name, type, f.help,
                 [&f](const upstream_metrics& u) {
                   return u.*f.member;
                 });
}

void render_pools(writer& w, const metrics_snapshot& snap) {
  per_upstream(w, snap, "embedrt_upstream_up", "gauge",
               "1 if the upstream's pool answers, is not marked down by its "
               "supervisor and passes its health check (the breaker has its "
               "own gauge).",
               [](const upstream_metrics& u) {
                 bool up = u.state != "down" && u.state != "unresponsive"
                     && u.state != "unknown" && u.state != "unhealthy";
                 return int64_t{up ? 1 : 0};
               });
  render_fields(w, snap, "gauge", pool_gauges);
  render_fields(w, snap, "counter", pool_counters);
  w.family("embedrt_concurrency_limit_decreases_total", "counter",
           "Times adaptive concurrency lowered the limit of calls in flight, "
           "by reason: overload (429, attempt timeout) or latency (a lasting "
           "rise).");
  for (const auto& u : snap.upstreams) {
    w.sample("embedrt_concurrency_limit_decreases_total",
             {{"upstream", u.name}, {"reason", "overload"}},
             u.limit_decreases_overload);
    w.sample("embedrt_concurrency_limit_decreases_total",
             {{"upstream", u.name}, {"reason", "latency"}},
             u.limit_decreases_latency);
  }
  per_upstream(w, snap, "embedrt_pacing_held_seconds_total", "counter",
               "Time the pool held work back for the upstream's rate limits "
               "(pacing).",
               [](const upstream_metrics& u) {
                 return static_cast<double>(u.pacing_held_ns) / 1e9;
               });
  // Other clients' use of the same key, as pacing measures it.
  struct others_gauge {
    const char* name;
    const char* help;
    int64_t upstream_metrics::*per_minute;
  };
  for (const auto& g : {
           others_gauge{"embedrt_pacing_others_tokens_per_minute",
                        "Tokens per minute other clients of the same key "
                        "take, as pacing measures them from the upstream's "
                        "remaining counts (0 when none were seen).",
                        &upstream_metrics::pacing_others_tpm},
           others_gauge{"embedrt_pacing_others_requests_per_minute",
                        "Requests per minute other clients of the same key "
                        "send, as pacing measures them from the upstream's "
                        "remaining counts (0 when none were seen).",
                        &upstream_metrics::pacing_others_rpm},
       })
    per_upstream(w, snap, g.name, "gauge", g.help,
                 [&g](const upstream_metrics& u) {
                   return static_cast<double>(u.*g.per_minute);
                 });
}

void render_ratelimits(writer& w, const metrics_snapshot& snap) {
  w.family("embedrt_ratelimit_remaining_requests", "gauge",
           "Last x-ratelimit-remaining-requests the upstream sent (absent "
           "until one was seen).");
  for (const auto& u : snap.upstreams)
    if (u.ratelimit_remaining_requests >= 0)
      w.sample("embedrt_ratelimit_remaining_requests", {{"upstream", u.name}},
               u.ratelimit_remaining_requests);
  w.family("embedrt_ratelimit_remaining_tokens", "gauge",
           "Last x-ratelimit-remaining-tokens the upstream sent (absent until "
           "one was seen).");
  for (const auto& u : snap.upstreams)
    if (u.ratelimit_remaining_tokens >= 0)
      w.sample("embedrt_ratelimit_remaining_tokens", {{"upstream", u.name}},
               u.ratelimit_remaining_tokens);
}

void render_breakers(writer& w, const metrics_snapshot& snap) {
  per_upstream(w, snap, "embedrt_breaker_state", "gauge",
               "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
               [](const upstream_metrics& u) {
                 return int64_t{u.breaker_state};
               });
  w.family("embedrt_breaker_transitions_total", "counter",
           "Circuit breaker state changes, by from and to state.");
  for (const auto& u : snap.upstreams) {
    // The four transitions a breaker makes are always present (0 until
    // they happen), so rate() and increase() see them from the start.
    std::map<std::pair<uint8_t, uint8_t>, int64_t> trans{
        {{breaker_closed, breaker_open}, 0},
        {{breaker_open, breaker_half_open}, 0},
        {{breaker_half_open, breaker_closed}, 0},
        {{breaker_half_open, breaker_open}, 0}};
    for (const auto& t : u.breaker_transitions)
      trans[{t.from, t.to}] += t.count;
    for (const auto& [k, n] : trans)
      w.sample("embedrt_breaker_transitions_total",
               {{"upstream", u.name},
                {"from", breaker_state_name(k.first)},
                {"to", breaker_state_name(k.second)}},
               n);
  }
}

void render_upstream_calls(writer& w, const metrics_snapshot& snap) {
  w.family("embedrt_upstream_requests_total", "counter",
           "Upstream HTTP attempts completed, by outcome and error kind.");
  for (const auto& u : snap.upstreams)
    for (const auto& c : u.calls)
      w.sample("embedrt_upstream_requests_total",
               {{"upstream", u.name},
                {"outcome", c.outcome},
                {"error", label_or_none(c.error)}},
               c.calls);
  w.family("embedrt_upstream_request_duration_seconds", "histogram",
           "Time on the wire of one upstream attempt (connect included).");
  for (const auto& u : snap.upstreams)
    w.histogram("embedrt_upstream_request_duration_seconds",
                {{"upstream", u.name}}, u.upstream_latency_ns, latency_bounds(),
                ns_per_s);
  w.family("embedrt_queue_wait_seconds", "histogram",
           "Time a call waited in the pool's queue before a connection took "
           "it.");
  for (const auto& u : snap.upstreams)
    w.histogram("embedrt_queue_wait_seconds", {{"upstream", u.name}},
                u.queue_wait_ns, latency_bounds(), ns_per_s);
  w.family("embedrt_batch_inputs", "histogram",
           "Inputs per upstream request (continuous batching merges queued "
           "calls).");
  for (const auto& u : snap.upstreams)
    w.histogram("embedrt_batch_inputs", {{"upstream", u.name}}, u.batch_inputs,
                size_bounds(), 1.0);
}

// -- process (the standard names of Prometheus client libraries) --------------

void render_process(writer& w, const process_metrics& p) {
  w.family("process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
  w.sample("process_cpu_seconds_total", {}, p.cpu_seconds);
  w.family("process_resident_memory_bytes", "gauge",
           "Resident memory size in bytes.");
  w.sample("process_resident_memory_bytes", {}, p.resident_bytes);
  w.family("process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
  w.sample("process_start_time_seconds", {}, p.start_time_seconds);
  w.family("embedrt_process_max_resident_memory_bytes", "gauge",
           "Peak resident memory size of the process in bytes.");
  w.sample("embedrt_process_max_resident_memory_bytes", {},
           p.max_resident_bytes);
  w.family("embedrt_process_threads", "gauge",
           "Threads of the process (CAF workers, I/O threads, others).");
  w.sample("embedrt_process_threads", {}, p.threads);
}

// -- the embedding cache
// -------------------------------------------------------

void render_cache(writer& w, const cache_metrics& c) {
  if (!c.enabled)
    return;
  auto counter = [&w](const char* name, const char* help, int64_t v) {
    w.family(name, "counter", help);
    w.sample(name, {}, v);
  };
  auto gauge = [&w](const char* name, const char* help, int64_t v) {
    w.family(name, "gauge", help);
    w.sample(name, {}, v);
  };
  counter("embedrt_cache_hits_total",
          "Inputs answered from the embedding cache.", c.hits);
  counter("embedrt_cache_persistent_hits_total",
          "Cache hits found in the persistent store.", c.persistent_hits);
  counter("embedrt_cache_misses_total",
          "Inputs not in the cache that went upstream.", c.misses);
  counter("embedrt_cache_coalesced_total",
          "Inputs that waited for an identical input in flight.", c.coalesced);
  counter("embedrt_cache_evictions_total",
          "Cache entries evicted to keep the byte bound.", c.evictions);
  counter("embedrt_cache_expirations_total",
          "Cache entries dropped after their time to live.", c.expirations);
  gauge("embedrt_cache_entries", "Entries in the embedding cache.", c.entries);
  gauge("embedrt_cache_bytes",
        "Bytes held by the embedding cache (keys, vectors, overhead).",
        c.bytes);
  gauge("embedrt_cache_max_bytes", "Byte bound of the embedding cache.",
        c.max_bytes);
  counter("embedrt_cache_persistent_writes_total",
          "Entries written to the persistent cache store.",
          c.persistent_writes);
  counter("embedrt_cache_persistent_errors_total",
          "Failed operations of the persistent cache store.",
          c.persistent_errors);
}

} // namespace

std::string render_prometheus(const metrics_snapshot& snap) {
  std::string out;
  out.reserve(16 * 1024);
  writer w{out};
  render_request_counts(w, snap);
  render_retries(w, snap);
  render_request_latencies(w, snap);
  render_pools(w, snap);
  render_ratelimits(w, snap);
  render_breakers(w, snap);
  render_upstream_calls(w, snap);
  render_process(w, snap.process);
  render_cache(w, snap.cache);
  return out;
}

} // namespace embedrt
