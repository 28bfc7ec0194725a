// End to end, through the real `embedrt serve` process and its socket: what
// browsers, operators and several clients need from the gateway — CORS
// (preflight and actual replies, nothing when off), gzip request bodies
// (bounded by the body limit, 415 for other encodings), several named client
// tokens with their own RPM/TPM limits (429 + Retry-After, per-client
// metrics), the access log at info (never a token), the Date header and the
// "listening on http://HOST:PORT/v1" line.
#include "embedrt/protocol/hash_embedder.hpp"
#include "mock_test_client.hpp"
#include "serve_test_util.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <rapidjson/document.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>
#include <zlib.h>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;

namespace {

/// `data` as one gzip member.
std::string gzip(const std::string& data) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 9,
                       Z_DEFAULT_STRATEGY)
          == Z_OK);
  std::string out(deflateBound(&zs, data.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

/// The peak resident set of a process (VmHWM, KiB).
long peak_rss_kib(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0)
      return std::stol(line.substr(6));
  FAIL("no VmHWM for " << pid);
  return 0;
}

} // namespace

TEST_CASE("serve: prints its base URL with /v1") {
  mock_proc mock;
  process p{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
             "--log-level", "warn"}};
  auto line = p.read_line(milliseconds{20000});
  REQUIRE(line);
  CHECK_THAT(*line, Catch::StartsWith("listening on http://127.0.0.1:"));
  CHECK_THAT(*line, Catch::EndsWith("/v1"));
}

TEST_CASE("serve: CORS preflight and actual replies with cors_origins") {
  mock_proc mock;
  const std::string origin = "https://app.example.com";
  header_list preflight{{"Origin", origin},
                        {"Access-Control-Request-Method", "POST"},
                        {"Access-Control-Request-Headers",
                         "authorization, content-type, x-stainless-os"}};
  auto body = embed_body({"cors"}, 8);
  SECTION("off by default: OPTIONS is 405, no CORS headers") {
    serve_proc serve{{"--upstream", mock.url}};
    http_client client{serve.port};
    auto res = client.request("OPTIONS", "/v1/embeddings", {}, preflight);
    CHECK(res.status == 405);
    CHECK_FALSE(res.has_header("access-control-allow-origin"));
    res = client.embed(body, {{"Origin", origin}});
    CHECK(res.status == 200);
    CHECK_FALSE(res.has_header("access-control-allow-origin"));
  }
  SECTION("a listed origin (config file), with a client token") {
    temp_config file{"[serve]\ncors_origins = http://localhost:3000, " + origin
                     + "\nauth_token = cors-secret\n"};
    serve_proc serve{{"--upstream", mock.url, "--config", file.path}};
    http_client client{serve.port};
    // The preflight carries no token (browsers never send one) and passes.
    auto res = client.request("OPTIONS", "/v1/embeddings", {}, preflight);
    CHECK(res.status == 204);
    CHECK(res.header("access-control-allow-origin") == origin);
    CHECK_THAT(res.header("access-control-allow-methods"),
               Catch::Contains("POST"));
    CHECK(res.header("access-control-allow-headers")
          == "authorization, content-type, x-stainless-os");
    CHECK(res.header("vary") == "Origin");
    CHECK(res.body.empty());
    CHECK_FALSE(res.has_header("content-length"));
    CHECK_FALSE(res.has_header("content-type"));
    // The connection stays usable after the bodiless 204.
    CHECK(res.keep_alive);
    // The actual request: its reply names the origin, errors too.
    res = client.embed(
        body, {{"Origin", origin}, {"Authorization", "Bearer cors-secret"}});
    CHECK(vectors_of(res, 1, 8)[0] == hash_embed("cors", 8));
    CHECK(client.connects() == 1); // same connection as the preflight
    CHECK(res.header("access-control-allow-origin") == origin);
    CHECK_THAT(res.header("access-control-expose-headers"),
               Catch::Contains("x-request-id"));
    res = client.embed(body, {{"Origin", origin}});
    CHECK(res.status == 401);
    CHECK(res.header("access-control-allow-origin") == origin);
    // Another origin: the preflight is refused, replies name no origin.
    header_list other{{"Origin", "https://evil.example"},
                      {"Access-Control-Request-Method", "POST"}};
    res = client.request("OPTIONS", "/v1/embeddings", {}, other);
    CHECK(res.status == 403);
    CHECK(error_of(res).code == "origin_not_allowed");
    CHECK_FALSE(res.has_header("access-control-allow-origin"));
    res = client.embed(body,
                       {{"Origin", "https://evil.example"},
                        {"Authorization", "Bearer cors-secret"}});
    CHECK(res.status == 200);
    CHECK_FALSE(res.has_header("access-control-allow-origin"));
  }
  SECTION("* (flag) allows any origin") {
    serve_proc serve{{"--upstream", mock.url, "--cors-origins", "*"}};
    http_client client{serve.port};
    auto res = client.request("OPTIONS", "/v1/models", {}, preflight);
    CHECK(res.status == 204);
    CHECK(res.header("access-control-allow-origin") == "*");
    res = client.embed(body, {{"Origin", "https://anything.example"}});
    CHECK(res.status == 200);
    CHECK(res.header("access-control-allow-origin") == "*");
  }
  SECTION("a bad origin is a usage error") {
    process p{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
               "--cors-origins", "app.example.com"}};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
    CHECK_THAT(p.stderr_text(), Catch::Contains("is not an origin"));
  }
}

TEST_CASE("serve: gzip request bodies, bounded by the body limit") {
  mock_proc mock;
  serve_proc serve{
      {"--upstream", mock.url, "--max-body-bytes", std::to_string(1 << 20)}};
  http_client client{serve.port};
  SECTION("gzip is inflated") {
    auto res = client.embed(gzip(embed_body({"zipped", "twice"}, 8)),
                            {{"Content-Encoding", "gzip"}});
    auto v = vectors_of(res, 2, 8);
    CHECK(v[0] == hash_embed("zipped", 8));
    CHECK(v[1] == hash_embed("twice", 8));
    // The connection stays usable.
    CHECK(client.embed(embed_body({"plain"}, 8)).status == 200);
  }
  SECTION("a gzip bomb gets 413 without inflating it") {
    // 256 MiB of one repeated JSON string, about 250 KiB compressed: under
    // the 1 MiB body limit on the wire, far over it inflated.
    std::string huge = "{\"model\":\"m\",\"input\":\"";
    huge.append(std::size_t{256} << 20, 'a');
    huge += "\"}";
    auto bomb = gzip(huge);
    huge = std::string{};
    REQUIRE(bomb.size() < (1u << 20));
    auto res = client.embed(bomb, {{"Content-Encoding", "gzip"}});
    CHECK(res.status == 413);
    CHECK(error_of(res).code == "request_too_large");
    // It never held more than the limit's worth: far below 256 MiB (below
    // it even with a sanitizer's shadow memory and quarantine).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    CHECK(peak_rss_kib(serve.proc.pid()) < 240 * 1024);
#else
    CHECK(peak_rss_kib(serve.proc.pid()) < 128 * 1024);
#endif
  }
  SECTION("another encoding gets 415, broken gzip 400") {
    auto res = client.embed(embed_body({"x"}, 8), {{"Content-Encoding", "br"}});
    CHECK(res.status == 415);
    CHECK(error_of(res).code == "unsupported_encoding");
    CHECK(res.header("accept-encoding") == "gzip");
    auto broken = gzip(embed_body({"x"}, 8));
    broken.resize(broken.size() / 2);
    res = client.embed(broken, {{"Content-Encoding", "gzip"}});
    CHECK(res.status == 400);
    CHECK(error_of(res).code == "invalid_input");
  }
}

TEST_CASE("serve: several named clients with their own RPM and TPM limits") {
  mock_proc mock;
  temp_config file{"[client alice]\ntoken_env = ALICE_TOKEN\nrpm = 2\n"
                   "[client bob]\ntoken = bob-secret\ntpm = 50\n"
                   "[client carol]\ntoken = carol-secret\n"};
  // At info (serve_proc runs at warn): the access log.
  process proc{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
                "--config", file.path, "--log-level", "info"},
               clean_env({"ALICE_TOKEN=alice-secret",
                          "EMBEDRT_AUTH_TOKEN=legacy-secret"})};
  auto port = proc.wait_listening();
  http_client client{port};
  auto body = embed_body({"limited"}, 8);
  header_list alice{{"Authorization", "Bearer alice-secret"},
                    {"x-request-id", "alice-req-1"}};
  header_list bob{{"Authorization", "Bearer bob-secret"}};
  header_list carol{{"Authorization", "Bearer carol-secret"}};
  // Alice: 2 requests per minute, the third gets OpenAI's 429.
  CHECK(client.embed(body, alice).status == 200);
  CHECK(client.embed(body, alice).status == 200);
  auto res = client.embed(body, alice);
  CHECK(res.status == 429);
  auto err = error_of(res);
  CHECK(err.code == "rate_limit_exceeded");
  CHECK(err.type == "requests");
  CHECK_THAT(err.message, Catch::Contains("alice"));
  auto retry = std::stoi(res.header("retry-after"));
  CHECK(retry >= 1);
  CHECK(retry <= 60);
  // Bob: 50 (estimated) tokens per minute; a request within it passes, one
  // over what is left gets 429 "tokens".
  CHECK(client.embed(embed_body({"a few words"}, 8), bob).status == 200);
  // (Each '!' is one token in the estimate.)
  res = client.embed(embed_body({std::string(48, '!')}, 8), bob);
  CHECK(res.status == 429);
  CHECK(error_of(res).type == "tokens");
  CHECK(res.has_header("retry-after"));
  // More than a minute's worth can never pass: said so.
  res = client.embed(embed_body({std::string(150, '!')}, 8), bob);
  CHECK(res.status == 429);
  CHECK_THAT(error_of(res).message, Catch::Contains("Request too large"));
  // Carol has no limits; the single token of EMBEDRT_AUTH_TOKEN still works
  // (the client "default"); anything else is 401.
  for (int i = 0; i < 5; ++i)
    CHECK(client.embed(body, carol).status == 200);
  CHECK(client.embed(body, {{"Authorization", "Bearer legacy-secret"}}).status
        == 200);
  CHECK(client.embed(body, {{"Authorization", "Bearer nobody"}}).status == 401);
  // Per-client counters in /metrics.
  auto m = client.request("GET", "/metrics", {}, carol);
  REQUIRE(m.status == 200);
  CHECK_THAT(m.body,
             Catch::Contains("embedrt_gateway_requests_total{client="
                             "\"alice\",status=\"200\"} 2"));
  CHECK_THAT(m.body,
             Catch::Contains("embedrt_gateway_requests_total{client="
                             "\"alice\",status=\"429\"} 1"));
  CHECK_THAT(m.body,
             Catch::Contains("embedrt_gateway_rate_limited_total{"
                             "client=\"bob\",limit=\"tokens\"} 2"));
  CHECK_THAT(m.body, Catch::Contains("{client=\"default\",status=\"200\"} 1"));
  CHECK_THAT(m.body, Catch::Contains("{client=\"\",status=\"401\"} 1"));
  // Every reply has a Date.
  CHECK_THAT(m.header("date"), Catch::EndsWith(" GMT"));
  // A reply of the front end's own (415, before the gateway) is logged too,
  // without a client name.
  CHECK(client
            .embed(body,
                   {{"Authorization", "Bearer carol-secret"},
                    {"Content-Encoding", "br"},
                    {"x-request-id", "front-415"}})
            .status
        == 415);
  // The access log: one line per request at info, with the client's name
  // and request id, never a token.
  proc.signal(SIGTERM);
  REQUIRE(proc.wait_exit(milliseconds{10000}) == 0);
  auto log = proc.stderr_text();
  CHECK_THAT(log,
             Catch::Contains("event=http_request method=POST "
                             "path=/v1/embeddings status=200"));
  CHECK_THAT(log, Catch::Contains("client=alice request_id=alice-req-1"));
  CHECK_THAT(log, Catch::Contains("status=429"));
  CHECK_THAT(log, Catch::Contains("status=401"));
  std::size_t lines = 0;
  for (auto at = log.find("event=http_request"); at != std::string::npos;
       at = log.find("event=http_request", at + 1))
    ++lines;
  CHECK(lines == 15);
  CHECK_THAT(log,
             Catch::Contains("method=POST path=/v1/embeddings "
                             "status=415"));
  CHECK_THAT(log, Catch::Contains("client=- request_id=front-415"));
  for (const char* secret :
       {"alice-secret", "bob-secret", "carol-secret", "legacy-secret"})
    CHECK(log.find(secret) == std::string::npos);
}

TEST_CASE("serve: client configuration errors exit 2 without the token") {
  mock_proc mock;
  auto run = [&](const std::string& text, std::vector<std::string> env) {
    temp_config file{text};
    process p{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
               "--config", file.path},
              clean_env(std::move(env))};
    CHECK(p.wait_exit(milliseconds{10000}) == 2);
    return p.stderr_text();
  };
  auto err = run("[client a]\ntoken_env = UNSET_CLIENT_VAR\n", {});
  CHECK_THAT(err, Catch::Contains("UNSET_CLIENT_VAR is not set"));
  err = run("[client a]\ntoken = same-secret\n[client b]\ntoken_env = B\n",
            {"B=same-secret"});
  CHECK_THAT(err, Catch::Contains("clients a and b have the same token"));
  CHECK(err.find("same-secret") == std::string::npos);
  err = run("[client a]\nrpm = 5\n", {});
  CHECK_THAT(err, Catch::Contains("exactly one of token_env and token"));
}

TEST_CASE("serve: HTTPS on the listener, with the OpenAI Node SDK") {
  const std::string tls_dir = EMBEDRT_TEST_DATA_DIR "/tls";
  mock_proc mock;
  temp_config file{"[serve]\ntls_certificate = " + tls_dir
                   + "/server.pem\ntls_key = " + tls_dir + "/server.key\n"};
  process proc{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
                "--config", file.path, "--log-level", "warn"},
               clean_env({"EMBEDRT_AUTH_TOKEN=tls-token"})};
  auto line = proc.read_line(milliseconds{20000});
  REQUIRE(line);
  const std::string prefix = "listening on https://127.0.0.1:";
  REQUIRE_THAT(*line, Catch::StartsWith(prefix) && Catch::EndsWith("/v1"));
  auto port = static_cast<uint16_t>(std::stoi(line->substr(prefix.size())));
  auto base = "https://127.0.0.1:" + std::to_string(port) + "/v1";
  // A client that trusts the test CA (name checked: 127.0.0.1 is in the
  // certificate).
  {
    tls_options tls;
    tls.ca_file = tls_dir + "/ca.pem";
    tls.server_name = "127.0.0.1";
    http_client client{port, tls};
    auto res = client.embed(embed_body({"secure"}, 8),
                            {{"Authorization", "Bearer tls-token"}});
    CHECK(vectors_of(res, 1, 8)[0] == hash_embed("secure", 8));
    CHECK(res.keep_alive);
    // Keep-alive over TLS.
    CHECK(client.request("GET", "/healthz").status == 200);
    // A request and a reply each larger than a TLS record (16 KiB): the
    // reply's head and body went out as a gather write that once stopped
    // after the head (http_front.cpp, session::write).
    std::vector<std::string> many;
    for (int i = 0; i < 64; ++i)
      many.push_back("secure text " + std::to_string(i)
                     + std::string(300, 'x'));
    auto body = embed_body(many, 256);
    REQUIRE(body.size() > 16 * 1024);
    auto big = client.embed(body, {{"Authorization", "Bearer tls-token"}});
    REQUIRE(big.body.size() > 16 * 1024);
    auto vecs = vectors_of(big, many.size(), 256);
    for (std::size_t i = 0; i < many.size(); ++i)
      CHECK(vecs[i] == hash_embed(many[i], 256));
    CHECK(client.connects() == 1);
  }
  // One that trusts another CA fails the handshake; plain HTTP gets nothing.
  {
    tls_options tls;
    tls.ca_file = tls_dir + "/other.pem";
    tls.server_name = "127.0.0.1";
    http_client client{port, tls};
    CHECK(client.request("GET", "/healthz").error == failure::tls);
    http_client plain{port};
    auto res = plain.request("GET", "/healthz", {}, {}, milliseconds{3000});
    CHECK_FALSE(res.ok());
  }
  // The official OpenAI Node SDK with the CA in NODE_EXTRA_CA_CERTS (and
  // without it: refused).
  REQUIRE(access(EMBEDRT_SDK_DIR "/node_modules/openai/package.json", R_OK)
          == 0);
  auto probe = [&](std::vector<std::string> extra) {
    // The test's own environment may name a CA file already: replaced.
    std::vector<std::string> env;
    for (auto& kv : clean_env())
      if (kv.rfind("NODE_EXTRA_CA_CERTS=", 0) != 0)
        env.push_back(std::move(kv));
    for (auto& kv : extra)
      env.push_back(std::move(kv));
    process node{EMBEDRT_NODE,
                 {EMBEDRT_SDK_DIR "/tls_probe.mjs", base, "tls-token"},
                 std::move(env)};
    auto out = node.read_line(milliseconds{30000});
    CHECK(node.wait_exit(milliseconds{10000}) == 0);
    REQUIRE(out);
    return *out;
  };
  auto ok = probe({"NODE_EXTRA_CA_CERTS=" + tls_dir + "/ca.pem"});
  INFO("probe: " << ok);
  CHECK_THAT(ok, Catch::StartsWith("{\"ok\":true,\"vectors\":[["));
  // The vectors are the mock's for these texts.
  rapidjson::Document doc;
  doc.Parse(ok.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc["vectors"].IsArray());
  REQUIRE(doc["vectors"].Size() == 2);
  const char* texts[] = {"over tls", "second"};
  for (rapidjson::SizeType i = 0; i < 2; ++i) {
    auto want = hash_embed(texts[i], 8);
    const auto& got = doc["vectors"][i];
    REQUIRE(got.Size() == want.size());
    for (rapidjson::SizeType j = 0; j < got.Size(); ++j)
      CHECK(got[j].GetDouble() == Approx(want[j]).margin(1e-6));
  }
  auto refused = probe({});
  INFO("probe without the CA: " << refused);
  CHECK_THAT(refused, Catch::StartsWith("{\"ok\":false"));
}

TEST_CASE("serve: TLS settings errors") {
  const std::string tls_dir = EMBEDRT_TEST_DATA_DIR "/tls";
  mock_proc mock;
  // Only one of the two: bad usage.
  process half{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
                "--tls-cert", tls_dir + "/server.pem"}};
  CHECK(half.wait_exit(milliseconds{10000}) == 2);
  CHECK_THAT(half.stderr_text(), Catch::Contains("--tls-key"));
  // A key that does not load or match: cannot start.
  process bad{{"serve", "--listen", "127.0.0.1:0", "--upstream", mock.url,
               "--tls-cert", tls_dir + "/server.pem", "--tls-key",
               tls_dir + "/node.key"}};
  CHECK(bad.wait_exit(milliseconds{10000}) == 1);
  CHECK_THAT(bad.stderr_text(), Catch::Contains("cannot load the TLS key"));
}
