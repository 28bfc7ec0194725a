#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/message.hpp>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace embedrt;
using namespace std::chrono_literals;

namespace embedrt {

// Field-by-field equality for the checks below (the structs are plain
// aggregates and need no operator== in production code).
inline bool operator==(const embed_request& a, const embed_request& b) {
  return a.model == b.model && a.inputs == b.inputs
      && a.dimensions == b.dimensions && a.user == b.user
      && a.timeout == b.timeout && a.request_id == b.request_id;
}

inline bool operator==(const token_usage& a, const token_usage& b) {
  return a.prompt_tokens == b.prompt_tokens && a.total_tokens == b.total_tokens;
}

inline bool operator==(const embed_result& a, const embed_result& b) {
  return a.model == b.model && a.embeddings == b.embeddings
      && a.usage == b.usage && a.upstream == b.upstream
      && a.request_id == b.request_id;
}

inline bool operator==(const upstream_health& a, const upstream_health& b) {
  return a.name == b.name && a.base_url == b.base_url && a.state == b.state
      && a.connections == b.connections
      && a.idle_connections == b.idle_connections
      && a.queued_requests == b.queued_requests
      && a.upstream_calls == b.upstream_calls && a.connects == b.connects
      && a.reuses == b.reuses && a.restarts == b.restarts
      && a.rejected == b.rejected;
}

inline bool operator==(const health_report& a, const health_report& b) {
  return a.ready == b.ready && a.upstreams == b.upstreams;
}

} // namespace embedrt

namespace {

struct config : caf::actor_system_config {
  config() {
    register_types(*this);
    // One worker is plenty: these tests run no actors.
    set("scheduler.max-threads", 1);
  }
};

struct fixture {
  config cfg;
  caf::actor_system sys{cfg};

  std::vector<char> serialize(caf::message msg) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    auto err = sink(msg);
    if (err)
      FAIL("serialization failed: " << sys.render(err));
    return buf;
  }

  caf::message deserialize(const std::vector<char>& buf) {
    caf::message msg;
    caf::binary_deserializer source{sys, buf};
    auto err = source(msg);
    if (err)
      FAIL("deserialization failed: " << sys.render(err));
    CHECK(source.remaining() == 0);
    return msg;
  }

  // Serializes a value on its own (as a field of a message would be) and
  // reads it back.
  template <class T>
  T round_trip(T x) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    auto err = sink(x);
    if (err)
      FAIL("serialization failed: " << sys.render(err));
    CHECK_FALSE(buf.empty());
    T y{};
    caf::binary_deserializer source{sys, buf};
    err = source(y);
    if (err)
      FAIL("deserialization failed: " << sys.render(err));
    CHECK(source.remaining() == 0);
    return y;
  }
};

embed_request sample_request() {
  embed_request req;
  req.model = "text-embedding-3-small";
  req.inputs = {"first", "", "third \xE2\x82\xAC", std::string(1000, 'x')};
  req.dimensions = 256;
  req.user = "user-7";
  req.timeout = caf::timespan{2500ms};
  req.request_id = "req-42";
  return req;
}

embed_result sample_result() {
  embed_result res;
  res.model = "m";
  res.embeddings = {{0.25f, -0.5f, 1e-30f}, {}, {3.0f}};
  res.usage = {17, 19};
  res.upstream = "openai-primary";
  res.request_id = "req-42";
  return res;
}

health_report sample_health() {
  health_report rep;
  rep.ready = true;
  rep.upstreams = {{"a", "https://api.openai.com/v1", "up", 8, 3, 0},
                   {"b", "http://127.0.0.1:8080/v1", "breaker_open", 4, 0, 12,
                    1000, 7, 993, 2, 5}};
  return rep;
}

} // namespace

TEST_CASE_METHOD(fixture, "every message type round-trips", "[messages]") {
  SECTION("embed_request") {
    auto x = sample_request();
    auto y = round_trip(x);
    CHECK(y.model == x.model);
    CHECK(y.inputs == x.inputs);
    CHECK(y.dimensions == x.dimensions);
    CHECK(y.user == x.user);
    CHECK(y.timeout == x.timeout);
    CHECK(y.request_id == x.request_id);
    CHECK(y == x);
  }
  SECTION("embed_result") {
    auto x = sample_result();
    auto y = round_trip(x);
    CHECK(y.model == x.model);
    CHECK(y.embeddings == x.embeddings);
    CHECK(y.usage.prompt_tokens == 17);
    CHECK(y.usage.total_tokens == 19);
    CHECK(y.upstream == x.upstream);
    CHECK(y.request_id == x.request_id);
    CHECK(y == x);
  }
  SECTION("token_usage") {
    auto y = round_trip(token_usage{123456789012, 987654321098});
    CHECK(y.prompt_tokens == 123456789012);
    CHECK(y.total_tokens == 987654321098);
  }
  SECTION("upstream_health") {
    auto x = sample_health().upstreams[1];
    auto y = round_trip(x);
    CHECK(y.name == "b");
    CHECK(y.base_url == x.base_url);
    CHECK(y.state == "breaker_open");
    CHECK(y.connections == 4);
    CHECK(y.idle_connections == 0);
    CHECK(y.queued_requests == 12);
    CHECK(y.upstream_calls == 1000);
    CHECK(y.connects == 7);
    CHECK(y.reuses == 993);
    CHECK(y.restarts == 2);
    CHECK(y.rejected == 5);
  }
  SECTION("health_report") {
    auto x = sample_health();
    auto y = round_trip(x);
    CHECK(y.ready);
    REQUIRE(y.upstreams.size() == 2);
    CHECK(y.upstreams[0] == x.upstreams[0]);
    CHECK(y.upstreams[1] == x.upstreams[1]);
  }
}

TEST_CASE_METHOD(fixture, "messages that cross nodes serialize", "[messages]") {
  auto req = sample_request();
  auto in = deserialize(serialize(caf::make_message(embed_atom_v, req)));
  REQUIRE(in.match_elements<embed_atom, embed_request>());
  CHECK(in.get_as<embed_request>(1) == req);

  auto res = sample_result();
  auto out = deserialize(serialize(caf::make_message(res)));
  REQUIRE(out.match_elements<embed_result>());
  CHECK(out.get_as<embed_result>(0) == res);

  auto rep = sample_health();
  auto health = deserialize(serialize(caf::make_message(health_atom_v, rep)));
  REQUIRE(health.match_elements<health_atom, health_report>());
  CHECK(health.get_as<health_report>(1) == rep);
}

TEST_CASE_METHOD(fixture, "embedrt errors keep code and context",
                 "[messages][errors]") {
  auto err = make_error(errc::rate_limited, "slow down", 429, 1500ms);
  auto check = [](const caf::error& e) {
    CHECK(e.category() == error_category());
    CHECK(error_code(e) == errc::rate_limited);
    CHECK(error_detail(e) == "slow down");
    CHECK(error_http_status(e) == 429);
    CHECK(error_retry_after(e) == 1500ms);
  };
  check(err);
  check(round_trip(err));
  // Inside a message, as a reply crossing nodes carries it.
  auto msg = deserialize(serialize(caf::make_message(err)));
  REQUIRE(msg.match_elements<caf::error>());
  check(msg.get_as<caf::error>(0));

  auto upstream = round_trip(
      make_error(errc::upstream_error, "HTTP 502 from upstream", 502));
  CHECK(error_code(upstream) == errc::upstream_error);
  CHECK(error_http_status(upstream) == 502);
  CHECK(error_retry_after(upstream) == 0ms);
}

TEST_CASE_METHOD(fixture, "embedrt errors render as embedrt.<code>: detail",
                 "[messages][errors]") {
  auto err
      = make_error(errc::breaker_open, "upstream 'a' is failing", 0, 250ms);
  CHECK(render_error(err) == "embedrt.breaker_open: upstream 'a' is failing");
  CHECK(sys.render(err) == "embedrt.breaker_open: upstream 'a' is failing");
  CHECK(sys.render(round_trip(err))
        == "embedrt.breaker_open: upstream 'a' is failing");
  CHECK(render_error(make_error(errc::invalid_input, "input[3] is empty"))
        == "embedrt.invalid_input: input[3] is empty");
  // Errors of other categories are rendered by CAF.
  caf::error other = caf::make_error(caf::sec::request_timeout);
  CHECK(error_code(other) == errc::none);
  CHECK(render_error(other) == caf::to_string(other));
  CHECK(render_error(caf::error{}) == "none");
}

TEST_CASE("errc names round-trip", "[messages][errors]") {
  for (uint8_t i = 1; i <= static_cast<uint8_t>(errc::upstream_down); ++i) {
    auto code = static_cast<errc>(i);
    INFO(to_string(code));
    CHECK(errc_from_string(to_string(code)) == code);
  }
  CHECK(errc_from_string("no_such_error") == errc::none);
}
