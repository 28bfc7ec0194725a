// Helpers shared by the mock server tests.
#pragma once

#include "mock/mock_server.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>
#include <string>
#include <string_view>
#include <utility>

namespace embedrt::test {

/// A mock server started on 127.0.0.1, port 0, for one test.
struct running_mock {
  explicit running_mock(mock::mock_options opts = {})
      : server(std::move(opts)) {
    port = server.start();
    INFO("start error: " << server.error());
    REQUIRE(port != 0);
  }

  mock::mock_server server;
  uint16_t port = 0;
};

/// Parses a JSON body; `HasParseError()` tells whether it was valid.
inline rapidjson::Document parse_json(std::string_view body) {
  rapidjson::Document doc;
  doc.Parse(body.data(), body.size());
  return doc;
}

/// Checks that `body` is an OpenAI error of `type`, returns its message.
inline std::string error_message(std::string_view body, std::string_view type) {
  auto doc = parse_json(body);
  INFO("body: " << body);
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc.IsObject());
  REQUIRE(doc.HasMember("error"));
  const auto& err = doc["error"];
  REQUIRE(err.IsObject());
  REQUIRE(err.HasMember("message"));
  REQUIRE(err.HasMember("type"));
  REQUIRE(err.HasMember("param"));
  REQUIRE(err.HasMember("code"));
  CHECK(std::string_view{err["type"].GetString()} == type);
  return err["message"].GetString();
}

/// The `param` or `code` of an error body ("" for null).
inline std::string error_field(std::string_view body, const char* field) {
  auto doc = parse_json(body);
  REQUIRE_FALSE(doc.HasParseError());
  const auto& v = doc["error"][field];
  return v.IsString() ? std::string{v.GetString()} : std::string{};
}

/// The directory of the test TLS material.
inline std::string tls_file(const char* name) {
  return std::string{EMBEDRT_TEST_DATA_DIR} + "/tls/" + name;
}

} // namespace embedrt::test
