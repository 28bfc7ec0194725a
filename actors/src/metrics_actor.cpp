#include "metrics_actor.hpp"

#include "embedrt/proc_stats.hpp"
#include "embedrt/protocol/errc.hpp"
#include "fan_in.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <tuple>

namespace embedrt::detail {

namespace {

/// Counters and histograms of one upstream (the gauges come from the
/// pool's health at snapshot time).
struct upstream_acc {
  std::map<uint8_t, int64_t> calls; // by errc code, 0 = ok
  int64_t retry_budget_rejections = 0;
  int64_t prompt_tokens = 0;
  int64_t total_tokens = 0;
  int64_t ratelimit_remaining_requests = -1;
  int64_t ratelimit_remaining_tokens = -1;
  uint8_t breaker_state = breaker_closed;
  std::map<std::pair<uint8_t, uint8_t>, int64_t> transitions;
  log_histogram queue_wait_ns;
  log_histogram upstream_latency_ns;
  log_histogram batch_inputs;
};

struct request_acc {
  int64_t requests = 0;
  int64_t texts = 0;
  int64_t retries = 0;
};

struct metrics_state {
  static inline const char* name = "embedrt.metrics";

  bool enabled = true;
  /// Upstreams in configuration order, then any other name seen.
  std::vector<std::string> order;
  std::map<std::string, upstream_acc> upstreams;
  /// (upstream, model, errc code) -> counters.
  std::map<std::tuple<std::string, std::string, uint8_t>, request_acc> requests;
  /// (upstream, model, ok) -> end-to-end latency.
  std::map<std::tuple<std::string, std::string, bool>, log_histogram> latencies;
  std::set<std::string> models;
  int64_t answered = 0;
  /// The series of the previous request_record (std::map nodes are stable).
  struct {
    std::string upstream;
    std::string model;
    uint8_t error = 0;
    request_acc* acc = nullptr;
    log_histogram* latency = nullptr;
  } last;
  /// Test hook (service_hooks::on_request_recorded).
  std::function<void(const request_record&)> on_record;
  /// `metrics` requests waiting for the pools' gauges (answered `cancelled`
  /// if the actor ends first).
  held_promises<metrics_snapshot> held{"metrics actor stopped"};

  upstream_acc& upstream(const std::string& name) {
    auto i = upstreams.find(name);
    if (i != upstreams.end())
      return i->second;
    order.push_back(name);
    return upstreams[name];
  }

  const std::string& model_label(const std::string& model) {
    static const std::string other = "other";
    if (models.count(model) > 0)
      return model;
    if (models.size() >= max_model_labels)
      return other;
    return *models.insert(model).first;
  }
};

using self_ptr = metrics_actor::stateful_pointer<metrics_state>;

std::string error_label(uint8_t code) {
  return code == 0 ? std::string{"none"}
                   : std::string{to_string(static_cast<errc>(code))};
}

/// Builds the snapshot's counters and histograms (gauges are added from the
/// pools' health).
metrics_snapshot make_snapshot(const metrics_state& st, int64_t accepted) {
  metrics_snapshot snap;
  snap.enabled = st.enabled;
  snap.requests_in_flight = std::max<int64_t>(0, accepted - st.answered);
  for (const auto& [key, acc] : st.requests) {
    request_counter c;
    c.upstream = std::get<0>(key);
    c.model = std::get<1>(key);
    auto code = std::get<2>(key);
    c.outcome = code == 0 ? "ok" : "error";
    c.error = error_label(code);
    c.requests = acc.requests;
    c.texts = acc.texts;
    c.retries = acc.retries;
    snap.requests.emplace_back(std::move(c));
  }
  for (const auto& [key, h] : st.latencies) {
    request_latency l;
    l.upstream = std::get<0>(key);
    l.model = std::get<1>(key);
    l.outcome = std::get<2>(key) ? "ok" : "error";
    l.latency_ns = h;
    snap.latencies.emplace_back(std::move(l));
  }
  for (const auto& name : st.order) {
    const auto& acc = st.upstreams.at(name);
    upstream_metrics u;
    u.name = name;
    u.state = "unknown";
    u.retry_budget_rejections = acc.retry_budget_rejections;
    u.prompt_tokens = acc.prompt_tokens;
    u.total_tokens = acc.total_tokens;
    u.ratelimit_remaining_requests = acc.ratelimit_remaining_requests;
    u.ratelimit_remaining_tokens = acc.ratelimit_remaining_tokens;
    u.breaker_state = acc.breaker_state;
    for (const auto& [k, n] : acc.transitions)
      u.breaker_transitions.push_back({k.first, k.second, n});
    for (const auto& [code, n] : acc.calls)
      u.calls.push_back({code == 0 ? "ok" : "error", error_label(code), n});
    u.queue_wait_ns = acc.queue_wait_ns;
    u.upstream_latency_ns = acc.upstream_latency_ns;
    u.batch_inputs = acc.batch_inputs;
    snap.upstreams.emplace_back(std::move(u));
  }
  auto usage = sample_usage();
  snap.process.cpu_seconds = usage.cpu_s;
  snap.process.max_resident_bytes
      = static_cast<int64_t>(usage.max_rss_mb * 1024.0 * 1024.0);
  snap.process.resident_bytes = resident_bytes();
  snap.process.threads = static_cast<int64_t>(thread_count());
  snap.process.start_time_seconds = process_start_time();
  return snap;
}

/// Fills in the gauges of one upstream from its pool's health.
void add_health(metrics_snapshot& snap, const upstream_health& h) {
  auto i = std::find_if(snap.upstreams.begin(), snap.upstreams.end(),
                        [&](const upstream_metrics& u) {
                          return u.name == h.name;
                        });
  if (i == snap.upstreams.end()) {
    snap.upstreams.emplace_back();
    i = snap.upstreams.end() - 1;
    i->name = h.name;
  }
  i->state = h.state;
  i->connections_busy = std::max(0, h.connections - h.idle_connections);
  i->connections_open = h.sockets;
  i->connections_idle = std::max(0, h.sockets - i->connections_busy);
  i->connection_actors = h.connections;
  i->concurrency_limit = h.concurrency_limit;
  i->pacing_holds = h.pacing_holds;
  i->limit_decreases_overload = h.limit_decreases_overload;
  i->limit_decreases_latency = h.limit_decreases_latency;
  i->pacing_held_ns = h.pacing_held_ns;
  i->pacing_others_tpm = h.pacing_others_tpm;
  i->pacing_others_rpm = h.pacing_others_rpm;
  i->queue_depth = h.queued_requests;
  i->connects = h.connects;
  i->reuses = h.reuses;
  i->restarts = h.restarts;
  i->rejected = h.rejected;
}

metrics_actor::behavior_type
metrics_fn(self_ptr self, bool enabled, std::vector<std::string> upstreams,
           std::function<void(const request_record&)> on_record) {
  auto& st = self->state;
  st.enabled = enabled;
  st.on_record = std::move(on_record);
  for (auto& name : upstreams)
    st.upstream(name);
  return {
      [self](request_record& r) {
        auto& st = self->state;
        ++st.answered;
        // Most records repeat the previous series: skip the map lookups.
        auto& last = st.last;
        if (last.acc == nullptr || last.error != r.error
            || last.upstream != r.upstream || last.model != r.model) {
          const auto& model = st.model_label(r.model);
          last.acc = &st.requests[{r.upstream, model, r.error}];
          last.latency = &st.latencies[{r.upstream, model, r.error == 0}];
          last.upstream = r.upstream;
          last.model = r.model;
          last.error = r.error;
        }
        ++last.acc->requests;
        last.acc->texts += r.texts;
        last.acc->retries += r.retries;
        last.latency->record(r.latency_ns);
        if (st.on_record)
          st.on_record(r);
      },
      [self](upstream_call_record& r) {
        auto& acc = self->state.upstream(r.upstream);
        if (r.retry_budget_rejected) {
          ++acc.retry_budget_rejections;
          return;
        }
        ++acc.calls[r.error];
        acc.upstream_latency_ns.record(r.upstream_ns);
        acc.batch_inputs.record(r.batch_inputs);
        for (auto ns : r.queue_wait_ns)
          acc.queue_wait_ns.record(ns);
        acc.prompt_tokens += r.prompt_tokens;
        acc.total_tokens += r.total_tokens;
        if (r.ratelimit_remaining_requests >= 0)
          acc.ratelimit_remaining_requests = r.ratelimit_remaining_requests;
        if (r.ratelimit_remaining_tokens >= 0)
          acc.ratelimit_remaining_tokens = r.ratelimit_remaining_tokens;
      },
      [self](breaker_transition_event& t) {
        auto& acc = self->state.upstream(t.upstream);
        acc.breaker_state = t.to;
        ++acc.transitions[{t.from, t.to}];
      },
      [self](metrics_atom, std::vector<pool_actor>& pools,
             int64_t accepted) -> caf::result<metrics_snapshot> {
        auto& st = self->state;
        auto rp = self->make_response_promise<metrics_snapshot>();
        auto id = st.held.hold(rp);
        collect_health(
            self, pools,
            [self, id, snap = make_snapshot(st, accepted)](
                std::vector<std::optional<upstream_health>> answers) mutable {
              // A pool gone or stuck keeps its gauges at 0 and its state
              // "unknown".
              for (auto& h : answers)
                if (h)
                  add_health(snap, *h);
              self->state.held.deliver(id, std::move(snap));
            });
        return rp;
      },
  };
}

} // namespace

metrics_actor
spawn_metrics_actor(caf::actor_system& sys, bool enabled,
                    std::vector<std::string> upstreams,
                    std::function<void(const request_record&)> on_record) {
  return sys.spawn(metrics_fn, enabled, std::move(upstreams),
                   std::move(on_record));
}

void record_request(caf::local_actor* self, const metrics_actor& sink,
                    const std::string& upstream, const std::string& model,
                    const caf::error& err, std::size_t texts,
                    caf::actor_clock::time_point arrived, uint32_t retries) {
  if (!sink)
    return;
  request_record r;
  r.upstream = upstream.empty() ? std::string{"none"} : upstream;
  r.model = model;
  r.error = err ? static_cast<uint8_t>(error_code(err)) : uint8_t{0};
  if (err && r.error == 0)
    r.error = static_cast<uint8_t>(errc::cancelled); // not an embedrt error
  r.texts = static_cast<uint32_t>(texts);
  r.latency_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     self->clock().now() - arrived)
                     .count();
  r.retries = retries;
  caf::anon_send(sink, std::move(r));
}

void record_upstream_call(const metrics_actor& sink,
                          const std::string& upstream, const call_result& r,
                          uint32_t batch_inputs,
                          std::vector<int64_t> queue_wait_ns) {
  if (!sink)
    return;
  upstream_call_record rec;
  rec.upstream = upstream;
  rec.error = r.error ? static_cast<uint8_t>(error_code(r.error)) : uint8_t{0};
  if (r.error && rec.error == 0)
    rec.error = static_cast<uint8_t>(errc::cancelled);
  rec.upstream_ns = r.upstream_ns;
  rec.batch_inputs = batch_inputs;
  rec.queue_wait_ns = std::move(queue_wait_ns);
  rec.prompt_tokens = r.usage.prompt_tokens;
  rec.total_tokens = r.usage.total_tokens;
  rec.ratelimit_remaining_requests = r.ratelimit_remaining_requests;
  rec.ratelimit_remaining_tokens = r.ratelimit_remaining_tokens;
  caf::anon_send(sink, std::move(rec));
}

void record_retry_budget_rejection(const metrics_actor& sink,
                                   const std::string& upstream) {
  if (!sink)
    return;
  upstream_call_record rec;
  rec.upstream = upstream;
  rec.retry_budget_rejected = true;
  caf::anon_send(sink, std::move(rec));
}

void record_breaker_transition(const metrics_actor& sink,
                               const std::string& upstream, uint8_t from,
                               uint8_t to) {
  if (!sink)
    return;
  caf::anon_send(sink, breaker_transition_event{upstream, from, to});
}

} // namespace embedrt::detail
