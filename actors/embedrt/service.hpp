// Spawning embedrt's runtime inside a host's actor system.
//
//   caf::actor_system_config cfg;
//   embedrt::register_types(cfg);            // once, before the system
//   caf::actor_system sys{cfg};
//   embedrt::runtime_config rc;
//   rc.upstreams.push_back({.base_url = "http://127.0.0.1:8080/v1", ...});
//   auto svc = embedrt::spawn_service(sys, rc);   // caf::expected
//   self->request(*svc, 30s, embedrt::embed_atom_v,
//   embedrt::embed_request{...})
//
// The service owns one pool (dispatcher + supervisor) per upstream, the
// metrics actor and the I/O threads, and supervises them (docs/architecture.md,
// "Supervision tree"). It stops when its last handle is gone or when it
// receives an exit message; either way every request it holds is answered.
#pragma once

#include "embedrt/config.hpp"
#include "embedrt/interfaces.hpp"

#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <functional>
#include <memory>

namespace embedrt {

class io_runtime;

/// Test and chaos hooks (all off by default).
struct service_hooks {
  /// Runs the upstream connections on this io_runtime (its threads shared
  /// with the caller: `embedrt serve`'s HTTP front end). Null: the one the
  /// actor system's workers run (run_on_actor_workers), else one of the
  /// service's own with `runtime_config::io_threads` threads.
  std::shared_ptr<io_runtime> io;
  /// Called with every connection actor a pool spawns (upstream name).
  std::function<void(const std::string& upstream, const caf::actor&)>
      on_connection_spawned;
  /// A call with an input equal to this marker makes its connection actor
  /// throw (exercises supervision).
  std::string crash_marker;
  /// An input equal to this marker followed by an upstream's name (e.g.
  /// "__crash_pool__a") makes that upstream's pool throw when the call
  /// arrives (exercises the service's supervision of pools).
  std::string pool_crash_marker;
  /// A request with an input equal to this marker makes its request actor
  /// throw (exercises the request actor's exception handler).
  std::string request_crash_marker;
  /// A cache lookup with an input equal to this marker makes the cache
  /// actor throw (exercises its supervision; docs/caching.md).
  std::string cache_crash_marker;
  /// Called by the metrics actor with every request it records (in its
  /// context: must be quick and thread-safe); tests compare histograms with
  /// the exact samples.
  std::function<void(const request_record&)> on_request_recorded;
  /// Called on every breaker transition (in the breaker actor's context:
  /// must be quick and thread-safe).
  std::function<void(const std::string& upstream, breaker_state from,
                     breaker_state to)>
      on_breaker_transition;
};

/// Validates `cfg` (URLs, TLS files, limits) and spawns the service.
/// Errors are `invalid_input` (bad configuration) or `tls_failed` (a CA file
/// that cannot be loaded).
caf::expected<service_actor> spawn_service(caf::actor_system& sys,
                                           runtime_config cfg,
                                           service_hooks hooks = {});

} // namespace embedrt
