#include "cluster.hpp"

#include "embedrt/distributed.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <iostream>

namespace embedrt::app {

namespace {

void say(std::string_view command, const std::string& msg) {
  std::cerr << "embedrt " << command << ": " << msg << '\n';
}

} // namespace

bool prepare_node(caf::actor_system_config& sys_cfg, const cluster_config& cl,
                  std::string_view command) {
  if (!cl.distributed())
    return true;
  node_tls_config tls;
  tls.enabled = !cl.tls_certificate.empty();
  tls.certificate = cl.tls_certificate;
  tls.private_key = cl.tls_key;
  tls.ca_file = cl.tls_ca_file;
  if (auto err = enable_distribution(sys_cfg, tls)) {
    say(command, error_detail(err));
    return false;
  }
  return true;
}

void node_handles::stop() {
  if (router)
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
  if (local)
    caf::anon_send_exit(local, caf::exit_reason::user_shutdown);
  router = nullptr;
  local = nullptr;
  entry = nullptr;
}

std::optional<node_handles>
start_node(caf::actor_system& sys, service_actor local, const app_config& cfg,
           std::string_view command, bool publish_node) {
  node_handles out;
  out.local = std::move(local);
  const auto& cl = cfg.cluster;
  if (!cl.peers.empty()) {
    router_config rc;
    for (const auto& p : cl.peers)
      rc.peers.push_back(*parse_peer(p));
    rc.default_timeout = cfg.runtime.default_timeout;
    rc.status_interval = cl.status_interval;
    rc.seed = cfg.runtime.seed;
    auto router = spawn_router(sys, out.local, std::move(rc));
    if (!router) {
      say(command, "cannot set up the router: " + error_detail(router.error()));
      out.stop();
      return std::nullopt;
    }
    out.router = std::move(*router);
  }
  out.entry = out.router ? out.router : out.local;
  if (publish_node && cl.caf_port != 0) {
    // Workers publish their service; a pure front its router (publishing a
    // router that has a local service too would let two fronts that name
    // each other as peers pass requests back and forth).
    const auto& what = out.local ? out.local : out.router;
    auto port = embedrt::publish(sys, what, cl.caf_port, cl.caf_bind);
    if (!port) {
      say(command, error_detail(port.error()));
      out.stop();
      return std::nullopt;
    }
    out.caf_port = *port;
    auto host = cl.caf_bind.find(':') != std::string::npos
        ? "[" + cl.caf_bind + "]"
        : cl.caf_bind;
    log(log_level::info, "node_published",
        {{"address", host + ":" + std::to_string(*port)},
         {"tls", distribution_uses_tls(sys) ? "on" : "off"},
         {"serves", out.local ? "local service" : "router"}});
    std::cout << "published on caf://" << host << ":" << *port << std::endl;
  }
  return out;
}

} // namespace embedrt::app
