#include "health_check.hpp"

#include "connection_actor.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/provider.hpp"
#include "pool_actor.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/system_messages.hpp>

namespace embedrt::detail {

namespace {

using self_ptr = health_checker_actor::stateful_pointer<health_check_state>;

/// Longest time one check may take (the attempt timeout when shorter).
constexpr auto max_check_timeout = std::chrono::milliseconds{5000};

void spawn_connection(self_ptr self) {
  auto& st = self->state;
  if (st.env->connection_behavior) {
    using factory = decltype(st.env->connection_behavior);
    st.conn = self->spawn<caf::monitored>(
        [](connection_impl::pointer conn, const factory& fn) {
          return fn(conn);
        },
        st.env->connection_behavior);
  } else {
    st.conn
        = self->spawn<caf::monitored>(connection_actor_fn, st.env->conn_env);
  }
  *st.conn_box = st.conn;
}

void schedule(self_ptr self, caf::timespan wait) {
  auto& st = self->state;
  self->delayed_send(self, wait, check_atom_v, ++st.epoch);
}

void report(self_ptr self, bool ok, std::string why) {
  auto& st = self->state;
  if (auto pool = caf::actor_cast<health_listener>(st.pool))
    self->send(pool, checked_atom_v, ok, std::move(why));
}

void on_check(self_ptr self, uint64_t epoch) {
  auto& st = self->state;
  if (epoch != st.epoch || st.call_id != 0)
    return;
  connection_call cc;
  cc.call_id = st.epoch;
  cc.model = health_check_model(st.env->cfg);
  cc.inputs.emplace_back(health_check_input);
  cc.timeout
      = std::min<caf::timespan>(st.env->cfg.attempt_timeout, max_check_timeout);
  cc.float_only = true;
  st.call_id = cc.call_id;
  self->send(st.conn, call_atom_v, std::move(cc));
}

void on_result(self_ptr self, call_result& r) {
  auto& st = self->state;
  if (r.call_id != st.call_id || st.call_id == 0)
    return;
  st.call_id = 0;
  bool ok = !r.error || error_code(r.error) == errc::rate_limited;
  report(self, ok, ok ? std::string{} : render_error(r.error));
  schedule(self, st.env->cfg.health_check_interval);
}

} // namespace

int64_t health_check_tokens() {
  return static_cast<int64_t>(estimate_tokens(health_check_input));
}

std::string health_check_model(const upstream_config& cfg) {
  if (!cfg.health_check_model.empty())
    return cfg.health_check_model;
  if (!cfg.models.empty()) {
    auto mapped = cfg.model_map.find(cfg.models.front());
    return mapped != cfg.model_map.end() ? mapped->second : cfg.models.front();
  }
  if (!cfg.model_map.empty())
    return cfg.model_map.begin()->second;
  return "text-embedding-3-small";
}

health_checker_actor::behavior_type
health_check_fn(self_ptr self, std::shared_ptr<const pool_env> env,
                caf::actor_addr pool) {
  auto& st = self->state;
  st.env = std::move(env);
  st.pool = std::move(pool);
  spawn_connection(self);
  // Its connection ends with it (closing its socket).
  self->attach_functor([box = st.conn_box](const caf::error&) {
    if (*box)
      caf::anon_send_exit(*box, caf::exit_reason::user_shutdown);
  });
  // The connection died (a bug, or killed): the check in flight fails and a
  // fresh connection takes the next one.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source != st.conn.address())
      return;
    spawn_connection(self);
    if (st.call_id != 0) {
      st.call_id = 0;
      report(self, false, "the health check's connection died");
      schedule(self, st.env->cfg.health_check_interval);
    }
  });
  // The first check at once.
  self->send(self, check_atom_v, ++st.epoch);
  return {
      [self](result_atom, call_result& r) {
        on_result(self, r);
      },
      [self](check_atom, uint64_t epoch) {
        on_check(self, epoch);
      },
  };
}

} // namespace embedrt::detail
