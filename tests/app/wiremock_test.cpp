// The runtime against a third-party fault server: WireMock's standalone jar
// (the npm package `wiremock`, pinned in tests/app/wiremock/ and installed
// by scripts/setup.sh test), run with Java 17 on 127.0.0.1. Its mappings
// (WireMock's canned responses) for POST /v1/embeddings pick a request's fate
// by its text, so the ledger knows what each request must get:
//
//   wm-ok-<i>             a fixed embedding (4 dimensions, base64)
//   wm-flaky-<i>-<fault>  one fault, then that embedding (a WireMock
//                         scenario per request): success after a retry
//   wm-<fault>-<i>        the fault on every attempt: connection_failed
//                         after the default 4 attempts
//
// Faults: WireMock's CONNECTION_RESET_BY_PEER, MALFORMED_RESPONSE_CHUNK,
// EMPTY_RESPONSE, RANDOM_DATA_THEN_CLOSE, and a hang (a response delayed
// 30 s, far beyond the 1 s attempt timeout). Every request answered exactly
// once, the outcome its class calls for, no reply later than its deadline +
// 50 ms.
//
// Settings: 32 connections for 64 callers, one input per upstream call
// (batching off, so a call's fault is one request's), the breaker off
// (persistent faults are most of the calls here; the breaker has its own tests)
// and a retry budget that admits every retry (a refused retry would turn a
// flaky request into a failure).
#include "embedrt/all.hpp"
#include "ledger_driver.hpp"
#include "serve_test_util.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr std::size_t requests = 1000;
constexpr std::size_t concurrency = 64;
constexpr milliseconds deadline{6000};
constexpr milliseconds attempt_timeout{1000};
constexpr milliseconds reply_slack{50};

/// [0.5, -0.25, 0.125, 1.0] as little-endian float32, base64.
constexpr const char* vector_b64 = "AAAAPwAAgL4AAAA+AACAPw==";
const std::vector<float> expected_vector{0.5f, -0.25f, 0.125f, 1.0f};

/// The faults, as named in request texts and in WireMock.
const std::vector<std::pair<std::string, std::string>> faults{
    {"reset", "CONNECTION_RESET_BY_PEER"},
    {"chunk", "MALFORMED_RESPONSE_CHUNK"},
    {"empty", "EMPTY_RESPONSE"},
    {"random", "RANDOM_DATA_THEN_CLOSE"},
    {"hang", ""},
};

/// Of every 50 requests: 40 ok, 5 flaky (one of each fault), 5 with a
/// persistent fault (one of each).
struct request_class {
  enum kind_t { ok, flaky, persistent } kind = ok;
  std::string fault; // for flaky and persistent
};

request_class class_of(std::size_t i) {
  auto k = i % 50;
  if (k < 40)
    return {request_class::ok, ""};
  if (k < 45)
    return {request_class::flaky, faults[k - 40].first};
  return {request_class::persistent, faults[k - 45].first};
}

std::string text_of(std::size_t i) {
  auto c = class_of(i);
  auto n = std::to_string(i);
  switch (c.kind) {
    case request_class::ok: return "wm-ok-" + n;
    case request_class::flaky: return "wm-flaky-" + n + "-" + c.fault;
    default: return "wm-" + c.fault + "-" + n;
  }
}

/// A persistent fault ends in `connection_failed` after the default 4
/// attempts (the connection closed, the bytes were not HTTP, or, for the
/// hang, each attempt timed out: 4 x 1 s and the backoffs fit in the
/// deadline).
bool expected_failure(const std::string& fault, const ledger_entry& e) {
  return !e.ok && e.code == errc::connection_failed
      && e.error.find("(after 4 attempts)") != std::string::npos
      && (fault != "hang" || e.error.find("timed out") != std::string::npos);
}

std::string ok_response() {
  return R"({"status":200,"headers":{"Content-Type":"application/json"},)"
         R"("jsonBody":{"object":"list","data":[{"object":"embedding",)"
         R"("index":0,"embedding":")"
      + std::string{vector_b64}
  + R"("}],"model":"wm-model","usage":{"prompt_tokens":1,)"
    R"("total_tokens":1}}})";
}

std::string fault_response(const std::string& fault) {
  if (fault == "hang")
    return R"({"status":200,"fixedDelayMilliseconds":30000,"body":"{}"})";
  for (auto& [name, wiremock_name] : faults)
    if (name == fault)
      return R"({"fault":")" + wiremock_name + "\"}";
  FAIL("unknown fault " << fault);
  return "";
}

/// A WireMock mapping for POST /v1/embeddings whose body contains `marker`.
std::string mapping_for(const std::string& marker, const std::string& response,
                        const std::string& scenario = "") {
  std::string s = R"({"priority":1,"request":{"method":"POST",)"
                  R"("urlPath":"/v1/embeddings","bodyPatterns":[{"contains":")"
      + marker + R"("}]},"response":)" + response;
  if (!scenario.empty())
    s += R"(,"scenarioName":")" + scenario
        + R"(","requiredScenarioState":"Started","newScenarioState":"done")";
  return s + "}";
}

/// All mappings: one per fault class, one scenario per flaky request, and the
/// fixed embedding for everything else (lowest priority).
std::string mappings() {
  std::string out = R"({"mappings":[)";
  for (auto& [name, wiremock_name] : faults)
    out += mapping_for("\\\"wm-" + name + "-", fault_response(name)) + ",";
  for (std::size_t i = 0; i < requests; ++i)
    if (class_of(i).kind == request_class::flaky)
      out += mapping_for("\\\"" + text_of(i) + "\\\"",
                         fault_response(class_of(i).fault), text_of(i))
          + ",";
  out += R"({"priority":10,"request":{"method":"POST",)"
         R"("urlPath":"/v1/embeddings"},"response":)"
      + ok_response() + "}]}";
  return out;
}

/// `java` on the PATH, or "".
std::string find_java() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin";
  std::size_t at = 0;
  while (at <= dirs.size()) {
    auto colon = dirs.find(':', at);
    auto dir = dirs.substr(at, colon == std::string::npos ? colon : colon - at);
    auto candidate = dir + "/java";
    if (!dir.empty() && access(candidate.c_str(), X_OK) == 0)
      return candidate;
    if (colon == std::string::npos)
      break;
    at = colon + 1;
  }
  return "";
}

/// The standalone jar of the npm package (its name carries the version).
std::string find_jar() {
  std::string dir = EMBEDRT_WIREMOCK_DIR "/node_modules/wiremock/build";
  std::string found;
  if (auto* d = opendir(dir.c_str())) {
    while (auto* e = readdir(d)) {
      std::string name = e->d_name;
      if (name.rfind("wiremock-standalone-", 0) == 0 && name.size() > 4
          && name.substr(name.size() - 4) == ".jar")
        found = dir + "/" + name;
    }
    closedir(d);
  }
  return found;
}

/// A temporary WireMock root: mappings/embeddings.json.
struct wiremock_root {
  std::string dir;
  wiremock_root() {
    char tmpl[] = "/tmp/embedrt-wiremock-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    REQUIRE(mkdir((dir + "/mappings").c_str(), 0700) == 0);
    std::ofstream{dir + "/mappings/embeddings.json"} << mappings();
  }
  ~wiremock_root() {
    std::remove((dir + "/mappings/embeddings.json").c_str());
    rmdir((dir + "/mappings").c_str());
    rmdir((dir + "/__files").c_str()); // WireMock creates it, empty
    rmdir(dir.c_str());
  }
};

/// WireMock on 127.0.0.1 (a free port of its choosing); its port, read from
/// the "port: N" line it prints once it serves.
struct wiremock_proc {
  wiremock_proc(const std::string& java, const std::string& jar,
                const std::string& root)
      : proc(java,
             {"-jar", jar, "--port", "0", "--bind-address", "127.0.0.1",
              "--root-dir", root, "--disable-banner", "--no-request-journal",
              "--async-response-enabled", "true"},
             clean_env()) {
    auto until = steady_clock::now() + std::chrono::seconds{30};
    while (port == 0 && steady_clock::now() < until) {
      auto line = proc.read_line(milliseconds{1000});
      if (line && line->rfind("port:", 0) == 0)
        port = static_cast<uint16_t>(std::stoi(line->substr(5)));
    }
    REQUIRE(port != 0);
  }
  process proc;
  uint16_t port = 0;
};

/// A cold JVM answers its first requests slowly (class loading, the JIT):
/// sequential requests for the fixed embedding until it is warm, so that the
/// run measures the runtime, not WireMock's start.
void warm_up(uint16_t port) {
  http_client http{port};
  for (int i = 0; i < 300; ++i) {
    auto res = http.embed(R"({"model":"m","input":["warm-up"]})", {},
                          milliseconds{10000});
    REQUIRE(res.status == 200);
  }
}

runtime_config wiremock_config(uint16_t port) {
  runtime_config rc;
  upstream_config up;
  up.name = "wiremock";
  up.base_url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  // Half a connection per caller: calls queue behind hung ones, and the
  // pool's deadline-aware admission must not take one hung call for a slow
  // upstream (docs/reliability.md, "Against WireMock").
  up.connections = concurrency / 2;
  up.attempt_timeout = attempt_timeout;
  up.batching = false;
  up.breaker.enabled = false;
  rc.upstreams.push_back(up);
  rc.retry.budget_ratio = 1.0;
  return rc;
}

} // namespace

TEST_CASE("wiremock: connection reset, malformed chunk, empty response, "
          "random data and hang from WireMock: each request answered once "
          "with the outcome of its fault class, none late") {
  auto java = find_java();
  if (java.empty()) {
    WARN("SKIPPED: no java on the PATH (scripts/setup.sh test installs "
         "openjdk-17-jre-headless); the WireMock test did not run");
    return;
  }
  auto jar = find_jar();
  {
    INFO("no WireMock jar in " EMBEDRT_WIREMOCK_DIR
         "/node_modules: run scripts/setup.sh test");
    REQUIRE(!jar.empty());
  }
  wiremock_root root;
  auto t_start = steady_clock::now();
  wiremock_proc wm{java, jar, root.dir};
  warm_up(wm.port);
  auto started_in
      = std::chrono::duration_cast<milliseconds>(steady_clock::now() - t_start);

  caf::actor_system_config cfg;
  register_types(cfg);
  caf::actor_system sys{cfg};
  auto svc = spawn_service(sys, wiremock_config(wm.port));
  REQUIRE(svc);
  client c{sys, *svc, deadline};
  ledger_driver d{c, requests, concurrency,
                  [](std::size_t i) {
                    embed_request req;
                    req.model = "text-embedding-3-small";
                    req.inputs = {text_of(i)};
                    req.dimensions = 4;
                    req.timeout = deadline;
                    return req;
                  },
                  [](std::size_t, const embed_result& res) {
                    return res.embeddings.size() == 1
                        && res.embeddings[0] == expected_vector;
                  }};
  auto done = d.all_answered();
  auto t0 = steady_clock::now();
  d.start();
  REQUIRE(done.wait_for(std::chrono::seconds{120})
          == std::future_status::ready);
  auto took
      = std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0);

  auto s = summarize(d.entries(), deadline + reply_slack);
  CHECK(s.lost == 0);
  CHECK(s.duplicated == 0);
  CHECK(s.wrong == 0);
  CHECK(s.late == 0);
  // Each class's outcome.
  std::map<std::string, std::size_t> wrong_outcome;
  for (std::size_t i = 0; i < requests; ++i) {
    auto& e = d.entries()[i];
    auto cls = class_of(i);
    bool right = cls.kind == request_class::persistent
        ? expected_failure(cls.fault, e)
        : e.ok;
    if (!right) {
      auto& n = wrong_outcome[text_of(i).substr(0, text_of(i).rfind('-')) + ": "
                              + (e.ok ? "ok" : e.error)];
      ++n;
    }
  }
  std::string wrong_list;
  for (auto& [what, n] : wrong_outcome)
    wrong_list += "\n  " + std::to_string(n) + " x " + what;
  INFO("requests with another outcome than their class's:" << wrong_list);
  CHECK(wrong_outcome.empty());
  std::string error_list;
  for (auto& [name, count] : s.errors)
    error_list += " " + name + "=" + std::to_string(count);
  WARN("WireMock started and warm in "
       << started_in.count() << " ms; " << requests << " requests in "
       << took.count() << " ms: " << s.ok << " ok, failed:" << error_list
       << "; slowest reply " << s.slowest.count() << " ms");
  wm.proc.signal(SIGTERM);
  wm.proc.wait_exit(milliseconds{5000});
}
