// Fan-in of the pools' health: the service (`health`) and the metrics actor
// (`metrics` gauges) both ask every pool and combine the answers.
#pragma once

#include "interfaces.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <vector>

namespace embedrt::detail {

/// How long a pool may take to answer `health` before it counts as
/// unresponsive.
constexpr auto health_timeout = std::chrono::seconds{2};

/// Asks each of `pools` for its health and calls `done(answers)` once, with
/// one entry per pool in the same order (nullopt: no answer in time, or the
/// pool is gone or restarting). `done` runs in `self`'s context; it is
/// called at once when `pools` is empty.
template <class Self, class Done>
void collect_health(Self* self, const std::vector<pool_actor>& pools,
                    Done done) {
  struct job {
    explicit job(Done fn) : done(std::move(fn)) {}
    std::vector<std::optional<upstream_health>> answers;
    std::size_t pending = 0;
    Done done;
    void settle() {
      if (--pending == 0)
        done(std::move(answers));
    }
  };
  auto j = std::make_shared<job>(std::move(done));
  j->answers.resize(pools.size());
  j->pending = pools.size() + 1;
  for (std::size_t i = 0; i < pools.size(); ++i) {
    if (!pools[i]) {
      --j->pending;
      continue;
    }
    self->request(pools[i], health_timeout, health_atom_v)
        .then(
            [j, i](upstream_health& h) {
              j->answers[i] = std::move(h);
              j->settle();
            },
            [j](caf::error&) {
              j->settle();
            });
  }
  j->settle();
}

} // namespace embedrt::detail
