#include "embedrt/proc_stats.hpp"
#include "node_config.hpp"

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::app;

namespace {

/// A config file in /tmp, removed at scope exit.
class temp_file {
 public:
  explicit temp_file(const std::string& text) {
    char name[] = "/tmp/embedrt-config-test-XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    close(fd);
    path_ = name;
    std::ofstream out{path_};
    out << text;
  }
  ~temp_file() {
    std::remove(path_.c_str());
  }
  const std::string& path() const {
    return path_;
  }

 private:
  std::string path_;
};

/// A parser as a command declares it: the shared options plus serve's and
/// embed's own.
cli::arg_parser make_parser() {
  cli::arg_parser p{"embedrt test [options]", "test"};
  add_config_options(p);
  p.option("listen", "HOST:PORT", "")
      .option("auth-token-env", "VAR", "")
      .option("max-body-bytes", "N", "")
      .option("grace-ms", "N", "")
      .option("model", "NAME", "")
      .option("dims", "D", "");
  return p;
}

config_result load(std::vector<std::string> args,
                   std::map<std::string, std::string> env = {}) {
  auto p = make_parser();
  REQUIRE(p.parse(args));
  return load_config(p, environment{std::move(env)});
}

std::string load_error(const std::string& file_text,
                       std::vector<std::string> args = {},
                       std::map<std::string, std::string> env = {}) {
  temp_file f{file_text};
  args.insert(args.begin(), {"--config", f.path()});
  auto r = load(args, std::move(env));
  REQUIRE_FALSE(r);
  // Every file error names the file.
  CHECK_THAT(r.error, Catch::Contains(f.path()));
  return r.error;
}

} // namespace

TEST_CASE("config: defaults without flags, environment or file") {
  auto r = load({});
  REQUIRE(r);
  CHECK(r->uses_embedded_default);
  CHECK(r->runtime.upstreams.empty());
  CHECK(r->connections == 8);
  // The sockets on CAF's workers, half the usable cores of them.
  CHECK(r->runtime.io_threads == 0);
  CHECK(r->workers == 0);
  auto cores = usable_cores();
  CHECK(scheduler_workers(r->runtime.io_threads, r->workers)
        == (cores > 1 ? cores / 2 : 1));
  CHECK(scheduler_workers(2, 0) == (cores > 2 ? cores - 2 : 1));
  CHECK(scheduler_workers(0, 3) == 3);
  CHECK(r->runtime.default_timeout == std::chrono::milliseconds{30000});
  CHECK(r->log == log_level::warn);
  CHECK(r->serve.listen == "127.0.0.1:8080");
  CHECK(r->serve.auth_token.empty());
  CHECK(r->config_file.empty());
  use_embedded_upstream(*r, "http://127.0.0.1:1234/v1");
  REQUIRE(r->runtime.upstreams.size() == 1);
  CHECK(r->runtime.upstreams[0].base_url == "http://127.0.0.1:1234/v1");
  CHECK(r->runtime.upstreams[0].connections == 8);
}

TEST_CASE("config: flags beat environment beat file beat defaults") {
  temp_file f{"connections = 3\nio_threads = 2\nworkers = 3\n"
              "log_level = error\n"
              "[serve]\nlisten = 127.0.0.1:7000\ngrace_ms = 111\n"};
  // File over defaults.
  auto r = load({"--config", f.path()});
  REQUIRE(r);
  CHECK(r->connections == 3);
  CHECK(r->runtime.io_threads == 2);
  CHECK(r->workers == 3);
  CHECK(r->log == log_level::error);
  CHECK(r->serve.listen == "127.0.0.1:7000");
  CHECK(r->serve.grace == std::chrono::milliseconds{111});
  CHECK(r->config_file == f.path());
  // Environment over file; the file also found through EMBEDRT_CONFIG.
  std::map<std::string, std::string> env{{"EMBEDRT_CONFIG", f.path()},
                                         {"EMBEDRT_CONNECTIONS", "5"},
                                         {"EMBEDRT_LOG_LEVEL", "debug"},
                                         {"EMBEDRT_LISTEN", "127.0.0.1:7001"}};
  r = load({}, env);
  REQUIRE(r);
  CHECK(r->connections == 5);
  CHECK(r->runtime.io_threads == 2);
  CHECK(r->log == log_level::debug);
  CHECK(r->serve.listen == "127.0.0.1:7001");
  // Flags over environment.
  r = load({"--connections", "7", "--log-level", "info", "--listen",
            "127.0.0.1:0", "--upstream", "http://127.0.0.1:9/v1"},
           env);
  REQUIRE(r);
  CHECK(r->connections == 7);
  CHECK(r->log == log_level::info);
  CHECK(r->serve.listen == "127.0.0.1:0");
  REQUIRE(r->runtime.upstreams.size() == 1);
  CHECK(r->runtime.upstreams[0].connections == 7);
  // An empty environment value counts as unset.
  r = load({"--config", f.path()}, {{"EMBEDRT_CONNECTIONS", ""}});
  REQUIRE(r);
  CHECK(r->connections == 3);
}

TEST_CASE("config: the front end's limits of the [serve] section") {
  auto r = load({});
  REQUIRE(r);
  CHECK(r->serve.max_header_bytes == 32 * 1024);
  CHECK(r->serve.idle_timeout == std::chrono::milliseconds{60000});
  CHECK(r->serve.request_timeout == std::chrono::milliseconds{30000});
  CHECK(r->serve.max_connections == 0);
  CHECK_FALSE(r->serve.full_upstream_errors);
  temp_file f{"[serve]\nmax_header_bytes = 65536\nidle_timeout_ms = 5000\n"
              "request_timeout_ms = 1000\nmax_connections = 300\n"
              "upstream_error_detail = full\n"};
  r = load({"--config", f.path()});
  REQUIRE(r);
  CHECK(r->serve.max_header_bytes == 65536);
  CHECK(r->serve.idle_timeout == std::chrono::milliseconds{5000});
  CHECK(r->serve.request_timeout == std::chrono::milliseconds{1000});
  CHECK(r->serve.max_connections == 300);
  CHECK(r->serve.full_upstream_errors);
  CHECK_THAT(load_error("[serve]\nupstream_error_detail = all\n"),
             Catch::Contains(":2: upstream_error_detail: 'all' is not"));
  CHECK_THAT(load_error("[serve]\nmax_header_bytes = 100\n"),
             Catch::Contains(":2: max_header_bytes: '100' is not an integer"));
  CHECK_THAT(load_error("[serve]\nrequest_timeout_ms = 0\n"),
             Catch::Contains(":2: request_timeout_ms: '0'"));
}

TEST_CASE("config: which upstreams are used") {
  temp_file f{"[upstream a]\nbase_url = http://127.0.0.1:1/v1\n"
              "[upstream b]\nbase_url = http://127.0.0.1:2/v1\n"};
  // The file's upstreams, in order.
  auto r = load({"--config", f.path()});
  REQUIRE(r);
  CHECK_FALSE(r->uses_embedded_default);
  REQUIRE(r->runtime.upstreams.size() == 2);
  CHECK(r->runtime.upstreams[0].name == "a");
  CHECK(r->runtime.upstreams[1].name == "b");
  // OPENAI_BASE_URL replaces them.
  r = load({"--config", f.path()},
           {{"OPENAI_BASE_URL", "http://127.0.0.1:3/v1"}});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 1);
  CHECK(r->runtime.upstreams[0].base_url == "http://127.0.0.1:3/v1");
  // --upstream replaces both, and may name the file's sections.
  r = load({"--config", f.path(), "--upstream", "b", "--upstream",
            "http://127.0.0.1:4/v1"},
           {{"OPENAI_BASE_URL", "http://127.0.0.1:3/v1"}});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 2);
  CHECK(r->runtime.upstreams[0].name == "b");
  CHECK(r->runtime.upstreams[0].base_url == "http://127.0.0.1:2/v1");
  CHECK(r->runtime.upstreams[1].base_url == "http://127.0.0.1:4/v1");
  // An unknown name is an error.
  r = load({"--config", f.path(), "--upstream", "c"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::Contains("'c'"));
  // A bad URL is an error naming its source.
  r = load({"--upstream", "ftp://x/v1"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::StartsWith("--upstream"));
  r = load({}, {{"OPENAI_BASE_URL", "http://"}});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::StartsWith("OPENAI_BASE_URL"));
  // An API key alone means OpenAI's API, not the embedded default.
  r = load({}, {{"OPENAI_API_KEY", "sk-secret"}});
  REQUIRE(r);
  CHECK_FALSE(r->uses_embedded_default);
  REQUIRE(r->runtime.upstreams.size() == 1);
  CHECK(r->runtime.upstreams[0].base_url == "https://api.openai.com/v1");
  CHECK(r->runtime.upstreams[0].api_key == "sk-secret");
}

TEST_CASE("config: upstream sections carry every key") {
  temp_file f{"# a comment\n"
              "connections = 2\n"
              "ca_file = /global/ca.pem\n"
              "\n"
              "[upstream azure-east]\n"
              "base_url = https://res.openai.azure.com/openai/deployments/d\n"
              "provider = azure\n"
              "api_key_env = AZURE_KEY\n"
              "connections = 16\n"
              "models = small, large\n"
              "model_map = small=text-embedding-3-small, large = te3-large\n"
              "ca_file = \"/etc/ca.pem\"\n"
              "azure_api_version = 2024-06-01\n"
              "tls_verify = false\n"
              "batching = no\n"
              "max_queue = 50\n"
              "attempt_timeout_ms = 2500\n"
              "max_response_bytes = 4096\n"
              "[upstream local]\n"
              "  base_url = http://127.0.0.1:8080/v1  \n"
              "  api_key = sk-inline\n"};
  auto r = load({"--config", f.path()},
                {{"AZURE_KEY", "az-secret"}, {"OPENAI_API_KEY", "sk-env"}});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 2);
  const auto& a = r->runtime.upstreams[0];
  CHECK(a.name == "azure-east");
  CHECK(a.provider == provider_kind::azure);
  CHECK(a.api_key == "az-secret");
  CHECK(a.connections == 16);
  CHECK(a.models == std::vector<std::string>{"small", "large"});
  CHECK(a.model_map.at("small") == "text-embedding-3-small");
  CHECK(a.model_map.at("large") == "te3-large");
  CHECK(a.ca_file == "/etc/ca.pem");
  CHECK(a.azure_api_version == "2024-06-01");
  CHECK_FALSE(a.tls_verify);
  CHECK_FALSE(a.batching);
  CHECK(a.max_queue == 50);
  CHECK(a.attempt_timeout == std::chrono::milliseconds{2500});
  CHECK(a.max_response_bytes == 4096);
  const auto& b = r->runtime.upstreams[1];
  CHECK(b.base_url == "http://127.0.0.1:8080/v1");
  CHECK(b.api_key == "sk-inline"); // explicit api_key in the file
  CHECK(b.connections == 2);       // the global value
  CHECK(b.ca_file == "/global/ca.pem");
  // Flags override the file's per-upstream values and key sources.
  r = load({"--config", f.path(), "--connections", "4", "--api-key-env",
            "OTHER_KEY", "--ca-file", "/flag/ca.pem"},
           {{"AZURE_KEY", "az-secret"}, {"OTHER_KEY", "other-secret"}});
  REQUIRE(r);
  for (const auto& up : r->runtime.upstreams) {
    CHECK(up.connections == 4);
    CHECK(up.api_key == "other-secret");
    CHECK(up.ca_file == "/flag/ca.pem");
  }
}

TEST_CASE("config: the provider of URL upstreams") {
  temp_file f{"provider = tei\n"
              "[upstream own]\nbase_url = http://127.0.0.1:1/v1\n"
              "provider = azure\n"
              "[upstream inherits]\nbase_url = http://127.0.0.1:2/v1\n"};
  // Default: openai.
  auto r = load({"--upstream", "http://127.0.0.1:9/v1"});
  REQUIRE(r);
  CHECK(r->runtime.upstreams.at(0).provider == provider_kind::openai);
  // Flag > environment > the file's global key.
  r = load({"--upstream", "http://127.0.0.1:9/v1", "--provider", "generic"},
           {{"EMBEDRT_PROVIDER", "azure"}});
  REQUIRE(r);
  CHECK(r->runtime.upstreams.at(0).provider == provider_kind::generic);
  r = load({},
           {{"OPENAI_BASE_URL", "http://127.0.0.1:9/v1"},
            {"EMBEDRT_PROVIDER", "azure"}});
  REQUIRE(r);
  CHECK(r->runtime.upstreams.at(0).provider == provider_kind::azure);
  // A section's own provider wins; one without takes the global key.
  r = load({"--config", f.path()});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 2);
  CHECK(r->runtime.upstreams[0].provider == provider_kind::azure);
  CHECK(r->runtime.upstreams[1].provider == provider_kind::tei);
  r = load({"--provider", "acme"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error,
             Catch::StartsWith("--provider: 'acme' is not a provider"));
}

TEST_CASE("config: breaker keys of an upstream section") {
  temp_file f{"[upstream tuned]\n"
              "base_url = http://127.0.0.1:1/v1\n"
              "breaker_failures = 12\n"
              "breaker_failure_rate = 80\n"
              "breaker_window = 40\n"
              "breaker_min_calls = 10\n"
              "breaker_slow_call_ms = 1500\n"
              "breaker_open_ms = 250\n"
              "breaker_max_open_ms = 30000\n"
              "breaker_half_open_probes = 3\n"
              "[upstream off]\n"
              "base_url = http://127.0.0.1:2/v1\n"
              "breaker = off\n"
              "[upstream plain]\n"
              "base_url = http://127.0.0.1:3/v1\n"};
  auto r = load({"--config", f.path()});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 3);
  const auto& t = r->runtime.upstreams[0].breaker;
  CHECK(t.enabled);
  CHECK(t.consecutive_failures == 12);
  CHECK(t.failure_rate == Approx(0.8));
  CHECK(t.window == 40);
  CHECK(t.min_calls == 10);
  CHECK(t.slow_call_threshold == std::chrono::milliseconds{1500});
  CHECK(t.reset_timeout == std::chrono::milliseconds{250});
  CHECK(t.max_reset_timeout == std::chrono::milliseconds{30000});
  CHECK(t.half_open_probes == 3);
  CHECK_FALSE(r->runtime.upstreams[1].breaker.enabled);
  // Without keys: the documented defaults.
  const auto& d = r->runtime.upstreams[2].breaker;
  breaker_config defaults;
  CHECK(d.enabled);
  CHECK(d.consecutive_failures == defaults.consecutive_failures);
  CHECK(d.failure_rate == defaults.failure_rate);
  CHECK(d.reset_timeout == defaults.reset_timeout);
  CHECK(d.half_open_probes == defaults.half_open_probes);
}

TEST_CASE("config: pacing and adaptive concurrency keys of an upstream") {
  temp_file f{"[upstream paced]\n"
              "base_url = http://127.0.0.1:1/v1\n"
              "connections = 16\n"
              "rpm = 3000\n"
              "tpm = 1000000\n"
              "adaptive_concurrency = on\n"
              "min_connections = 2\n"
              "[upstream off]\n"
              "base_url = http://127.0.0.1:2/v1\n"
              "pacing = off\n"
              "[upstream plain]\n"
              "base_url = http://127.0.0.1:3/v1\n"};
  auto r = load({"--config", f.path()});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 3);
  const auto& p = r->runtime.upstreams[0];
  CHECK(p.pacing);
  CHECK(p.rpm == 3000);
  CHECK(p.tpm == 1000000);
  CHECK(p.adaptive_concurrency);
  CHECK(p.min_connections == 2);
  CHECK_FALSE(r->runtime.upstreams[1].pacing);
  // Without keys: pacing by the headers alone, a fixed concurrency.
  const auto& d = r->runtime.upstreams[2];
  CHECK(d.pacing);
  CHECK(d.rpm == 0);
  CHECK(d.tpm == 0);
  CHECK_FALSE(d.adaptive_concurrency);
  temp_file bad{"[upstream x]\nbase_url = http://127.0.0.1:1/v1\n"
                "connections = 4\nmin_connections = 5\n"};
  r = load({"--config", bad.path()});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::Contains(":4: min_connections"));
  temp_file neg{"[upstream x]\nbase_url = http://127.0.0.1:1/v1\ntpm = -1\n"};
  r = load({"--config", neg.path()});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::Contains("tpm"));
}

TEST_CASE("config: a key variable that is not set is a warning without "
          "secrets") {
  temp_file f{"[upstream a]\nbase_url = http://127.0.0.1:1/v1\n"
              "api_key_env = MISSING_KEY\n"};
  auto r = load({"--config", f.path()}, {{"OPENAI_API_KEY", "sk-secret"}});
  REQUIRE(r);
  REQUIRE(r->warnings.size() == 1);
  CHECK_THAT(r->warnings[0], Catch::Contains("MISSING_KEY"));
  CHECK_THAT(r->warnings[0], !Catch::Contains("sk-secret"));
  CHECK(r->runtime.upstreams[0].api_key.empty());
}

TEST_CASE("config: file errors name the file and line") {
  struct bad {
    const char* text;
    const char* mentions;
  };
  for (const auto& [text, mentions] : std::vector<bad>{
           {"connections = 8\nconection = 9\n", ":2: unknown key 'conection'"},
           {"[serve]\nlisten = 1\nbase_url = x\n",
            ":3: unknown key 'base_url' in [serve]"},
           {"[upstream a]\nbase_url = http://h/v1\nlisten = x\n",
            ":3: unknown key 'listen' in [upstream a]"},
           {"\n[server]\n", ":2: unknown section [server]"},
           {"[upstream]\n", ":1: [upstream NAME] needs a name"},
           {"[upstream a\n", ":1: expected ']'"},
           {"connections 8\n", ":1: expected 'key = value'"},
           {"connections = 8\nconnections = 9\n",
            ":2: key 'connections' repeated"},
           {"[upstream a]\nbase_url = http://h/v1\n[upstream a]\n",
            ":3: upstream 'a' is defined twice"},
           {"[serve]\n[serve]\n", ":2: section [serve] repeated"},
           {"x = 1\n", "unknown key 'x'"},
           {"\n\n[upstream a]\nprovider = openai\n",
            ":3: [upstream a] has no base_url"},
           {"connections = many\n",
            ":1: connections: 'many' is not an integer"},
           {"connections = 0\n",
            ":1: connections: '0' is not an integer in [1"},
           {"log_level = loud\n", ":1: log_level: 'loud' is not a log level"},
           {"[upstream a]\nbase_url = http://h/v1\nprovider = acme\n",
            ":3: provider: 'acme' is not a provider"},
           {"[upstream a]\nbase_url = http://h/v1\ntls_verify = maybe\n",
            ":3: tls_verify: 'maybe' is not a boolean"},
           {"[upstream a]\nbase_url = http://h/v1\nmodel_map = a:b\n",
            ":3: model_map: 'a:b' is not CALLER_MODEL=UPSTREAM_MODEL"},
           {"[upstream a]\nbase_url = gopher://h/v1\n", ":2: base_url: "},
           {"[serve]\ngrace_ms = -1\n", ":2: grace_ms: '-1'"},
           {"[upstream a]\nbase_url = http://h/v1\nbreaker_failures = 0\n",
            ":3: breaker_failures: '0' is not an integer in [1"},
           {"[upstream a]\nbase_url = http://h/v1\n"
            "breaker_failure_rate = 150\n",
            ":3: breaker_failure_rate: '150' is not an integer in [1, 100]"},
           {"[upstream a]\nbase_url = http://h/v1\nbreaker = sometimes\n",
            ":3: breaker: 'sometimes' is not a boolean"},
           {"[upstream a]\nbase_url = http://h/v1\nbreaker_window = 10\n",
            ":3: breaker_window: breaker_min_calls must not be larger than "
            "breaker_window"},
           {"[upstream a]\nbase_url = http://h/v1\nbreaker_open_ms = 5000\n"
            "breaker_max_open_ms = 1000\n",
            ":4: breaker_max_open_ms: breaker_max_open_ms must not be shorter"},
       }) {
    INFO(text);
    CHECK_THAT(load_error(text), Catch::Contains(mentions));
  }
}

TEST_CASE("config: flag, environment and file value errors") {
  auto r = load({"--connections", "0"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::StartsWith("--connections: '0'"));
  r = load({}, {{"EMBEDRT_CONNECTIONS", "lots"}});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::StartsWith("EMBEDRT_CONNECTIONS: 'lots'"));
  r = load({"--dims", "-3"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::StartsWith("--dims"));
  r = load({"--config", "/nonexistent/embedrt.ini"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error,
             Catch::Contains("cannot read config file "
                             "'/nonexistent/embedrt.ini'"));
  r = load({}, {{"EMBEDRT_CONFIG", "/nonexistent/embedrt.ini"}});
  REQUIRE_FALSE(r);
}

TEST_CASE("config: the client auth token") {
  // EMBEDRT_AUTH_TOKEN is the default source.
  auto r = load({}, {{"EMBEDRT_AUTH_TOKEN", "tok-1"}});
  REQUIRE(r);
  CHECK(r->serve.auth_token == "tok-1");
  // --auth-token-env names another variable, which must be set.
  r = load({"--auth-token-env", "MY_TOKEN"},
           {{"EMBEDRT_AUTH_TOKEN", "tok-1"}, {"MY_TOKEN", "tok-2"}});
  REQUIRE(r);
  CHECK(r->serve.auth_token == "tok-2");
  r = load({"--auth-token-env", "MY_TOKEN"});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error, Catch::Contains("MY_TOKEN is not set"));
  // The file may name the variable or, explicitly, hold the token.
  temp_file f{"[serve]\nauth_token = tok-file\n"};
  r = load({"--config", f.path()});
  REQUIRE(r);
  CHECK(r->serve.auth_token == "tok-file");
  r = load({"--config", f.path()}, {{"EMBEDRT_AUTH_TOKEN", "tok-env"}});
  REQUIRE(r);
  CHECK(r->serve.auth_token == "tok-env");
  temp_file g{"[serve]\nauth_token_env = FILE_TOKEN\n"};
  r = load({"--config", g.path()}, {{"FILE_TOKEN", "tok-3"}});
  REQUIRE(r);
  CHECK(r->serve.auth_token == "tok-3");
  CHECK(r->serve.auth_token_env == "FILE_TOKEN");
}

TEST_CASE("config: an upstream's max_inputs_per_request and the models a "
          "node serves") {
  temp_file f{"model = default-m\n"
              "[upstream a]\nbase_url = http://127.0.0.1:1/v1\n"
              "models = one, small\nmax_inputs_per_request = 100\n"
              "model_map = small=up-small, hidden=up-hidden\n"
              "[upstream b]\nbase_url = http://127.0.0.1:2/v1\n"
              "model_map = big=up-big, small=other\n"};
  auto r = load({"--config", f.path()});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 2);
  CHECK(r->runtime.upstreams[0].max_inputs_per_request == 100);
  CHECK(r->runtime.upstreams[1].max_inputs_per_request == 0); // profile's
  // `hidden` is mapped but not among a's models: not served. b serves any
  // model: its aliases and the default model; no repeats.
  CHECK(served_models(*r)
        == std::vector<std::string>{"one", "small", "big", "default-m"});
  temp_file bad{"[upstream a]\nbase_url = http://127.0.0.1:1/v1\n"
                "max_inputs_per_request = 0\n"};
  CHECK_FALSE(load({"--config", bad.path()}));
}

TEST_CASE("config: routing weight and health check keys") {
  temp_file f{"health_check_interval_ms = 2500\n"
              "model = global-model\n"
              "[upstream weighted]\n"
              "base_url = http://127.0.0.1:1/v1\n"
              "weight = 3\n"
              "priority = 2\n"
              "models = a, b\n"
              "model_map = a=upstream-a\n"
              "[upstream own]\n"
              "base_url = http://127.0.0.1:2/v1\n"
              "health_check_interval_ms = 0\n"
              "health_check_model = probe\n"
              "[upstream any]\n"
              "base_url = http://127.0.0.1:3/v1\n"};
  auto r = load({"--config", f.path()});
  REQUIRE(r);
  REQUIRE(r->runtime.upstreams.size() == 3);
  const auto& w = r->runtime.upstreams[0];
  CHECK(w.weight == 3);
  CHECK(w.priority == 2);
  CHECK(w.health_check_interval == std::chrono::milliseconds{2500});
  // Empty: the runtime asks for the first of `models`, mapped.
  CHECK(w.health_check_model.empty());
  const auto& own = r->runtime.upstreams[1];
  CHECK(own.weight == 1);
  CHECK(own.priority == 0);
  CHECK(own.health_check_interval == std::chrono::milliseconds{0});
  CHECK(own.health_check_model == "probe");
  // Serves any model: checked with the configured default model.
  CHECK(r->runtime.upstreams[2].health_check_model == "global-model");
  // The variable beats the global key; a URL upstream takes it too; the
  // default is 10 s.
  auto e = load({"--config", f.path()},
                {{"EMBEDRT_HEALTH_CHECK_INTERVAL_MS", "700"}});
  REQUIRE(e);
  CHECK(e->runtime.upstreams[0].health_check_interval
        == std::chrono::milliseconds{700});
  CHECK(e->runtime.upstreams[1].health_check_interval
        == std::chrono::milliseconds{0});
  auto u = load({"--upstream", "http://127.0.0.1:9/v1"});
  REQUIRE(u);
  CHECK(u->runtime.upstreams[0].health_check_interval
        == std::chrono::milliseconds{10000});
  CHECK_THAT(load_error("[upstream a]\nbase_url = http://h/v1\nweight = 0\n"),
             Catch::Contains(":3: weight: '0' is not an integer in [1"));
}

TEST_CASE("config: the [cache] section and its flags") {
  auto r = load({});
  REQUIRE(r);
  CHECK_FALSE(r->runtime.cache.enabled);
  CHECK(r->runtime.cache.max_bytes == std::size_t{256} << 20);
  CHECK(r->runtime.cache.path.empty());
  temp_file f{"[cache]\nenabled = true\nmax_bytes = 1048576\nttl_ms = 60000\n"
              "path = /tmp/store\ndisk_max_bytes = 2097152\n"};
  r = load({"--config", f.path()});
  REQUIRE(r);
  CHECK(r->runtime.cache.enabled);
  CHECK(r->runtime.cache.max_bytes == 1048576);
  CHECK(r->runtime.cache.ttl == std::chrono::milliseconds{60000});
  CHECK(r->runtime.cache.path == "/tmp/store");
  CHECK(r->runtime.cache.disk_max_bytes == 2097152);
  // Flags beat the file; off turns off a cache whose path is set.
  r = load(
      {"--config", f.path(), "--cache", "off", "--cache-max-bytes", "2097152"});
  REQUIRE(r);
  CHECK_FALSE(r->runtime.cache.enabled);
  CHECK(r->runtime.cache.max_bytes == 2097152);
  // A path alone turns the cache on.
  r = load({"--cache-path", "/tmp/other"});
  REQUIRE(r);
  CHECK(r->runtime.cache.enabled);
  CHECK(r->runtime.cache.path == "/tmp/other");
  r = load({}, {{"EMBEDRT_CACHE", "on"}});
  REQUIRE(r);
  CHECK(r->runtime.cache.enabled);
  CHECK_THAT(load_error("[cache]\nenabled = maybe\n"),
             Catch::Contains(":2: enabled: 'maybe' is not a boolean"));
  CHECK_THAT(load_error("[cache]\nsize = 1\n"),
             Catch::Contains("unknown key 'size' in [cache]"));
  CHECK_THAT(load_error("[cache]\n[cache]\n"),
             Catch::Contains("section [cache] repeated"));
}
