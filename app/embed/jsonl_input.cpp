#include "embed/jsonl_input.hpp"

#include "embed/json_util.hpp"

#include <cerrno>
#include <unistd.h>

namespace embedrt::app::embed {

namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

} // namespace

std::string number_id(uint64_t n) {
  return std::to_string(n);
}

parsed_line parse_input_line(std::string_view line, uint64_t line_number) {
  parsed_line out;
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  std::size_t first = 0;
  while (first < line.size() && is_blank(line[first]))
    ++first;
  if (first == line.size()) {
    out.what = parsed_line::kind::blank;
    return out;
  }
  if (line[first] != '{') {
    out.what = parsed_line::kind::record;
    out.id = number_id(line_number);
    out.text.assign(line);
    return out;
  }
  out.what = parsed_line::kind::bad;
  rapidjson::Document doc;
  if (auto err = detail::parse_json(doc, line); !err.empty()) {
    out.error = "not a valid JSON object: " + err;
    return out;
  }
  if (!doc.IsObject()) {
    out.error = "not a valid JSON object";
    return out;
  }
  if (auto id = doc.FindMember("id"); id != doc.MemberEnd()) {
    if (!detail::canonical_id(id->value, out.id)) {
      out.error = "\"id\" must be a string or an integer";
      return out;
    }
  } else {
    out.id = number_id(line_number);
  }
  auto text = doc.FindMember("text");
  if (text == doc.MemberEnd()) {
    out.error = "no \"text\" member";
    return out;
  }
  if (!text->value.IsString()) {
    out.error = "\"text\" must be a string";
    return out;
  }
  out.text.assign(text->value.GetString(), text->value.GetStringLength());
  out.what = parsed_line::kind::record;
  return out;
}

line_reader::line_reader(int fd, std::size_t max_line, std::size_t chunk)
    : fd_(fd), max_line_(max_line), chunk_(chunk) {
  // nop
}

line_reader::status line_reader::next(line& out) {
  for (;;) {
    auto nl = buf_.find('\n', scan_);
    if (skipping_) {
      // Drop the rest of an overlong line (already reported).
      if (nl == std::string::npos) {
        consumed_ += buf_.size() - pos_;
        pos_ = scan_ = buf_.size();
        if (eof_)
          return status::eof;
        return status::need_input;
      }
      consumed_ += nl + 1 - pos_;
      pos_ = scan_ = nl + 1;
      skipping_ = false;
      continue;
    }
    if (nl != std::string::npos) {
      if (nl - pos_ > max_line_) {
        // Complete but overlong: report it like one cut by the limit.
        out = line{{}, ++line_no_, true, true};
        consumed_ += nl + 1 - pos_;
        pos_ = scan_ = nl + 1;
        return status::line;
      }
      out = line{std::string_view{buf_}.substr(pos_, nl - pos_), ++line_no_,
                 false, true};
      consumed_ += nl + 1 - pos_;
      pos_ = scan_ = nl + 1;
      return status::line;
    }
    scan_ = buf_.size();
    auto pending = buf_.size() - pos_;
    if (pending > max_line_) {
      out = line{{}, ++line_no_, true, true};
      skipping_ = true;
      consumed_ += pending;
      pos_ = scan_ = buf_.size();
      return status::line;
    }
    if (!eof_)
      return status::need_input;
    if (pending == 0)
      return status::eof;
    // The last line has no newline.
    out = line{std::string_view{buf_}.substr(pos_, pending), ++line_no_, false,
               false};
    consumed_ += pending;
    pos_ = scan_ = buf_.size();
    return status::line;
  }
}

ssize_t line_reader::fill() {
  if (eof_)
    return 0;
  // Drop the consumed prefix (invalidates the views handed out).
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    scan_ -= pos_;
    pos_ = 0;
  }
  auto old = buf_.size();
  buf_.resize(old + chunk_);
  auto n = ::read(fd_, buf_.data() + old, chunk_);
  buf_.resize(old + (n > 0 ? static_cast<std::size_t>(n) : 0));
  if (n == 0)
    eof_ = true;
  return n;
}

} // namespace embedrt::app::embed
