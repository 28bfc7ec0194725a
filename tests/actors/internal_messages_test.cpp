// Every runtime-internal message (actors/src/messages.hpp) has an inspect()
// that covers every field: a round trip with every field set to a distinct
// non-default value, and the struct's members counted against the fields
// inspect() passes (tests/support/inspect_check.hpp).
#include "cache_messages.hpp"
#include "embedrt/service.hpp"
#include "messages.hpp"
#include "support/inspect_check.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;
using embedrt::test::check_inspect_covers_every_field;

namespace {

/// An actor system with the runtime's types, for messages that hold a
/// caf::error (its context is a message of registered types).
struct typed_system {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  typed_system() {
    register_types(cfg);
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

} // namespace

TEST_CASE("inspect covers every field of the runtime-internal messages",
          "[inspect]") {
  typed_system ts;
  SECTION("upstream_call") {
    check_inspect_covers_every_field(upstream_call{"model-u",
                                                   {"a", "b"},
                                                   {{3, 4}},
                                                   17,
                                                   512,
                                                   "user-3",
                                                   2500ms,
                                                   true,
                                                   true,
                                                   "req-4"},
                                     ts.sys.get());
  }
  SECTION("connection_call") {
    check_inspect_covers_every_field(
        connection_call{
            42, "model-c", {"x"}, {{9}}, 256, "user-5", 900ms, true},
        ts.sys.get());
  }
  SECTION("call_result") {
    check_inspect_covers_every_field(
        call_result{7,
                    make_error(errc::upstream_error, "upstream said no", 503),
                    true,
                    1200,
                    "model-r",
                    {{0.25f, -0.5f}},
                    {13, 21},
                    "up-req-8",
                    true,
                    true,
                    99000,
                    5,
                    6000,
                    100,
                    1000000,
                    12000000,
                    6000000000,
                    true,
                    true,
                    true,
                    true,
                    true,
                    true},
        ts.sys.get());
  }
  SECTION("breaker_view") {
    check_inspect_covers_every_field(breaker_view{3, breaker_state::half_open,
                                                  750ms, 2, 4,
                                                  "1 probe after 3 failures"},
                                     ts.sys.get());
  }
  SECTION("breaker_outcome") {
    check_inspect_covers_every_field(
        breaker_outcome{9, call_verdict::failure, 3000, "upstream 503"},
        ts.sys.get());
  }
  SECTION("http_outcome") {
    check_inspect_covers_every_field(http_outcome{transport_errc::timeout,
                                                  "timed out",
                                                  429,
                                                  "{\"error\":{}}",
                                                  1500,
                                                  1,
                                                  "req-x",
                                                  "rate_limit_exceeded",
                                                  "input",
                                                  "slow down",
                                                  true,
                                                  true,
                                                  123456,
                                                  17,
                                                  4000,
                                                  500,
                                                  90000,
                                                  1000000,
                                                  6000000000,
                                                  true},
                                     ts.sys.get());
  }
  SECTION("cache_answer") {
    check_inspect_covers_every_field(
        cache_answer{{0, 1, 2}, {0, 7, 9}, {{1.5f}, {}, {}}, 4, true},
        ts.sys.get());
  }
  SECTION("cache_settle") {
    check_inspect_covers_every_field(cache_settle{3,
                                                  {7, 9},
                                                  {0.25f, 0.5f, 1.0f},
                                                  2,
                                                  {2, 1},
                                                  {11},
                                                  {13, 15},
                                                  true,
                                                  true},
                                     ts.sys.get());
  }
}

TEST_CASE("a cache settle gives back each ticket's vector, equal lengths or "
          "not",
          "[messages]") {
  auto collect = [](const cache_settle& s) {
    std::vector<std::pair<uint64_t, std::vector<float>>> out;
    s.for_each([&](uint64_t t, const float* data, std::size_t size) {
      out.emplace_back(t, std::vector<float>(data, data + size));
    });
    return out;
  };
  using entries = std::vector<std::pair<uint64_t, std::vector<float>>>;
  cache_settle same;
  same.add(1, {1, 2});
  same.add(2, {3, 4});
  CHECK(same.sizes.empty());
  CHECK(same.dims == 2);
  CHECK(collect(same) == entries{{1, {1, 2}}, {2, {3, 4}}});
  // A length that differs switches to one size per vector, the earlier
  // ones included; an empty vector is a vector too.
  cache_settle mixed;
  mixed.add(1, {1, 2});
  mixed.add(2, {3, 4});
  mixed.add(3, {5});
  mixed.add(4, {});
  mixed.add(5, {6, 7, 8});
  CHECK(mixed.sizes == std::vector<uint32_t>{2, 2, 1, 0, 3});
  CHECK(
      collect(mixed)
      == entries{{1, {1, 2}}, {2, {3, 4}}, {3, {5}}, {4, {}}, {5, {6, 7, 8}}});
  // A settle whose floats run short stops at the vector they cannot hold.
  auto cut = mixed;
  cut.floats.resize(5);
  CHECK(collect(cut) == entries{{1, {1, 2}}, {2, {3, 4}}, {3, {5}}, {4, {}}});
}
