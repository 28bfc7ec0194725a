// End to end: the real `embedrt serve` binary in front of the real
// `embedrt mock` binary, driven by a plain HTTP client. Every status the
// gateway promises, the health and metrics endpoints, an OpenAI SDK-shaped
// request, and the drain on SIGTERM.
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/openai.hpp"
#include "serve_test_util.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <rapidjson/document.h>
#include <string>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

TEST_CASE("serve: 200 with the mock's vectors, float and base64, keep-alive") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  std::vector<std::string> texts{"the quick brown fox", "jumps over",
                                 "the lazy dog"};
  // Array input, float.
  auto res = client.embed(embed_body(texts, 16));
  auto vecs = vectors_of(res, 3, 16);
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK(vecs[i] == hash_embed(texts[i], 16));
  CHECK(res.keep_alive);
  // String input, base64, on the /embeddings alias.
  res = client.request("POST", "/embeddings",
                       R"({"model":"m","input":"hello gateway","dimensions":8,)"
                       R"("encoding_format":"base64","user":"u-1"})");
  vecs = vectors_of(res, 1, 8, true);
  CHECK(vecs[0] == hash_embed("hello gateway", 8));
  CHECK_THAT(res.body, Catch::Contains("\"usage\""));
  // The same connection served every request.
  CHECK(client.connects() == 1);
  // healthz and readyz.
  res = client.request("GET", "/healthz");
  CHECK(res.status == 200);
  res = client.request("GET", "/readyz");
  CHECK(res.status == 200);
  CHECK_THAT(res.body, Catch::Contains("\"ready\":true"));
  // Unknown paths and methods.
  CHECK(client.request("GET", "/v2/other").status == 404);
  res = client.request("GET", "/v1/embeddings");
  CHECK(res.status == 405);
  CHECK(res.header("allow") == "POST");
}

TEST_CASE("serve: an OpenAI SDK-shaped request works unchanged") {
  // What openai-python 1.x sends for
  //   OpenAI(base_url="http://127.0.0.1:PORT/v1", api_key=...)
  //     .embeddings.create(model=..., input=[...])
  // (base64 is its default encoding_format; it decodes the vectors itself).
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  header_list headers{{"Authorization", "Bearer sk-anything"},
                      {"Accept", "application/json"},
                      {"Accept-Encoding", "gzip, deflate"},
                      {"Connection", "keep-alive"},
                      {"User-Agent", "OpenAI/Python 1.54.0"},
                      {"X-Stainless-Lang", "python"},
                      {"X-Stainless-Package-Version", "1.54.0"},
                      {"X-Stainless-OS", "Linux"},
                      {"X-Stainless-Arch", "x64"},
                      {"X-Stainless-Runtime", "CPython"},
                      {"X-Stainless-Runtime-Version", "3.11.2"},
                      {"X-Stainless-Async", "false"},
                      {"x-stainless-retry-count", "0"},
                      {"x-stainless-read-timeout", "600"}};
  // httpx serializes with json.dumps' default separators.
  auto res = client.request("POST", "/v1/embeddings",
                            R"({"input": ["sdk text one", "sdk text two"], )"
                            R"("model": "text-embedding-3-small", )"
                            R"("encoding_format": "base64"})",
                            headers);
  // No dimensions: the mock's default (256).
  auto vecs = vectors_of(res, 2, 256, true);
  CHECK(vecs[0] == hash_embed("sdk text one", 256));
  CHECK(vecs[1] == hash_embed("sdk text two", 256));
  CHECK_THAT(res.header("content-type"), Catch::StartsWith("application/json"));
  CHECK_THAT(res.body, Catch::Contains("\"object\":\"list\""));
  CHECK_THAT(res.body, Catch::Contains("\"object\":\"embedding\""));
  CHECK_THAT(res.body, Catch::Contains("\"model\":\"text-embedding-3-small\""));
}

namespace {

/// A member of a probe line, or "" / -1 / false when absent or of another
/// type (a failing scenario must fail its checks, not crash the test).
std::string str(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject())
    return "";
  auto i = v.FindMember(key);
  return i != v.MemberEnd() && i->value.IsString() ? i->value.GetString() : "";
}

int num(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject())
    return -1;
  auto i = v.FindMember(key);
  return i != v.MemberEnd() && i->value.IsInt() ? i->value.GetInt() : -1;
}

bool flag(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject())
    return false;
  auto i = v.FindMember(key);
  return i != v.MemberEnd() && i->value.IsBool() && i->value.GetBool();
}

/// The lines `openai_sdk_probe.mjs` printed, by scenario name.
std::map<std::string, rapidjson::Document>
run_sdk_probe(uint16_t port, const char* token, const char* mode) {
  std::string script = EMBEDRT_SDK_DIR "/openai_sdk_probe.mjs";
  INFO("the OpenAI SDK is installed by scripts/setup.sh test "
       "into " EMBEDRT_SDK_DIR "/node_modules");
  REQUIRE(access(EMBEDRT_SDK_DIR "/node_modules/openai/package.json", R_OK)
          == 0);
  process node{
      EMBEDRT_NODE,
      {script, "http://127.0.0.1:" + std::to_string(port) + "/v1", token, mode},
      clean_env()};
  std::map<std::string, rapidjson::Document> out;
  while (auto line = node.read_line(milliseconds{30000})) {
    rapidjson::Document doc;
    doc.Parse(line->c_str());
    INFO("probe line: " << *line);
    REQUIRE_FALSE(doc.HasParseError());
    REQUIRE(doc.HasMember("name"));
    std::string name = str(doc, "name");
    out.emplace(std::move(name), std::move(doc));
  }
  CHECK(node.wait_exit(milliseconds{10000}) == 0);
  INFO("node stderr: " << node.stderr_text());
  return out;
}

/// The vectors of a successful probe line, as the SDK gave them.
std::vector<std::vector<float>> sdk_vectors(const rapidjson::Document& doc) {
  INFO("status " << num(doc, "status") << " " << str(doc, "message"));
  REQUIRE(flag(doc, "ok"));
  REQUIRE(doc.HasMember("vectors"));
  REQUIRE(doc["vectors"].IsArray());
  std::vector<std::vector<float>> out;
  for (const auto& v : doc["vectors"].GetArray()) {
    out.emplace_back();
    for (const auto& x : v.GetArray())
      out.back().push_back(static_cast<float>(x.GetDouble()));
  }
  return out;
}

void check_close(const std::vector<float>& got,
                 const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == Approx(want[i]).margin(1e-6));
}

/// A failed probe line: the SDK's error class, the status and the code.
void check_sdk_error(const rapidjson::Document& doc, const char* cls,
                     int status, const char* code) {
  INFO("probe: " << str(doc, "name") << ": " << str(doc, "message"));
  REQUIRE_FALSE(flag(doc, "ok"));
  CHECK(str(doc, "class") == cls);
  CHECK(num(doc, "status") == status);
  CHECK(str(doc, "code") == code);
}

} // namespace

TEST_CASE("serve: the official OpenAI Node SDK works unchanged") {
  // openai-node, pinned in tests/app/sdk/package.json, pointed at the
  // gateway's /v1 with the gateway's client token as its API key.
  mock_proc mock{{"--latency-ms", "300"}};
  serve_proc serve{{"--upstream", mock.url, "--auth-token-env", "GW_TOKEN",
                    "--max-body-bytes", "16384"},
                   clean_env({"GW_TOKEN=sdk-token"})};
  auto lines = run_sdk_probe(serve.port, "sdk-token", "gateway");
  REQUIRE(lines.size() == 8);
  // Its default: base64 on the wire, decoded by the SDK (256 is the mock's
  // default dimension).
  const auto& def = lines.at("default_encoding");
  auto vecs = sdk_vectors(def);
  REQUIRE(vecs.size() == 3);
  check_close(vecs[0], hash_embed("sdk one", 256));
  check_close(vecs[1], hash_embed("sdk two", 256));
  check_close(vecs[2], hash_embed("sdk three", 256));
  CHECK(str(def, "object") == "list");
  CHECK(str(def, "model") == "text-embedding-3-small");
  REQUIRE(def.HasMember("usage"));
  CHECK(num(def["usage"], "prompt_tokens") > 0);
  REQUIRE(def["indexes"].IsArray());
  REQUIRE(def["indexes"].Size() == 3);
  CHECK(def["indexes"][2].GetInt() == 2);
  // float, one string, dimensions and user.
  vecs = sdk_vectors(lines.at("float_string_dims"));
  REQUIRE(vecs.size() == 1);
  check_close(vecs[0], hash_embed("sdk single", 8));
  const auto& raw = lines.at("with_response");
  CHECK(num(raw, "status") == 200);
  CHECK_THAT(str(raw, "content_type"), Catch::StartsWith("application/json"));
  check_close(sdk_vectors(raw).at(0), hash_embed("raw", 4));
  // Errors reach the application as the SDK's typed errors.
  check_sdk_error(lines.at("empty_input"), "BadRequestError", 400,
                  "invalid_input");
  check_sdk_error(lines.at("bad_dimensions"), "BadRequestError", 400,
                  "invalid_input");
  check_sdk_error(lines.at("wrong_token"), "AuthenticationError", 401,
                  "invalid_api_key");
  check_sdk_error(lines.at("too_large"), "APIError", 413, "request_too_large");
  check_sdk_error(lines.at("deadline"), "InternalServerError", 504,
                  "deadline_exceeded");
}

TEST_CASE("serve: the OpenAI Node SDK sees 503 with Retry-After when the "
          "upstream is down, and 429 when the queue is full") {
  refusing_upstream dead;
  serve_proc down{{"--upstream", dead.url, "--connections", "2"}};
  auto lines = run_sdk_probe(down.port, "sk-anything", "unavailable");
  const auto& unavailable = lines.at("unavailable");
  INFO("probe: " << str(unavailable, "message"));
  REQUIRE_FALSE(flag(unavailable, "ok"));
  CHECK(str(unavailable, "class") == "InternalServerError");
  CHECK(num(unavailable, "status") == 503);
  std::string code = str(unavailable, "code");
  CHECK((code == "breaker_open" || code == "upstream_down"));
  auto retry_after = str(unavailable, "retry_after");
  REQUIRE_FALSE(retry_after.empty());
  CHECK(std::stoi(retry_after) >= 1);

  mock_proc mock{{"--latency-ms", "400"}};
  serve_proc crowded{
      {"--upstream", mock.url, "--connections", "1", "--max-queue", "1"}};
  lines = run_sdk_probe(crowded.port, "sk-anything", "crowd");
  const auto& crowd = lines.at("crowd");
  REQUIRE(flag(crowd, "ok"));
  CHECK(num(crowd, "succeeded") >= 1);
  CHECK(num(crowd, "overloaded") >= 1);
  CHECK(num(crowd, "other") == 0);
  CHECK(flag(crowd, "retry_after_ok"));
}

TEST_CASE("serve: 400 for invalid requests, OpenAI-shaped") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  struct bad {
    std::string body;
    header_list headers;
  };
  for (const auto& [body, headers] : std::vector<bad>{
           {R"({"model":"m","input":["a")", {}}, // malformed JSON
           {R"([1,2])", {}},                     // not an object
           {R"({"model":"m","input":5})", {}},   // wrong type
           {R"({"model":7,"input":"a"})", {}},   // wrong type
           {R"({"input":"a"})", {}},             // no model
           {R"({"model":"m","input":[]})", {}},  // no inputs
           {R"({"model":"m","input":"a","dimensions":-3})", {}},
           {R"({"model":"m","input":"a","encoding_format":"hex"})", {}},
           {R"({"model":"m","input":["ok",""]})", {}}, // an empty text
           {std::string{R"({"model":"m","input":"a\u0000b"})"}, {}}, // NUL
           {R"({"model":"m","input":"a"})", {{"x-embedrt-timeout-ms", "-5"}}},
           {R"({"model":"m","input":"a"})", {{"x-embedrt-timeout-ms", "soon"}}},
           // Rejected by the upstream: its 400 becomes ours.
           {R"({"model":"m","input":["fine","bad [[mock:400]] input"]})", {}},
       }) {
    INFO("body: " << body);
    auto res = client.embed(body, headers);
    CHECK(res.status == 400);
    if (res.status == 400) {
      auto e = error_of(res);
      CHECK(e.type == "invalid_request_error");
      CHECK_FALSE(e.message.empty());
    }
  }
  // Malformed HTTP gets a 400 too.
  http_client raw{serve.port};
  auto res = raw.raw("NONSENSE\r\n\r\n");
  CHECK(res.status == 400);
}

TEST_CASE("serve: 401 without the client token, 413 over the body limit") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url, "--auth-token-env", "GW_TOKEN",
                    "--max-body-bytes", "2048"},
                   clean_env({"GW_TOKEN=let-me-in"})};
  http_client client{serve.port};
  auto body = embed_body({"authorized text"}, 8);
  auto res = client.embed(body);
  CHECK(res.status == 401);
  CHECK(error_of(res).code == "invalid_api_key");
  CHECK(res.header("www-authenticate") == "Bearer");
  res = client.embed(body, {{"Authorization", "Bearer let-me-i"}});
  CHECK(res.status == 401);
  res = client.embed(body, {{"Authorization", "Bearer let-me-inn"}});
  CHECK(res.status == 401);
  res = client.embed(body, {{"Authorization", "Basic let-me-in"}});
  CHECK(res.status == 401);
  CHECK_THAT(res.body, !Catch::Contains("let-me-in"));
  res = client.embed(body, {{"Authorization", "Bearer let-me-in"}});
  CHECK(vectors_of(res, 1, 8)[0] == hash_embed("authorized text", 8));
  // Probes need no token.
  CHECK(client.request("GET", "/healthz").status == 200);
  CHECK(client.request("GET", "/readyz").status == 200);
  // 413: a body over 2048 bytes, whatever the token.
  http_client big{serve.port};
  res = big.embed(embed_body({std::string(4096, 'x')}),
                  {{"Authorization", "Bearer let-me-in"}});
  CHECK(res.status == 413);
  CHECK(error_of(res).code == "request_too_large");
}

TEST_CASE("serve: 429 overloaded with Retry-After when the queue is full") {
  mock_proc mock{{"--latency-ms", "400"}};
  serve_proc serve{
      {"--upstream", mock.url, "--connections", "1", "--max-queue", "1"}};
  // One call on the connection, one queued (and possibly merged into the
  // next batch), the rest rejected at once.
  auto results = concurrently(serve.port, 8, embed_body({"crowd"}, 8));
  int ok = 0;
  int overloaded = 0;
  for (const auto& res : results) {
    if (res.status == 200) {
      ++ok;
    } else if (res.status == 429) {
      ++overloaded;
      CHECK(error_of(res).code == "overloaded");
      CHECK(std::stoi(res.header("retry-after")) >= 1);
    } else {
      FAIL("unexpected status " << res.status << ": " << res.body);
    }
  }
  CHECK(ok >= 1);
  CHECK(overloaded >= 1);
}

TEST_CASE("serve: 429 rate_limited with Retry-After when the upstream keeps "
          "limiting") {
  mock_proc mock{{"--fault", "429:1", "--retry-after-ms", "30"}};
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  auto res = client.embed(embed_body({"limited"}, 8));
  REQUIRE(res.status == 429);
  CHECK(error_of(res).code == "rate_limited");
  CHECK(std::stoi(res.header("retry-after")) >= 1);
}

TEST_CASE("serve: 504 when the deadline header is shorter than the upstream") {
  mock_proc mock{{"--latency-ms", "3000"}};
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  auto start = steady_clock::now();
  auto res = client.embed(embed_body({"slow"}, 8),
                          {{"x-embedrt-timeout-ms", "200"}});
  auto took = steady_clock::now() - start;
  CHECK(res.status == 504);
  CHECK(error_of(res).code == "deadline_exceeded");
  CHECK(took < milliseconds{1500});
}

TEST_CASE("serve: 503 with Retry-After and readyz 503 when the upstream is "
          "down") {
  refusing_upstream dead;
  serve_proc serve{{"--upstream", dead.url, "--connections", "2"}};
  http_client client{serve.port};
  // Connection failures trip the breaker (or mark the upstream down); from
  // then on requests fail fast with 503 and a Retry-After.
  std::optional<http_response> unavailable;
  for (int i = 0; i < 30 && !unavailable; ++i) {
    auto res = client.embed(embed_body({"anyone there"}, 8), {},
                            milliseconds{10000});
    REQUIRE(res.ok());
    CHECK((res.status == 502 || res.status == 503));
    if (res.status == 503)
      unavailable = res;
  }
  REQUIRE(unavailable);
  auto code = error_of(*unavailable).code;
  CHECK((code == "breaker_open" || code == "upstream_down"));
  CHECK(std::stoi(unavailable->header("retry-after")) >= 1);
  auto ready = client.request("GET", "/readyz");
  CHECK(ready.status == 503);
  CHECK_THAT(ready.body, Catch::Contains("\"ready\":false"));
  CHECK(client.request("GET", "/healthz").status == 200);
}

TEST_CASE("serve: /metrics is Prometheus text") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  REQUIRE(client.embed(embed_body({"counted"}, 8)).status == 200);
  auto res = client.request("GET", "/metrics");
  REQUIRE(res.status == 200);
  CHECK_THAT(res.header("content-type"), Catch::StartsWith("text/plain"));
  CHECK_THAT(res.body, Catch::Contains("# TYPE "));
  CHECK_THAT(res.body, Catch::Contains("embedrt_"));
}

// The late connections below race with the drain: one accepted just as it
// began used to deadlock the front end (see the front-end regression test
// "connections accepted as the drain begins…").
TEST_CASE("serve: SIGTERM drains in-flight requests, refuses new "
          "connections and exits 0") {
  mock_proc mock{{"--latency-ms", "800"}};
  // Health checks off: the mock's input count is the callers' alone.
  serve_proc serve{{"--upstream", mock.url, "--grace-ms", "8000"},
                   clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=0"})};
  // An idle keep-alive connection: closed by the drain.
  http_client idle{serve.port};
  REQUIRE(idle.request("GET", "/healthz").status == 200);
  constexpr std::size_t n = 5;
  std::vector<std::future<http_response>> slow;
  for (std::size_t i = 0; i < n; ++i)
    slow.push_back(std::async(std::launch::async, [port = serve.port, i] {
      http_client c{port};
      return c.embed(embed_body({"slow " + std::to_string(i)}, 8));
    }));
  // Wait until every request reached the upstream (they are in flight).
  http_client stats{mock.port};
  for (int i = 0; i < 400; ++i) {
    auto s = stats.request("GET", "/stats");
    if (s.body.find("\"inputs\":" + std::to_string(n)) != std::string::npos)
      break;
    std::this_thread::sleep_for(milliseconds{5});
  }
  auto start = steady_clock::now();
  serve.proc.signal(SIGTERM);
  // New connections are refused soon after the signal.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    http_client late{serve.port};
    refused = late.connect(milliseconds{500}) == failure::connect;
    if (!refused)
      std::this_thread::sleep_for(milliseconds{10});
  }
  CHECK(refused);
  CHECK(idle.wait_for_close(milliseconds{2000}));
  for (std::size_t i = 0; i < n; ++i) {
    auto res = slow[i].get();
    INFO("request " << i << ": " << res.error_message << " " << res.body);
    CHECK(res.status == 200);
    CHECK_FALSE(res.keep_alive); // answered with Connection: close
  }
  CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
  CHECK(steady_clock::now() - start < milliseconds{8000});
}

TEST_CASE("serve: at the end of the grace period the rest get 503") {
  mock_proc mock{{"--latency-ms", "5000"}};
  // The deadline bounds the exit as long as a request answered 503 keeps
  // its actor in the runtime until the deadline (the service's exit message
  // is to cancel it at once).
  // Health checks off: the mock's input count is the caller's alone.
  serve_proc serve{
      {"--upstream", mock.url, "--grace-ms", "300", "--deadline-ms", "3000"},
      clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=0"})};
  auto pending = std::async(std::launch::async, [port = serve.port] {
    http_client c{port};
    return c.embed(embed_body({"too slow"}, 8), {}, milliseconds{10000});
  });
  http_client stats{mock.port};
  for (int i = 0; i < 400; ++i) {
    if (stats.request("GET", "/stats").body.find("\"inputs\":1")
        != std::string::npos)
      break;
    std::this_thread::sleep_for(milliseconds{5});
  }
  auto start = steady_clock::now();
  serve.proc.signal(SIGTERM);
  auto res = pending.get();
  CHECK(res.status == 503);
  CHECK(error_of(res).code == "shutting_down");
  CHECK(res.has_header("retry-after"));
  CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
  CHECK(steady_clock::now() - start < milliseconds{4000});
}

/// Caller requests the service has seen: answered (every
/// `embedrt_requests_total` series) plus in flight.
int64_t requests_seen(const std::string& metrics) {
  int64_t seen = 0;
  std::size_t pos = 0;
  while (pos < metrics.size()) {
    auto eol = metrics.find('\n', pos);
    auto line = metrics.substr(pos, eol - pos);
    pos = eol == std::string::npos ? metrics.size() : eol + 1;
    if (line.rfind("embedrt_requests_total{", 0) == 0
        || line.rfind("embedrt_requests_in_flight ", 0) == 0)
      seen += std::stoll(line.substr(line.rfind(' ') + 1));
  }
  return seen;
}

TEST_CASE("serve: SIGTERM under load answers every accepted request and "
          "exits 0") {
  // 64 callers at once on 2 upstream connections without batching, 100 ms
  // each: 3.2 s of work, more than the grace period. What finishes in the
  // grace period is 200, the rest 503 shutting_down; nothing is dropped.
  mock_proc mock{{"--latency-ms", "100"}};
  temp_config file{"[upstream slow]\nbase_url = " + mock.url
                   + "\nconnections = 2\nbatching = false\n"};
  serve_proc serve{
      {"--config", file.path, "--grace-ms", "1000", "--deadline-ms", "5000"}};
  constexpr int64_t n = 64;
  std::vector<std::future<http_response>> calls;
  for (int64_t i = 0; i < n; ++i)
    calls.push_back(std::async(std::launch::async, [port = serve.port, i] {
      http_client c{port};
      return c.embed(embed_body({"load " + std::to_string(i)}, 8), {},
                     milliseconds{20000});
    }));
  // Every request has reached the service (answered or in flight).
  http_client probe{serve.port};
  int64_t seen = 0;
  for (int i = 0; i < 1000 && seen < n; ++i) {
    seen = requests_seen(probe.request("GET", "/metrics").body);
    if (seen < n)
      std::this_thread::sleep_for(milliseconds{5});
  }
  REQUIRE(seen == n);
  probe.close();
  serve.proc.signal(SIGTERM);
  int ok = 0;
  int shutting_down = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto res = calls[static_cast<std::size_t>(i)].get();
    INFO("request " << i << ": " << res.error_message << " " << res.status
                    << " " << res.body.substr(0, 200));
    REQUIRE(res.ok());
    if (res.status == 200) {
      CHECK(vectors_of(res, 1, 8)[0]
            == hash_embed("load " + std::to_string(i), 8));
      ++ok;
    } else {
      CHECK(res.status == 503);
      CHECK(error_of(res).code == "shutting_down");
      ++shutting_down;
    }
  }
  CHECK(ok + shutting_down == n);
  CHECK(ok > 0);
  CHECK(shutting_down > 0);
  CHECK(serve.proc.wait_exit(milliseconds{15000}) == 0);
}

TEST_CASE("serve: usage errors exit 2, a busy port exits 1, --help exits 0") {
  {
    process p{{"serve", "--bogus"}};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
    CHECK_THAT(p.stderr_text(), Catch::Contains("unknown option '--bogus'"));
  }
  {
    process p{{"serve", "--listen", "nowhere"}};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
  }
  {
    process p{{"serve", "--upstream", "ftp://x/v1"}};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
    CHECK_THAT(p.stderr_text(), Catch::Contains("--upstream"));
  }
  {
    process p{{"serve", "--auth-token-env", "UNSET_TOKEN_VAR"}};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
    CHECK_THAT(p.stderr_text(), Catch::Contains("UNSET_TOKEN_VAR"));
  }
  {
    process p{{"serve", "--help"}};
    auto line = p.read_line(milliseconds{10000});
    REQUIRE(line);
    CHECK_THAT(*line, Catch::StartsWith("usage: embedrt serve"));
    CHECK(p.wait_exit(milliseconds{10000}) == 0);
  }
  mock_proc mock;
  process busy{{"serve", "--listen", "127.0.0.1:" + std::to_string(mock.port),
                "--upstream", mock.url}};
  CHECK(busy.wait_exit(milliseconds{10000}) == 1);
  CHECK_THAT(busy.stderr_text(), Catch::Contains("cannot bind"));
}

TEST_CASE("serve: a config file names the upstreams and the client token") {
  mock_proc mock;
  temp_config file{"# serve e2e\nconnections = 2\n[serve]\n"
                   "auth_token = from-the-file\n[upstream primary]\n"
                   "base_url = "
                   + mock.url + "\nmodels = m, other\n"};
  const auto& path = file.path;
  {
    serve_proc serve{{"--config", path}};
    http_client client{serve.port};
    auto body = embed_body({"configured"}, 8);
    CHECK(client.embed(body).status == 401);
    auto res = client.embed(body, {{"Authorization", "Bearer from-the-file"}});
    CHECK(vectors_of(res, 1, 8)[0] == hash_embed("configured", 8));
    auto ready = client.request("GET", "/readyz");
    CHECK(ready.status == 200);
    CHECK_THAT(ready.body, Catch::Contains("\"name\":\"primary\""));
    CHECK_THAT(ready.body, Catch::Contains("\"connections\":2"));
  }
  {
    // The environment beats the file: EMBEDRT_AUTH_TOKEN replaces its token.
    serve_proc serve{{"--config", path},
                     clean_env({"EMBEDRT_AUTH_TOKEN=from-the-env"})};
    http_client client{serve.port};
    auto body = embed_body({"configured"}, 8);
    CHECK(client.embed(body, {{"Authorization", "Bearer from-the-file"}}).status
          == 401);
    CHECK(client.embed(body, {{"Authorization", "Bearer from-the-env"}}).status
          == 200);
  }
  {
    // A bad file is bad usage, with the file and line in the message.
    std::string bad = std::string{path} + ".bad";
    {
      std::ofstream out{bad};
      out << "[upstream x]\nbase_url = http://127.0.0.1:1/v1\nconections = 3\n";
    }
    process p{{"serve", "--config", bad}};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
    CHECK_THAT(p.stderr_text(), Catch::Contains(bad + ":3: unknown key"));
    std::remove(bad.c_str());
  }
}

TEST_CASE("serve: the breaker keys of the config file take effect") {
  // One failure opens this upstream's breaker for a minute (the default
  // would need five and open for about a second).
  refusing_upstream dead;
  temp_config file{"[upstream fragile]\nbase_url = " + dead.url
                   + "\nconnections = 1\nbreaker_failures = 1\n"
                     "breaker_open_ms = 60000\nbreaker_max_open_ms = 120000\n"};
  serve_proc serve{{"--config", file.path}};
  http_client client{serve.port};
  auto body = embed_body({"fragile"}, 8);
  // The first request's own retry may already meet the open breaker.
  auto first = client.embed(body, {}, milliseconds{10000});
  CHECK((first.status == 502 || first.status == 503));
  auto second = client.embed(body, {}, milliseconds{10000});
  REQUIRE(second.status == 503);
  CHECK(error_of(second).code == "breaker_open");
  // Retry-After: what is left of the minute (jitter only lengthens it).
  CHECK(std::stoi(second.header("retry-after")) >= 55);
  auto ready = client.request("GET", "/readyz");
  CHECK(ready.status == 503);
  CHECK_THAT(ready.body, Catch::Contains("breaker_open"));
}

TEST_CASE("serve: with no upstream it serves through the built-in one") {
  serve_proc serve{{}};
  http_client client{serve.port};
  auto res = client.embed(embed_body({"embedded default"}, 32));
  CHECK(vectors_of(res, 1, 32)[0] == hash_embed("embedded default", 32));
  serve.proc.signal(SIGINT);
  CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
  CHECK_THAT(serve.proc.stderr_text(), Catch::Contains("built-in"));
}

TEST_CASE("serve: readyz follows the upstream through an outage and back") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url, "--connections", "2"}};
  http_client client{serve.port};
  http_client control{mock.port};
  auto body = embed_body({"outage"}, 8);
  REQUIRE(client.embed(body).status == 200);
  REQUIRE(client.request("GET", "/readyz").status == 200);
  // The upstream fails every request: the breaker opens, requests fail fast
  // with 503, and the node is not ready.
  REQUIRE(control.request("POST", "/outage", "500").status == 200);
  std::optional<http_response> unavailable;
  for (int i = 0; i < 30 && !unavailable; ++i) {
    auto res = client.embed(body);
    REQUIRE(res.ok());
    CHECK((res.status == 502 || res.status == 503));
    if (res.status == 503)
      unavailable = res;
  }
  REQUIRE(unavailable);
  CHECK(error_of(*unavailable).code == "breaker_open");
  CHECK(unavailable->has_header("retry-after"));
  CHECK(client.request("GET", "/readyz").status == 503);
  // Healed: after the open period a probe succeeds, requests and readiness
  // come back.
  REQUIRE(control.request("POST", "/outage", "none").status == 200);
  bool served = false;
  for (int i = 0; i < 150 && !served; ++i) {
    served = client.embed(body).status == 200;
    if (!served)
      std::this_thread::sleep_for(milliseconds{100});
  }
  CHECK(served);
  CHECK(client.request("GET", "/readyz").status == 200);
}
