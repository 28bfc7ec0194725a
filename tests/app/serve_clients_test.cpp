// End to end, the gateway as real clients use it: token-array inputs (what
// Python LangChain sends by default), white space alone (what LangChain JS
// makes of "\n"), each caller's own usage when the pool merges requests,
// OpenAI's limits and errors (too many inputs, unknown model), the caller's
// model name in the answer, and `GET /v1/models`. The real `embedrt serve`
// in front of the real `embedrt mock`, driven by a plain HTTP client, by
// LangChain JS and the OpenAI Node SDK (tests/app/sdk/clients_probe.mjs), and
// by the Vercel AI SDK and LlamaIndex TS (tests/app/sdk/frameworks_probe.mjs).
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/openai.hpp"
#include "embedrt/protocol/provider.hpp"
#include "serve_test_util.hpp"

#include <catch2/catch.hpp>
#include <map>
#include <rapidjson/document.h>
#include <string>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;

namespace {

/// The body's parsed JSON (REQUIREd to parse).
rapidjson::Document json_of(const http_response& res) {
  rapidjson::Document doc;
  doc.Parse(res.body.c_str());
  INFO("body: " << res.body);
  REQUIRE_FALSE(doc.HasParseError());
  return doc;
}

int64_t prompt_tokens(const http_response& res) {
  auto doc = json_of(res);
  REQUIRE(doc.HasMember("usage"));
  return doc["usage"]["prompt_tokens"].GetInt64();
}

std::string model_of(const http_response& res) {
  auto doc = json_of(res);
  REQUIRE(doc.HasMember("model"));
  return doc["model"].GetString();
}

/// The embedding of a token array by the mock: its ids written out.
std::vector<float> token_embed(const std::vector<int>& ids, std::size_t dims) {
  std::string text;
  for (auto id : ids)
    text += (text.empty() ? "" : " ") + std::to_string(id);
  return hash_embed(text, dims);
}

std::vector<float> floats_of(const rapidjson::Value& v) {
  std::vector<float> out;
  if (v.IsArray())
    for (auto& x : v.GetArray())
      out.push_back(x.IsNumber() ? x.GetFloat() : -99.0f);
  return out;
}

void check_close(const std::vector<float>& got,
                 const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == Approx(want[i]).margin(1e-6));
}

} // namespace

TEST_CASE("serve: token-array inputs go upstream unchanged and count their "
          "ids") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  // An array of token arrays: one input each.
  auto res = client.embed(
      R"({"model":"m","input":[[1,2,3],[40,50]],"dimensions":8})");
  auto vecs = vectors_of(res, 2, 8);
  CHECK(vecs[0] == token_embed({1, 2, 3}, 8));
  CHECK(vecs[1] == token_embed({40, 50}, 8));
  CHECK(prompt_tokens(res) == 5); // exactly the ids
  // A flat array of ids is one input.
  res = client.embed(R"({"model":"m","input":[7,8,9],"dimensions":8,)"
                     R"("encoding_format":"base64"})");
  vecs = vectors_of(res, 1, 8, true);
  CHECK(vecs[0] == token_embed({7, 8, 9}, 8));
  CHECK(prompt_tokens(res) == 3);
  // Shapes OpenAI refuses are refused the same way.
  for (const char* body : {
           R"({"model":"m","input":["text",[1,2]]})",
           R"({"model":"m","input":[[1,2],"text"]})",
           R"({"model":"m","input":[[1,2],[]]})",
           R"({"model":"m","input":[1,-2]})",
           R"({"model":"m","input":[1,2.5]})",
           R"({"model":"m","input":[[1,"2"]]})",
       }) {
    INFO("body: " << body);
    res = client.embed(body);
    CHECK(res.status == 400);
    if (res.status == 400) {
      auto e = error_of(res);
      CHECK(e.type == "invalid_request_error");
      CHECK(e.param == "input");
    }
  }
}

TEST_CASE("serve: token arrays are refused for a TEI upstream only") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url, "--provider", "tei"}};
  http_client client{serve.port};
  auto res = client.embed(R"({"model":"m","input":[[1,2,3]]})");
  REQUIRE(res.status == 400);
  auto e = error_of(res);
  CHECK(e.param == "input");
  CHECK_THAT(e.message, Catch::Contains("not supported by a tei upstream"));
  // Text still works.
  vectors_of(client.embed(embed_body({"tei text"}, 8)), 1, 8);
}

TEST_CASE("serve: white space alone is embedded, only \"\" is refused") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  std::vector<std::string> texts{"ok", " ", "\n\t", "\xC2\xA0"};
  auto res = client.embed(embed_body(texts, 8));
  auto vecs = vectors_of(res, 4, 8);
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK(vecs[i] == hash_embed(texts[i], 8));
  res = client.embed(embed_body({"ok", ""}, 8));
  REQUIRE(res.status == 400);
  auto e = error_of(res);
  CHECK(e.param == "input");
  CHECK(e.message == "input[1] is empty");
}

TEST_CASE("serve: merged calls report each caller's own usage") {
  // 30 concurrent 2-input requests through a 50 ms upstream and 2
  // connections: the pool merges them; each caller's usage must be its own
  // (the mock counts estimate_tokens per input, so each caller's share is
  // exact).
  mock_proc mock{{"--latency-ms", "50"}};
  serve_proc serve{{"--upstream", mock.url, "--connections", "2"}};
  constexpr std::size_t n = 30;
  std::vector<std::future<http_response>> futs;
  std::vector<int64_t> expected;
  for (std::size_t i = 0; i < n; ++i) {
    std::string a = "caller " + std::to_string(i)
        + std::string(i * 3, 'x'); // lengths differ per caller
    std::string b = std::string(i + 1, '7') + " tail";
    expected.push_back(
        static_cast<int64_t>(estimate_tokens(a) + estimate_tokens(b)));
    futs.push_back(std::async(std::launch::async, [port = serve.port, a, b] {
      http_client c{port};
      return c.embed(embed_body({a, b}, 8), {}, milliseconds{10000});
    }));
  }
  for (std::size_t i = 0; i < n; ++i) {
    INFO("caller " << i);
    auto res = futs[i].get();
    REQUIRE(res.status == 200);
    CHECK(prompt_tokens(res) == expected[i]);
  }
  // The pool did merge: fewer upstream requests than callers.
  http_client stats{mock.port};
  auto s = stats.request("GET", "/stats");
  auto doc = json_of(s);
  CHECK(doc["embedding_requests"].GetInt64() < static_cast<int64_t>(n));
}

TEST_CASE("serve: more inputs than allowed get OpenAI's 400 on 'input'") {
  mock_proc mock;
  {
    serve_proc serve{{"--upstream", mock.url}};
    http_client client{serve.port};
    auto res = client.embed(embed_body(std::vector<std::string>(2049, "x"), 4),
                            {}, milliseconds{20000});
    REQUIRE(res.status == 400);
    auto e = error_of(res);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.param == "input");
    CHECK(e.message == "too many inputs: 2049 > 2048 per request");
    vectors_of(client.embed(embed_body(std::vector<std::string>(2048, "x"), 4),
                            {}, milliseconds{20000}),
               2048, 4);
  }
  // Configurable per upstream.
  temp_config file{"[upstream small]\nbase_url = " + mock.url
                   + "\nmax_inputs_per_request = 3\n"};
  serve_proc serve{{"--config", file.path}};
  http_client client{serve.port};
  vectors_of(client.embed(embed_body({"a", "b", "c"}, 4)), 3, 4);
  auto res = client.embed(embed_body({"a", "b", "c", "d"}, 4));
  REQUIRE(res.status == 400);
  CHECK(error_of(res).message == "too many inputs: 4 > 3 per request");
}

TEST_CASE("serve: an unknown model is 404 model_not_found, an alias is "
          "answered with the caller's name") {
  mock_proc mock;
  temp_config file{"[upstream a]\nbase_url = " + mock.url
                   + "\nmodels = small, direct\n"
                     "model_map = small=text-embedding-3-small\n"};
  serve_proc serve{{"--config", file.path}};
  http_client client{serve.port};
  auto res = client.embed(embed_body({"x"}, 4, false, "other"));
  REQUIRE(res.status == 404);
  auto e = error_of(res);
  CHECK(e.type == "invalid_request_error");
  CHECK(e.code == "model_not_found");
  CHECK(e.param == "model");
  CHECK_THAT(e.message, Catch::Contains("'other'"));
  // The mock answers with the name it was sent (the upstream's); the caller
  // gets the name it sent.
  res = client.embed(embed_body({"x"}, 4, false, "small"));
  REQUIRE(res.status == 200);
  CHECK(model_of(res) == "small");
  res = client.embed(embed_body({"x"}, 4, false, "direct"));
  REQUIRE(res.status == 200);
  CHECK(model_of(res) == "direct");
}

TEST_CASE("serve: GET /v1/models lists the configured models, behind auth") {
  mock_proc mock;
  temp_config file{"model = text-embedding-3-small\n"
                   "[upstream a]\nbase_url = "
                   + mock.url
                   + "\nmodels = a-one, small\n"
                     "model_map = small=upstream-small, unserved=x\n"
                     "[upstream b]\nbase_url = "
                   + mock.url + "\nmodel_map = big=upstream-big\n"};
  serve_proc serve{{"--config", file.path, "--auth-token-env", "GW_TOKEN"},
                   clean_env({"GW_TOKEN=models-token"})};
  http_client client{serve.port};
  header_list auth{{"Authorization", "Bearer models-token"}};
  for (const char* path : {"/v1/models", "/models"}) {
    INFO("path " << path);
    auto res = client.request("GET", path, {}, auth);
    REQUIRE(res.status == 200);
    auto doc = json_of(res);
    CHECK(std::string{doc["object"].GetString()} == "list");
    std::vector<std::string> ids;
    for (auto& m : doc["data"].GetArray()) {
      ids.emplace_back(m["id"].GetString());
      CHECK(std::string{m["object"].GetString()} == "model");
      CHECK(std::string{m["owned_by"].GetString()} == "embedrt");
      CHECK(m["created"].GetInt64() > 1'600'000'000);
    }
    CHECK(ids
          == std::vector<std::string>{"a-one", "small", "big",
                                      "text-embedding-3-small"});
  }
  CHECK(client.request("GET", "/v1/models").status == 401);
  CHECK(client.request("POST", "/v1/models", "{}", auth).status == 405);
}

namespace {

std::string str(const rapidjson::Value& v, const char* key) {
  auto i = v.FindMember(key);
  return i != v.MemberEnd() && i->value.IsString() ? i->value.GetString() : "";
}

/// The lines a probe of tests/app/sdk printed (`node SCRIPT BASE_URL TOKEN
/// [MODE]`), by scenario name; empty (after a warning) if Node.js is absent.
std::map<std::string, rapidjson::Document>
run_probe(const char* script, uint16_t port, const std::string& token,
          std::vector<std::string> more = {}) {
  std::map<std::string, rapidjson::Document> out;
  if (access(EMBEDRT_NODE, X_OK) != 0) {
    WARN("skipped: no Node.js at " EMBEDRT_NODE
         " (scripts/setup.sh test installs it)");
    return out;
  }
  INFO("the clients are installed by scripts/setup.sh test (npm ci) "
       "into " EMBEDRT_SDK_DIR "/node_modules");
  for (const char* pkg : {"@langchain/openai", "ai", "@ai-sdk/openai",
                          "@ai-sdk/openai-compatible", "@llamaindex/openai"}) {
    INFO("package " << pkg);
    REQUIRE(access((std::string{EMBEDRT_SDK_DIR "/node_modules/"} + pkg
                    + "/package.json")
                       .c_str(),
                   R_OK)
            == 0);
  }
  std::vector<std::string> args{
      std::string{EMBEDRT_SDK_DIR "/"} + script,
      "http://127.0.0.1:" + std::to_string(port) + "/v1", token};
  args.insert(args.end(), more.begin(), more.end());
  process node{EMBEDRT_NODE, args, clean_env()};
  while (auto line = node.read_line(milliseconds{60000})) {
    rapidjson::Document doc;
    doc.Parse(line->c_str());
    INFO("probe line: " << *line);
    REQUIRE_FALSE(doc.HasParseError());
    auto name = str(doc, "name");
    out.emplace(std::move(name), std::move(doc));
  }
  INFO("node stderr: " << node.stderr_text());
  CHECK(node.wait_exit(milliseconds{10000}) == 0);
  return out;
}

/// The lines clients_probe.mjs printed (LangChain JS, the OpenAI SDK).
std::map<std::string, rapidjson::Document> run_clients_probe(uint16_t port) {
  auto out = run_probe("clients_probe.mjs", port, "clients-token");
  if (!out.empty())
    REQUIRE(out.size() == 6);
  return out;
}

const rapidjson::Document&
ok_line(const std::map<std::string, rapidjson::Document>& lines,
        const char* name) {
  INFO("scenario " << name);
  auto i = lines.find(name);
  REQUIRE(i != lines.end());
  INFO("message: " << str(i->second, "message"));
  REQUIRE(i->second["ok"].GetBool());
  return i->second;
}

} // namespace

TEST_CASE("serve: LangChain JS and the OpenAI SDK's token arrays work "
          "unchanged") {
  mock_proc mock;
  temp_config file{"[upstream a]\nbase_url = " + mock.url
                   + "\nmodels = text-embedding-3-small\n"};
  serve_proc serve{{"--config", file.path, "--auth-token-env", "GW_TOKEN"},
                   clean_env({"GW_TOKEN=clients-token"})};
  auto lines = run_clients_probe(serve.port);
  if (lines.empty())
    return; // no Node.js: warned
  // embedDocuments in batches of 3, "\n" made " " by LangChain.
  auto& docs = ok_line(lines, "langchain_documents")["vectors"];
  REQUIRE(docs.Size() == 5);
  const char* sent[]
      = {"langchain one", " ", "two lines", " \t ", "langchain five"};
  for (rapidjson::SizeType i = 0; i < 5; ++i) {
    INFO("document " << i);
    check_close(floats_of(docs[i]), hash_embed(sent[i], 8));
  }
  check_close(floats_of(ok_line(lines, "langchain_query")["vector"]),
              hash_embed("what is embedrt", 8));
  auto& tokens = ok_line(lines, "token_arrays");
  CHECK(tokens["usage"]["prompt_tokens"].GetInt64() == 6);
  CHECK(str(tokens, "model") == "text-embedding-3-small");
  REQUIRE(tokens["vectors"].Size() == 2);
  check_close(floats_of(tokens["vectors"][0]), token_embed({9906, 1917}, 8));
  check_close(floats_of(tokens["vectors"][1]),
              token_embed({40, 1093, 1521, 13}, 8));
  auto& single = ok_line(lines, "token_array_single");
  CHECK(single["usage"]["prompt_tokens"].GetInt64() == 3);
  REQUIRE(single["vectors"].Size() == 1);
  check_close(floats_of(single["vectors"][0]), token_embed({17, 4, 9}, 8));
  // The SDK's typed errors and the model list.
  auto& unknown = lines.at("unknown_model");
  CHECK_FALSE(unknown["ok"].GetBool());
  CHECK(str(unknown, "class") == "NotFoundError");
  CHECK(str(unknown, "code") == "model_not_found");
  auto& models = ok_line(lines, "models")["ids"];
  REQUIRE(models.Size() == 1);
  CHECK(std::string{models[0].GetString()} == "text-embedding-3-small");
}

namespace {

/// The mock's token count of these texts (what each reply's usage says).
int64_t tokens_of(const std::vector<std::string>& texts) {
  int64_t n = 0;
  for (auto& t : texts)
    n += static_cast<int64_t>(estimate_tokens(t));
  return n;
}

/// A scenario's `vectors` are the mock's vectors of `texts` at 8 dimensions,
/// in order.
void check_vectors(const rapidjson::Document& line,
                   const std::vector<std::string>& texts) {
  auto& vecs = line["vectors"];
  REQUIRE(vecs.Size() == texts.size());
  for (rapidjson::SizeType i = 0; i < vecs.Size(); ++i) {
    INFO("input " << i << ": " << texts[i]);
    check_close(floats_of(vecs[i]), hash_embed(texts[i], 8));
  }
}

std::vector<std::string> numbered(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(prefix + std::to_string(i));
  return out;
}

/// A failed scenario: the library's error class and HTTP status.
void check_failure(const rapidjson::Document& line, const char* cls, int status,
                   bool retryable) {
  INFO("line: " << str(line, "name") << " " << str(line, "message"));
  REQUIRE_FALSE(line["ok"].GetBool());
  CHECK(str(line, "class") == cls);
  REQUIRE(line["status"].IsInt());
  CHECK(line["status"].GetInt() == status);
  CHECK(line["retryable"].GetBool() == retryable);
}

} // namespace

TEST_CASE("serve: the Vercel AI SDK and LlamaIndex TS work unchanged") {
  mock_proc mock;
  // No health checks: the mock counts the probe's texts only.
  serve_proc serve{{"--upstream", mock.url, "--auth-token-env", "GW_TOKEN"},
                   clean_env({"GW_TOKEN=frameworks-token",
                              "EMBEDRT_HEALTH_CHECK_INTERVAL_MS=0"})};
  auto lines = run_probe("frameworks_probe.mjs", serve.port, "frameworks-token",
                         {"gateway"});
  if (lines.empty())
    return; // no Node.js: warned
  REQUIRE(lines.size() == 8);
  // The AI SDK with @ai-sdk/openai: float vectors, its usage from the
  // replies.
  std::vector<std::string> many{"vercel one", "vercel two", "vercel three"};
  auto& em = ok_line(lines, "vercel_embed_many");
  check_vectors(em, many);
  CHECK(em["tokens"].GetInt64() == tokens_of(many));
  auto& single = ok_line(lines, "vercel_embed");
  check_vectors(single, {"vercel single"});
  CHECK(single["tokens"].GetInt64() == tokens_of({"vercel single"}));
  // 5,000 values: three calls of at most 2,048 inputs, two at a time, put
  // back in order by the SDK; usage summed over the three replies.
  auto& split = ok_line(lines, "vercel_split");
  CHECK(split["count"].GetInt() == 5000);
  auto all = numbered("split ", 5000);
  std::vector<std::string> picked;
  for (auto& i : split["at"].GetArray())
    picked.push_back(all.at(i.GetUint()));
  check_vectors(split, picked);
  CHECK(split["tokens"].GetInt64() == tokens_of(all));
  // @ai-sdk/openai-compatible, the provider for vLLM, Ollama and TEI.
  std::vector<std::string> compat{"compatible one", "compatible two"};
  auto& cp = ok_line(lines, "vercel_compatible");
  check_vectors(cp, compat);
  CHECK(cp["tokens"].GetInt64() == tokens_of(compat));
  // Errors are the SDK's APICallError with the gateway's status; neither is
  // retried.
  check_failure(lines.at("vercel_empty"), "APICallError", 400, false);
  CHECK(str(lines.at("vercel_empty"), "message") == "input[0] is empty");
  check_failure(lines.at("vercel_wrong_token"), "APICallError", 401, false);
  // LlamaIndex TS: 25 documents in calls of 10, and a query.
  check_vectors(ok_line(lines, "llamaindex_documents"),
                numbered("llama doc ", 25));
  check_vectors(ok_line(lines, "llamaindex_query"), {"llama query"});
  // Each text went upstream exactly once: 3 + 1 + 5,000 + 2 (the AI SDK),
  // 25 + 1 (LlamaIndex); the two refused never left the gateway.
  http_client stats{mock.port};
  auto doc = json_of(stats.request("GET", "/stats"));
  CHECK(doc["inputs"].GetInt64() == 5032);
}

TEST_CASE("serve: the Vercel AI SDK's retries honour the gateway's 429 and "
          "Retry-After") {
  // One connection, a queue of one and a 300 ms upstream: of five calls at
  // once, the gateway refuses some at once (429 overloaded, Retry-After).
  mock_proc mock{{"--latency-ms", "300"}};
  serve_proc serve{
      {"--upstream", mock.url, "--connections", "1", "--max-queue", "1"}};
  auto lines
      = run_probe("frameworks_probe.mjs", serve.port, "sk-any", {"crowd"});
  if (lines.empty())
    return; // no Node.js: warned
  REQUIRE(lines.size() == 1);
  // With the SDK's default retries (2) every call ends with its vector,
  // after the gateway refused some of them: the SDK waited and tried again.
  auto& crowd = ok_line(lines, "vercel_crowd");
  check_vectors(crowd, numbered("crowd ", 5));
  http_client client{serve.port};
  auto metrics = client.request("GET", "/metrics").body;
  CHECK_THAT(metrics,
             Catch::Contains("embedrt_gateway_requests_total{"
                             "client=\"\",status=\"200\"} 5\n"));
  CHECK_THAT(metrics,
             Catch::Contains("embedrt_gateway_requests_total{"
                             "client=\"\",status=\"429\"}"));
  // Refused calls were tried again after a wait (the gateway's Retry-After
  // of 1 s, which the SDK prefers to its own backoff), not at once.
  CHECK(crowd["elapsed_ms"].GetInt() >= 1000);
  // Without retries the refusal reaches the application as a retryable
  // APICallError carrying the gateway's Retry-After.
  lines = run_probe("frameworks_probe.mjs", serve.port, "sk-any", {"refused"});
  REQUIRE(lines.size() == 1);
  auto& refused = lines.at("vercel_crowd_no_retries");
  check_failure(refused, "APICallError", 429, true);
  auto retry_after = str(refused, "retry_after");
  REQUIRE_FALSE(retry_after.empty());
  CHECK(std::stoi(retry_after) >= 1);
}
