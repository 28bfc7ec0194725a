// `embedrt serve`: the embedding gateway node. An OpenAI-compatible
// `POST /v1/embeddings` (and `/embeddings`) in front of the runtime, plus
// `/healthz` and `/readyz`. Prints exactly one line to stdout once it accepts
// connections, "listening on http://HOST:PORT"; on SIGTERM/SIGINT it drains
// (http_front.hpp) and exits 0. Exit codes: 0 after a signal, 2 for bad
// usage or configuration, 1 when it cannot start (port in use, bad CA file,
// the built-in upstream failing).
#include "cli_args.hpp"
#include "commands.hpp"
#include "config.hpp"
#include "embedded_default.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "mock/mock_options.hpp"
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
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

namespace embedrt::app {

namespace {

using namespace std::chrono_literals;

constexpr const char* prefix = "embedrt serve: ";

/// How long the exit waits for the runtime's actors after the drain before
/// leaving without them (requests abandoned at the end of the grace period
/// may keep request actors waiting for their deadline).
constexpr auto actor_exit_wait = 2s;

cli::arg_parser make_parser() {
  cli::arg_parser p{
      "embedrt serve [--listen HOST:PORT] [--upstream URL ...] [options]",
      "Runs an OpenAI-compatible embeddings gateway: POST /v1/embeddings "
      "(and\n/embeddings), GET /healthz, GET /readyz. Requests go through "
      "the runtime\n(bounded queue, batching, keep-alive connections, "
      "retries, breaker) to the\nupstreams. Prints 'listening on "
      "http://HOST:PORT' when ready; SIGTERM or\nSIGINT drains in-flight "
      "requests (up to --grace-ms) and exits 0."};
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
              "the rest get 503 (default 10000)");
  add_config_options(p);
  return p;
}

int usage_error(const std::string& msg) {
  return cli::usage_error("serve", msg);
}

std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

} // namespace

int cmd_serve(const std::vector<std::string>& args) {
  auto p = make_parser();
  if (!p.parse(args))
    return usage_error(p.error());
  if (p.help_requested()) {
    std::cout << p.help();
    return 0;
  }
  auto cfg = load_config(p, environment::from_process(), log_level::info);
  if (!cfg)
    return usage_error(cfg.error);
  set_log_level(cfg->log);
  for (const auto& w : cfg->warnings)
    std::cerr << prefix << w << '\n';
  auto addr = mock::parse_listen(cfg->serve.listen);
  if (!addr)
    return usage_error("listen address: " + addr.error);
  cli::raise_fd_limit();

  // Signals first, so that one arriving right after the "listening" line is
  // never lost.
  boost::asio::io_context signals_ctx;
  boost::asio::signal_set signals{signals_ctx, SIGINT, SIGTERM};

  // Declared first, destroyed last: the built-in upstream (if used) must
  // outlive the actor system, and the front end's io_runtime too (replies
  // from CAF workers are posted onto it).
  std::unique_ptr<mock::mock_server> embedded;
  if (cfg->uses_embedded_default) {
    std::string err;
    embedded = start_embedded_default(*cfg, err);
    if (!embedded) {
      std::cerr << prefix << err << '\n';
      return 1;
    }
    std::cerr << prefix
              << "no upstream configured (no --upstream, OPENAI_BASE_URL, "
                 "config file upstream or API key): using the built-in "
                 "lexical upstream at "
              << embedded->base_url() << '\n';
  }
  io_runtime front_io{cfg->runtime.io_threads};

  caf::actor_system_config sys_cfg;
  register_types(sys_cfg);
  auto sys = std::make_unique<caf::actor_system>(sys_cfg);
  std::optional<service_actor> svc;
  {
    auto spawned = spawn_service(*sys, cfg->runtime);
    if (!spawned) {
      std::cerr << prefix << "cannot set up the runtime: "
                << render_error(spawned.error()) << '\n';
      return 1;
    }
    svc = std::move(*spawned);
  }
  serve::gateway_options gopts;
  gopts.auth_token = cfg->serve.auth_token;
  gopts.default_timeout = cfg->runtime.default_timeout;
  auto gw = std::make_unique<serve::gateway>(*sys, *svc, gopts);

  serve::front_options fopts;
  fopts.host = addr.value->host;
  fopts.port = addr.value->port;
  fopts.max_body_bytes = cfg->serve.max_body_bytes;
  auto front = std::make_unique<serve::http_front>(
      front_io.context(), fopts,
      [g = gw.get()](serve::front_request req, serve::responder respond) {
        g->handle(std::move(req), std::move(respond));
      });
  auto port = front->start();
  if (port == 0) {
    std::cerr << prefix << front->error() << '\n';
    front.reset();
    caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
    return 1;
  }
  log(log_level::info, "serve_listening",
      {{"address", url_host(fopts.host) + ":" + std::to_string(port)},
       {"upstreams", std::to_string(cfg->runtime.upstreams.size())},
       {"auth", cfg->serve.auth_token.empty() ? "off" : "bearer"}});
  std::cout << "listening on http://" << url_host(fopts.host) << ":" << port
            << std::endl;

  // First signal: drain. A second one ends the grace period at once.
  int received = 0;
  bool drained = false;
  std::function<void(const boost::system::error_code&, int)> on_signal;
  on_signal = [&](const boost::system::error_code& ec, int sig) {
    if (ec || drained)
      return;
    if (received != 0) {
      log(log_level::warn, "serve_grace_cut",
          {{"signal", std::to_string(sig)}});
      front->expire_grace();
      signals.async_wait(on_signal);
      return;
    }
    received = sig;
    log(log_level::info, "serve_draining",
        {{"signal", std::to_string(sig)},
         {"grace_ms", std::to_string(cfg->serve.grace.count())},
         {"connections", std::to_string(front->connections())}});
    front->drain(cfg->serve.grace, [&] {
      boost::asio::post(signals_ctx, [&] {
        drained = true;
        signals.cancel();
      });
    });
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  signals_ctx.run();

  front.reset();
  gw.reset();
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
  svc.reset();
  log(log_level::info, "serve_stopped", {{"signal", std::to_string(received)}});
  // Requests abandoned at the end of the grace period can keep request
  // actors waiting for their deadline; the actor system's destructor would
  // wait for them. Give them a moment, then leave without them (every
  // client was answered or its connection closed already).
  auto deadline = std::chrono::steady_clock::now() + actor_exit_wait;
  while (sys->registry().running() > 0
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  if (sys->registry().running() > 0) {
    flush_log(); // std::_Exit skips the logger's exit handler
    std::cerr << prefix << "stopped by signal " << received << " (leaving "
              << sys->registry().running() << " runtime actors behind)\n";
    std::fflush(nullptr);
    std::_Exit(0);
  }
  // The front end's I/O threads called into CAF (spawning the requests'
  // actors), which leaves them a reference to CAF's logger; the actor
  // system's destructor waits for the logger, so they must end first.
  front_io.stop();
  sys.reset();
  std::cerr << prefix << "stopped by signal " << received << '\n';
  return 0;
}

} // namespace embedrt::app
