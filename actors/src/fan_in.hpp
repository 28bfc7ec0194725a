// Fan-in of the pools' health: the service (`health`) and the metrics actor
// (`metrics` gauges) both ask every pool and combine the answers, holding
// their caller's promise meanwhile.
#pragma once

#include "embedrt/protocol/errc.hpp"
#include "interfaces.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
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

/// A one-shot actor that collects the pools' health for another
/// (service_actor.cpp, `health_collector`).
using health_collector_actor
    = caf::typed_actor<caf::replies_to<health_atom>::with<health_answers>>;

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
