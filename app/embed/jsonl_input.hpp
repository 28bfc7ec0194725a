// Input of `embedrt embed`: a line reader that never holds more than one
// buffer of the input, and the parser of one input line.
//
// Line format (one record per line, UTF-8, LF or CRLF):
// - a line whose first non-blank character is `{` is a JSON object
//   `{"id": ID, "text": TEXT, ...}`: TEXT must be a string; ID a string or an
//   integer (other members are ignored); without "id" the line number is the
//   id;
// - any other non-blank line is the text itself, and its id is its line
//   number (1-based);
// - blank lines (spaces and tabs only) are skipped.
// Ids are kept as canonical JSON text: a string id as its JSON string
// (`"doc-7"`, escapes normalised), a number as its decimal digits (`42`), so
// that the string "42" and the number 42 are different ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace embedrt::app::embed {

/// What one input line holds.
struct parsed_line {
  enum class kind : uint8_t {
    /// A record: `id` and `text` are set.
    record,
    /// Nothing (blank line): skipped.
    blank,
    /// Not a valid record: `error` says why; `id` is set if one was readable.
    bad,
  };
  kind what = kind::blank;
  std::string id;
  std::string text;
  std::string error;
};

/// Parses one line (without its trailing newline; a trailing CR is ignored).
/// `line_number` (1-based) is the id of a plain-text line.
parsed_line parse_input_line(std::string_view line, uint64_t line_number);

/// The canonical id of the integer `n`, as used for plain-text lines.
std::string number_id(uint64_t n);

/// Reads lines from a file descriptor with a bounded buffer. It never blocks
/// on its own: `next()` hands out lines already buffered and `fill()` does
/// exactly one read(2), so a caller can wait for a pipe with poll().
class line_reader {
 public:
  struct line {
    /// The line without its newline. Valid until the next `fill()`.
    std::string_view text;
    /// 1-based line number.
    uint64_t number = 0;
    /// The line was longer than the reader's limit: `text` is empty and the
    /// rest of the line has been (or will be) discarded.
    bool too_long = false;
    /// False only for a last line that ends without a newline.
    bool newline = true;
  };

  enum class status : uint8_t {
    /// `next()` stored a line.
    line,
    /// No complete line buffered: call `fill()` (when the fd is readable).
    need_input,
    /// End of input, every line handed out.
    eof,
  };

  /// `max_line` bounds the bytes of one line (and so the buffer).
  explicit line_reader(int fd, std::size_t max_line = 16 * 1024 * 1024,
                       std::size_t chunk = 256 * 1024);

  /// The next buffered line, if any.
  status next(line& out);

  /// One read(2) into the buffer. Returns the bytes read, 0 at end of input,
  /// -1 on an error (errno set; EINTR and EAGAIN are not errors: they return
  /// -1 with errno as is and the caller simply tries again later).
  ssize_t fill();

  /// Bytes of the input consumed by the lines handed out so far (the end
  /// offset of the last line, newline included).
  uint64_t consumed() const noexcept {
    return consumed_;
  }

  bool eof() const noexcept {
    return eof_;
  }

 private:
  int fd_;
  std::size_t max_line_;
  std::size_t chunk_;
  std::string buf_;
  /// Start of the unconsumed data in buf_, and where the newline search
  /// resumes.
  std::size_t pos_ = 0;
  std::size_t scan_ = 0;
  uint64_t consumed_ = 0;
  uint64_t line_no_ = 0;
  bool eof_ = false;
  /// Discarding the rest of an overlong line.
  bool skipping_ = false;
};

} // namespace embedrt::app::embed
