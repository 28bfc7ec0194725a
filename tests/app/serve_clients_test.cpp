// End to end, the gateway as real clients use it: token-array inputs (what
// Python LangChain sends by default), white space alone (what LangChain JS
// makes of "\n"), each caller's own usage when the pool merges requests,
// OpenAI's limits and errors (too many inputs, unknown model), the caller's
// model name in the answer, and `GET /v1/models`. The real `embedrt serve`
// in front of the real `embedrt mock`, driven by a plain HTTP client and by
// LangChain JS and the OpenAI Node SDK (tests/app/sdk/clients_probe.mjs).
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

/// The lines clients_probe.mjs printed, by scenario name; empty (after a
/// warning) if Node.js is absent.
std::map<std::string, rapidjson::Document> run_clients_probe(uint16_t port) {
  std::map<std::string, rapidjson::Document> out;
  if (access(EMBEDRT_NODE, X_OK) != 0) {
    WARN("skipped: no Node.js at " EMBEDRT_NODE
         " (scripts/setup.sh test installs it)");
    return out;
  }
  INFO("LangChain JS and the OpenAI SDK are installed by scripts/setup.sh "
       "test (npm ci) into " EMBEDRT_SDK_DIR "/node_modules");
  REQUIRE(access(EMBEDRT_SDK_DIR "/node_modules/@langchain/openai/package.json",
                 R_OK)
          == 0);
  process node{EMBEDRT_NODE,
               {EMBEDRT_SDK_DIR "/clients_probe.mjs",
                "http://127.0.0.1:" + std::to_string(port) + "/v1",
                "clients-token"},
               clean_env()};
  while (auto line = node.read_line(milliseconds{30000})) {
    rapidjson::Document doc;
    doc.Parse(line->c_str());
    INFO("probe line: " << *line);
    REQUIRE_FALSE(doc.HasParseError());
    auto name = str(doc, "name");
    out.emplace(std::move(name), std::move(doc));
  }
  CHECK(node.wait_exit(milliseconds{10000}) == 0);
  INFO("node stderr: " << node.stderr_text());
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
