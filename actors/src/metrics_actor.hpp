// The metrics actor: one per service, the only owner of the service's
// counters and histograms (docs/architecture.md, "Metrics").
//
//   request actor --request_record (at its one reply)---------------+
//   pool ---------upstream_call_record (per upstream attempt)-------+-->
//   metrics breaker ------breaker_transition_event (per transition)---------+
//   actor service ------metrics(pools, accepted) --> asks each pool for its
//                 health (gauges), adds /proc figures --> metrics_snapshot
//
// Actors on the hot path only fill a small struct and send it (no locks, no
// shared counters); the metrics actor aggregates on its own scheduler turn.
// With metrics off (`runtime_config::metrics = false`) nobody sends events:
// the handles below are null and the record_* helpers return at once.
#pragma once

#include "embedrt/protocol/metrics.hpp"
#include "interfaces.hpp"

#include <caf/actor_clock.hpp>
#include <caf/error.hpp>
#include <caf/local_actor.hpp>
#include <caf/typed_actor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace embedrt::detail {

/// Spawns the metrics actor of a service. `enabled` is reported in the
/// snapshot; `upstreams` are listed in configuration order even before any
/// event names them.
metrics_actor spawn_metrics_actor(
    caf::actor_system& sys, bool enabled, std::vector<std::string> upstreams,
    std::function<void(const request_record&)> on_record = nullptr);

/// Most distinct `model` label values kept; further models are counted as
/// model "other" (callers choose model names: bounded label cardinality).
constexpr std::size_t max_model_labels = 64;

// -- recording helpers (called on the hot path; no-ops with a null handle) --

/// Request actor, at its one reply: `err` is the reply's error (none = ok),
/// `arrived` when the service received the request.
void record_request(caf::local_actor* self, const metrics_actor& sink,
                    const std::string& upstream, const std::string& model,
                    const caf::error& err, std::size_t texts,
                    caf::actor_clock::time_point arrived, uint32_t retries);

/// Pool, when an upstream attempt completed. `queue_wait_ns` has one entry
/// per caller call merged into the upstream request.
void record_upstream_call(const metrics_actor& sink,
                          const std::string& upstream, const call_result& r,
                          uint32_t batch_inputs,
                          std::vector<int64_t> queue_wait_ns);

/// Pool, when an upstream attempt completed: `items` are the pool's queue
/// items merged into it (each with `call.inputs` and `queue_ns`).
template <class Items>
void record_pool_call(const metrics_actor& sink, const std::string& upstream,
                      const call_result& r, const Items& items) {
  if (!sink)
    return;
  uint32_t inputs = 0;
  std::vector<int64_t> waits;
  waits.reserve(items.size());
  for (const auto& item : items) {
    inputs += static_cast<uint32_t>(item.call.inputs.size());
    waits.push_back(item.queue_ns);
  }
  record_upstream_call(sink, upstream, r, inputs, std::move(waits));
}

/// Pool, when its retry budget refused a retry.
void record_retry_budget_rejection(const metrics_actor& sink,
                                   const std::string& upstream);

/// Breaker (any thread: uses anon_send), on every transition. `from` and
/// `to` are breaker_closed / breaker_open / breaker_half_open.
void record_breaker_transition(const metrics_actor& sink,
                               const std::string& upstream, uint8_t from,
                               uint8_t to);

} // namespace embedrt::detail
