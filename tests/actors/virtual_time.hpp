// The few lines of CAF's test_coordinator_fixture that the actor tests need,
// for Catch2: an actor system on the `testing` scheduler, whose clock only
// moves when a test advances it (no sleeps, no threads).
#pragma once

#include "embedrt/protocol/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <chrono>
#include <memory>

namespace embedrt::testing {

struct virtual_time {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;

  virtual_time() {
    register_types(cfg);
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    // Away from the clock's epoch, so that "now minus a period" is a real time.
    sched->clock().current_time += std::chrono::hours(1);
  }

  virtual_time(const virtual_time&) = delete;
  virtual_time& operator=(const virtual_time&) = delete;

  ~virtual_time() {
    // Request timeouts stay scheduled (holding their actor) until they fire,
    // even after the response arrived: fire them so every actor can end.
    sched->run();
    while (sched->trigger_timeout())
      sched->run();
  }

  caf::actor_clock::time_point now() const {
    return sched->clock().now();
  }
};

} // namespace embedrt::testing
