// The node's configuration: one for every `embedrt` command, resolved from
// flags > environment > config file > defaults (docs/cli.md, "Configuration").
// It contains the runtime's own settings (`runtime_config`,
// embedrt/config.hpp) plus what only the command uses (serve, log level,
// embedded default).
//
//   auto p = make_parser();             // the command's own options ...
//   app::add_config_options(p);         // ... plus the shared ones
//   if (!p.parse(args)) ...
//   auto cfg = app::load_config(p, app::environment::from_process());
//   if (!cfg) { std::cerr << cfg.error << '\n'; return cli::exit_usage; }
//   for (auto& w : cfg->warnings) std::cerr << w << '\n';
//   if (cfg->uses_embedded_default) ... start the built-in upstream
//   (embedded_default.hpp) ...
//   spawn_service(sys, cfg->runtime);
//
// The config file is a strict INI file (format below and in docs/cli.md):
// unknown sections and keys, duplicates and bad values are errors naming the
// file and line. API keys are read from environment variables named in the
// configuration (`api_key_env`); a key is only taken from the file when it
// says so explicitly (`api_key = ...`). No function here prints or returns a
// key in a message.
//
//   # global keys (before any section)
//   connections = 8
//   log_level = info
//   [serve]
//   listen = 127.0.0.1:8080
//   auth_token_env = EMBEDRT_AUTH_TOKEN
//   [upstream openai]
//   base_url = https://api.openai.com/v1
//   provider = openai
//   api_key_env = OPENAI_API_KEY
//   model_map = small=text-embedding-3-small, large=text-embedding-3-large
#pragma once

#include "cli_args.hpp"
#include "embedrt/config.hpp"
#include "embedrt/log.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace caf {
class actor_system_config;
} // namespace caf

namespace embedrt {
class io_runtime;
} // namespace embedrt

namespace embedrt::app {

/// Environment variables as a name -> value map: the process's, or a test's.
class environment {
 public:
  environment() = default;
  explicit environment(std::map<std::string, std::string> vars);

  /// A copy of the process environment (`environ`).
  static environment from_process();

  /// The variable's value; std::nullopt if it is not set (an empty value is
  /// returned as "").
  std::optional<std::string> get(const std::string& name) const;

 private:
  std::map<std::string, std::string> vars_;
};

/// A client of `embedrt serve` (section `[client NAME]`).
struct client_config {
  /// The label of its requests in the access log and /metrics.
  std::string name;
  /// Its bearer token (a secret: never print it).
  std::string token;
  /// Requests and estimated tokens per minute; 0 = no limit.
  uint64_t rpm = 0;
  uint64_t tpm = 0;
};

/// Settings of `embedrt serve` (section `[serve]`).
struct serve_config {
  /// HOST:PORT to listen on (IPv4, [IPv6] or localhost; port 0 = any).
  std::string listen = "127.0.0.1:8080";
  /// Variable holding the client bearer token.
  std::string auth_token_env = "EMBEDRT_AUTH_TOKEN";
  /// The resolved client token; empty: clients need no token (unless
  /// `clients` has some).
  std::string auth_token;
  /// The `[client NAME]` sections, tokens resolved (serve only).
  std::vector<client_config> clients;
  /// Origins allowed to call from a browser ("*": any); empty: CORS off.
  std::vector<std::string> cors_origins;
  /// TLS on the listener: certificate chain and key (PEM), both or none.
  std::string tls_certificate;
  std::string tls_key;
  /// Largest request body; larger bodies get 413.
  std::size_t max_body_bytes = 16 * 1024 * 1024;
  /// Drain period on SIGTERM/SIGINT before the rest is answered 503.
  std::chrono::milliseconds grace{10000};
  /// Largest request line + headers; larger get 431.
  std::size_t max_header_bytes = 32 * 1024;
  /// A keep-alive connection with nothing received for this long closes.
  std::chrono::milliseconds idle_timeout{60000};
  /// Time to receive a whole request from its first byte; slower gets 408.
  std::chrono::milliseconds request_timeout{30000};
  /// Client connections at once; 0 = half the file descriptor limit.
  std::size_t max_connections = 0;
  /// Error messages to clients keep the upstream's address and its whole
  /// message ("full") or only its message, without addresses and echoed
  /// bodies ("message", the default; docs/security.md).
  bool full_upstream_errors = false;
  /// Budget of response bytes in flight (docs/reliability.md, "Memory");
  /// 0 = no limit.
  uint64_t response_budget_bytes = uint64_t{256} << 20;
};

/// Distribution across CAF nodes (section `[cluster]`; docs/distributed.md).
struct cluster_config {
  /// Publish this node on `caf_bind`:`caf_port` (serve only; 0: not
  /// published).
  uint16_t caf_port = 0;
  std::string caf_bind = "127.0.0.1";
  /// Other nodes to route across ("HOST:PORT" each, checked).
  std::vector<std::string> peers;
  /// TLS between nodes: all three files, or none.
  std::string tls_certificate;
  std::string tls_key;
  std::string tls_ca_file;
  /// How often the router asks each node for its status.
  std::chrono::milliseconds status_interval{250};

  bool distributed() const noexcept {
    return caf_port != 0 || !peers.empty();
  }
};

/// Everything a command needs, resolved from flags, environment, the config
/// file and defaults.
struct app_config {
  /// Upstreams (with their API keys), deadlines, I/O threads. Empty
  /// `upstreams` iff `uses_embedded_default`, or for a pure front (peers and
  /// no upstream configured).
  runtime_config runtime;
  /// True when no upstream is configured anywhere (no --upstream, no
  /// OPENAI_BASE_URL, no [upstream] in the file) and no API key is set: the
  /// command starts the built-in upstream in-process (embedded_default.hpp).
  bool uses_embedded_default = false;
  /// The config file that was read ("" if none).
  std::string config_file;
  /// Runtime log level.
  log_level log = log_level::warn;
  /// Default model name and dimensions for commands that send requests
  /// themselves (`embed`); "" / 0 = the command's own default.
  std::string model;
  int32_t dimensions = 0;
  /// Connections and queue bound of upstreams that do not set their own
  /// (URL upstreams, the embedded default).
  uint32_t connections = 8;
  uint32_t max_queue = 10000;
  /// CAF's worker threads (`workers`); 0: scheduler_workers' default.
  std::size_t workers = 0;
  /// Health check interval of upstreams that do not set their own
  /// (`health_check_interval_ms`; 0 = off).
  std::chrono::milliseconds health_check_interval{10000};
  serve_config serve;
  cluster_config cluster;
  /// Non-fatal remarks for stderr (e.g. a key variable that is not set).
  /// Never contain a secret.
  std::vector<std::string> warnings;
};

/// The outcome of `load_config`: a configuration, or an error message that
/// names the offending flag, variable, or file and line. Every error is bad
/// usage (exit code `cli::exit_usage`).
struct config_result {
  std::optional<app_config> config;
  std::string error;

  explicit operator bool() const noexcept {
    return config.has_value();
  }
  app_config& operator*() {
    return *config;
  }
  app_config* operator->() {
    return &*config;
  }
};

/// Declares the options every command shares: --config, --upstream
/// (repeatable), --connections, --api-key-env, --ca-file, --io-threads,
/// --deadline-ms, --max-queue, --log-level.
void add_config_options(cli::arg_parser& p);

/// Declares the distribution options: --peer (repeatable), the TLS files
/// and, with `publish` (serve), --caf-port and --caf-bind.
void add_cluster_options(cli::arg_parser& p, bool publish);

/// Resolves the configuration: flags > environment > config file > defaults.
/// Reads the options declared by `add_config_options` and, when the command
/// declares them, --model, --dims (embed) and --listen, --auth-token-env,
/// --max-body-bytes, --grace-ms, --cors-origins (serve). The client tokens
/// (auth_token_env, [client NAME]) are only resolved, and their variables
/// only required, for a command that declares --auth-token-env (serve): one
/// file serves both commands. `default_log_level` is the level
/// when nothing sets one.
config_result load_config(const cli::arg_parser& p, const environment& env,
                          log_level default_log_level = log_level::warn);

/// The common start of a command that uses the configuration: parses `args`
/// with `p` (the command's options plus `add_config_options`), prints the
/// help or a usage error, resolves the configuration (`load_config` with the
/// process environment), sets the log level and prints the warnings, each
/// line starting "embedrt COMMAND: ". Returns the configuration, or
/// std::nullopt with the code to exit with in `exit_code` (0 after --help,
/// `cli::exit_usage` after an error).
std::optional<app_config>
parse_command_line(cli::arg_parser& p, const std::vector<std::string>& args,
                   std::string_view command, log_level default_log_level,
                   int& exit_code);

/// The model names a node serves, for `GET /v1/models`: every upstream's
/// `models` and the `model_map` aliases it serves, in configuration order,
/// without repeats. An upstream that serves any model (no `models`) adds its
/// aliases and the configured default model (`model`, EMBEDRT_MODEL), if
/// one is set: it has no list of its own.
std::vector<std::string> served_models(const app_config& cfg);

/// Points a configuration with `uses_embedded_default` at the built-in
/// upstream running at `base_url` (one upstream named "embedded", with the
/// resolved connections and queue bound).
void use_embedded_upstream(app_config& cfg, std::string base_url);

/// CAF's workers for a node whose runtime runs `io_threads` I/O threads,
/// unless `workers` (> 0) says. With I/O threads of its own (> 0): the
/// usable cores less one per I/O thread, at least one (every request crosses
/// between an I/O thread and a worker; with more threads than cores each
/// crossing waits for a core: docs/benchmarks.md, "Workers: the cores less
/// the I/O threads"). With the I/O on the workers (0): half the usable
/// cores, at least one (the kernel's network stack, the upstream and the
/// clients want the rest: docs/benchmarks.md, "I/O on the actor workers").
std::size_t scheduler_workers(std::size_t io_threads, std::size_t workers = 0);

/// The I/O of a node with `io_threads` I/O threads, and CAF's workers set in
/// `sys_cfg` (scheduler_workers): with 0 the CAF workers run the sockets
/// themselves (run_on_actor_workers) and no request is handed to and from
/// I/O threads; otherwise `io_threads` threads of its own. Call before
/// creating the actor system.
std::shared_ptr<io_runtime> prepare_io(caf::actor_system_config& sys_cfg,
                                       std::size_t io_threads,
                                       std::size_t workers = 0);

} // namespace embedrt::app
