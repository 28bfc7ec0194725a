// libFuzzer target: the upstream response decoder (`openai::decode_response`
// with each expectation a caller can have) and the error body decoder. Both
// must be total: any byte string is either decoded or rejected with an
// error, never a crash, a hang or an exception.
//
// Input layout: byte 0 picks the expectation (inputs 1..4, dimensions
// absent or 1..8, float or base64), the rest is the body.
#include "embedrt/protocol/openai.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  auto selector = data[0];
  std::string_view body{reinterpret_cast<const char*>(data + 1), size - 1};
  embedrt::openai::response_expectation expect;
  expect.inputs = 1 + (selector & 0x3u);
  if (auto dims = (selector >> 2) & 0x7u; dims != 0)
    expect.dimensions = static_cast<int32_t>(dims);
  expect.encoding_format = (selector & 0x20u) != 0
      ? embedrt::openai::encoding::base64
      : embedrt::openai::encoding::float32;
  auto decoded = embedrt::openai::decode_response(body, expect);
  if (decoded) {
    // What the decoder promises on success.
    if (decoded->data.size() != expect.inputs)
      std::abort();
    for (const auto& v : decoded->data)
      if (v.empty()
          || (expect.dimensions
              && v.size() != static_cast<std::size_t>(*expect.dimensions)))
        std::abort();
  }
  auto err = embedrt::openai::decode_error(body);
  (void)err;
  return 0;
}
