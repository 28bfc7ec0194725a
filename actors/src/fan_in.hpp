// Fan-in of the pools' health: the service (`health`) and the metrics actor
// (`metrics` gauges) both ask every pool and combine the answers, holding
// their caller's promise meanwhile.
#pragma once

#include "embedrt/protocol/errc.hpp"
#include "interfaces.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace embedrt::detail {

/// How long a pool may take to answer `health` before it counts as
/// unresponsive.
constexpr auto health_timeout = std::chrono::seconds{2};

/// The answers of `collect_health` as one message (never leaves the node).
struct health_answers {
  std::vector<std::optional<upstream_health>> answers;
};

/// The one-shot actor `collect_health` asks (below).
using health_collector_actor
    = caf::typed_actor<caf::replies_to<health_atom>::with<health_answers>>;

/// Asks each of `pools` for its health, with `health_timeout`, and calls
/// `done(answers)` once in `self`'s context (at once when `pools` is empty).
/// Only `health_collector` calls it: see `collect_health` for why.
template <class Self, class Done>
void ask_pools_health(Self* self, const std::vector<pool_actor>& pools,
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

/// Asks the pools for their health, answers with what it got and ends.
/// (The pools come as a spawn argument: CAF 0.17.6 dereferences a null
/// argument tuple when spawning a function with none, UBSan.)
inline health_collector_actor::behavior_type
health_collector(health_collector_actor::pointer self,
                 std::vector<pool_actor> pools) {
  return {
      [self, pools](health_atom) -> caf::result<health_answers> {
        auto rp = self->make_response_promise<health_answers>();
        ask_pools_health(
            self, pools,
            [self,
             rp](std::vector<std::optional<upstream_health>> answers) mutable {
              rp.deliver(health_answers{std::move(answers)});
              self->quit();
            });
        return rp;
      },
  };
}

/// Asks each of `pools` for its health and calls `done(answers)` once, with
/// one entry per pool in the same order (nullopt: no answer in time, or the
/// pool is gone or restarting). `done` runs in `self`'s context; it is
/// called at once when `pools` is empty.
///
/// The timed requests are made by a one-shot `health_collector`, which
/// `self` asks without a timeout: a CAF 0.17 request timeout holds its
/// requester in the clock until it fires, and an actor whose last reference
/// the clock thread drops is destroyed there. When that actor's end ends
/// many others (the service and its request actors), their ends fill the
/// clock's bounded queue faster than the clock thread, busy destroying it,
/// drains it, and its own push then waits for itself (docs/architecture.md,
/// "Request actors are reused"). The collector ends on a worker once it has
/// answered, so the clock only ever releases an ended collector.
template <class Self, class Done>
void collect_health(Self* self, std::vector<pool_actor> pools, Done done) {
  auto count = pools.size();
  if (count == 0) {
    done(std::vector<std::optional<upstream_health>>{});
    return;
  }
  auto d = std::make_shared<Done>(std::move(done));
  // If the collector died instead of answering, no pool counts as having
  // answered.
  self->request(self->spawn(health_collector, std::move(pools)), caf::infinite,
                health_atom_v)
      .then(
          [d](health_answers& a) {
            (*d)(std::move(a.answers));
          },
          [d, count](caf::error&) {
            (*d)(std::vector<std::optional<upstream_health>>(count));
          });
}

/// Promises an actor holds while it collects an answer, by id. Whatever is
/// still held when the holder (an actor's state) is destroyed is answered
/// `cancelled` with `why`: the actor's death drops no caller.
template <class T>
class held_promises {
 public:
  explicit held_promises(std::string why) : why_(std::move(why)) {
    // nop
  }

  held_promises(const held_promises&) = delete;
  held_promises& operator=(const held_promises&) = delete;

  ~held_promises() {
    for (auto& [id, rp] : held_)
      rp.deliver(make_error(errc::cancelled, why_));
  }

  /// Holds `rp`; returns its id for `deliver`.
  uint64_t hold(caf::typed_response_promise<T> rp) {
    auto id = ++next_id_;
    held_.emplace(id, std::move(rp));
    return id;
  }

  /// Answers the promise `id` with `value` (nothing if already answered).
  void deliver(uint64_t id, T value) {
    auto i = held_.find(id);
    if (i == held_.end())
      return;
    i->second.deliver(std::move(value));
    held_.erase(i);
  }

  /// Answers the promise `id` with `err` (nothing if already answered).
  void fail(uint64_t id, caf::error err) {
    auto i = held_.find(id);
    if (i == held_.end())
      return;
    i->second.deliver(std::move(err));
    held_.erase(i);
  }

 private:
  std::string why_;
  std::map<uint64_t, caf::typed_response_promise<T>> held_;
  uint64_t next_id_ = 0;
};

} // namespace embedrt::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(embedrt::detail::health_answers)
