// embedrt's CAF type-ID block.
//
// One block for the whole library, starting at EMBEDRT_TYPE_ID_OFFSET
// (default 4000, set by CMake; see docs/architecture.md). The block spans
// fewer than 100 IDs; a host application that defines its own block must pick
// an offset outside [4000, 4100) (CAF itself uses IDs below 200).
//
// A host registers the block with one call before creating its actor system:
//
//   caf::actor_system_config cfg;
//   embedrt::register_types(cfg);
//
// Messages crossing CAF nodes need the block registered on both nodes. The
// block lists only the public messages (messages.hpp, metrics.hpp); the
// runtime's internal messages never leave a node and take no IDs.
#pragma once

#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/metrics.hpp"

#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/type_id.hpp>
#include <string>

#ifndef EMBEDRT_TYPE_ID_OFFSET
#  define EMBEDRT_TYPE_ID_OFFSET 4000
#endif

CAF_BEGIN_TYPE_ID_BLOCK(embedrt, EMBEDRT_TYPE_ID_OFFSET)

// -- public messages --------------------------------------------------------
CAF_ADD_TYPE_ID(embedrt, (embedrt::embed_request))
CAF_ADD_TYPE_ID(embedrt, (embedrt::embed_result))
CAF_ADD_TYPE_ID(embedrt, (embedrt::token_usage))
CAF_ADD_TYPE_ID(embedrt, (embedrt::health_report))
CAF_ADD_TYPE_ID(embedrt, (embedrt::upstream_health))
CAF_ADD_TYPE_ID(embedrt, (embedrt::node_status))

// -- public atoms (0.17.6: atoms are atom constants and take no type ID) ---
CAF_ADD_ATOM(embedrt, embedrt, embed_atom, "embed")
CAF_ADD_ATOM(embedrt, embedrt, health_atom, "health")
CAF_ADD_ATOM(embedrt, embedrt, metrics_atom, "metrics")
CAF_ADD_ATOM(embedrt, embedrt, status_atom, "status")
CAF_ADD_ATOM(embedrt, embedrt, hello_atom, "hello")

// -- metrics ----------------------------------------------------------------
CAF_ADD_TYPE_ID(embedrt, (embedrt::log_histogram))
CAF_ADD_TYPE_ID(embedrt, (embedrt::request_counter))
CAF_ADD_TYPE_ID(embedrt, (embedrt::request_latency))
CAF_ADD_TYPE_ID(embedrt, (embedrt::upstream_call_counter))
CAF_ADD_TYPE_ID(embedrt, (embedrt::breaker_transition_counter))
CAF_ADD_TYPE_ID(embedrt, (embedrt::upstream_metrics))
CAF_ADD_TYPE_ID(embedrt, (embedrt::process_metrics))
CAF_ADD_TYPE_ID(embedrt, (embedrt::cache_metrics))
CAF_ADD_TYPE_ID(embedrt, (embedrt::metrics_snapshot))
CAF_ADD_TYPE_ID(embedrt, (embedrt::request_record))
CAF_ADD_TYPE_ID(embedrt, (embedrt::upstream_call_record))
CAF_ADD_TYPE_ID(embedrt, (embedrt::breaker_transition_event))

CAF_END_TYPE_ID_BLOCK(embedrt)

namespace embedrt {

/// Registers embedrt's type-ID block and its error category (renderer) with a
/// host's configuration. Call once per `actor_system_config`, on every node.
void register_types(caf::actor_system_config& cfg);

/// The version of embedrt's messages between nodes; raised by hand with any
/// change to a message that crosses nodes (the fingerprint below catches
/// what a forgotten raise would miss).
constexpr int wire_version = 1;

/// Names this build's wire format: the wire version, the block's offset and
/// a hash over every type of the block (its name and the bytes CAF's binary
/// serializer writes for a default value, which change with the fields).
/// Two nodes talk only if their fingerprints are equal; they exchange them
/// in `hello` (plain strings, readable whatever the blocks are), e.g.
/// "embedrt-wire/1 offset=4000 types=17 hash=9c1f0e3a5b7d2c41".
const std::string& wire_fingerprint();

} // namespace embedrt
