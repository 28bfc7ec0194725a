// embedrt across CAF nodes: publishing a service, connecting to one, and the
// router that spreads requests over a local service and remote nodes
// (docs/distributed.md).
//
//   caf::actor_system_config cfg;
//   embedrt::register_types(cfg);
//   embedrt::enable_distribution(cfg);          // the middleman (+ TLS)
//   caf::actor_system sys{cfg};
//   auto svc = embedrt::connect(sys, "127.0.0.1", 4242);  // a service_actor
//   embedrt::client c{sys, *svc};                // same facade as local
//
// Distribution is CAF's own middleman (BASP over TCP, or TLS with
// libcaf_openssl); embedrt adds the wire handshake (`hello`: both nodes
// must have the same wire_fingerprint()) and the router.
#pragma once

#include "embedrt/config.hpp"
#include "embedrt/interfaces.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace embedrt {

/// TLS between nodes (libcaf_openssl). When enabled, all three files are
/// required: each node presents `certificate` (with `private_key`) and
/// verifies its peer's against `ca_file`, both ways (mutual TLS; CAF does
/// not check host names). Without TLS, BASP runs in clear text.
struct node_tls_config {
  bool enabled = false;
  std::string certificate;
  std::string private_key;
  std::string ca_file;
  /// Passphrase of an encrypted private key (empty: none).
  std::string passphrase;
};

/// Prepares a host's configuration for distribution: loads CAF's middleman
/// (with heartbeats every second and a 5 s connection timeout, so a node
/// that vanishes without closing its connections is noticed; set
/// `middleman.heartbeat-interval` / `middleman.connection-timeout` after
/// this call to change them) and, with TLS, the OpenSSL manager with the
/// certificate settings. Call once, before creating the actor system (after
/// register_types). Errors: `invalid_input` naming a missing or unreadable
/// TLS file.
caf::error enable_distribution(caf::actor_system_config& cfg,
                               const node_tls_config& tls = {});

/// True if `sys` was configured with TLS between nodes.
bool distribution_uses_tls(caf::actor_system& sys);

/// Publishes `svc` on `bind`:`port` (port 0: any free port); returns the
/// port. Loopback by default: anyone who can connect can use a published
/// service (CAF has no authentication beyond TLS certificates).
caf::expected<uint16_t> publish(caf::actor_system& sys,
                                const service_actor& svc, uint16_t port,
                                const std::string& bind = "127.0.0.1");

/// Connects to the service published at `host`:`port` and checks the wire
/// handshake: the same typed handle as a local service, or an error —
/// `node_down` (nothing reachable there), `invalid_input` (a node whose
/// wire_fingerprint() differs, or not an embedrt service). Blocks the
/// calling (non-actor) thread for at most `timeout`.
caf::expected<service_actor>
connect(caf::actor_system& sys, const std::string& host, uint16_t port,
        std::chrono::milliseconds timeout = std::chrono::milliseconds{5000});

/// "host:port" of a node.
struct peer_address {
  std::string host;
  uint16_t port = 0;
};

/// Parses "host:port" ("[v6]:port" too); `invalid_input` otherwise.
caf::expected<peer_address> parse_peer(const std::string& text);

/// A router: a service_actor that spreads requests over the local service
/// (if any) and remote nodes.
struct router_config {
  /// The remote nodes, connected (and reconnected) by the router.
  std::vector<peer_address> peers;
  /// How often each member is asked for its `status` (capacity, models,
  /// health); a member that does not answer within it counts as unready.
  std::chrono::milliseconds status_interval{250};
  /// Reconnect backoff after a peer is lost or unreachable: doubles from
  /// `reconnect_backoff` to `reconnect_backoff_cap`, starts again after a
  /// successful connect.
  std::chrono::milliseconds reconnect_backoff{100};
  std::chrono::milliseconds reconnect_backoff_cap{5000};
  /// Time for one connect + handshake.
  std::chrono::milliseconds connect_timeout{3000};
  /// Deadline of a request that carries none.
  std::chrono::milliseconds default_timeout{30000};
  /// One breaker per peer (failures: the peer lost, timing out, or answering
  /// that it cannot serve). Defaults as for upstreams.
  breaker_config breaker;
  /// Seed of the member choice and breaker jitter (0: random).
  uint64_t seed = 0;
  /// Record router-level metrics (requests by member, latency).
  bool metrics = true;
};

/// Spawns a router over `local` (null: a pure front, no upstream of its own)
/// and `cfg.peers`. Each request goes to one member chosen by power of two
/// choices on outstanding requests per advertised connection, among members
/// that are connected, ready, serve the model and whose breaker lets it
/// through; a member that is lost (or answers that it cannot serve) with
/// the request in flight, the request goes to another within its deadline.
/// Exactly one reply per request; `node_down` when no member is left.
caf::expected<service_actor>
spawn_router(caf::actor_system& sys, service_actor local, router_config cfg);

} // namespace embedrt
