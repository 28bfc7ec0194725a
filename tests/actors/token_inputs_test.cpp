// Token-array inputs and usage in the request and pool actors, in virtual
// time (CAF's test_coordinator, no sockets): the usage of a merged call is
// split by each caller's tokens and sums to the upstream's total; a merged
// call never mixes texts and token arrays; the request actor sends token
// arrays on unchanged, chunks them by their exact counts and refuses them
// for a provider that cannot take them; unknown models and too many inputs
// are refused before any call.
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/provider.hpp"
#include "embedrt/service.hpp"
#include "pool_actor.hpp"
#include "request_actor.hpp"
#include "virtual_time.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <catch2/catch.hpp>
#include <memory>
#include <numeric>
#include <vector>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;

using embedrt::testing::virtual_time;

namespace {

int64_t sum_prompt(const std::vector<token_usage>& parts) {
  int64_t n = 0;
  for (auto& p : parts)
    n += p.prompt_tokens;
  return n;
}

} // namespace

TEST_CASE("split_usage: shares by tokens, parts sum to the total exactly",
          "[pool][usage]") {
  // Exact shares stay exact.
  auto parts = split_usage({123, 123}, {20, 60, 43});
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].prompt_tokens == 20);
  CHECK(parts[1].prompt_tokens == 60);
  CHECK(parts[2].prompt_tokens == 43);
  CHECK(parts[2].total_tokens == 43);
  // Rounding: 10 over three equal callers is 4, 3, 3 (the leftover to the
  // largest remainder, the earlier caller on a tie), never 3, 3, 3.
  parts = split_usage({10, 10}, {1, 1, 1});
  CHECK(parts[0].prompt_tokens == 4);
  CHECK(parts[1].prompt_tokens == 3);
  CHECK(parts[2].prompt_tokens == 3);
  // The largest remainder wins: 7 * (5, 3, 2) / 10 = 3.5, 2.1, 1.4.
  parts = split_usage({7, 7}, {5, 3, 2});
  CHECK(parts[0].prompt_tokens == 4);
  CHECK(parts[1].prompt_tokens == 2);
  CHECK(parts[2].prompt_tokens == 1);
  // prompt and total are split on their own.
  parts = split_usage({9, 12}, {1, 2});
  CHECK(parts[0].prompt_tokens == 3);
  CHECK(parts[1].prompt_tokens == 6);
  CHECK(parts[0].total_tokens == 4);
  CHECK(parts[1].total_tokens == 8);
  // No weights: equal shares; no usage: zeros.
  parts = split_usage({5, 5}, {0, 0});
  CHECK(parts[0].prompt_tokens == 3);
  CHECK(parts[1].prompt_tokens == 2);
  parts = split_usage({0, 0}, {4, 9});
  CHECK(parts[0].prompt_tokens == 0);
  CHECK(parts[1].prompt_tokens == 0);
  // Any mix sums to the total.
  for (int64_t total : {0, 1, 7, 123, 99991, 3000000}) {
    std::vector<std::size_t> w{3, 17, 1, 250, 8, 8, 40, 1};
    INFO("total " << total);
    CHECK(sum_prompt(split_usage({total, total}, w)) == total);
  }
}

namespace {

/// A fake upstream behind the pool: records each call and answers with one
/// vector per input and usage = the inputs' tokens (estimate_tokens of a
/// text, the ids of a token array), like the built-in upstream.
struct fake_upstream {
  std::vector<connection_call> calls;
};

std::shared_ptr<pool_env> batching_pool_env(std::shared_ptr<fake_upstream> up) {
  auto env = std::make_shared<pool_env>();
  env->cfg.name = "fake";
  env->cfg.connections = 1;
  env->cfg.max_queue = 100;
  env->profile = profile_for(provider_kind::openai);
  env->batching = true;
  env->connection_behavior
      = [up](connection_impl::pointer self) -> connection_impl::behavior_type {
    return {
        [self, up](call_atom, connection_call& call) {
          call_result r;
          r.call_id = call.call_id;
          r.model = call.model;
          int64_t tokens = 0;
          for (auto& text : call.inputs)
            tokens += static_cast<int64_t>(estimate_tokens(text));
          for (auto& ids : call.token_inputs)
            tokens += static_cast<int64_t>(ids.size());
          auto n = call.inputs.size() + call.token_inputs.size();
          for (std::size_t i = 0; i < n; ++i)
            r.embeddings.push_back({1.0f, static_cast<float>(i)});
          r.usage = {tokens, tokens};
          up->calls.push_back(std::move(call));
          self->send(
              caf::actor_cast<connection_listener>(self->current_sender()),
              result_atom_v, std::move(r));
        },
        [](io_done_atom, http_outcome&) {
          // nop
        },
    };
  };
  return env;
}

upstream_call text_call(std::vector<std::string> texts) {
  upstream_call call;
  call.model = "m";
  call.inputs = std::move(texts);
  for (auto& t : call.inputs)
    call.tokens += static_cast<int64_t>(estimate_tokens(t));
  return call;
}

upstream_call token_call(std::vector<std::vector<int32_t>> ids) {
  upstream_call call;
  call.model = "m";
  call.token_inputs = std::move(ids);
  for (auto& i : call.token_inputs)
    call.tokens += static_cast<int64_t>(i.size());
  return call;
}

} // namespace

TEST_CASE("pool: merged calls never mix texts and token arrays, and each "
          "caller gets its own usage",
          "[pool][usage]") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{batching_pool_env(up)});
  vt.sched->run();
  caf::scoped_actor self{*vt.sys};
  // The first call takes the one connection; the rest queue and are merged
  // when it is idle again: texts with texts, token arrays with token arrays.
  std::vector<upstream_call> calls{
      text_call({"first caller"}),
      text_call({"a", "bb bb"}),
      text_call({"a much longer text of the third caller", "x"}),
      token_call({{1, 2, 3}, {4}}),
      token_call({{5, 6, 7, 8, 9, 10, 11}}),
      text_call({"after the token arrays"}),
  };
  std::vector<int64_t> own;
  for (auto& c : calls) {
    own.push_back(c.tokens);
    self->send(pool, call_atom_v, c);
  }
  vt.sched->run();
  REQUIRE(up->calls.size() == 4);
  CHECK(up->calls[0].inputs.size() == 1);
  CHECK(up->calls[1].inputs.size() == 4); // callers 2 and 3
  CHECK(up->calls[1].token_inputs.empty());
  CHECK(up->calls[2].inputs.empty()); // callers 4 and 5
  CHECK(up->calls[2].token_inputs
        == std::vector<std::vector<int32_t>>{
            {1, 2, 3}, {4}, {5, 6, 7, 8, 9, 10, 11}});
  CHECK(up->calls[3].inputs.size() == 1);
  std::vector<call_result> answers;
  while (!self->mailbox().empty())
    self->receive([&](call_result& r) {
      answers.push_back(std::move(r));
    });
  REQUIRE(answers.size() == calls.size());
  // Answers arrive in call order (one connection, FIFO).
  for (std::size_t i = 0; i < answers.size(); ++i) {
    INFO("caller " << i);
    CHECK_FALSE(answers[i].error);
    CHECK(answers[i].usage.prompt_tokens == own[i]);
    CHECK(answers[i].embeddings.size() == input_count(calls[i]));
  }
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

namespace {

/// A pool that records each call and answers it (one vector per input,
/// usage = the call's tokens).
pool_actor::behavior_type
recording_pool(pool_actor::pointer self,
               std::shared_ptr<std::vector<upstream_call>> seen) {
  return {
      [self, seen](call_atom, upstream_call& call) -> call_result {
        call_result r;
        r.model = call.model;
        for (std::size_t i = 0; i < input_count(call); ++i)
          r.embeddings.push_back({static_cast<float>(i)});
        r.usage = {call.tokens, call.tokens};
        seen->push_back(std::move(call));
        return r;
      },
      [](health_atom) {
        return upstream_health{};
      },
  };
}

route route_to(const pool_actor& pool, provider_kind kind) {
  route rt;
  rt.pool = pool;
  rt.name = "up";
  rt.profile = profile_for(kind);
  rt.model = "upstream-m";
  return rt;
}

caf::expected<embed_result> ask(virtual_time& vt, std::vector<route> routes,
                                embed_request req) {
  auto env = std::make_shared<request_env>();
  auto hdl = vt.sys->spawn(request_actor_fn, request_owner{}, uint64_t{1});
  caf::scoped_actor self{*vt.sys};
  self->send(hdl, embed_atom_v, request_job{env, std::move(routes), {}, {}},
             std::move(req));
  vt.sched->run();
  REQUIRE(!self->mailbox().empty());
  caf::expected<embed_result> out{caf::error{}};
  self->receive(
      [&](embed_result& r) {
        out = std::move(r);
      },
      [&](caf::error& err) {
        out = std::move(err);
      });
  return out;
}

embed_request token_request(std::vector<std::vector<int32_t>> ids) {
  embed_request req;
  req.model = "m";
  req.token_inputs = std::move(ids);
  return req;
}

} // namespace

TEST_CASE("request actor: token arrays go to the pool unchanged, chunked by "
          "their exact counts",
          "[request][tokens]") {
  virtual_time vt;
  auto seen = std::make_shared<std::vector<upstream_call>>();
  auto pool = vt.sys->spawn(recording_pool, seen);
  // A small token cap per upstream request: chunks by exact id counts.
  auto rt = route_to(pool, provider_kind::generic);
  rt.profile.max_tokens_per_request = 10;
  auto res = ask(
      vt, {rt}, token_request({{1, 2, 3, 4}, {5, 6, 7, 8, 9}, {10, 11}, {12}}));
  REQUIRE(res);
  CHECK(res->embeddings.size() == 4);
  CHECK(res->usage.prompt_tokens == 12);
  // 4 + 5 ids fit 10; 2 + 1 go in the next call.
  REQUIRE(seen->size() == 2);
  CHECK((*seen)[0].inputs.empty());
  CHECK((*seen)[0].token_inputs
        == std::vector<std::vector<int32_t>>{{1, 2, 3, 4}, {5, 6, 7, 8, 9}});
  CHECK((*seen)[0].tokens == 9);
  CHECK((*seen)[0].model == "upstream-m");
  CHECK((*seen)[1].token_inputs
        == std::vector<std::vector<int32_t>>{{10, 11}, {12}});
  CHECK((*seen)[1].tokens == 3);
}

TEST_CASE("request actor: refusals before any call (token arrays for TEI, "
          "both shapes, too many inputs, unknown model)",
          "[request][tokens]") {
  virtual_time vt;
  auto seen = std::make_shared<std::vector<upstream_call>>();
  auto pool = vt.sys->spawn(recording_pool, seen);
  auto refused = [&](std::vector<route> routes, embed_request req) {
    auto res = ask(vt, std::move(routes), std::move(req));
    REQUIRE_FALSE(res);
    CHECK(error_code(res.error()) == errc::invalid_input);
    return res.error();
  };
  // A TEI upstream among the candidates: failover could reach it.
  auto err = refused({route_to(pool, provider_kind::openai),
                      route_to(pool, provider_kind::tei)},
                     token_request({{1, 2}}));
  CHECK(error_detail(err)
        == "token-array inputs are not supported by a tei upstream: send the "
           "text");
  auto both = token_request({{1}});
  both.inputs = {"text"};
  err = refused({route_to(pool, provider_kind::openai)}, both);
  CHECK(error_detail(err) == "inputs are texts or token arrays, not both");
  // The caller's limit, not the upstream call's: a TEI upstream takes 32 per
  // call but a caller may send 2,048 (split), not 2,049; configurable.
  embed_request many;
  many.model = "m";
  many.inputs.assign(2049, "x");
  err = refused({route_to(pool, provider_kind::tei)}, many);
  CHECK(error_detail(err) == "too many inputs: 2049 > 2048 per request");
  auto small = route_to(pool, provider_kind::openai);
  small.profile.max_request_inputs = 3;
  many.inputs.assign(4, "x");
  err = refused({small}, many);
  CHECK(error_detail(err) == "too many inputs: 4 > 3 per request");
  // No route: OpenAI's 404 for an unknown model.
  err = refused({}, token_request({{1}}));
  CHECK(error_http_status(err) == 404);
  CHECK(seen->empty());
  // 2,048 texts to a TEI upstream are split into calls of 32.
  many.inputs.assign(2048, "x");
  auto res = ask(vt, {route_to(pool, provider_kind::tei)}, many);
  REQUIRE(res);
  CHECK(res->embeddings.size() == 2048);
  CHECK(seen->size() == 64);
}
