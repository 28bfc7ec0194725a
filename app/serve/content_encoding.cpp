#include "serve/content_encoding.hpp"

#include <algorithm>
#include <cctype>
#include <zlib.h>

namespace embedrt::serve {

namespace {

std::string lower_trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  std::string out{s};
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(std::tolower(c));
  });
  return out;
}

front_reply too_large(std::size_t max_bytes) {
  return error_reply(413,
                     "Request body too large: the limit is "
                         + std::to_string(max_bytes)
                         + " bytes (after decompression)",
                     "invalid_request_error", "request_too_large");
}

front_reply bad_gzip(const std::string& why) {
  return error_reply(400, "Content-Encoding gzip: " + why,
                     "invalid_request_error", "invalid_input");
}

/// Inflates gzip `in` (one or more members, RFC 1952) into `out`, at most
/// `max_bytes`.
std::optional<front_reply> gunzip(const std::string& in, std::string& out,
                                  std::size_t max_bytes) {
  z_stream zs{};
  // 16 + MAX_WBITS: the gzip wrapper only (no raw deflate, no zlib header).
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    return error_reply(500, "cannot initialise zlib", "server_error",
                       "internal_error");
  struct guard {
    z_stream& zs;
    ~guard() {
      inflateEnd(&zs);
    }
  } g{zs};
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  constexpr std::size_t chunk = 64 * 1024;
  for (;;) {
    // Room for the next piece, never past the limit (+1 byte: to tell
    // "exactly the limit" from "more").
    auto room = std::min(chunk, max_bytes + 1 - out.size());
    auto used = out.size();
    out.resize(used + room);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + used);
    zs.avail_out = static_cast<uInt>(room);
    auto rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(used + (room - zs.avail_out));
    if (out.size() > max_bytes)
      return too_large(max_bytes);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0)
        return std::nullopt;
      // Another member follows (concatenated gzip files are one stream).
      if (inflateReset(&zs) != Z_OK)
        return bad_gzip("cannot read the next member");
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0)
      return bad_gzip("the data ends before the gzip stream does");
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return bad_gzip(zs.msg != nullptr ? zs.msg : "invalid data");
  }
}

} // namespace

std::optional<front_reply> decode_body(std::string_view encoding,
                                       std::string& body,
                                       std::size_t max_bytes) {
  auto enc = lower_trimmed(encoding);
  if (enc.empty() || enc == "identity")
    return std::nullopt;
  if (enc == "gzip" || enc == "x-gzip") {
    std::string out;
    if (auto err = gunzip(body, out, max_bytes))
      return err;
    body = std::move(out);
    return std::nullopt;
  }
  auto r = error_reply(415,
                       "Unsupported Content-Encoding '"
                           + std::string{encoding.substr(0, 64)}
                           + "' (supported: gzip, identity)",
                       "invalid_request_error", "unsupported_encoding");
  r.headers.emplace_back("accept-encoding", "gzip");
  return r;
}

} // namespace embedrt::serve
