// The response body of POST /v1/embeddings: encode_response (server side)
// and decode_response with its strict validation (client side), see
// openai.hpp.
#include "base64.hpp"
#include "decimal.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/json_writer.hpp"
#include "embedrt/protocol/openai.hpp"
#include "json_reader.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace embedrt::openai {

namespace {

using detail::append_base64_floats;
using detail::append_float;
using detail::append_int;
using detail::concat;
using detail::decode_base64_into;
using detail::number_token;
using detail::to_float;

std::size_t encoded_size_hint(const embeddings_response& resp, encoding enc) {
  std::size_t values = 0;
  for (const auto& v : resp.data)
    values += v.size();
  return 128 + resp.model.size() + resp.data.size() * 48
      + (enc == encoding::base64 ? values * 6 : values * 14);
}

void append_vector(std::string& out, const std::vector<float>& vec,
                   encoding enc) {
  if (enc == encoding::base64) {
    out.push_back('"');
    append_base64_floats(out, vec);
    out.push_back('"');
    return;
  }
  out.push_back('[');
  for (std::size_t j = 0; j < vec.size(); ++j) {
    if (j > 0)
      out.push_back(',');
    append_float(out, vec[j]);
  }
  out.push_back(']');
}

void append_item(std::string& out, std::size_t i, const std::vector<float>& vec,
                 encoding enc) {
  if (i > 0)
    out.push_back(',');
  out.append("{\"object\":\"embedding\",\"index\":");
  append_int(out, i);
  out.append(",\"embedding\":");
  append_vector(out, vec, enc);
  out.push_back('}');
}

void append_tail(std::string& out, const embeddings_response& resp) {
  out.append("],\"model\":");
  append_json_string(out, resp.model);
  out.append(",\"usage\":{\"prompt_tokens\":");
  append_int(out, resp.usage.prompt_tokens);
  out.append(",\"total_tokens\":");
  append_int(out, resp.usage.total_tokens);
  if (resp.usage.cached_tokens > 0) {
    // As OpenAI reports cached prompt tokens elsewhere: the inputs served
    // from embedrt's cache (docs/caching.md, "Usage").
    out.append(",\"prompt_tokens_details\":{\"cached_tokens\":");
    append_int(out, resp.usage.cached_tokens);
    out.push_back('}');
  }
  out.append("}}");
}

constexpr const char* response_head = "{\"object\":\"list\",\"data\":[";

} // namespace

std::string encode_response(const embeddings_response& resp, encoding enc) {
  std::string out;
  out.reserve(encoded_size_hint(resp, enc));
  out.append(response_head);
  for (std::size_t i = 0; i < resp.data.size(); ++i)
    append_item(out, i, resp.data[i], enc);
  append_tail(out, resp);
  return out;
}

response_writer::response_writer(embeddings_response resp, encoding enc)
    : resp_(std::move(resp)), enc_(enc) {
  // nop
}

bool response_writer::next(std::string& out, std::size_t target) {
  auto count = resp_.data.size();
  if (next_ > count)
    return false;
  auto start = out.size();
  if (next_ == 0)
    out.append(response_head);
  while (next_ < count) {
    append_item(out, next_, resp_.data[next_], enc_);
    // Written: its memory goes now, not with the whole response.
    std::vector<float>{}.swap(resp_.data[next_]);
    ++next_;
    if (out.size() - start >= target)
      break;
  }
  if (next_ == count) {
    append_tail(out, resp_);
    next_ = count + 1;
  }
  return true;
}

namespace {

// The response schema:
//
//   document  {"data": [item...], "model": string|null, "usage": usage|null}
//   item      {"index": integer, "embedding": [number...] | base64 string}
//   usage     {"prompt_tokens": integer >= 0, "total_tokens": integer >= 0}
//
// (other members are skipped). Each item's vector is read into current_ and
// checked (finish_item), then moved into its slot: one allocation per vector.
class response_parser : detail::json_reader {
 public:
  response_parser(std::string_view body, const response_expectation& expect)
      : json_reader(body), expect_(expect) {
    // Every item takes more than 16 bytes: never allocate slots for more
    // items than the body can hold (they grow on demand up to `inputs`).
    auto initial = std::min(expect.inputs, body.size() / 16 + 1);
    slots_.resize(initial);
    filled_.resize(initial, false);
    if (expect.dimensions && *expect.dimensions > 0)
      reserve_ = static_cast<std::size_t>(*expect.dimensions);
  }

  caf::expected<embeddings_response> run() {
    if (!parse_document())
      return make_error(errc::invalid_response, std::move(error_));
    embeddings_response result;
    result.model = std::move(model_);
    result.data = std::move(slots_);
    result.usage = usage_;
    return result;
  }

 private:
  // -- failure details --------------------------------------------------------

  // "data[N]": the item being read.
  std::string item_prefix() const {
    return concat("data[", count_, ']');
  }

  bool fail_not_finite(std::size_t j) {
    return fail(
        concat(item_prefix(), ".embedding[", j, "] is not a finite float32"));
  }

  // -- the document -----------------------------------------------------------

  bool parse_document() {
    if (!expect_object("response body must be a JSON object"))
      return false;
    bool seen_data = false, seen_model = false, seen_usage = false;
    auto once = [this](bool& seen, const char* name) {
      if (seen)
        return fail(std::string{"duplicate key "} + name + " in response");
      seen = true;
      return true;
    };
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "data")
        return once(seen_data, "'data'") && parse_data();
      if (key == "model")
        return once(seen_model, "'model'") && parse_model();
      if (key == "usage")
        return once(seen_usage, "'usage'") && parse_usage();
      return skip_value();
    });
    if (!ok || !at_end())
      return false;
    if (!seen_data)
      return fail("response has no 'data' array");
    return check_all_indexes_filled();
  }

  // Fewer vectors than inputs: names the first index without one.
  bool check_all_indexes_filled() {
    if (count_ >= expect_.inputs)
      return true;
    std::size_t i = 0;
    while (i < filled_.size() && filled_[i])
      ++i;
    return fail(concat("missing embedding for index ", i, " (", count_, " of ",
                       expect_.inputs, " returned)"));
  }

  bool parse_model() {
    return read_utf8_string_or_null("model", model_);
  }

  bool parse_usage() {
    if (cur() == 'n')
      return literal("null");
    if (cur() != '{')
      return reject_value("'usage' must be an object");
    return for_each_member([this](std::string_view key) {
      if (key == "prompt_tokens")
        return parse_token_count(key, usage_.prompt_tokens);
      if (key == "total_tokens")
        return parse_token_count(key, usage_.total_tokens);
      return skip_value();
    });
  }

  bool parse_token_count(std::string_view key, int64_t& field) {
    // The message is only built on failure (a valid response allocates
    // nothing here).
    auto detail = [key] {
      return concat("'usage.", key, "' must be a non-negative integer");
    };
    if (!starts_number(cur()))
      return reject_value(detail());
    number_token t;
    int64_t value = 0;
    if (!read_number(t))
      return false;
    if (!read_int(t, value) || value < 0)
      return fail(detail());
    field = value;
    return true;
  }

  // -- the items --------------------------------------------------------------

  // What an item held so far.
  struct item {
    bool has_index = false;
    bool has_embedding = false;
    int64_t index = 0;
  };

  bool parse_data() {
    if (cur() != '[')
      return reject_value("'data' must be an array");
    return for_each_element([this] {
      if (cur() != '{')
        return reject_value(item_prefix() + " must be an object");
      if (count_ >= expect_.inputs)
        return fail(concat("more embeddings than inputs (more than ",
                           expect_.inputs, ')'));
      return parse_item();
    });
  }

  bool parse_item() {
    item it;
    current_.clear();
    current_.reserve(reserve_);
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "index")
        return parse_index(it);
      if (key == "embedding")
        return parse_embedding(it);
      return skip_value();
    });
    return ok && finish_item(it);
  }

  bool parse_index(item& it) {
    if (it.has_index)
      return fail(item_prefix() + " has a duplicate 'index'");
    it.has_index = true;
    if (!starts_number(cur()))
      return reject_value(item_prefix() + ".index is not a valid integer");
    number_token t;
    if (!read_number(t))
      return false;
    if (!read_int(t, it.index))
      return fail(item_prefix() + ".index is not a valid integer");
    return true;
  }

  bool parse_embedding(item& it) {
    if (it.has_embedding)
      return fail(item_prefix() + " has a duplicate 'embedding'");
    it.has_embedding = true;
    if (cur() == '[')
      return parse_float_vector();
    if (cur() == '"')
      return parse_base64_vector();
    return reject_value(item_prefix()
                        + ".embedding must be an array of numbers or a "
                          "base64 string");
  }

  bool parse_float_vector() {
    return for_each_element([this] {
      if (!starts_number(cur()))
        return reject_value(concat(item_prefix(), ".embedding[",
                                   current_.size(), "] is not a number"));
      number_token t;
      float value = 0;
      if (!read_number(t))
        return false;
      if (!to_float(t, value))
        return fail_not_finite(current_.size());
      current_.push_back(value);
      return true;
    });
  }

  bool parse_base64_vector() {
    std::string_view text;
    if (!read_string(text))
      return false;
    if (expect_.encoding_format != encoding::base64)
      return fail(item_prefix()
                  + ".embedding is a base64 string but float was requested");
    if (!decode_base64_into(text, current_))
      return fail(item_prefix()
                  + ".embedding is not valid base64 float32 data");
    for (std::size_t j = 0; j < current_.size(); ++j)
      if (!std::isfinite(current_[j]))
        return fail_not_finite(j);
    return true;
  }

  // -- checks on a complete item ----------------------------------------------

  bool finish_item(const item& it) {
    if (!it.has_embedding)
      return fail(item_prefix() + " has no 'embedding'");
    if (!it.has_index)
      return fail(item_prefix() + " has no 'index'");
    if (current_.empty())
      return fail(item_prefix() + ".embedding is empty");
    return check_requested_dimensions() && check_same_dimensions()
        && check_index_in_range(it.index) && store(it.index);
  }

  bool check_requested_dimensions() {
    if (!expect_.dimensions
        || current_.size() == static_cast<std::size_t>(*expect_.dimensions))
      return true;
    return fail(concat(item_prefix(), ".embedding has ", current_.size(),
                       " dimensions, ", *expect_.dimensions, " requested"));
  }

  // Every vector has the dimension of the first one.
  bool check_same_dimensions() {
    if (first_dims_ == 0) {
      first_dims_ = current_.size();
      reserve_ = first_dims_;
      return true;
    }
    if (current_.size() == first_dims_)
      return true;
    return fail(concat(item_prefix(), ".embedding has ", current_.size(),
                       " dimensions, the first embedding has ", first_dims_));
  }

  bool check_index_in_range(int64_t index) {
    if (index >= 0 && static_cast<uint64_t>(index) < expect_.inputs)
      return true;
    return fail(concat(item_prefix(), ".index ", index, " is out of range (",
                       expect_.inputs, " inputs)"));
  }

  // Moves current_ into the slot of `index` (in range), unless taken.
  bool store(int64_t index) {
    auto idx = static_cast<std::size_t>(index);
    if (idx >= slots_.size()) {
      slots_.resize(idx + 1);
      filled_.resize(idx + 1, false);
    }
    if (filled_[idx])
      return fail(concat("duplicate index ", index, " in data"));
    slots_[idx] = std::move(current_);
    current_ = std::vector<float>{};
    filled_[idx] = true;
    ++count_;
    return true;
  }

  const response_expectation& expect_;
  // Results.
  std::vector<std::vector<float>> slots_;
  std::vector<bool> filled_;
  std::vector<float> current_;
  std::size_t count_ = 0;
  std::size_t first_dims_ = 0;
  std::size_t reserve_ = 0;
  std::string model_;
  token_usage usage_;
};

} // namespace

caf::expected<embeddings_response>
decode_response(std::string_view body, const response_expectation& expect) {
  return response_parser{body, expect}.run();
}

} // namespace embedrt::openai
