#include "node_config.hpp"

#include "embedrt/distributed.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/proc_stats.hpp"
#include "embedrt/protocol/endpoint.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/provider.hpp"
#include "node_config_detail.hpp"

#include <algorithm>
#include <caf/actor_system_config.hpp>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <utility>

extern char** environ;

namespace embedrt::app {

// -- environment --------------------------------------------------------------

environment::environment(std::map<std::string, std::string> vars)
    : vars_(std::move(vars)) {
  // nop
}

environment environment::from_process() {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv{*e};
    auto eq = kv.find('=');
    if (eq == std::string_view::npos)
      continue;
    vars.emplace(std::string{kv.substr(0, eq)}, std::string{kv.substr(eq + 1)});
  }
  return environment{std::move(vars)};
}

std::optional<std::string> environment::get(const std::string& name) const {
  auto i = vars_.find(name);
  if (i == vars_.end())
    return std::nullopt;
  return i->second;
}

namespace {

using namespace detail;

// -- the config file ----------------------------------------------------------

struct file_data {
  std::string path;
  section global;
  section serve;
  section cluster;
  section cache;
  std::vector<section> upstreams;
  std::vector<section> clients;
};

const std::set<std::string> global_keys{
    "connections", "io_threads", "workers",  "deadline_ms",
    "max_queue",   "log_level",  "model",    "dimensions",
    "api_key_env", "ca_file",    "provider", "health_check_interval_ms"};
const std::set<std::string> serve_keys{
    "listen",          "auth_token_env",
    "auth_token",      "max_body_bytes",
    "grace_ms",        "max_header_bytes",
    "idle_timeout_ms", "request_timeout_ms",
    "max_connections", "upstream_error_detail",
    "cors_origins",    "tls_certificate",
    "tls_key",         "response_budget_bytes"};
const std::set<std::string> client_keys{"token_env", "token", "rpm", "tpm"};
const std::set<std::string> cluster_keys{
    "caf_port",    "caf_bind",          "peers", "tls_certificate", "tls_key",
    "tls_ca_file", "status_interval_ms"};
const std::set<std::string> cache_keys{"enabled", "max_bytes", "ttl_ms", "path",
                                       "disk_max_bytes"};
const std::set<std::string> upstream_keys{"base_url",
                                          "provider",
                                          "api_key_env",
                                          "api_key",
                                          "connections",
                                          "models",
                                          "model_map",
                                          "ca_file",
                                          "tls_verify",
                                          "azure_api_version",
                                          "batching",
                                          "max_queue",
                                          "max_inputs_per_request",
                                          "max_response_bytes",
                                          "attempt_timeout_ms",
                                          "breaker",
                                          "breaker_failures",
                                          "breaker_failure_rate",
                                          "breaker_window",
                                          "breaker_min_calls",
                                          "breaker_slow_call_ms",
                                          "breaker_silent_call_ms",
                                          "encoding_format",
                                          "breaker_open_ms",
                                          "breaker_max_open_ms",
                                          "breaker_half_open_probes",
                                          "weight",
                                          "priority",
                                          "health_check_interval_ms",
                                          "health_check_model",
                                          "pacing",
                                          "rpm",
                                          "tpm",
                                          "adaptive_concurrency",
                                          "min_connections"};

std::string join(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names)
    out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool valid_name(std::string_view s, bool allow_dots) {
  if (s.empty())
    return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_'
        || (allow_dots && (c == '-' || c == '.'));
  });
}

/// Parses the text of a config file; returns an error message or "".
std::string parse_file(std::string_view text, file_data& out) {
  auto where = [&](int line) {
    return out.path + ":" + std::to_string(line) + ": ";
  };
  section* current = &out.global;
  int line_no = 0;
  std::set<std::string> upstream_names;
  std::set<std::string> client_names;
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    auto raw = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{}
                                        : text.substr(nl + 1);
    auto line = trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';')
      continue;
    if (line.front() == '[') {
      if (line.back() != ']')
        return where(line_no) + "expected ']' at the end of a section header";
      auto inner = trim(line.substr(1, line.size() - 2));
      if (inner == "serve") {
        if (out.serve.line != 0)
          return where(line_no) + "section [serve] repeated (first on line "
              + std::to_string(out.serve.line) + ")";
        out.serve.name = "serve";
        out.serve.line = line_no;
        current = &out.serve;
        continue;
      }
      if (inner == "cluster") {
        if (out.cluster.line != 0)
          return where(line_no) + "section [cluster] repeated (first on line "
              + std::to_string(out.cluster.line) + ")";
        out.cluster.name = "cluster";
        out.cluster.line = line_no;
        current = &out.cluster;
        continue;
      }
      if (inner == "cache") {
        if (out.cache.line != 0)
          return where(line_no) + "section [cache] repeated (first on line "
              + std::to_string(out.cache.line) + ")";
        out.cache.name = "cache";
        out.cache.line = line_no;
        current = &out.cache;
        continue;
      }
      if (inner.substr(0, 8) == "upstream"
          && (inner.size() == 8
              || std::isspace(static_cast<unsigned char>(inner[8])))) {
        auto name = trim(inner.substr(8));
        if (!valid_name(name, true))
          return where(line_no)
              + "[upstream NAME] needs a name of letters, digits, '_', "
                "'-' or '.'";
        if (!upstream_names.emplace(name).second)
          return where(line_no) + "upstream '" + std::string{name}
          + "' is defined twice";
        out.upstreams.push_back(section{std::string{name}, line_no, {}});
        current = &out.upstreams.back();
        continue;
      }
      if (inner.substr(0, 6) == "client"
          && (inner.size() == 6
              || std::isspace(static_cast<unsigned char>(inner[6])))) {
        auto name = trim(inner.substr(6));
        if (!valid_name(name, true))
          return where(line_no)
              + "[client NAME] needs a name of letters, digits, '_', "
                "'-' or '.'";
        if (!client_names.emplace(name).second)
          return where(line_no) + "client '" + std::string{name}
          + "' is defined twice";
        out.clients.push_back(section{std::string{name}, line_no, {}});
        current = &out.clients.back();
        continue;
      }
      return where(line_no) + "unknown section [" + std::string{inner}
      + "] (known: [serve], [cluster], [cache], [upstream NAME], [client "
        "NAME])";
    }
    auto eq = line.find('=');
    if (eq == std::string_view::npos)
      return where(line_no) + "expected 'key = value'";
    auto key = std::string{trim(line.substr(0, eq))};
    auto value = trim(line.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    bool in_client = !out.clients.empty() && current == &out.clients.back();
    const auto& known = current == &out.global ? global_keys
        : current == &out.serve                ? serve_keys
        : current == &out.cluster              ? cluster_keys
        : current == &out.cache                ? cache_keys
        : in_client                            ? client_keys
                                               : upstream_keys;
    auto section_name = current == &out.global ? std::string{"global section"}
        : current == &out.serve                ? std::string{"[serve]"}
        : current == &out.cluster              ? std::string{"[cluster]"}
        : current == &out.cache                ? std::string{"[cache]"}
        : in_client ? "[client " + current->name + "]"
                    : "[upstream " + current->name + "]";
    if (known.count(key) == 0)
      return where(line_no) + "unknown key '" + key + "' in " + section_name
          + " (known: " + join(known) + ")";
    if (auto prev = current->find(key))
      return where(line_no) + "key '" + key + "' repeated in " + section_name
          + " (first on line " + std::to_string(prev->line) + ")";
    current->keys.emplace(key, entry{std::string{value}, line_no});
  }
  for (const auto& up : out.upstreams)
    if (up.find("base_url") == nullptr)
      return where(up.line) + "[upstream " + up.name + "] has no base_url";
  for (const auto& cl : out.clients)
    if ((cl.find("token_env") == nullptr) == (cl.find("token") == nullptr))
      return where(cl.line) + "[client " + cl.name
          + "] needs exactly one of token_env and token";
  return {};
}

// -- values -------------------------------------------------------------------

/// The pacing and adaptive concurrency keys of an `[upstream]` section (see
/// docs/cli.md); `connections` is read before.
void read_pacing(resolver& r, const std::string& path, const section& u,
                 upstream_config& up) {
  auto key = [&](const char* name) {
    return r.pick(nullptr, nullptr, {{&u, name}});
  };
  r.boolean(key("pacing"), up.pacing);
  r.integer(key("rpm"), up.rpm, int64_t{0}, int64_t{1'000'000'000});
  r.integer(key("tpm"), up.tpm, int64_t{0}, int64_t{1'000'000'000'000});
  r.boolean(key("adaptive_concurrency"), up.adaptive_concurrency);
  r.integer(key("min_connections"), up.min_connections, uint32_t{1},
            max_connections);
  if (u.find("min_connections") && up.min_connections > up.connections)
    r.fail(path + ":" + std::to_string(u.find("min_connections")->line)
           + ": min_connections: " + std::to_string(up.min_connections)
           + " is more than the upstream's connections ("
           + std::to_string(up.connections) + ")");
}

/// The breaker keys of an `[upstream]` section (see docs/cli.md).
void read_breaker(resolver& r, const std::string& path, const section& u,
                  breaker_config& b) {
  auto where = [&](const char* name) {
    return path + ":" + std::to_string(u.find(name)->line) + ": " + name;
  };
  auto key = [&](const char* name) {
    return r.pick(nullptr, nullptr, {{&u, name}});
  };
  r.boolean(key("breaker"), b.enabled);
  r.integer(key("breaker_failures"), b.consecutive_failures, uint32_t{1},
            uint32_t{1'000'000});
  uint32_t rate = static_cast<uint32_t>(b.failure_rate * 100 + 0.5);
  if (r.integer(key("breaker_failure_rate"), rate, uint32_t{1}, uint32_t{100}))
    b.failure_rate = rate / 100.0;
  r.integer(key("breaker_window"), b.window, uint32_t{1}, uint32_t{100'000});
  r.integer(key("breaker_min_calls"), b.min_calls, uint32_t{1},
            uint32_t{100'000});
  r.millis(key("breaker_slow_call_ms"), b.slow_call_threshold, 0, max_ms);
  r.millis(key("breaker_silent_call_ms"), b.silent_call_threshold, 0, max_ms);
  r.millis(key("breaker_open_ms"), b.reset_timeout, 1, max_ms);
  r.millis(key("breaker_max_open_ms"), b.max_reset_timeout, 1, max_ms);
  r.integer(key("breaker_half_open_probes"), b.half_open_probes, uint32_t{1},
            uint32_t{10'000});
  // Checked against each other only where the file set one of them.
  if (b.min_calls > b.window)
    r.fail(where(u.find("breaker_min_calls") ? "breaker_min_calls"
                                             : "breaker_window")
           + ": breaker_min_calls must not be larger than breaker_window");
  if (b.max_reset_timeout < b.reset_timeout)
    r.fail(where(u.find("breaker_max_open_ms") ? "breaker_max_open_ms"
                                               : "breaker_open_ms")
           + ": breaker_max_open_ms must not be shorter than breaker_open_ms");
}

/// Reads the whole file; returns an error message or "".
std::string read_file(const std::string& path, std::string& out) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return "cannot read config file '" + path + "': " + std::strerror(errno);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad())
    return "cannot read config file '" + path + "'";
  out = buf.str();
  return {};
}

/// Checks a base URL; returns an error message or "".
std::string check_url(const std::string& url, const std::string& where) {
  if (url.empty())
    return where + ": empty URL";
  auto parsed = parse_base_url(url);
  if (!parsed)
    return where + ": " + error_detail(parsed.error());
  return {};
}

// -- the steps of load_config -------------------------------------------------

/// Finds the config file (--config > EMBEDRT_CONFIG > none) and reads it into
/// `file`; returns an error message or "".
std::string load_file(const cli::arg_parser& p, const environment& env,
                      file_data& file) {
  if (auto path = p.value("config")) {
    file.path = *path;
  } else if (auto var = env.get("EMBEDRT_CONFIG"); var && !var->empty()) {
    file.path = *var;
  }
  if (p.has("config") && file.path.empty())
    return "--config: empty file name";
  if (file.path.empty())
    return {};
  std::string text;
  if (auto msg = read_file(file.path, text); !msg.empty())
    return msg;
  return parse_file(text, file);
}

/// The global settings: connections, queue bound, I/O threads, deadline, log
/// level, model and dimensions.
void read_globals(resolver& r, const section* g, app_config& cfg) {
  r.integer(r.pick("connections", "EMBEDRT_CONNECTIONS", {{g, "connections"}}),
            cfg.connections, uint32_t{1}, max_connections);
  r.integer(r.pick("max-queue", "EMBEDRT_MAX_QUEUE", {{g, "max_queue"}}),
            cfg.max_queue, uint32_t{1}, uint32_t{100'000'000});
  // A node's default: the sockets on CAF's workers (prepare_io).
  cfg.runtime.io_threads = 0;
  r.integer(r.pick("io-threads", "EMBEDRT_IO_THREADS", {{g, "io_threads"}}),
            cfg.runtime.io_threads, std::size_t{0}, std::size_t{256});
  r.integer(r.pick("workers", "EMBEDRT_WORKERS", {{g, "workers"}}), cfg.workers,
            std::size_t{0}, std::size_t{256});
  r.millis(r.pick("deadline-ms", "EMBEDRT_DEADLINE_MS", {{g, "deadline_ms"}}),
           cfg.runtime.default_timeout, 1, max_ms);
  if (auto c = r.pick("log-level", "EMBEDRT_LOG_LEVEL", {{g, "log_level"}}))
    if (!parse_log_level(c->value, cfg.log))
      r.fail(c->where + ": '" + c->value
             + "' is not a log level (debug, info, warn, error, off)");
  if (auto c = r.pick("model", "EMBEDRT_MODEL", {{g, "model"}})) {
    if (c->value.empty())
      r.fail(c->where + ": empty model name");
    cfg.model = c->value;
  }
  r.integer(r.pick("dims", "EMBEDRT_DIMENSIONS", {{g, "dimensions"}}),
            cfg.dimensions, int32_t{0}, int32_t{65536});
  r.millis(r.pick(nullptr, "EMBEDRT_HEALTH_CHECK_INTERVAL_MS",
                  {{g, "health_check_interval_ms"}}),
           cfg.health_check_interval, 0, max_ms);
}

/// The [cache] settings and their flags (docs/caching.md): off unless
/// enabled, or a persistent path is given without `enabled = false`.
void read_cache(resolver& r, const section* cs, cache_config& out) {
  auto enabled = r.pick("cache", "EMBEDRT_CACHE", {{cs, "enabled"}});
  if (auto c = r.pick("cache-path", "EMBEDRT_CACHE_PATH", {{cs, "path"}})) {
    if (c->value.empty())
      r.fail(c->where + ": empty path");
    out.path = c->value;
    out.enabled = true;
  }
  r.boolean(enabled, out.enabled);
  r.integer(r.pick("cache-max-bytes", nullptr, {{cs, "max_bytes"}}),
            out.max_bytes, std::size_t{1} << 16, std::size_t{1} << 44);
  r.millis(r.pick("cache-ttl-ms", nullptr, {{cs, "ttl_ms"}}), out.ttl, 0,
           int64_t{365} * max_ms);
  r.integer(r.pick(nullptr, nullptr, {{cs, "disk_max_bytes"}}),
            out.disk_max_bytes, std::size_t{1} << 20, std::size_t{1} << 44);
}

/// What URL upstreams use, and file upstreams unless they say otherwise.
struct upstream_defaults {
  /// The key variable: --api-key-env > global api_key_env > OPENAI_API_KEY.
  std::string key_var = "OPENAI_API_KEY";
  std::optional<candidate> ca_file;
  provider_kind provider = provider_kind::openai;
};

/// Reads the upstream defaults of the global section; returns an error
/// message or "".
std::string read_upstream_defaults(const resolver& r, const environment& env,
                                   const section* g, upstream_defaults& out,
                                   std::vector<std::string>& warnings) {
  if (auto c = r.pick("api-key-env", nullptr, {{g, "api_key_env"}})) {
    if (c->value.empty())
      return c->where + ": empty variable name";
    out.key_var = c->value;
    if (!env.get(out.key_var))
      warnings.push_back("environment variable " + out.key_var
                         + " is not set: sending no API key");
  }
  out.ca_file = r.pick("ca-file", "EMBEDRT_CA_FILE", {{g, "ca_file"}});
  if (auto c = r.pick("provider", "EMBEDRT_PROVIDER", {{g, "provider"}})) {
    auto kind = parse_provider(c->value);
    if (!kind)
      return c->where + ": '" + c->value
          + "' is not a provider (openai, azure, tei, generic)";
    out.provider = *kind;
  }
  return {};
}

/// Builds the upstreams of a configuration: from URLs (--upstream,
/// OPENAI_BASE_URL, an API key alone) or from the file's [upstream NAME]
/// sections. Value errors go to the resolver.
class upstream_builder {
 public:
  upstream_builder(const cli::arg_parser& p, const environment& env,
                   const file_data& file, resolver& r, upstream_defaults d,
                   app_config& cfg)
      : p_(p), env_(env), file_(file), r_(r), d_(std::move(d)), cfg_(cfg) {
    // nop
  }

  /// Which upstreams: --upstream (URLs or file names) > OPENAI_BASE_URL >
  /// the file's [upstream] sections > an API key alone means OpenAI's API >
  /// the embedded default. Returns an error message or "".
  std::string choose() {
    auto& ups = cfg_.runtime.upstreams;
    if (auto flags = p_.values("upstream"); !flags.empty()) {
      for (const auto& v : flags) {
        if (v.find("://") != std::string::npos || v.empty())
          ups.push_back(from_url(v, "--upstream"));
        else if (auto s = find_section(v))
          ups.push_back(from_section(*s));
        else
          return "--upstream: '" + v
              + "' is neither a URL nor an [upstream] of the config file"
              + (file_.path.empty() ? std::string{" (no config file)"}
                                    : " " + file_.path);
      }
    } else if (auto url = env_.get("OPENAI_BASE_URL"); url && !url->empty()) {
      ups.push_back(from_url(*url, "OPENAI_BASE_URL"));
    } else if (!file_.upstreams.empty()) {
      for (const auto& s : file_.upstreams)
        ups.push_back(from_section(s));
    } else if (auto key = env_.get(d_.key_var); key && !key->empty()) {
      ups.push_back(from_url("https://api.openai.com/v1", d_.key_var));
    } else {
      cfg_.uses_embedded_default = true;
    }
    return {};
  }

 private:
  upstream_config from_url(const std::string& url, const std::string& source) {
    upstream_config up;
    up.base_url = url;
    up.provider = d_.provider;
    up.api_key = env_.get(d_.key_var).value_or("");
    up.connections = cfg_.connections;
    up.max_queue = cfg_.max_queue;
    up.health_check_interval = cfg_.health_check_interval;
    up.health_check_model = cfg_.model;
    if (d_.ca_file)
      up.ca_file = d_.ca_file->value;
    if (auto msg = check_url(url, source); !msg.empty())
      r_.fail(msg);
    return up;
  }

  upstream_config from_section(const section& u) {
    const section* g = &file_.global;
    upstream_config up;
    up.name = u.name;
    up.base_url = u.find("base_url")->value;
    if (auto msg = check_url(up.base_url, where(u, "base_url")); !msg.empty())
      r_.fail(msg);
    up.provider = d_.provider;
    if (auto e = u.find("provider")) {
      if (auto kind = parse_provider(e->value))
        up.provider = *kind;
      else
        r_.fail(where(u, "provider") + ": '" + e->value
                + "' is not a provider (openai, azure, tei, generic)");
    }
    up.api_key = section_key(u);
    r_.integer(r_.pick("connections", "EMBEDRT_CONNECTIONS",
                       {{&u, "connections"}, {g, "connections"}}),
               up.connections, uint32_t{1}, max_connections);
    r_.integer(r_.pick("max-queue", "EMBEDRT_MAX_QUEUE",
                       {{&u, "max_queue"}, {g, "max_queue"}}),
               up.max_queue, uint32_t{1}, uint32_t{100'000'000});
    if (auto c = r_.pick("ca-file", "EMBEDRT_CA_FILE",
                         {{&u, "ca_file"}, {g, "ca_file"}}))
      up.ca_file = c->value;
    if (auto e = u.find("models")) {
      up.models = split_list(e->value);
      if (up.models.empty())
        r_.fail(where(u, "models") + ": empty list");
    }
    if (auto e = u.find("model_map"))
      read_model_map(*e, where(u, "model_map"), up.model_map);
    if (auto e = u.find("azure_api_version"))
      up.azure_api_version = e->value;
    auto key = [&](const char* name) {
      return r_.pick(nullptr, nullptr, {{&u, name}});
    };
    r_.boolean(key("tls_verify"), up.tls_verify);
    r_.boolean(key("batching"), up.batching);
    r_.integer(key("max_inputs_per_request"), up.max_inputs_per_request,
               std::size_t{1}, std::size_t{1'000'000});
    r_.integer(key("max_response_bytes"), up.max_response_bytes,
               std::size_t{1024}, std::size_t{1} << 32);
    r_.millis(key("attempt_timeout_ms"), up.attempt_timeout, 1, max_ms);
    r_.integer(key("weight"), up.weight, uint32_t{1}, uint32_t{1000});
    r_.integer(key("priority"), up.priority, uint32_t{0}, uint32_t{100});
    up.health_check_interval = cfg_.health_check_interval;
    r_.millis(key("health_check_interval_ms"), up.health_check_interval, 0,
              max_ms);
    if (auto e = u.find("health_check_model")) {
      if (e->value.empty())
        r_.fail(where(u, "health_check_model") + ": empty model name");
      up.health_check_model = e->value;
    } else if (up.models.empty() && up.model_map.empty()) {
      // Serves any model: check with the configured default model, if any.
      up.health_check_model = cfg_.model;
    }
    if (auto e = u.find("encoding_format")) {
      if (e->value == "base64")
        up.base64 = true;
      else if (e->value == "float")
        up.base64 = false;
      else
        r_.fail(where(u, "encoding_format") + ": '" + e->value
                + "' is not base64 or float");
    }
    read_breaker(r_, file_.path, u, up.breaker);
    read_pacing(r_, file_.path, u, up);
    return up;
  }

  /// The key of a file upstream: --api-key-env > explicit api_key > the
  /// section's api_key_env > the global key variable.
  std::string section_key(const section& u) {
    if (auto flag = p_.value("api-key-env"))
      return env_.get(*flag).value_or("");
    if (auto e = u.find("api_key"))
      return e->value;
    std::string var = d_.key_var;
    if (auto e = u.find("api_key_env")) {
      if (e->value.empty())
        r_.fail(where(u, "api_key_env") + ": empty variable name");
      var = e->value;
      if (!env_.get(var))
        cfg_.warnings.push_back("upstream " + u.name + ": environment variable "
                                + var + " is not set: sending no API key");
    }
    return env_.get(var).value_or("");
  }

  /// `model_map = CALLER=UPSTREAM, ...`.
  void read_model_map(const entry& e, const std::string& at,
                      std::map<std::string, std::string>& out) {
    for (const auto& item : split_list(e.value)) {
      auto eq = item.find('=');
      auto from = eq == std::string::npos
          ? std::string_view{}
          : trim(std::string_view{item}.substr(0, eq));
      auto to = eq == std::string::npos
          ? std::string_view{}
          : trim(std::string_view{item}.substr(eq + 1));
      if (from.empty() || to.empty()) {
        r_.fail(at + ": '" + item + "' is not CALLER_MODEL=UPSTREAM_MODEL");
        return;
      }
      if (!out.emplace(std::string{from}, std::string{to}).second)
        r_.fail(at + ": model '" + std::string{from} + "' mapped twice");
    }
  }

  const section* find_section(const std::string& name) const {
    for (const auto& s : file_.upstreams)
      if (s.name == name)
        return &s;
    return nullptr;
  }

  /// "FILE:LINE: KEY" of a key the section sets.
  std::string where(const section& u, const char* key) const {
    return file_.path + ":" + std::to_string(u.find(key)->line) + ": " + key;
  }

  const cli::arg_parser& p_;
  const environment& env_;
  const file_data& file_;
  resolver& r_;
  upstream_defaults d_;
  app_config& cfg_;
};

/// Upstream names must be unique (health, metrics, logs); returns an error
/// message or "".
std::string check_unique_names(const std::vector<upstream_config>& ups) {
  std::set<std::string> names;
  for (const auto& up : ups)
    if (!up.name.empty() && !names.insert(up.name).second)
      return "upstream '" + up.name + "' is used twice";
  return {};
}

config_result failed(std::string msg) {
  config_result result;
  result.error = std::move(msg);
  return result;
}
} // namespace

void add_config_options(cli::arg_parser& p) {
  p.option("config", "FILE",
           "config file (default: $EMBEDRT_CONFIG; see docs/cli.md)")
      .option("upstream", "URL|NAME",
              "upstream base URL as in OPENAI_BASE_URL, or the name of an "
              "[upstream NAME] of the config file (default: "
              "$OPENAI_BASE_URL, else the config file's, else the built-in "
              "upstream)",
              true)
      .option("connections", "M", "connections per upstream (default 8)")
      .option("provider", "NAME",
              "provider profile of URL upstreams: openai, azure, tei, "
              "generic (default openai)")
      .option("api-key-env", "VAR",
              "environment variable holding the upstream API key (default "
              "OPENAI_API_KEY)")
      .option("ca-file", "FILE", "extra CA certificates (PEM) for https")
      .option("io-threads", "N",
              "I/O threads: 0 (default) = the CAF workers run the sockets, "
              "N = N threads of their own")
      .option("workers", "N",
              "CAF worker threads (default: half the usable cores with "
              "--io-threads 0, else the usable cores less the I/O threads)")
      .option("deadline-ms", "N",
              "default deadline of a request (default 30000)")
      .option("max-queue", "N",
              "bound of each upstream's request queue; beyond it requests "
              "are rejected as overloaded (default 10000)")
      .option("log-level", "LEVEL", "log level: debug, info, warn, error, off")
      .option("cache", "on|off",
              "embedding cache with single-flight (default off; "
              "docs/caching.md)")
      .option("cache-max-bytes", "N",
              "bound of the in-memory cache in bytes (default 268435456)")
      .option("cache-ttl-ms", "N",
              "serve cached vectors at most this old (default 0: no limit)")
      .option("cache-path", "DIR",
              "persistent cache store (LMDB) in DIR, shared across runs; "
              "turns the cache on");
}

void add_cluster_options(cli::arg_parser& p, bool publish) {
  if (publish)
    p.option("caf-port", "P",
             "publish this node to other embedrt nodes and host "
             "applications on CAF port P (default: not published)")
        .option("caf-bind", "ADDR",
                "address the CAF port listens on (default 127.0.0.1)");
  p.option("peer", "HOST:PORT",
           "route requests across this embedrt node too (repeatable; with "
           "no upstream of its own, the node is a pure front)",
           true)
      .option("caf-tls-cert", "FILE",
              "TLS between nodes: this node's certificate (PEM; with "
              "--caf-tls-key and --caf-tls-ca)")
      .option("caf-tls-key", "FILE", "TLS between nodes: its private key")
      .option("caf-tls-ca", "FILE",
              "TLS between nodes: CA that peers' certificates must chain to")
      .option("status-interval-ms", "N",
              "how often each peer is asked for its capacity (default 250)");
}

config_result load_config(const cli::arg_parser& p, const environment& env,
                          log_level default_log_level) {
  app_config cfg;
  cfg.log = default_log_level;
  file_data file;
  if (auto msg = load_file(p, env, file); !msg.empty())
    return failed(std::move(msg));
  cfg.config_file = file.path;
  resolver r{p, env, file.path};
  const section* global = &file.global;
  const section* serve = file.serve.line != 0 ? &file.serve : nullptr;
  read_globals(r, global, cfg);
  if (!r.error.empty())
    return failed(r.error);
  read_serve(r, serve, cfg.serve);
  if (!r.error.empty())
    return failed(r.error);
  // The client tokens only for the command that uses them (serve): `embed`
  // reads the same file and must not need the gateway's variables.
  if (p.declares("auth-token-env")) {
    if (auto msg = read_auth_token(r, env, file.path, serve, cfg.serve);
        !msg.empty())
      return failed(std::move(msg));
    if (auto msg = read_clients(r, env, file.path, file.clients, cfg.serve);
        !msg.empty())
      return failed(std::move(msg));
  }
  upstream_defaults defaults;
  if (auto msg = read_upstream_defaults(r, env, global, defaults, cfg.warnings);
      !msg.empty())
    return failed(std::move(msg));
  read_cluster(r, p, file.cluster.line != 0 ? &file.cluster : nullptr,
               cfg.cluster);
  read_cache(r, file.cache.line != 0 ? &file.cache : nullptr,
             cfg.runtime.cache);
  if (!r.error.empty())
    return failed(r.error);
  upstream_builder upstreams{p, env, file, r, std::move(defaults), cfg};
  if (auto msg = upstreams.choose(); !msg.empty())
    return failed(std::move(msg));
  // With peers and no upstream of its own, a node is a pure front: it
  // routes to its peers and starts no built-in upstream.
  if (cfg.uses_embedded_default && !cfg.cluster.peers.empty())
    cfg.uses_embedded_default = false;
  if (!r.error.empty())
    return failed(r.error);
  if (auto msg = check_unique_names(cfg.runtime.upstreams); !msg.empty())
    return failed(std::move(msg));
  config_result result;
  result.config = std::move(cfg);
  return result;
}

std::optional<app_config>
parse_command_line(cli::arg_parser& p, const std::vector<std::string>& args,
                   std::string_view command, log_level default_log_level,
                   int& exit_code) {
  exit_code = 0;
  if (!p.parse(args)) {
    exit_code = cli::usage_error(command, p.error());
    return std::nullopt;
  }
  if (p.help_requested()) {
    std::cout << p.help();
    return std::nullopt;
  }
  auto cfg = load_config(p, environment::from_process(), default_log_level);
  if (!cfg) {
    exit_code = cli::usage_error(command, cfg.error);
    return std::nullopt;
  }
  set_log_level(cfg->log);
  for (const auto& w : cfg->warnings)
    std::cerr << "embedrt " << command << ": " << w << '\n';
  return std::move(cfg.config);
}

std::vector<std::string> served_models(const app_config& cfg) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& name) {
    if (!name.empty() && std::find(out.begin(), out.end(), name) == out.end())
      out.push_back(name);
  };
  for (const auto& up : cfg.runtime.upstreams) {
    for (const auto& m : up.models)
      add(m);
    for (const auto& [alias, target] : up.model_map)
      if (up.models.empty()
          || std::find(up.models.begin(), up.models.end(), alias)
              != up.models.end())
        add(alias);
    if (up.models.empty())
      add(cfg.model); // serves any model: its default, if configured
  }
  if (cfg.runtime.upstreams.empty())
    add(cfg.model); // the embedded default: any model too
  return out;
}

std::size_t scheduler_workers(std::size_t io_threads, std::size_t workers) {
  if (workers > 0)
    return workers;
  auto cores = usable_cores();
  if (io_threads == 0)
    return std::max<std::size_t>(1, cores / 2);
  return cores > io_threads ? cores - io_threads : 1;
}

std::shared_ptr<io_runtime> prepare_io(caf::actor_system_config& sys_cfg,
                                       std::size_t io_threads,
                                       std::size_t workers) {
  sys_cfg.set("scheduler.max-threads", scheduler_workers(io_threads, workers));
  if (io_threads > 0)
    return std::make_shared<io_runtime>(io_threads);
  auto io = std::make_shared<io_runtime>(io_runtime::on_actor_workers);
  run_on_actor_workers(sys_cfg, io);
  return io;
}

void use_embedded_upstream(app_config& cfg, std::string base_url) {
  upstream_config up;
  up.name = "embedded";
  up.base_url = std::move(base_url);
  up.connections = cfg.connections;
  up.max_queue = cfg.max_queue;
  up.health_check_interval = cfg.health_check_interval;
  cfg.runtime.upstreams.push_back(std::move(up));
}

} // namespace embedrt::app
