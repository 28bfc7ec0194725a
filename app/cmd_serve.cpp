// `embedrt serve`: the embedding gateway node. An OpenAI-compatible
// `POST /v1/embeddings` (and `/embeddings`) in front of the runtime, plus
// `/healthz` and `/readyz`. Prints exactly one line to stdout once it accepts
// connections, "listening on http://HOST:PORT/v1"; on SIGTERM/SIGINT it drains
// (http_front.hpp) and exits 0. Exit codes: 0 after a signal, 2 for bad
// usage or configuration, 1 when it cannot start (port in use, bad CA file,
// the built-in upstream failing).
#include "cli_args.hpp"
#include "cluster.hpp"
#include "commands.hpp"
#include "embedded_default.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "mock/mock_options.hpp"
#include "node_config.hpp"
#include "serve/gateway.hpp"
#include "serve/http_front.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <chrono>
#include <csignal>
#include <iostream>
#include <memory>
#include <optional>

namespace embedrt::app {

namespace {

constexpr const char* prefix = "embedrt serve: ";

cli::arg_parser make_parser() {
  cli::arg_parser p{
      "embedrt serve [--listen HOST:PORT] [--upstream URL ...] [options]",
      "Runs an OpenAI-compatible embeddings gateway: POST /v1/embeddings "
      "(and\n/embeddings), GET /v1/models, GET /healthz, GET /readyz, GET "
      "/metrics\n(Prometheus). Requests go through the runtime (bounded "
      "queue, batching,\nkeep-alive connections, retries, breaker) to the "
      "upstreams. Prints\n'listening on http://HOST:PORT/v1' when ready "
      "(the base URL for OpenAI\nclients); SIGTERM or SIGINT drains "
      "in-flight requests (up to --grace-ms)\nand exits 0. Several client "
      "tokens with names and limits: [client NAME]\nsections of the config "
      "file (docs/cli.md)."};
  p.option("listen", "HOST:PORT",
           "address to listen on (default 127.0.0.1:8080; port 0 picks a "
           "free one)")
      .option("auth-token-env", "VAR",
              "clients must send 'Authorization: Bearer $VAR' (default: "
              "EMBEDRT_AUTH_TOKEN if set, else no token)")
      .option("max-body-bytes", "N",
              "largest request body; larger gets 413 (default 16777216)")
      .option("grace-ms", "N",
              "on SIGTERM/SIGINT, time to finish in-flight requests before "
              "the rest get 503 (default 10000)")
      .option("tls-cert", "FILE",
              "serve HTTPS: certificate chain (PEM; with --tls-key)")
      .option("tls-key", "FILE", "serve HTTPS: its private key (PEM)")
      .option("cors-origins", "LIST",
              "browser origins allowed to call (comma-separated "
              "scheme://host[:port], or *; default: CORS off)");
  add_config_options(p);
  add_cluster_options(p, true);
  return p;
}

int usage_error(const std::string& msg) {
  return cli::usage_error("serve", msg);
}

std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

/// The command line resolved: the configuration and the listen address, or
/// the code to exit with (help, bad usage).
struct command {
  std::optional<app_config> cfg;
  mock::listen_address addr;
  int exit_code = 0;
};

command parse_command(const std::vector<std::string>& args) {
  command cmd;
  auto p = make_parser();
  auto cfg
      = parse_command_line(p, args, "serve", log_level::info, cmd.exit_code);
  if (!cfg)
    return cmd;
  auto addr = mock::parse_listen(cfg->serve.listen);
  if (!addr) {
    cmd.exit_code = usage_error("listen address: " + addr.error);
    return cmd;
  }
  cmd.cfg = std::move(*cfg);
  cmd.addr = std::move(*addr.value);
  return cmd;
}

/// Spawns the runtime's service (none for a pure front) and, with peers, the
/// router, and publishes the node when asked; std::nullopt (after saying
/// why) if the configuration cannot be set up (e.g. a bad CA file).
std::optional<node_handles> start_runtime(caf::actor_system& sys,
                                          const app_config& cfg) {
  if (cfg.runtime.upstreams.empty())
    return start_node(sys, service_actor{}, cfg, "serve", true);
  auto spawned = spawn_service(sys, cfg.runtime);
  if (!spawned) {
    std::cerr << prefix
              << "cannot set up the runtime: " << render_error(spawned.error())
              << '\n';
    return std::nullopt;
  }
  return start_node(sys, std::move(*spawned), cfg, "serve", true);
}

std::unique_ptr<serve::gateway> make_gateway(caf::actor_system& sys,
                                             const service_actor& svc,
                                             const app_config& cfg) {
  serve::gateway_options gopts;
  // The single token (auth_token_env, EMBEDRT_AUTH_TOKEN) is the client
  // "default"; the [client NAME] sections add theirs.
  if (!cfg.serve.auth_token.empty())
    gopts.clients.push_back({"default", cfg.serve.auth_token, 0, 0});
  for (const auto& c : cfg.serve.clients)
    gopts.clients.push_back({c.name, c.token, c.rpm, c.tpm});
  gopts.cors_origins = cfg.serve.cors_origins;
  gopts.default_timeout = cfg.runtime.default_timeout;
  gopts.models = app::served_models(cfg);
  gopts.upstream_errors = cfg.serve.full_upstream_errors
      ? serve::upstream_detail::full
      : serve::upstream_detail::message;
  gopts.response_budget_bytes = cfg.serve.response_budget_bytes;
  return std::make_unique<serve::gateway>(sys, svc, gopts);
}

/// Opens the listener and prints the "listening on" line; null (after saying
/// why) if it cannot listen.
std::unique_ptr<serve::http_front>
start_front(io_runtime& io, serve::gateway& gw, const app_config& cfg,
            const mock::listen_address& addr) {
  serve::front_options fopts;
  fopts.host = addr.host;
  fopts.port = addr.port;
  fopts.max_body_bytes = cfg.serve.max_body_bytes;
  fopts.max_header_bytes = cfg.serve.max_header_bytes;
  fopts.idle_timeout = cfg.serve.idle_timeout;
  fopts.request_timeout = cfg.serve.request_timeout;
  fopts.max_connections = cfg.serve.max_connections;
  fopts.tls_certificate = cfg.serve.tls_certificate;
  fopts.tls_key = cfg.serve.tls_key;
  auto front = std::make_unique<serve::http_front>(
      io.context(), fopts,
      [g = &gw](serve::front_request req, serve::responder respond) {
        g->handle(std::move(req), std::move(respond));
      });
  auto port = front->start();
  if (port == 0) {
    std::cerr << prefix << front->error() << '\n';
    return nullptr;
  }
  log(log_level::info, "serve_listening",
      {{"address", url_host(fopts.host) + ":" + std::to_string(port)},
       {"upstreams", std::to_string(cfg.runtime.upstreams.size())},
       {"auth",
        cfg.serve.auth_token.empty() && cfg.serve.clients.empty() ? "off"
                                                                  : "bearer"},
       {"clients",
        std::to_string(cfg.serve.clients.size()
                       + (cfg.serve.auth_token.empty() ? 0 : 1))},
       {"cors", cfg.serve.cors_origins.empty() ? "off" : "on"},
       {"tls", cfg.serve.tls_certificate.empty() ? "off" : "on"},
       {"max_connections", std::to_string(front->max_connections())}});
  const char* scheme = fopts.tls_certificate.empty() ? "http" : "https";
  std::cout << "listening on " << scheme << "://" << url_host(fopts.host) << ":"
            << port << "/v1" << std::endl;
  return front;
}

/// Runs until the front end has drained: the first SIGTERM/SIGINT starts the
/// drain (up to `grace`), a second one ends the grace period at once.
/// Returns the first signal.
int serve_until_drained(boost::asio::io_context& signals_ctx,
                        boost::asio::signal_set& signals,
                        serve::http_front& front,
                        std::chrono::milliseconds grace) {
  int received = 0;
  bool drained = false;
  std::function<void(const boost::system::error_code&, int)> on_signal;
  on_signal = [&](const boost::system::error_code& ec, int sig) {
    if (ec || drained)
      return;
    if (received != 0) {
      log(log_level::warn, "serve_grace_cut",
          {{"signal", std::to_string(sig)}});
      front.expire_grace();
      signals.async_wait(on_signal);
      return;
    }
    received = sig;
    log(log_level::info, "serve_draining",
        {{"signal", std::to_string(sig)},
         {"grace_ms", std::to_string(grace.count())},
         {"connections", std::to_string(front.connections())}});
    front.drain(grace, [&] {
      boost::asio::post(signals_ctx, [&] {
        drained = true;
        signals.cancel();
      });
    });
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  signals_ctx.run();
  return received;
}

/// Stops the runtime, in this order: the one exit message to the service
/// (it answers every request it and its children hold with `cancelled`,
/// stops its pools, connections, breakers and metrics actor and closes every
/// socket); the front end's I/O threads, which called into CAF (spawning the
/// requests' actors) and so hold a reference to CAF's logger, which the actor
/// system's destructor waits for; then the actor system, whose destructor
/// returns once every actor has finished.
void stop_runtime(std::unique_ptr<caf::actor_system> sys, io_runtime& front_io,
                  node_handles node) {
  node.stop();
  front_io.stop();
  sys.reset();
}

} // namespace

int cmd_serve(const std::vector<std::string>& args) {
  auto cmd = parse_command(args);
  if (!cmd.cfg)
    return cmd.exit_code;
  auto& cfg = *cmd.cfg;
  cli::raise_fd_limit();

  // Signals first, so that one arriving right after the "listening" line is
  // never lost.
  boost::asio::io_context signals_ctx;
  boost::asio::signal_set signals{signals_ctx, SIGINT, SIGTERM};

  // Declared first, destroyed last: the built-in upstream (if used) must
  // outlive the actor system, and the front end's io_runtime too (replies
  // from CAF workers are posted onto it).
  std::string error;
  auto embedded = start_embedded_default(cfg, "serve", error);
  if (!error.empty()) {
    std::cerr << prefix << error << '\n';
    return 1;
  }
  io_runtime front_io{cfg.runtime.io_threads};

  caf::actor_system_config sys_cfg;
  register_types(sys_cfg);
  if (!prepare_node(sys_cfg, cfg.cluster, "serve"))
    return 2;
  auto sys = std::make_unique<caf::actor_system>(sys_cfg);
  auto node = start_runtime(*sys, cfg);
  if (!node)
    return 1;
  auto gw = make_gateway(*sys, node->entry, cfg);
  auto front = start_front(front_io, *gw, cfg, cmd.addr);
  if (!front) {
    gw.reset();
    stop_runtime(std::move(sys), front_io, std::move(*node));
    return 1;
  }
  int received
      = serve_until_drained(signals_ctx, signals, *front, cfg.serve.grace);
  // Every client has its answer or its connection closed: the front end and
  // the gateway go first, then the runtime.
  front.reset();
  gw.reset();
  stop_runtime(std::move(sys), front_io, std::move(*node));
  log(log_level::info, "serve_stopped", {{"signal", std::to_string(received)}});
  std::cerr << prefix << "stopped by signal " << received << '\n';
  return 0;
}

} // namespace embedrt::app
