// libFuzzer target: the gateway's request path without sockets. The bytes
// are one client request as `embedrt serve` reads it (the front end's
// parsing steps, app/serve/front_parse.hpp, with small limits so that 413
// and 431 are reached), then its body through the strict OpenAI request
// decoder and the input validation the runtime applies, and the error
// message rule applied to what an upstream could say
// (app/serve/replies.hpp, `client_message`).
#include "embedrt/protocol/openai.hpp"
#include "embedrt/protocol/provider.hpp"
#include "serve/front_parse.hpp"
#include "serve/replies.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

using namespace embedrt;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::string_view bytes{reinterpret_cast<const char*>(data), size};
  serve::front_options opts;
  opts.max_header_bytes = 2048;
  opts.max_body_bytes = 4096;
  auto out = serve::parse_request(bytes, opts, "req-fuzz");
  if (out.request && out.error)
    std::abort();
  if (out.error) {
    auto s = out.error->status;
    if (s != 400 && s != 413 && s != 431)
      std::abort();
  }
  if (out.request) {
    if (out.request->request_id.empty()
        || out.request->body.size() > opts.max_body_bytes)
      std::abort();
    if (auto req = openai::decode_request(out.request->body)) {
      if (req->input.empty())
        std::abort();
      (void)openai::validate_inputs(req->input,
                                    profile_for(provider_kind::openai));
    }
  }
  auto msg = serve::client_message(bytes);
  if (msg.size() > serve::max_client_message)
    std::abort();
  return 0;
}
