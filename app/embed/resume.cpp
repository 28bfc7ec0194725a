#include "embed/resume.hpp"

#include "embed/json_util.hpp"
#include "embed/jsonl_input.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <sys/stat.h>

namespace embedrt::app::embed {

namespace {

/// Lines of our own output are far below this; a longer one is not ours.
constexpr std::size_t max_output_line = 64 * 1024 * 1024;

/// Reads the next line from a regular file, blocking. Returns false at the
/// end; sets `err` on a read error.
bool read_line(line_reader& rd, line_reader::line& ln, std::string& err) {
  for (;;) {
    switch (rd.next(ln)) {
      case line_reader::status::line: return true;
      case line_reader::status::eof: return false;
      case line_reader::status::need_input:
        if (rd.fill() < 0 && errno != EINTR && errno != EAGAIN) {
          err = std::string{"read: "} + std::strerror(errno);
          return false;
        }
        break;
    }
  }
}

std::string at_line(uint64_t n) {
  return "line " + std::to_string(n) + ": ";
}

} // namespace

scan_result scan_jsonl_output(int fd, id_set& ids) {
  scan_result res;
  line_reader rd{fd, max_output_line};
  line_reader::line ln;
  std::string id;
  uint64_t before = 0;
  while (read_line(rd, ln, res.error)) {
    if (!ln.newline) {
      // A crash cut the last record short: drop it.
      res.torn_bytes = rd.consumed() - before;
      break;
    }
    if (ln.too_long) {
      res.error = at_line(ln.number) + "longer than any embedrt output line";
      return res;
    }
    rapidjson::Document doc;
    if (auto err = detail::parse_json(doc, ln.text); !err.empty()) {
      res.error = at_line(ln.number) + "not JSON: " + err;
      return res;
    }
    auto bad = [&](const char* why) {
      res.error = at_line(ln.number) + why;
      return res;
    };
    if (!doc.IsObject())
      return bad("not an {\"id\",\"embedding\"} object");
    auto idm = doc.FindMember("id");
    auto em = doc.FindMember("embedding");
    if (idm == doc.MemberEnd() || em == doc.MemberEnd() || !em->value.IsArray())
      return bad("not an {\"id\",\"embedding\"} object");
    if (!detail::canonical_id(idm->value, id))
      return bad("\"id\" is not a string or an integer");
    const auto& arr = em->value;
    if (arr.Empty())
      return bad("empty embedding");
    for (const auto& x : arr.GetArray())
      if (!x.IsNumber() || !std::isfinite(x.GetDouble()))
        return bad("the embedding holds a value that is not a finite number");
    if (res.dims == 0)
      res.dims = arr.Size();
    else if (arr.Size() != res.dims)
      return bad(("the embedding has " + std::to_string(arr.Size())
                  + " dimensions, earlier lines " + std::to_string(res.dims))
                     .c_str());
    // An id repeated in the input is written again; it is done either way.
    ids.insert(id);
    ++res.records;
    before = rd.consumed();
  }
  if (!res.error.empty())
    return res;
  res.keep_bytes = before;
  return res;
}

scan_result scan_f32_output(int index_fd, uint64_t data_bytes, id_set& ids) {
  scan_result res;
  line_reader rd{index_fd, max_output_line};
  line_reader::line ln;
  std::string id;
  uint64_t before = 0;
  while (read_line(rd, ln, res.error)) {
    if (!ln.newline)
      break; // a torn last line
    auto bad = [&](const std::string& why) {
      res.error = "index " + at_line(ln.number) + why;
      return res;
    };
    if (ln.too_long)
      return bad("longer than any embedrt index line");
    rapidjson::Document doc;
    if (auto err = detail::parse_json(doc, ln.text); !err.empty())
      return bad("not JSON: " + err);
    if (!doc.IsObject())
      return bad("not an {\"id\",\"row\",\"dims\"} object");
    auto idm = doc.FindMember("id");
    auto rowm = doc.FindMember("row");
    auto dimsm = doc.FindMember("dims");
    if (idm == doc.MemberEnd() || rowm == doc.MemberEnd()
        || dimsm == doc.MemberEnd() || !rowm->value.IsUint64()
        || !dimsm->value.IsUint64() || dimsm->value.GetUint64() == 0)
      return bad("not an {\"id\",\"row\",\"dims\"} object");
    if (!detail::canonical_id(idm->value, id))
      return bad("\"id\" is not a string or an integer");
    auto dims = dimsm->value.GetUint64();
    if (res.dims == 0)
      res.dims = dims;
    else if (dims != res.dims)
      return bad("dims " + std::to_string(dims) + ", earlier lines "
                 + std::to_string(res.dims));
    if (rowm->value.GetUint64() != res.records)
      return bad("row " + std::to_string(rowm->value.GetUint64())
                 + ", expected " + std::to_string(res.records));
    // The row's bytes are written before its index line; if they are not
    // all in the data file (a crash between the two), the rest of the index
    // is the torn tail.
    if ((res.records + 1) * res.dims * 4 > data_bytes)
      break;
    ids.insert(id);
    ++res.records;
    before = rd.consumed();
  }
  if (!res.error.empty())
    return res;
  res.keep_index_bytes = before;
  struct stat st {};
  if (::fstat(index_fd, &st) != 0) {
    res.error = std::string{"stat: "} + std::strerror(errno);
    return res;
  }
  res.torn_index_bytes = static_cast<uint64_t>(st.st_size) - before;
  res.keep_bytes = res.records * res.dims * 4;
  res.torn_bytes = data_bytes - res.keep_bytes;
  return res;
}

} // namespace embedrt::app::embed
