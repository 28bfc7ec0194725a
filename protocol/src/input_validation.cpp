// validate_inputs (openai.hpp): every check on a caller's texts made before
// any network I/O.
#include "decimal.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/openai.hpp"
#include "utf8.hpp"

#include <utility>

namespace embedrt::openai {

namespace {

using detail::concat;
using detail::decode_utf8;

caf::error bad_request(std::string detail) {
  return make_error(errc::invalid_input, std::move(detail));
}

caf::error check_count(std::size_t inputs, const provider_profile& profile) {
  if (inputs == 0)
    return bad_request("no inputs: at least one text is required");
  if (inputs > profile.max_inputs)
    return bad_request(concat("too many inputs: ", inputs, " > ",
                              profile.max_inputs, " per request"));
  return {};
}

// `text` (input `i`) must be non-empty, well-formed UTF-8 without NUL. White
// space alone is a valid input, as for OpenAI (an upstream that refuses it
// is named by bisection).
caf::error check_characters(std::size_t i, const std::string& text) {
  if (text.empty())
    return bad_request(concat("input[", i, "] is empty"));
  const auto* begin = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = begin + text.size();
  for (const auto* p = begin; p < end;) {
    const auto* at = p;
    auto cp = decode_utf8(p, end);
    if (cp < 0)
      return bad_request(concat("input[", i, "] is not valid UTF-8 (at byte ",
                                at - begin, ')'));
    if (cp == 0)
      return bad_request(concat("input[", i,
                                "] contains a NUL character (at byte ",
                                at - begin, ')'));
  }
  return {};
}

// Checks input `i`; its estimated tokens go to `tokens`.
caf::error check_text(std::size_t i, const std::string& text,
                      const provider_profile& profile, std::size_t& tokens) {
  if (text.size() > profile.max_input_bytes)
    return bad_request(concat("input[", i, "] is too large: ", text.size(),
                              " bytes > ", profile.max_input_bytes));
  if (auto err = check_characters(i, text))
    return err;
  tokens = estimate_tokens(text);
  if (tokens > profile.max_tokens_per_input)
    return bad_request(concat("input[", i, "] is too long: about ", tokens,
                              " tokens > ", profile.max_tokens_per_input));
  return {};
}

caf::error check_total(std::size_t total_tokens,
                       const provider_profile& profile) {
  if (total_tokens <= profile.max_tokens_per_request)
    return {};
  return bad_request(concat("inputs too long in total: about ", total_tokens,
                            " tokens > ", profile.max_tokens_per_request,
                            " per request"));
}

} // namespace

caf::error validate_inputs(const std::vector<std::string>& inputs,
                           const provider_profile& profile,
                           bool check_request_total,
                           std::vector<int64_t>* tokens) {
  if (auto err = check_count(inputs.size(), profile))
    return err;
  if (tokens != nullptr) {
    tokens->clear();
    tokens->reserve(inputs.size());
  }
  std::size_t total_tokens = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::size_t n = 0;
    if (auto err = check_text(i, inputs[i], profile, n))
      return err;
    total_tokens += n;
    if (tokens != nullptr)
      tokens->push_back(static_cast<int64_t>(n));
  }
  if (check_request_total)
    return check_total(total_tokens, profile);
  return {};
}

caf::error
validate_token_inputs(const std::vector<std::vector<int32_t>>& inputs,
                      const provider_profile& profile, bool check_request_total,
                      std::vector<int64_t>* tokens) {
  if (!profile.token_inputs)
    return bad_request(concat("token-array inputs are not supported by a ",
                              to_string(profile.kind),
                              " upstream: send the text"));
  if (auto err = check_count(inputs.size(), profile))
    return err;
  if (tokens != nullptr) {
    tokens->clear();
    tokens->reserve(inputs.size());
  }
  std::size_t total_tokens = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& ids = inputs[i];
    if (ids.empty())
      return bad_request(concat("input[", i, "] is an empty token array"));
    for (std::size_t k = 0; k < ids.size(); ++k)
      if (ids[k] < 0)
        return bad_request(
            concat("input[", i, "][", k, "] is a negative token id"));
    if (ids.size() > profile.max_tokens_per_input)
      return bad_request(concat("input[", i, "] is too long: ", ids.size(),
                                " tokens > ", profile.max_tokens_per_input));
    total_tokens += ids.size();
    if (tokens != nullptr)
      tokens->push_back(static_cast<int64_t>(ids.size()));
  }
  if (check_request_total)
    return check_total(total_tokens, profile);
  return {};
}

} // namespace embedrt::openai
