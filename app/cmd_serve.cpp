// `embedrt serve`: the embedding gateway node. An OpenAI-compatible
// `POST /v1/embeddings` (and `/embeddings`) in front of the runtime, plus
// `/healthz` and `/readyz`. Prints exactly one line to stdout once it accepts
// connections, "listening on http://HOST:PORT/v1"; on SIGTERM/SIGINT it drains
// (http_front.hpp) and exits 0; on SIGHUP it reloads its configuration
// (upstreams, tokens, client limits) without dropping a request in flight.
// Exit codes: 0 after a signal, 2 for bad usage or configuration, 1 when it
// cannot start (port in use, bad CA file, the built-in upstream failing).
#include "cli_args.hpp"
#include "cluster.hpp"
#include "commands.hpp"
#include "embedded_default.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/proc_stats.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "mock/mock_options.hpp"
#include "node_config.hpp"
#include "serve/gateway.hpp"
#include "serve/http_front.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <chrono>
#include <csignal>
#include <iostream>
#include <list>
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
      "file (docs/cli.md). SIGHUP reloads the configuration\n(upstreams, "
      "tokens, limits) without dropping requests in flight."};
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
                                          const app_config& cfg,
                                          std::shared_ptr<io_runtime> io) {
  if (cfg.runtime.upstreams.empty())
    return start_node(sys, service_actor{}, cfg, "serve", true);
  service_hooks hooks;
  hooks.io = std::move(io);
  auto spawned = spawn_service(sys, cfg.runtime, std::move(hooks));
  if (!spawned) {
    std::cerr << prefix
              << "cannot set up the runtime: " << render_error(spawned.error())
              << '\n';
    return std::nullopt;
  }
  return start_node(sys, std::move(*spawned), cfg, "serve", true);
}

std::unique_ptr<serve::gateway>
make_gateway(caf::actor_system& sys, const service_actor& svc,
             const app_config& cfg,
             const std::shared_ptr<serve::response_budget>& budget) {
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
  gopts.budget = budget;
  return std::make_unique<serve::gateway>(sys, svc, gopts);
}

/// Opens the listener and prints the "listening on" line; null (after saying
/// why) if it cannot listen.
std::unique_ptr<serve::http_front>
start_front(io_runtime& io, serve::request_handler handler,
            const app_config& cfg, const mock::listen_address& addr) {
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
  auto front = std::make_unique<serve::http_front>(io.context(), fopts,
                                                   std::move(handler));
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

/// One configuration at work: its runtime (service, router) and the
/// gateway in front of it. SIGHUP builds a new one and switches the front
/// end over; the old one drains and stops.
struct generation {
  app_config cfg;
  node_handles node;
  std::unique_ptr<serve::gateway> gw;
  /// Requests handed to `gw` whose reply has not been sent yet.
  std::atomic<int64_t> in_flight{0};
  /// Replaced by a newer generation: takes no new request.
  std::atomic<bool> retired{false};
};

/// The front end's request handler: hands each request to the current
/// generation's gateway and counts it there until its responder is gone
/// (the reply sent, or dropped), so a retired generation is stopped only
/// once it answered everything it took. Called on the front end's I/O
/// threads; `replace` on the main thread.
class gateway_switch {
 public:
  explicit gateway_switch(std::shared_ptr<generation> first)
      : current_(std::move(first)) {
    // nop
  }

  void handle(serve::front_request req, serve::responder respond) {
    for (;;) {
      auto gen = std::atomic_load(&current_);
      gen->in_flight.fetch_add(1);
      // Retired between the load and the increment: `replace` may already
      // have seen no request in flight, so go to the newer one.
      if (gen->retired.load()) {
        gen->in_flight.fetch_sub(1);
        continue;
      }
      auto done = std::shared_ptr<generation>(gen.get(), [gen](generation*) {
        gen->in_flight.fetch_sub(1);
      });
      gen->gw->handle(std::move(req),
                      [inner = std::move(respond),
                       done = std::move(done)](serve::front_reply r) {
                        inner(std::move(r));
                      });
      return;
    }
  }

  std::shared_ptr<generation> current() const {
    return std::atomic_load(&current_);
  }

  /// Switches to `next` and returns the previous generation, retired: it
  /// takes no new request and may be stopped once `in_flight` is 0.
  std::shared_ptr<generation> replace(std::shared_ptr<generation> next) {
    auto old = std::atomic_exchange(&current_, std::move(next));
    old->retired.store(true);
    return old;
  }

 private:
  std::shared_ptr<generation> current_;
};

/// What the main thread owns while it serves: the actor system, the
/// embedded upstream (if any), the switch and the generations draining.
struct serve_context {
  const std::vector<std::string>& args;
  caf::actor_system& sys;
  /// The I/O threads of the front end, which the runtimes share.
  const std::shared_ptr<io_runtime>& io;
  mock::mock_server* embedded = nullptr;
  gateway_switch& gateways;
  /// The node's one budget of response bytes in flight: the gateway of
  /// every configuration takes it, so a draining one and its successor
  /// together stay within it.
  std::shared_ptr<serve::response_budget> budget;
  std::list<std::shared_ptr<generation>> retired;
};

/// Settings that only a restart changes (the listener, TLS, the I/O
/// threads, distribution); "" if none of them differs.
std::string restart_only_changes(const app_config& a, const app_config& b) {
  std::string out;
  auto add = [&out](bool differs, const char* key) {
    if (differs)
      out += (out.empty() ? "" : ",") + std::string{key};
  };
  add(a.serve.listen != b.serve.listen, "listen");
  add(a.serve.tls_certificate != b.serve.tls_certificate
          || a.serve.tls_key != b.serve.tls_key,
      "tls");
  add(a.serve.max_body_bytes != b.serve.max_body_bytes, "max_body_bytes");
  add(a.serve.max_header_bytes != b.serve.max_header_bytes, "max_header_bytes");
  add(a.serve.idle_timeout != b.serve.idle_timeout, "idle_timeout_ms");
  add(a.serve.request_timeout != b.serve.request_timeout, "request_timeout_ms");
  add(a.serve.max_connections != b.serve.max_connections, "max_connections");
  add(a.serve.grace != b.serve.grace, "grace_ms");
  add(a.runtime.io_threads != b.runtime.io_threads, "io_threads");
  add(a.workers != b.workers, "workers");
  return out;
}

/// Reads the configuration again (same command line, the environment and
/// the config file as they are now) and builds its generation; nullptr with
/// `why` set if it cannot be used (the running one stays).
std::shared_ptr<generation> build_generation(serve_context& ctx,
                                             std::string& why) {
  auto p = make_parser();
  if (!p.parse(ctx.args)) {
    why = p.error();
    return nullptr;
  }
  auto loaded = load_config(p, environment::from_process(), log_level::info);
  if (!loaded) {
    why = loaded.error;
    return nullptr;
  }
  auto cfg = std::move(*loaded.config);
  const auto& old = ctx.gateways.current()->cfg;
  if (cfg.cluster.distributed() || old.cluster.distributed()) {
    why = "a node with [cluster] settings reloads by restart only";
    return nullptr;
  }
  if (cfg.uses_embedded_default) {
    if (ctx.embedded == nullptr) {
      why = "no upstream configured: the built-in upstream starts only "
            "with the process";
      return nullptr;
    }
    use_embedded_upstream(cfg, ctx.embedded->base_url());
  }
  service_hooks hooks;
  hooks.io = ctx.io;
  auto svc = spawn_service(ctx.sys, cfg.runtime, std::move(hooks));
  if (!svc) {
    why = "cannot set up the runtime: " + render_error(svc.error());
    return nullptr;
  }
  auto node = start_node(ctx.sys, std::move(*svc), cfg, "serve", false);
  if (!node) {
    why = "cannot set up the runtime";
    return nullptr;
  }
  auto gen = std::make_shared<generation>();
  gen->cfg = std::move(cfg);
  gen->node = std::move(*node);
  gen->gw = make_gateway(ctx.sys, gen->node.entry, gen->cfg, ctx.budget);
  return gen;
}

/// SIGHUP: the new configuration takes the requests from now on, the old
/// one finishes those it has (and is stopped by `stop_drained`). A
/// configuration that cannot be used is refused and the old one kept.
void reload(serve_context& ctx) {
  std::string why;
  auto next = build_generation(ctx, why);
  if (!next) {
    log(log_level::error, "config_reload_failed", {{"reason", why}});
    return;
  }
  auto ignored = restart_only_changes(ctx.gateways.current()->cfg, next->cfg);
  set_log_level(next->cfg.log);
  for (const auto& w : next->cfg.warnings)
    log(log_level::warn, "config_warning", {{"warning", w}});
  const auto& cfg = next->cfg;
  auto upstreams = std::to_string(cfg.runtime.upstreams.size());
  auto clients = std::to_string(cfg.serve.clients.size()
                                + (cfg.serve.auth_token.empty() ? 0 : 1));
  auto file = cfg.config_file;
  auto old = ctx.gateways.replace(std::move(next));
  ctx.retired.push_back(std::move(old));
  log(log_level::info, "config_reloaded",
      {{"file", file},
       {"upstreams", upstreams},
       {"clients", clients},
       {"needs_restart", ignored.empty() ? "-" : ignored}});
}

/// Stops the retired generations that have answered every request they
/// took; true if some are still draining.
bool stop_drained(serve_context& ctx) {
  for (auto i = ctx.retired.begin(); i != ctx.retired.end();) {
    if ((*i)->in_flight.load() == 0) {
      (*i)->node.stop();
      i = ctx.retired.erase(i);
    } else {
      ++i;
    }
  }
  return !ctx.retired.empty();
}

/// Runs until the front end has drained: the first SIGTERM/SIGINT starts the
/// drain (up to `grace`), a second one ends the grace period at once; SIGHUP
/// reloads the configuration (not while draining). Returns the first
/// SIGTERM/SIGINT.
int serve_until_drained(boost::asio::io_context& signals_ctx,
                        boost::asio::signal_set& signals,
                        serve::http_front& front, serve_context& ctx,
                        std::chrono::milliseconds grace) {
  int received = 0;
  bool drained = false;
  // Retired generations are checked every 50 ms until each has answered
  // what it took (their replies come from any thread; the check is cheap).
  boost::asio::steady_timer drain_timer{signals_ctx};
  std::function<void(const boost::system::error_code&)> on_drain_tick;
  on_drain_tick = [&](const boost::system::error_code& ec) {
    if (ec || !stop_drained(ctx))
      return;
    drain_timer.expires_after(std::chrono::milliseconds{50});
    drain_timer.async_wait(on_drain_tick);
  };
  std::function<void(const boost::system::error_code&, int)> on_signal;
  on_signal = [&](const boost::system::error_code& ec, int sig) {
    if (ec || drained)
      return;
    if (sig == SIGHUP) {
      if (received != 0) {
        log(log_level::warn, "config_reload_failed",
            {{"reason", "the node is draining"}});
      } else {
        bool idle = ctx.retired.empty();
        reload(ctx);
        if (idle && !ctx.retired.empty())
          on_drain_tick({});
      }
      signals.async_wait(on_signal);
      return;
    }
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
        drain_timer.cancel();
      });
    });
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  signals_ctx.run();
  return received;
}

/// Stops the runtime, in this order: one exit message to each service
/// (it answers every request it and its children hold with `cancelled`,
/// stops its pools, connections, breakers and metrics actor and closes every
/// socket) — the current generation's and any still draining after a
/// reload; the I/O threads (the front end's, shared by the runtimes), which
/// called into CAF (sending the requests) and so hold a reference to CAF's
/// logger, which the actor system's destructor waits for; then the actor
/// system, whose destructor returns once every actor has finished. The
/// io_context itself goes with the last actor holding it (or here), while
/// the actor system still exists.
void stop_runtime(std::unique_ptr<caf::actor_system> sys,
                  std::shared_ptr<io_runtime> io,
                  std::vector<node_handles> nodes) {
  for (auto& node : nodes)
    node.stop();
  io->stop();
  io.reset();
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
  boost::asio::signal_set signals{signals_ctx, SIGINT, SIGTERM, SIGHUP};

  // Declared first, destroyed last: the built-in upstream (if used) must
  // outlive the actor system. The I/O is created next and stopped by
  // stop_runtime, before the actor system goes.
  std::string error;
  auto embedded = start_embedded_default(cfg, "serve", error);
  if (!error.empty()) {
    std::cerr << prefix << error << '\n';
    return 1;
  }
  // The front end's I/O, shared by the runtime's connections: a request's
  // bytes in and out of the process are handled by the same threads — by
  // default CAF's workers themselves (docs/architecture.md, "The HTTP front
  // end", "I/O on the actor workers").
  caf::actor_system_config sys_cfg;
  register_types(sys_cfg);
  auto io = prepare_io(sys_cfg, cfg.runtime.io_threads, cfg.workers);
  if (!prepare_node(sys_cfg, cfg.cluster, "serve"))
    return 2;
  auto sys = std::make_unique<caf::actor_system>(sys_cfg);
  auto node = start_runtime(*sys, cfg, io);
  if (!node)
    return 1;
  auto budget = std::make_shared<serve::response_budget>(
      cfg.serve.response_budget_bytes);
  auto first = std::make_shared<generation>();
  first->node = *node;
  first->gw = make_gateway(*sys, node->entry, cfg, budget);
  first->cfg = cfg;
  gateway_switch gateways{std::move(first)};
  auto front = start_front(
      *io,
      [g = &gateways](serve::front_request req, serve::responder respond) {
        g->handle(std::move(req), std::move(respond));
      },
      cfg, cmd.addr);
  if (!front) {
    gateways.current()->gw.reset();
    stop_runtime(std::move(sys), std::move(io), {*node});
    return 1;
  }
  serve_context ctx{args, *sys, io, embedded.get(), gateways, budget, {}};
  int received
      = serve_until_drained(signals_ctx, signals, *front, ctx, cfg.serve.grace);
  // Every client has its answer or its connection closed: the front end and
  // the gateways go first, then the runtimes (the current one and any still
  // draining after a reload).
  front.reset();
  std::vector<node_handles> nodes{gateways.current()->node};
  gateways.current()->gw.reset();
  for (auto& gen : ctx.retired) {
    nodes.push_back(gen->node);
    gen->gw.reset();
  }
  ctx.retired.clear();
  stop_runtime(std::move(sys), std::move(io), std::move(nodes));
  log(log_level::info, "serve_stopped", {{"signal", std::to_string(received)}});
  std::cerr << prefix << "stopped by signal " << received << '\n';
  return 0;
}

} // namespace embedrt::app
