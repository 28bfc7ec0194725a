#include "embed/output.hpp"

#include "embedrt/protocol/json_writer.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <unistd.h>

namespace embedrt::app::embed {

void append_float(std::string& out, float x) {
  char buf[32];
  // Without a format, to_chars writes the shortest representation that
  // round-trips (the float overload: float32 precision).
  auto res = std::to_chars(buf, buf + sizeof(buf), x);
  out.append(buf, res.ptr);
}

void append_jsonl_record(std::string& out, std::string_view id,
                         const std::vector<float>& v) {
  out += "{\"id\":";
  out += id;
  out += ",\"embedding\":[";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i > 0)
      out += ',';
    append_float(out, v[i]);
  }
  out += "]}\n";
}

void append_index_record(std::string& out, std::string_view id, uint64_t row,
                         std::size_t dims) {
  out += "{\"id\":";
  out += id;
  out += ",\"row\":";
  out += std::to_string(row);
  out += ",\"dims\":";
  out += std::to_string(dims);
  out += "}\n";
}

void append_f32(std::string& out, const std::vector<float>& v) {
  auto old = out.size();
  out.resize(old + v.size() * 4);
  auto* p = reinterpret_cast<unsigned char*>(out.data() + old);
  for (float x : v) {
    uint32_t bits = 0;
    std::memcpy(&bits, &x, sizeof(bits));
    p[0] = static_cast<unsigned char>(bits);
    p[1] = static_cast<unsigned char>(bits >> 8);
    p[2] = static_cast<unsigned char>(bits >> 16);
    p[3] = static_cast<unsigned char>(bits >> 24);
    p += 4;
  }
}

void append_reject(std::string& out, std::string_view id, uint64_t line,
                   std::string_view error, std::string_view message) {
  out += "{\"id\":";
  if (id.empty())
    out += "null";
  else
    out += id;
  out += ",\"line\":";
  out += std::to_string(line);
  out += ",\"error\":";
  append_json_string(out, error);
  out += ",\"message\":";
  append_json_string(out, message);
  out += "}\n";
}

// -- fd_writer ---------------------------------------------------------------

fd_writer::fd_writer(int fd, bool regular_file, std::size_t flush_at)
    : fd_(fd), regular_(regular_file), flush_at_(flush_at) {
  buf_.reserve(flush_at_ + flush_at_ / 4);
}

bool fd_writer::append(std::string_view bytes) {
  buf_.append(bytes);
  return maybe_flush();
}

bool fd_writer::maybe_flush() {
  if (buf_.size() < flush_at_)
    return error_.empty();
  return flush();
}

bool fd_writer::flush() {
  if (!error_.empty())
    return false;
  std::size_t done = 0;
  while (done < buf_.size()) {
    auto n = ::write(fd_, buf_.data() + done, buf_.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      error_ = std::strerror(errno);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  buf_.clear();
  return true;
}

bool fd_writer::sync() {
  if (!flush())
    return false;
  if (regular_ && ::fsync(fd_) != 0) {
    error_ = std::string{"fsync: "} + std::strerror(errno);
    return false;
  }
  return true;
}

// -- output_sink -------------------------------------------------------------

output_sink::output_sink(output_format fmt, fd_writer data, fd_writer index,
                         uint64_t first_row)
    : fmt_(fmt),
      data_(std::move(data)),
      index_(std::move(index)),
      row_(first_row) {
  // nop
}

bool output_sink::write(std::string_view id, const std::vector<float>& v) {
  if (fmt_ == output_format::jsonl) {
    append_jsonl_record(data_.buffer(), id, v);
    return data_.maybe_flush();
  }
  append_f32(data_.buffer(), v);
  append_index_record(index_.buffer(), id, row_++, v.size());
  // An index line must never reach the file before its row: flush the rows
  // first whenever the index is flushed.
  if (index_.buffer().size() >= 64 * 1024 || data_.buffer().size() >= 1 << 20)
    return data_.flush() && index_.flush();
  return true;
}

bool output_sink::checkpoint() {
  if (fmt_ == output_format::jsonl)
    return data_.sync();
  return data_.sync() && index_.sync();
}

std::string output_sink::error() const {
  if (!data_.error().empty())
    return data_.error();
  return index_.error();
}

} // namespace embedrt::app::embed
