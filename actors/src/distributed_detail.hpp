// What embedrt::connect and the router share: the middleman actor to connect
// through (plain or TLS), the handshake checks and their errors.
#pragma once

#include "embedrt/distributed.hpp"

#include <caf/io/middleman_actor.hpp>
#include <caf/result.hpp>
#include <set>
#include <string>

namespace embedrt::detail {

/// The middleman actor that opens connections to nodes: OpenSSL's when the
/// system has TLS between nodes, the plain one otherwise.
caf::io::middleman_actor node_connector(caf::actor_system& sys);

/// `node_down`: nothing reachable at `addr` (CAF's reason in the detail).
caf::error connect_failed(const caf::actor_system& sys,
                          const peer_address& addr, const caf::error& err);

/// `invalid_input` if the published interface is not this build's
/// service_actor.
caf::error check_interface(caf::actor_system& sys, const peer_address& addr,
                           const std::set<std::string>& ifs);

/// The error for a failed `hello`: a refusal (wire mismatch) or a peer that
/// does not know the message are `invalid_input`, a timeout `node_down`.
caf::error hello_failed(const peer_address& addr, const caf::error& err,
                        caf::actor_system& sys);

/// Answers a peer's `hello`: this node's wire_fingerprint() when the
/// peer's is the same, `invalid_input` naming both (and a log line)
/// otherwise.
caf::result<std::string> answer_hello(const std::string& theirs);

} // namespace embedrt::detail
