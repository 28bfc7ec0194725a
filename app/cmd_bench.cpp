// `embedrt bench`: the closed-loop load generator used by the benchmarks.
//
// Spawns the runtime (service, pool, connection actors) in its own actor
// system, runs a warm-up and then the measured phase with `--concurrency`
// requests in flight (bench/load_driver.hpp), and prints exactly one JSON
// line to stdout (bench/bench_report.hpp). Diagnostics go to stderr. Exit
// codes: 0 when the run completed (even with failed requests), 2 for bad
// usage, 1 when the run could not be set up (bad URL, unreadable CA file,
// the built-in upstream failing to start).
#include "bench/bench_report.hpp"
#include "bench/load_driver.hpp"
#include "cli_args.hpp"
#include "commands.hpp"
#include "embedrt/distributed.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/proc_stats.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "mock/mock_server.hpp"
#include "node_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/config_value.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace embedrt::app {

namespace {

using std::chrono::milliseconds;

constexpr const char* prefix = "embedrt bench: ";

cli::arg_parser make_parser() {
  cli::arg_parser p{
      "embedrt bench [options]",
      "Closed-loop load generator: C concurrent callers embed N requests "
      "through the\nruntime (pool, batching, keep-alive connections) and one "
      "JSON line with\nthroughput, latency percentiles, threads, connection "
      "reuse, CPU and memory\nis printed to stdout."};
  p.option("upstream", "URL",
           "base URL of the upstream, e.g. http://127.0.0.1:8080/v1 (default: "
           "$OPENAI_BASE_URL, else the built-in upstream in this process)")
      .option("requests", "N", "requests to answer in total (default 10000)")
      .option("concurrency", "C",
              "requests in flight; each answer releases the next (default 64)")
      .option("inputs", "K", "texts per request (default 1)")
      .option("dims", "D",
              "requested dimensions, 0 = model default (default 8)")
      .option("connections", "M", "upstream connections (default 8)")
      .option("model", "NAME", "model name (default bench-model)")
      .flag("no-batching",
            "do not merge queued requests into one upstream call")
      .flag("no-pacing",
            "do not pace to the upstream's rate limits (upstream_config::"
            "pacing; measures its cost)")
      .flag("adaptive-concurrency",
            "adapt the calls in flight to 429s and latency "
            "(upstream_config::adaptive_concurrency)")
      .flag("no-metrics",
            "run the runtime with metrics off (runtime_config::metrics; "
            "measures their overhead)")
      .flag("cache",
            "run the runtime with its embedding cache on (in memory; bench "
            "texts are unique, so every input is a miss: measures the "
            "cache's cost; docs/caching.md)")
      .option("cache-max-bytes", "N",
              "bound of that cache in bytes (default 268435456)")
      .option("deadline-ms", "N", "deadline of every request (default 30000)")
      .option("ca-file", "FILE", "extra CA certificates (PEM) for an https URL")
      .option("api-key-env", "VAR",
              "environment variable holding the API key (default "
              "OPENAI_API_KEY; none needed for the built-in upstream)")
      .option("io-threads", "N",
              "I/O threads: 0 (default) = the CAF workers run the sockets, "
              "N = N threads of their own")
      .option("text-bytes", "B", "bytes per text (default 40)")
      .option("warmup", "N",
              "unmeasured requests before the run (default 2 x connections)")
      .option("seed", "S",
              "seed of the text filler and retry jitter (default 1)")
      .option("workers", "N",
              "CAF worker threads (default: half the usable cores with "
              "--io-threads 0, else the usable cores less the I/O threads)")
      .option("scheduler", "POLICY",
              "CAF scheduler policy with --io-threads N > 0: stealing "
              "(default) or sharing")
      .option("caf", "KEY=VALUE",
              "a CAF setting for the run (repeatable), e.g. "
              "work-stealing.moderate-poll-attempts=0",
              true)
      .option("max-queue", "N",
              "bound of the upstream's request queue (default: the "
              "runtime's, 10000)")
      .option("log-level", "LEVEL",
              "runtime log level: debug, info, warn (default), error, off")
      .option("peer", "HOST:PORT",
              "measure through embedrt nodes instead: requests go to a "
              "router over these published nodes (repeatable; no local "
              "upstream then)",
              true);
  return p;
}

int usage_error(const std::string& msg) {
  return cli::usage_error("bench", msg);
}

/// Everything the command line and the environment decided.
struct settings {
  std::string upstream; // empty: the built-in upstream
  std::string api_key;
  std::string ca_file;
  uint64_t requests = 10000;
  uint64_t concurrency = 64;
  uint32_t inputs = 1;
  int32_t dims = 8;
  uint32_t connections = 8;
  std::string model = "bench-model";
  bool batching = true;
  bool pacing = true;
  bool adaptive = false;
  bool metrics = true;
  bool cache = false;
  std::size_t cache_max_bytes = std::size_t{256} << 20;
  milliseconds deadline{30000};
  std::size_t io_threads = 0;
  std::size_t text_bytes = 40;
  uint64_t warmup = 16;
  uint64_t seed = 1;
  std::size_t workers = 1;
  std::string scheduler = "stealing";
  /// CAF settings given with --caf (applied after the defaults).
  std::vector<std::pair<std::string, caf::config_value>> caf_settings;
  /// The pool's queue bound (default: the runtime's).
  std::optional<uint32_t> max_queue;
  /// Published embedrt nodes to measure through (a router over them).
  std::vector<peer_address> peers;
};

/// Parses the options into `s`; returns an error message or "".
std::string parse_settings(cli::arg_parser& p, settings& s) {
  int64_t inputs = s.inputs;
  int64_t dims = s.dims;
  int64_t connections = s.connections;
  int64_t deadline = s.deadline.count();
  int64_t io_threads = static_cast<int64_t>(s.io_threads);
  int64_t text_bytes = static_cast<int64_t>(s.text_bytes);
  int64_t workers = 0; // not given: scheduler_workers' default
  constexpr auto u64max = std::numeric_limits<uint64_t>::max();
  if (!p.get("upstream", s.upstream)
      || !p.get("requests", s.requests, 1, uint64_t{1} << 40)
      || !p.get("concurrency", s.concurrency, 1, 10'000'000)
      || !p.get("inputs", inputs, 1, 2048) || !p.get("dims", dims, 0, 65536)
      || !p.get("connections", connections, 1, 4096) || !p.get("model", s.model)
      || !p.get("deadline-ms", deadline, 1, 86'400'000)
      || !p.get("ca-file", s.ca_file)
      || !p.get("io-threads", io_threads, 0, 256)
      || !p.get("text-bytes", text_bytes, 1, int64_t{1} << 24)
      || !p.get("seed", s.seed, 0, u64max) || !p.get("workers", workers, 1, 256)
      || !p.get("scheduler", s.scheduler))
    return p.error();
  s.inputs = static_cast<uint32_t>(inputs);
  s.dims = static_cast<int32_t>(dims);
  s.connections = static_cast<uint32_t>(connections);
  s.deadline = milliseconds{deadline};
  s.io_threads = static_cast<std::size_t>(io_threads);
  s.text_bytes = static_cast<std::size_t>(text_bytes);
  s.workers
      = scheduler_workers(s.io_threads, static_cast<std::size_t>(workers));
  s.warmup = 2 * uint64_t{s.connections};
  if (!p.get("warmup", s.warmup, 0, uint64_t{1} << 40))
    return p.error();
  if (p.has("max-queue")) {
    int64_t max_queue = 0;
    if (!p.get("max-queue", max_queue, 1, std::numeric_limits<uint32_t>::max()))
      return p.error();
    s.max_queue = static_cast<uint32_t>(max_queue);
  }
  s.batching = !p.has("no-batching");
  s.pacing = !p.has("no-pacing");
  s.adaptive = p.has("adaptive-concurrency");
  s.metrics = !p.has("no-metrics");
  s.cache = p.has("cache");
  if (auto v = p.value("cache-max-bytes")) {
    if (!cli::parse_number(*v, s.cache_max_bytes) || s.cache_max_bytes < 65536)
      return "--cache-max-bytes: '" + *v + "' is not an integer >= 65536";
  }
  if (p.has("upstream") && s.upstream.empty())
    return "--upstream: empty URL";
  for (const auto& v : p.values("peer")) {
    auto addr = parse_peer(v);
    if (!addr)
      return "--peer: " + error_detail(addr.error());
    s.peers.push_back(*addr);
  }
  for (const auto& v : p.values("caf")) {
    auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0)
      return "--caf: expected KEY=VALUE, got '" + v + "'";
    auto val = caf::config_value::parse(v.substr(eq + 1));
    if (!val)
      return "--caf: cannot parse the value of '" + v + "'";
    s.caf_settings.emplace_back(v.substr(0, eq), std::move(*val));
  }
  if (!s.peers.empty() && p.has("upstream"))
    return "--peer and --upstream exclude each other (the nodes have the "
           "upstreams)";
  if (s.model.empty())
    return "--model: empty name";
  if (s.io_threads == 0 && p.has("scheduler"))
    return "--scheduler: applies to --io-threads N > 0 only (with 0 the "
           "workers run the sockets under embedrt's own scheduler)";
  if (s.scheduler != "stealing" && s.scheduler != "sharing")
    return "--scheduler: expected 'stealing' or 'sharing', got '" + s.scheduler
        + "'";
  if (auto lvl = p.value("log-level")) {
    log_level parsed;
    if (!parse_log_level(*lvl, parsed))
      return "--log-level: expected debug, info, warn, error or off, got '"
          + *lvl + "'";
    set_log_level(parsed);
  } else {
    set_log_level(log_level::warn);
  }
  // The key only ever comes from the environment (never from a flag value,
  // which would show in `ps`), and it is never printed.
  std::string key_var = "OPENAI_API_KEY";
  if (auto var = p.value("api-key-env")) {
    if (var->empty())
      return "--api-key-env: empty variable name";
    key_var = *var;
    if (std::getenv(key_var.c_str()) == nullptr)
      std::cerr << prefix << "environment variable " << key_var
                << " is not set: sending no API key\n";
  }
  if (const char* key = std::getenv(key_var.c_str()))
    s.api_key = key;
  if (s.upstream.empty() && s.peers.empty())
    if (const char* url = std::getenv("OPENAI_BASE_URL"); url && *url)
      s.upstream = url;
  return {};
}

/// A router over the --peer nodes (their status says when they are ready;
/// requests sent before wait for them).
caf::expected<service_actor> spawn_peer_router(caf::actor_system& sys,
                                               const settings& s) {
  router_config rc;
  rc.peers = s.peers;
  rc.default_timeout = s.deadline;
  rc.seed = s.seed;
  rc.metrics = s.metrics;
  return spawn_router(sys, service_actor{}, std::move(rc));
}

/// Upstream counters summed over the service's upstreams.
struct upstream_counters {
  int64_t connects = 0;
  int64_t calls = 0;
  int64_t reuses = 0;
  int64_t restarts = 0;
  int64_t rejected = 0;
  int64_t limit_decreases_overload = 0;
  int64_t limit_decreases_latency = 0;
};

std::optional<upstream_counters> read_counters(caf::actor_system& sys,
                                               const service_actor& svc) {
  caf::scoped_actor self{sys};
  std::optional<upstream_counters> out;
  self->request(svc, std::chrono::seconds{5}, health_atom_v)
      .receive(
          [&](health_report& h) {
            upstream_counters c;
            for (const auto& u : h.upstreams) {
              c.connects += u.connects;
              c.calls += u.upstream_calls;
              c.reuses += u.reuses;
              c.restarts += u.restarts;
              c.rejected += u.rejected;
              c.limit_decreases_overload += u.limit_decreases_overload;
              c.limit_decreases_latency += u.limit_decreases_latency;
            }
            out = c;
          },
          [&](caf::error& err) {
            std::cerr << prefix << "no health report from the service: "
                      << render_error(err) << '\n';
          });
  return out;
}

/// Warm-up, measured run and report, with the service `svc`. Returns the
/// exit code.
int measure(caf::actor_system& sys, const service_actor& svc, const settings& s,
            bench::bench_report& rep) {
  bench::load_params lp;
  lp.service = svc;
  lp.concurrency = s.concurrency;
  lp.inputs = s.inputs;
  lp.text_bytes = s.text_bytes;
  lp.dims = s.dims;
  lp.model = s.model;
  lp.deadline = s.deadline;
  lp.seed = s.seed;
  if (s.warmup > 0) {
    lp.requests = s.warmup;
    auto warm = bench::run_load(sys, lp);
    if (!warm) {
      std::cerr << prefix << "warm-up failed: " << render_error(warm.error())
                << '\n';
      return 1;
    }
    if (warm->ok == 0)
      std::cerr << prefix << "warning: no warm-up request succeeded\n";
  }
  auto before = read_counters(sys, svc);
  lp.requests = s.requests;
  lp.first_request = s.warmup;
  rep.threads_start = thread_count();
  auto usage0 = sample_usage();
  auto out = bench::run_load(sys, lp);
  auto usage1 = sample_usage();
  rep.threads_end = thread_count();
  if (!out) {
    std::cerr << prefix << "run failed: " << render_error(out.error()) << '\n';
    return 1;
  }
  auto after = read_counters(sys, svc);
  rep.ok = out->ok;
  rep.errors = std::move(out->errors);
  rep.seconds = std::chrono::duration<double>(out->elapsed).count();
  rep.ok_latency = bench::summarize(out->ok_ns);
  rep.ok_latency_exact = bench::summarize_exact(out->ok_ns);
  rep.error_latency = bench::summarize(std::move(out->error_ns));
  rep.threads_peak
      = std::max({rep.threads_start, out->threads_peak, rep.threads_end});
  if (before && after) {
    rep.connections_opened = after->connects - before->connects;
    rep.upstream_requests = after->calls - before->calls;
    rep.connection_reuses = after->reuses - before->reuses;
    rep.restarts = after->restarts - before->restarts;
    rep.rejected = after->rejected - before->rejected;
    rep.limit_decreases_overload
        = after->limit_decreases_overload - before->limit_decreases_overload;
    rep.limit_decreases_latency
        = after->limit_decreases_latency - before->limit_decreases_latency;
  }
  rep.cpu_s = usage1.cpu_s - usage0.cpu_s;
  rep.cpu_s_process = usage1.cpu_s;
  rep.max_rss_mb = usage1.max_rss_mb;
  return 0;
}

} // namespace

int cmd_bench(const std::vector<std::string>& args) {
  auto p = make_parser();
  if (!p.parse(args))
    return usage_error(p.error());
  if (p.help_requested()) {
    std::cout << p.help();
    return 0;
  }
  settings s;
  if (auto msg = parse_settings(p, s); !msg.empty())
    return usage_error(msg);
  // The built-in upstream, if used, must outlive the actor system (declared
  // first, destroyed last).
  std::unique_ptr<mock::mock_server> embedded;
  if (s.upstream.empty() && s.peers.empty()) {
    embedded = std::make_unique<mock::mock_server>(mock::mock_options{});
    if (embedded->start() == 0) {
      std::cerr << prefix
                << "cannot start the built-in upstream: " << embedded->error()
                << '\n';
      return 1;
    }
    s.upstream = embedded->base_url();
    std::cerr << prefix
              << "no --upstream and OPENAI_BASE_URL is not set: using the "
                 "built-in upstream at "
              << s.upstream
              << " (in this process: its thread and CPU time are included)\n";
  }
  runtime_config rc;
  upstream_config up;
  up.name = "bench";
  up.base_url = s.upstream;
  up.api_key = s.api_key;
  up.connections = s.connections;
  up.batching = s.batching;
  up.pacing = s.pacing;
  up.adaptive_concurrency = s.adaptive;
  up.ca_file = s.ca_file;
  if (s.max_queue)
    up.max_queue = *s.max_queue;
  rc.upstreams.push_back(std::move(up));
  rc.default_timeout = s.deadline;
  rc.io_threads = s.io_threads;
  rc.seed = s.seed;
  rc.metrics = s.metrics;
  rc.cache.enabled = s.cache;
  rc.cache.max_bytes = s.cache_max_bytes;

  caf::actor_system_config cfg;
  register_types(cfg);
  if (!s.peers.empty())
    if (auto err = enable_distribution(cfg)) {
      std::cerr << prefix << error_detail(err) << '\n';
      return 1;
    }
  // Not prepare_io: with --io-threads N > 0 the service makes its N I/O
  // threads itself, and a router to peers (--peers) opens no socket.
  cfg.set("scheduler.max-threads", s.workers);
  if (s.io_threads == 0)
    run_on_actor_workers(
        cfg, std::make_shared<io_runtime>(io_runtime::on_actor_workers));
  cfg.set("scheduler.policy",
          s.scheduler == "sharing" ? caf::atom("sharing")
                                   : caf::atom("stealing"));
  for (auto& [key, value] : s.caf_settings)
    cfg.set(key, value);
  caf::actor_system sys{cfg};
  bench::bench_report rep;
  rep.requests = s.requests;
  rep.concurrency = s.concurrency;
  rep.inputs = s.inputs;
  rep.dims = s.dims;
  rep.connections = s.connections;
  rep.batching = s.batching;
  rep.metrics = s.metrics;
  rep.cache = s.cache;
  rep.model = s.model;
  rep.warmup = s.warmup;
  rep.text_bytes = s.text_bytes;
  rep.deadline_ms = s.deadline.count();
  rep.workers = s.workers;
  // With the I/O on the workers the scheduler is embedrt's (io_runtime.hpp).
  rep.scheduler = s.io_threads == 0 ? "io_workers" : s.scheduler;
  rep.io_threads = s.io_threads;
  rep.seed = s.seed;
  rep.embedded_upstream = embedded != nullptr;
  int rc_code = 0;
  {
    auto svc
        = s.peers.empty() ? spawn_service(sys, rc) : spawn_peer_router(sys, s);
    if (!svc) {
      std::cerr << prefix
                << "cannot set up the runtime: " << render_error(svc.error())
                << '\n';
      return 1;
    }
    rc_code = measure(sys, *svc, s, rep);
    caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
  }
  if (rc_code != 0)
    return rc_code;
  std::cout << bench::to_json(rep) << std::endl;
  return 0;
}

} // namespace embedrt::app
