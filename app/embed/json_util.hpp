// JSON helpers shared by the input parser and the output scanner of
// `embedrt embed` (internal to app/embed).
#pragma once

#include "embedrt/protocol/json_writer.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <string>
#include <string_view>

namespace embedrt::app::embed::detail {

/// Parses `text` as one JSON document (UTF-8 validated, nothing after it).
/// Returns an empty string on success, else "MESSAGE at offset N".
inline std::string parse_json(rapidjson::Document& doc, std::string_view text) {
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (!doc.HasParseError())
    return {};
  return std::string{rapidjson::GetParseError_En(doc.GetParseError())}
  + " at offset " + std::to_string(doc.GetErrorOffset());
}

/// Stores the canonical id text of `v` in `out`: a string as its JSON
/// string, an integer as its digits. Returns false for any other type.
inline bool canonical_id(const rapidjson::Value& v, std::string& out) {
  if (v.IsString()) {
    out.clear();
    append_json_string(out, {v.GetString(), v.GetStringLength()});
    return true;
  }
  if (v.IsInt64()) {
    out = std::to_string(v.GetInt64());
    return true;
  }
  if (v.IsUint64()) {
    out = std::to_string(v.GetUint64());
    return true;
  }
  return false;
}

} // namespace embedrt::app::embed::detail
