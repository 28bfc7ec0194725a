// The commands' side of distribution (docs/distributed.md): configure the
// actor system for CAF's middleman, put a router in front of the local
// service when the node has peers, and publish the node.
//
//   caf::actor_system_config sys_cfg;
//   register_types(sys_cfg);
//   if (!prepare_node(sys_cfg, cfg.cluster, "serve")) return 2;
//   caf::actor_system sys{sys_cfg};
//   auto node = start_node(sys, local_service_or_null, cfg, "serve", true);
//   ... use node->entry ...
//   node->stop();
#pragma once

#include "embedrt/interfaces.hpp"
#include "node_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <optional>
#include <string_view>

namespace embedrt::app {

/// Loads the middleman (and TLS) into `sys_cfg` when the cluster settings
/// need it; false (after printing why, "embedrt COMMAND: ...") when a TLS
/// file cannot be read.
bool prepare_node(caf::actor_system_config& sys_cfg, const cluster_config& cl,
                  std::string_view command);

/// What a command talks to, and what it published.
struct node_handles {
  /// The local service (null for a pure front).
  service_actor local;
  /// The router over `local` and the peers (null without peers).
  service_actor router;
  /// The router if there is one, else the local service.
  service_actor entry;
  /// The published port (0: not published).
  uint16_t caf_port = 0;

  /// One exit message each: the router answers what it holds `cancelled`,
  /// then the service stops its pools.
  void stop();
};

/// Spawns the router when there are peers and publishes the local service
/// (or, for a pure front, the router) when `publish` and a CAF port is set;
/// prints "published on caf://HOST:PORT" to stdout. std::nullopt (after
/// printing why) when the router or the port cannot be set up.
std::optional<node_handles> start_node(caf::actor_system& sys,
                                       service_actor local,
                                       const app_config& cfg,
                                       std::string_view command, bool publish);

} // namespace embedrt::app
