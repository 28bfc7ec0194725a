// Shared set-up of the integration tests that run the runtime against the
// built-in upstream in-process on 127.0.0.1.
#pragma once

#include "embedrt/log.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "mock/mock_server.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>
#include <memory>

namespace embedrt::test {

/// An actor system with embedrt's types registered, logging errors only.
struct system_fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  system_fixture() {
    register_types(cfg);
    set_log_level(log_level::error);
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

/// Starts the built-in upstream on an ephemeral port (fails the test if not).
inline std::unique_ptr<mock::mock_server> start_mock(mock::mock_options opts
                                                     = {}) {
  auto srv = std::make_unique<mock::mock_server>(std::move(opts));
  REQUIRE(srv->start() != 0);
  return srv;
}

/// Options of a built-in upstream that answers every request after `ms`.
inline mock::mock_options slow_upstream(int ms) {
  mock::mock_options opts;
  opts.latency.kind = mock::latency_model::shape::fixed;
  opts.latency.fixed_ms = ms;
  return opts;
}

/// Options of a built-in upstream that answers every request with `f`.
inline mock::mock_options faulty(mock::fault f) {
  mock::mock_options o;
  o.faults.push_back({f, 1.0});
  return o;
}

} // namespace embedrt::test
