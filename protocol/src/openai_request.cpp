// The request body of POST /v1/embeddings: encode_request (client side) and
// decode_request (server side), see openai.hpp.
#include "decimal.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/json_writer.hpp"
#include "embedrt/protocol/openai.hpp"
#include "json_reader.hpp"

#include <limits>
#include <utility>

namespace embedrt::openai {

namespace {

using detail::append_int;
using detail::concat;
using detail::number_token;

std::size_t encoded_size_hint(const embeddings_request& req) {
  std::size_t size_hint = 64 + req.model.size() + req.user.size();
  for (const auto& s : req.input)
    size_hint += s.size() + 3;
  return size_hint;
}

void append_input(std::string& out, const embeddings_request& req) {
  if (req.input_is_array || req.input.size() != 1) {
    out.push_back('[');
    for (std::size_t i = 0; i < req.input.size(); ++i) {
      if (i > 0)
        out.push_back(',');
      append_json_string(out, req.input[i]);
    }
    out.push_back(']');
  } else {
    append_json_string(out, req.input.front());
  }
}

} // namespace

const char* to_string(encoding x) {
  return x == encoding::base64 ? "base64" : "float";
}

std::string encode_request(const embeddings_request& req) {
  std::string out;
  out.reserve(encoded_size_hint(req));
  out.append("{\"model\":");
  append_json_string(out, req.model);
  out.append(",\"input\":");
  append_input(out, req);
  if (req.encoding_format != encoding::float32) {
    out.append(",\"encoding_format\":");
    append_json_string(out, to_string(req.encoding_format));
  }
  if (req.dimensions) {
    out.append(",\"dimensions\":");
    append_int(out, *req.dimensions);
  }
  if (!req.user.empty()) {
    out.append(",\"user\":");
    append_json_string(out, req.user);
  }
  out.push_back('}');
  return out;
}

namespace {

// The request schema (server side).
class request_parser : detail::json_reader {
 public:
  using json_reader::json_reader;

  caf::expected<embeddings_request> run() {
    if (!parse_document())
      return make_error(errc::invalid_input, std::move(error_));
    return std::move(result_);
  }

 private:
  bool parse_document() {
    if (!expect_object("request body must be a JSON object"))
      return false;
    bool seen_model = false, seen_input = false, seen_dims = false,
         seen_format = false, seen_user = false;
    auto once = [this](bool& seen, std::string_view key) {
      if (seen)
        return fail("duplicate key '" + std::string{key} + "' in request");
      seen = true;
      return true;
    };
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "model")
        return once(seen_model, key) && parse_model();
      if (key == "input")
        return once(seen_input, key) && parse_input();
      if (key == "dimensions")
        return once(seen_dims, key) && parse_dimensions();
      if (key == "encoding_format")
        return once(seen_format, key) && parse_encoding_format();
      if (key == "user")
        return once(seen_user, key) && parse_user();
      return skip_value();
    });
    if (!ok || !at_end())
      return false;
    if (!seen_model)
      return fail("'model' is required");
    if (!seen_input)
      return fail("'input' is required");
    return true;
  }

  bool parse_model() {
    std::string_view model;
    if (cur() != '"')
      return reject_value("'model' must be a string");
    if (!read_string(model))
      return false;
    if (model.empty())
      return fail("'model' must not be empty");
    if (!is_valid_utf8(model))
      return fail("'model' is not valid UTF-8");
    result_.model.assign(model);
    return true;
  }

  static constexpr const char* not_text
      = "'input' must be a string or an array of strings";

  bool parse_input() {
    if (cur() == '"') {
      std::string_view text;
      if (!read_string(text))
        return false;
      result_.input_is_array = false;
      result_.input.emplace_back(text);
      return true;
    }
    if (cur() != '[')
      return reject_value(not_text);
    result_.input_is_array = true;
    auto ok = for_each_element([this] {
      return parse_input_element();
    });
    if (ok && result_.input.empty())
      return fail("'input' must not be an empty array");
    return ok;
  }

  bool parse_input_element() {
    if (cur() == '"') {
      std::string_view text;
      if (!read_string(text))
        return false;
      result_.input.emplace_back(text);
      return true;
    }
    // [1, 2] and [[1, 2], [3]] are OpenAI's token arrays.
    if (starts_number(cur()) || nested_token_array())
      return reject_value("'input' token arrays are not supported: send text");
    return reject_value(concat(not_text, " (input[", result_.input.size(),
                               "] is not a string)"));
  }

  // True if p_ is at an array whose first element is a number.
  bool nested_token_array() {
    if (cur() != '[')
      return false;
    const char* saved = p_;
    ++p_;
    bool number = starts_number(peek());
    p_ = saved;
    return number;
  }

  bool parse_dimensions() {
    static constexpr const char* detail
        = "'dimensions' must be a positive integer";
    if (cur() == 'n')
      return literal("null"); // null counts as absent
    if (!starts_number(cur()))
      return reject_value(detail);
    number_token t;
    int64_t value = 0;
    if (!read_number(t))
      return false;
    if (!read_int(t, value) || value <= 0
        || value > std::numeric_limits<int32_t>::max())
      return fail(detail);
    result_.dimensions = static_cast<int32_t>(value);
    return true;
  }

  bool parse_encoding_format() {
    static constexpr const char* detail
        = "'encoding_format' must be \"float\" or \"base64\"";
    if (cur() == 'n')
      return literal("null"); // null counts as absent
    if (cur() != '"')
      return reject_value(detail);
    std::string_view name;
    if (!read_string(name))
      return false;
    if (name == "float")
      result_.encoding_format = encoding::float32;
    else if (name == "base64")
      result_.encoding_format = encoding::base64;
    else
      return fail(detail);
    return true;
  }

  bool parse_user() {
    return read_utf8_string_or_null("user", result_.user); // null: absent
  }

  embeddings_request result_;
};

} // namespace

caf::expected<embeddings_request> decode_request(std::string_view body) {
  return request_parser{body}.run();
}

} // namespace embedrt::openai
