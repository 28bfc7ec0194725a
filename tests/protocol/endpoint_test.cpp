#include "embedrt/protocol/endpoint.hpp"
#include "embedrt/protocol/errc.hpp"

#include <catch2/catch.hpp>
#include <string>

using namespace embedrt;

namespace {

base_url parsed(std::string_view text) {
  auto res = parse_base_url(text);
  if (!res)
    FAIL(error_detail(res.error()));
  return *res;
}

std::string rejection(std::string_view text) {
  auto res = parse_base_url(text);
  REQUIRE_FALSE(res);
  CHECK(error_code(res.error()) == errc::invalid_input);
  return error_detail(res.error());
}

} // namespace

TEST_CASE("parse_base_url reads scheme, host, port and path", "[endpoint]") {
  auto openai = parsed("https://api.openai.com/v1");
  CHECK(openai.tls);
  CHECK(openai.host == "api.openai.com");
  CHECK(openai.port == 443);
  CHECK(openai.path == "/v1");
  CHECK(openai.to_string() == "https://api.openai.com/v1");
  CHECK(openai.authority() == "api.openai.com");

  auto local = parsed("http://127.0.0.1:8080/v1/");
  CHECK_FALSE(local.tls);
  CHECK(local.host == "127.0.0.1");
  CHECK(local.port == 8080);
  CHECK(local.path == "/v1");
  CHECK(local.to_string() == "http://127.0.0.1:8080/v1");
  CHECK(local.authority() == "127.0.0.1:8080");

  auto bare = parsed("http://localhost");
  CHECK(bare.port == 80);
  CHECK(bare.path.empty());
  CHECK(bare.to_string() == "http://localhost");

  auto slash = parsed("HTTPS://example.com:8443//");
  CHECK(slash.tls);
  CHECK(slash.port == 8443);
  CHECK(slash.path.empty());
  CHECK(slash.to_string() == "https://example.com:8443");

  auto explicit_default = parsed("http://example.com:80/a/b");
  CHECK(explicit_default.port == 80);
  CHECK(explicit_default.to_string() == "http://example.com/a/b");

  auto azure = parsed(
      " https://res.openai.azure.com/openai/deployments/my-embed%20v2 ");
  CHECK(azure.host == "res.openai.azure.com");
  CHECK(azure.path == "/openai/deployments/my-embed%20v2");

  auto max_port = parsed("http://h:65535");
  CHECK(max_port.port == 65535);
}

TEST_CASE("parse_base_url reads bracketed IPv6 hosts", "[endpoint]") {
  auto v6 = parsed("http://[::1]:9000/v1");
  CHECK(v6.host == "::1");
  CHECK(v6.port == 9000);
  CHECK(v6.path == "/v1");
  CHECK(v6.authority() == "[::1]:9000");
  CHECK(v6.to_string() == "http://[::1]:9000/v1");
  auto v6_default = parsed("https://[2001:db8::7]");
  CHECK(v6_default.host == "2001:db8::7");
  CHECK(v6_default.port == 443);
  CHECK(v6_default.to_string() == "https://[2001:db8::7]");
}

TEST_CASE("parse_base_url rejects bad URLs without echoing them",
          "[endpoint]") {
  CHECK(rejection("ftp://example.com")
        == "invalid base URL: unsupported scheme (use http:// or https://)");
  CHECK(rejection("example.com/v1")
        == "invalid base URL: missing scheme (use http:// or https://)");
  CHECK(rejection("")
        == "invalid base URL: missing scheme (use http:// or https://)");
  CHECK(rejection("http://") == "invalid base URL: empty host");
  CHECK(rejection("http:///v1") == "invalid base URL: empty host");
  CHECK(rejection("http://:80/v1") == "invalid base URL: empty host");
  auto userinfo = rejection("https://user:s3cret@example.com/v1");
  CHECK(userinfo
        == "invalid base URL: user-info (user:password@) is not "
           "allowed");
  CHECK(userinfo.find("s3cret") == std::string::npos);
  CHECK(rejection("http://example.com/v1?x=1")
        == "invalid base URL: queries (?...) are not allowed");
  CHECK(rejection("http://example.com/v1#frag")
        == "invalid base URL: fragments (#...) are not allowed");
  for (auto port :
       {"http://h:", "http://h:abc", "http://h:-1", "http://h:123456"}) {
    INFO(port);
    CHECK(rejection(port) == "invalid base URL: invalid port");
  }
  CHECK(rejection("http://h:0")
        == "invalid base URL: port out of range "
           "(1-65535)");
  CHECK(rejection("http://h:65536")
        == "invalid base URL: port out of range "
           "(1-65535)");
  CHECK(rejection("http://::1/v1")
        == "invalid base URL: IPv6 addresses must be enclosed in brackets");
  CHECK(rejection("http://[::1/v1")
        == "invalid base URL: unterminated IPv6 address (missing ']')");
  CHECK(rejection("http://[]:80") == "invalid base URL: invalid IPv6 address");
  CHECK(rejection("http://[zz::1]")
        == "invalid base URL: invalid IPv6 address");
  CHECK(rejection("http://[::1]x")
        == "invalid base URL: unexpected characters after the IPv6 address");
  CHECK(rejection("http://exa mple.com")
        == "invalid base URL: invalid character in host");
  CHECK(rejection("http://example.com/v 1")
        == "invalid base URL: invalid character in path");
  CHECK(rejection("http://example.com/v1%zz")
        == "invalid base URL: invalid character in path");
}

TEST_CASE("embeddings_target per provider", "[endpoint]") {
  endpoint_config cfg;
  cfg.url = parsed("https://api.openai.com/v1");
  CHECK(embeddings_target(cfg) == "/v1/embeddings");
  cfg.provider = provider_kind::tei;
  CHECK(embeddings_target(cfg) == "/v1/embeddings");
  cfg.provider = provider_kind::generic;
  cfg.url = parsed("http://127.0.0.1:8080");
  CHECK(embeddings_target(cfg) == "/embeddings");
  cfg.provider = provider_kind::azure;
  cfg.url = parsed("https://res.openai.azure.com/openai/deployments/emb");
  CHECK(embeddings_target(cfg)
        == "/openai/deployments/emb/embeddings?api-version=2024-02-01");
  cfg.azure_api_version = "2024-10-21 preview&x";
  CHECK(embeddings_target(cfg)
        == "/openai/deployments/emb/embeddings?api-version="
           "2024-10-21%20preview%26x");
}

TEST_CASE("auth_header per provider", "[endpoint]") {
  auto bearer = auth_header(provider_kind::openai, "sk-test");
  CHECK(bearer.first == "Authorization");
  CHECK(bearer.second == "Bearer sk-test");
  CHECK(auth_header(provider_kind::tei, "k").first == "Authorization");
  CHECK(auth_header(provider_kind::generic, "k").second == "Bearer k");
  auto azure = auth_header(provider_kind::azure, "az-key");
  CHECK(azure.first == "api-key");
  CHECK(azure.second == "az-key");
  for (auto kind : {provider_kind::openai, provider_kind::azure}) {
    auto none = auth_header(kind, "");
    CHECK(none.first.empty());
    CHECK(none.second.empty());
  }
}
