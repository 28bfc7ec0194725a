// The public typed interface of embedrt: the one handle users talk to, local
// or remote. The runtime's own actor interfaces are internal
// (actors/src/interfaces.hpp); docs/architecture.md shows how they talk.
#pragma once

#include "embedrt/protocol/type_ids.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <string>

namespace embedrt {

/// The service: what library users, the gateway and remote nodes hold.
/// - embed: vectors for the request's inputs, in order, or a typed error;
///   exactly one answer, by the request's deadline (`timeout`, a budget
///   that starts when the service receives the request);
/// - health: readiness and per-upstream state;
/// - metrics: counters, histograms and gauges (render_prometheus() turns
///   the snapshot into Prometheus text);
/// - status: capacity and health in one message (models served, free
///   connections, queue depth, per-upstream state): what routers poll;
/// - hello: the wire handshake between nodes: given the caller's
///   wire_fingerprint(), answers its own, or `invalid_input` naming both
///   when they differ (embedrt::connect and routers refuse such a peer).
/// Stopping it (`caf::anon_send_exit(svc, caf::exit_reason::user_shutdown)`)
/// answers every request it holds with `cancelled` and stops every actor of
/// the runtime.
using service_actor = caf::typed_actor<
    caf::replies_to<embed_atom, embed_request>::with<embed_result>,
    caf::replies_to<health_atom>::with<health_report>,
    caf::replies_to<metrics_atom>::with<metrics_snapshot>,
    caf::replies_to<status_atom>::with<node_status>,
    caf::replies_to<hello_atom, std::string>::with<std::string>>;

} // namespace embedrt
