// The typed interfaces of embedrt's actors: one alias per role. The
// interface is the documentation of the role (STYLE.md, "Actors and
// messages"); docs/architecture.md shows how they talk to each other.
#pragma once

#include "embedrt/protocol/type_ids.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace embedrt {

/// The one handle users talk to (library, gateway, remote nodes).
/// - embed: vectors for the request's inputs, in order, or a typed error;
/// - health: readiness and per-upstream state;
/// - metrics: counters, histograms and gauges (render_prometheus() turns
///   the snapshot into Prometheus text).
using service_actor = caf::typed_actor<
    caf::replies_to<embed_atom, embed_request>::with<embed_result>,
    caf::replies_to<health_atom>::with<health_report>,
    caf::replies_to<metrics_atom>::with<metrics_snapshot>>;

/// One per caller request: owns the single reply, the deadline and retries.
/// Receives the caller's request by delegation from the service. The deadline
/// is the timeout of every call it makes to a pool; retry timers are
/// self-sent (chunk, epoch) so stale ones are ignored.
using request_actor = caf::typed_actor<
    caf::replies_to<embed_atom, embed_request>::with<embed_result>,
    caf::reacts_to<retry_atom, uint32_t, uint64_t>>;

/// Pool, dispatcher and supervisor of one upstream: a bounded queue in front
/// of M connection actors, each busy with at most one call.
/// - call: run one upstream call (answers exactly once, possibly with
///   `overloaded`, `upstream_down` or `deadline_exceeded`);
/// - health: state of the upstream;
/// - restart / probe: self-sent supervision timers (slot, epoch).
/// - breaker: the breaker's current view (state, open-until, probe permits).
/// - watchdog: self-sent check for connections stuck past their attempt
///   timeout (the time it was armed for, in ns of the actor clock).
using pool_actor = caf::typed_actor<
    caf::replies_to<call_atom, upstream_call>::with<call_result>,
    caf::replies_to<health_atom>::with<upstream_health>,
    caf::reacts_to<restart_atom, uint32_t, uint64_t>,
    caf::reacts_to<probe_atom, uint64_t>,
    caf::reacts_to<breaker_atom, breaker_view>,
    caf::reacts_to<watchdog_atom, int64_t>>;

/// What a breaker talks to: the pool of its upstream (or a test probe).
using breaker_listener
    = caf::typed_actor<caf::reacts_to<breaker_atom, breaker_view>>;

/// Circuit breaker of one upstream, the only owner of its state
/// (actors/src/breaker.hpp has the state diagram).
/// - outcome: how one upstream call went (from the pool);
/// - half_open: self-sent end of the open time (epoch);
/// - health: the current view.
using breaker_actor
    = caf::typed_actor<caf::reacts_to<outcome_atom, breaker_outcome>,
                       caf::reacts_to<half_open_atom, uint64_t>,
                       caf::replies_to<health_atom>::with<breaker_view>>;

/// Owns one keep-alive HTTP(S) connection; one call in flight.
/// - call: send one upstream request, answer with its classified outcome;
/// - io_done: completion of an exchange, sent from an I/O thread.
using connection_actor = caf::typed_actor<
    caf::replies_to<call_atom, connection_call>::with<call_result>,
    caf::reacts_to<io_done_atom, http_outcome>>;

} // namespace embedrt
