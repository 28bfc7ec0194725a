#include "connection_actor.hpp"

#include "classify.hpp"
#include "embedrt/protocol/headers.hpp"
#include "redact.hpp"

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <stdexcept>

namespace embedrt::detail {

namespace {

using self_ptr = connection_actor::stateful_pointer<connection_state>;

/// An upstream's x-request-id is logged with every line about its request:
/// longer ones are cut.
constexpr std::size_t max_upstream_request_id = 128;

/// Turns the transport's result into the exchange's outcome (status,
/// hints read from the response's headers, the OpenAI error body decoded).
http_outcome to_outcome(exchange_result&& res) {
  http_outcome out;
  out.transport_error = res.error;
  out.error_message = std::move(res.message);
  out.connected = res.connected;
  out.reused = res.reused;
  out.total_ns = res.total_time.count();
  out.open_after = res.open_after;
  if (res.error != transport_errc::none)
    return out;
  auto& resp = res.response;
  out.status = static_cast<int32_t>(resp.status);
  auto hints = parse_response_hints([&resp](std::string_view name) {
    return resp.header(name);
  });
  if (hints.retry_after)
    out.retry_after_ms = hints.retry_after->count();
  if (hints.should_retry)
    out.should_retry = *hints.should_retry ? 1 : 0;
  out.request_id = std::move(hints.request_id);
  out.ratelimit_remaining_requests
      = hints.rate_limit.remaining_requests.value_or(-1);
  out.ratelimit_remaining_tokens
      = hints.rate_limit.remaining_tokens.value_or(-1);
  const auto& rl = hints.rate_limit;
  out.ratelimit_limit_requests = rl.limit_requests.value_or(-1);
  out.ratelimit_limit_tokens = rl.limit_tokens.value_or(-1);
  out.ratelimit_reset_requests_ns
      = rl.reset_requests ? rl.reset_requests->count() : -1;
  out.ratelimit_reset_tokens_ns
      = rl.reset_tokens ? rl.reset_tokens->count() : -1;
  if (out.status != 200)
    if (auto err = openai::decode_error(resp.body)) {
      out.error_code = std::move(err->code);
      out.error_param = std::move(err->param);
      out.error_text = std::move(err->message);
    }
  out.body = std::move(resp.body);
  return out;
}

/// What the completion of one exchange needs (immutable; it runs on an I/O
/// thread and touches no actor state). Its handler waits in the io_context,
/// so nothing in it may own the io_context (the env holds the io_runtime)
/// or an actor whose state does: else a handler that never runs — the I/O
/// threads stopped at shutdown with an exchange pending — would keep the
/// io_context, and with it itself, alive forever. Hence both are weak: an
/// exchange that completes after its upstream's actors are gone has nobody
/// to tell.
struct exchange_ctx {
  std::weak_ptr<const connection_env> env;
  openai::response_expectation expect;
  uint64_t call_id = 0;
  /// The call's sender (its pool): gets the result.
  caf::actor_addr reply_to;
};

/// Runs on the I/O thread, where the response's bytes are: classifies the
/// outcome (vectors decoded and validated, errors typed) and sends the
/// result straight to the call's sender. The connection actor is not woken:
/// the pool tracks its calls by id, so a result that arrives after the
/// connection died (its call re-queued) is recognised as stale there.
void complete(const exchange_ctx& ctx, exchange_result&& res) {
  auto env = ctx.env.lock();
  auto to = caf::actor_cast<connection_listener>(ctx.reply_to);
  if (!env || !to)
    return;
  auto out = to_outcome(std::move(res));
  // Every string the upstream provides may reach a log line or an error
  // detail: the same rule for all of them.
  const auto& secret = env->auth.second;
  redact_secret(out.request_id, secret);
  if (out.request_id.size() > max_upstream_request_id)
    out.request_id.resize(max_upstream_request_id);
  if (out.status != 200) {
    redact_secret(out.body, secret);
    redact_secret(out.error_message, secret);
    redact_secret(out.error_text, secret);
    redact_secret(out.error_code, secret);
    redact_secret(out.error_param, secret);
  }
  bool open_after = out.open_after;
  auto r = classify_outcome(std::move(out), ctx.expect, env->upstream_name);
  r.open_after = open_after;
  r.call_id = ctx.call_id;
  caf::anon_send(to, result_atom_v, std::move(r));
}

void on_call(self_ptr self, connection_call& call) {
  auto& st = self->state;
  if (!st.env->crash_marker.empty())
    for (auto& in : call.inputs)
      if (in == st.env->crash_marker)
        throw std::runtime_error("chaos: crash marker received");
  openai::embeddings_request req;
  req.model = std::move(call.model);
  req.input = std::move(call.inputs);
  req.token_input = std::move(call.token_inputs);
  req.input_is_array = true;
  if (call.dimensions > 0)
    req.dimensions = call.dimensions;
  req.encoding_format = st.env->base64 && !call.float_only
      ? openai::encoding::base64
      : openai::encoding::float32;
  req.user = std::move(call.user);
  http_request hreq;
  hreq.target = st.env->target;
  if (!st.env->auth.first.empty())
    hreq.headers.emplace_back(st.env->auth);
  hreq.body = openai::encode_request(req);
  auto ctx = std::make_shared<exchange_ctx>();
  ctx->env = st.env;
  ctx->expect.inputs = req.input.size() + req.token_input.size();
  ctx->expect.dimensions = req.dimensions;
  ctx->expect.encoding_format = req.encoding_format;
  ctx->call_id = call.call_id;
  ctx->reply_to = caf::actor_cast<caf::actor_addr>(self->current_sender());
  // Rounded up: the I/O deadline never fires before the caller's.
  auto timeout = std::chrono::ceil<std::chrono::milliseconds>(call.timeout);
  if (timeout.count() <= 0)
    timeout = std::chrono::milliseconds{1};
  // One call at a time: the pool only hands work to an idle connection (a
  // second exchange while one is pending would be answered by the transport
  // with "exchange already pending", the first one unaffected).
  st.conn->async_exchange(std::move(hreq), timeout,
                          [ctx = std::move(ctx)](exchange_result res) {
                            complete(*ctx, std::move(res));
                          });
}

} // namespace

connection_state::~connection_state() {
  // The socket is closed by a post to its strand (never from here directly).
  if (conn)
    conn->close();
}

connection_actor::behavior_type
connection_actor_fn(connection_actor::stateful_pointer<connection_state> self,
                    std::shared_ptr<const connection_env> env) {
  self->state.env = env;
  self->state.conn = http_connection::make(env->io->context(), env->transport);
  return {
      [self](call_atom, connection_call& call) {
        on_call(self, call);
      },
  };
}

} // namespace embedrt::detail
