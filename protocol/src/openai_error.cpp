// Error bodies: encode_error (server side) and decode_error (client side),
// see openai.hpp.
#include "embedrt/protocol/json_writer.hpp"
#include "embedrt/protocol/openai.hpp"
#include "json_reader.hpp"

namespace embedrt::openai {

namespace {

// Appends `s` as a JSON string, or null when it is empty.
void append_string_or_null(std::string& out, const std::string& s) {
  if (s.empty())
    out.append("null");
  else
    append_json_string(out, s);
}

} // namespace

std::string encode_error(const api_error& err) {
  std::string out;
  out.reserve(64 + err.message.size() + err.type.size() + err.param.size()
              + err.code.size());
  out.append("{\"error\":{\"message\":");
  append_json_string(out, err.message);
  out.append(",\"type\":");
  append_json_string(out, err.type);
  out.append(",\"param\":");
  append_string_or_null(out, err.param);
  out.append(",\"code\":");
  append_string_or_null(out, err.code);
  out.append("}}");
  return out;
}

namespace {

// The error shapes: OpenAI/Azure {"error":{"message","type","param","code"}},
// text-embeddings-inference {"error":"...","error_type":"..."} and vLLM
// {"object":"error","message","type","param","code"}.
class error_parser : detail::json_reader {
 public:
  using json_reader::json_reader;

  std::optional<api_error> run() {
    if (!expect_object("not an object"))
      return std::nullopt;
    auto ok = for_each_member([this](std::string_view key) {
      return read_top_member(key);
    });
    if (!ok || !at_end())
      return std::nullopt;
    return to_error();
  }

 private:
  // An optional member that is a string, an integer (some servers send
  // numeric codes) or null.
  struct loose {
    std::string value;
    bool present = false;
    bool is_string = false;
    bool valid = true;
  };

  struct fields {
    loose message, type, param, code;

    std::optional<api_error> to_error() const {
      if (!message.is_string || !type.valid || !param.valid || !code.valid)
        return std::nullopt;
      return api_error{message.value, type.value, param.value, code.value};
    }
  };

  bool read_top_member(std::string_view key) {
    if (key == "error") {
      if (cur() == '{') {
        error_is_object_ = true;
        return for_each_member([this](std::string_view k) {
          return read_field(nested_, k);
        });
      }
      return read_loose(error_text_);
    }
    if (key == "error_type")
      return read_loose(error_type_);
    if (key == "object")
      return read_loose(object_);
    return read_field(top_, key);
  }

  // The error of the shape the body has, if any.
  std::optional<api_error> to_error() const {
    if (error_is_object_)
      return nested_.to_error();
    if (error_text_.is_string) {
      if (!error_type_.valid)
        return std::nullopt;
      return api_error{error_text_.value, error_type_.value, {}, {}};
    }
    if (!error_text_.present && object_.is_string && object_.value == "error")
      return top_.to_error();
    return std::nullopt;
  }

  bool read_field(fields& f, std::string_view key) {
    if (key == "message")
      return read_loose(f.message);
    if (key == "type")
      return read_loose(f.type);
    if (key == "param")
      return read_loose(f.param);
    if (key == "code")
      return read_loose(f.code);
    return skip_value();
  }

  bool read_loose(loose& out) {
    out = loose{};
    out.present = true;
    if (cur() == '"') {
      std::string_view text;
      if (!read_string(text))
        return false;
      out.value.assign(text);
      out.is_string = true;
      return true;
    }
    if (cur() == 'n')
      return literal("null");
    if (starts_number(cur())) {
      detail::number_token t;
      if (!read_number(t))
        return false;
      out.valid = t.integer && !t.truncated;
      out.value.assign(t.begin, t.end);
      return true;
    }
    out.valid = false;
    return skip_value();
  }

  // OpenAI: "error" is an object; TEI: "error" is a string beside
  // "error_type"; vLLM: the fields at the top beside "object":"error".
  fields nested_, top_;
  loose error_text_, error_type_, object_;
  bool error_is_object_ = false;
};

} // namespace

std::optional<api_error> decode_error(std::string_view body) {
  return error_parser{body}.run();
}

} // namespace embedrt::openai
