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
  for (const auto& ids : req.token_input)
    size_hint += ids.size() * 7 + 3;
  return size_hint;
}

void append_token_input(std::string& out, const embeddings_request& req) {
  out.push_back('[');
  for (std::size_t i = 0; i < req.token_input.size(); ++i) {
    if (i > 0)
      out.push_back(',');
    out.push_back('[');
    const auto& ids = req.token_input[i];
    for (std::size_t k = 0; k < ids.size(); ++k) {
      if (k > 0)
        out.push_back(',');
      append_int(out, ids[k]);
    }
    out.push_back(']');
  }
  out.push_back(']');
}

void append_input(std::string& out, const embeddings_request& req) {
  if (!req.token_input.empty()) {
    append_token_input(out, req);
    return;
  }
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
      = "'input' must be a string, an array of strings, an array of token "
        "ids or an array of token-id arrays";

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
    // The first element decides the shape: texts, one token array ([1, 2])
    // or token arrays ([[1, 2], [3]]); the others must follow it.
    shape_ = shape::unknown;
    std::size_t index = 0;
    auto ok = for_each_element([this, &index] {
      return parse_input_element(index++);
    });
    if (ok && index == 0)
      return fail("'input' must not be an empty array");
    return ok;
  }

  enum class shape { unknown, texts, ids, id_arrays };

  bool parse_input_element(std::size_t i) {
    if (shape_ == shape::unknown)
      shape_ = cur() == '"'      ? shape::texts
          : starts_number(cur()) ? shape::ids
          : cur() == '['         ? shape::id_arrays
                                 : shape::unknown;
    switch (shape_) {
      case shape::texts: {
        if (cur() != '"')
          return reject_value(mixed(i, "a string"));
        std::string_view text;
        if (!read_string(text))
          return false;
        result_.input.emplace_back(text);
        return true;
      }
      case shape::ids:
        if (!starts_number(cur()))
          return reject_value(mixed(i, "a token id"));
        if (result_.token_input.empty())
          result_.token_input.emplace_back();
        return read_token_id(result_.token_input.front(), i);
      case shape::id_arrays: return parse_id_array(i);
      default:
        return reject_value(
            concat(not_text, " (input[", i, "] is not a string)"));
    }
  }

  std::string mixed(std::size_t i, const char* expected) {
    return concat("'input' mixes shapes: input[", i, "] is not ", expected,
                  " like input[0]");
  }

  bool parse_id_array(std::size_t i) {
    if (cur() != '[')
      return reject_value(mixed(i, "a token-id array"));
    auto& ids = result_.token_input.emplace_back();
    std::size_t k = 0;
    auto ok = for_each_element([this, &ids, &k, i] {
      if (!starts_number(cur()))
        return reject_value(concat("'input' token arrays hold integers (input[",
                                   i, "][", k, "] is not one)"));
      return read_token_id(ids, k++);
    });
    if (ok && ids.empty())
      return fail(concat("input[", i, "] is an empty token array"));
    return ok;
  }

  bool read_token_id(std::vector<int32_t>& ids, std::size_t i) {
    number_token t;
    int64_t value = 0;
    if (!read_number(t))
      return false;
    if (!read_int(t, value) || value < 0
        || value > std::numeric_limits<int32_t>::max())
      return fail(concat("'input' token ids are integers in [0, 2147483647] "
                         "(element ",
                         i, " is not)"));
    ids.push_back(static_cast<int32_t>(value));
    return true;
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
  shape shape_ = shape::unknown;
};

} // namespace

caf::expected<embeddings_request> decode_request(std::string_view body) {
  return request_parser{body}.run();
}

} // namespace embedrt::openai
