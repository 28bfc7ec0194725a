#include "connection_actor.hpp"

#include "classify.hpp"
#include "embedrt/protocol/headers.hpp"
#include "redact.hpp"

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <stdexcept>

namespace embedrt::detail {

namespace {

using self_ptr = connection_impl::stateful_pointer<connection_state>;

/// An upstream's x-request-id is logged with every line about its request:
/// longer ones are cut.
constexpr std::size_t max_upstream_request_id = 128;

/// Runs on an I/O thread: turns the transport's result into a message for the
/// actor. Touches no actor state.
http_outcome to_outcome(uint64_t seq, exchange_result&& res) {
  http_outcome out;
  out.seq = seq;
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

/// Sends the result of the call in flight to its sender and goes idle.
void reply(self_ptr self, call_result r) {
  auto& st = self->state;
  r.call_id = st.call_id;
  st.busy = false;
  auto to = caf::actor_cast<connection_listener>(std::move(st.reply_to));
  st.reply_to = nullptr;
  if (to)
    self->send(to, result_atom_v, std::move(r));
}

void on_call(self_ptr self, connection_call& call) {
  auto& st = self->state;
  if (st.busy) {
    // The pool only hands work to idle connections; answer rather than
    // drop a call if that invariant is ever broken.
    call_result r;
    r.call_id = call.call_id;
    r.error = make_error(errc::overloaded, "connection busy");
    r.retryable = true;
    if (auto to = caf::actor_cast<connection_listener>(self->current_sender()))
      self->send(to, result_atom_v, std::move(r));
    return;
  }
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
  st.busy = true;
  st.call_id = call.call_id;
  st.reply_to = self->current_sender();
  st.expect.inputs = req.input.size() + req.token_input.size();
  st.expect.dimensions = req.dimensions;
  st.expect.encoding_format = req.encoding_format;
  auto seq = ++st.seq;
  auto hdl = caf::actor_cast<connection_impl>(self);
  // Rounded up: the I/O deadline never fires before the caller's.
  auto timeout = std::chrono::ceil<std::chrono::milliseconds>(call.timeout);
  if (timeout.count() <= 0)
    timeout = std::chrono::milliseconds{1};
  st.conn->async_exchange(
      std::move(hreq), timeout, [hdl, seq](exchange_result res) {
        caf::anon_send(hdl, io_done_atom_v, to_outcome(seq, std::move(res)));
      });
}

void on_io_done(self_ptr self, http_outcome& out) {
  auto& st = self->state;
  if (!st.busy || out.seq != st.seq)
    return; // Stale completion (cannot happen with one exchange at a time).
  // Every string the upstream provides may reach a log line or an error
  // detail: the same rule for all of them.
  const auto& secret = st.env->auth.second;
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
  auto r = classify_outcome(std::move(out), st.expect, st.env->upstream_name);
  r.open_after = open_after;
  reply(self, std::move(r));
}

} // namespace

connection_state::~connection_state() {
  // The socket is closed by a post to its strand (never from here directly).
  if (conn)
    conn->close();
}

connection_impl::behavior_type
connection_actor_fn(connection_impl::stateful_pointer<connection_state> self,
                    std::shared_ptr<const connection_env> env) {
  self->state.env = env;
  self->state.conn = http_connection::make(env->io->context(), env->transport);
  return {
      [self](call_atom, connection_call& call) {
        on_call(self, call);
      },
      [self](io_done_atom, http_outcome& out) {
        on_io_done(self, out);
      },
  };
}

} // namespace embedrt::detail
