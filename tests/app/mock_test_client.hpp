// A small synchronous HTTP/1.1 (and TLS) test client with per-operation
// timeouts, for the mock server tests. Beast lives in mock_test_client.cpp
// only, so that the test files compile quickly.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace embedrt::test {

using namespace std::chrono_literals;

/// How a request failed.
enum class failure : uint8_t {
  none,
  /// The TCP connect failed.
  connect,
  /// The TLS handshake or certificate verification failed.
  tls,
  /// No (complete) answer within the timeout.
  timeout,
  /// The peer aborted the connection (RST).
  reset,
  /// The peer closed the connection before a complete response.
  eof,
  /// Anything else (e.g. an unparsable response).
  other,
};

const char* to_string(failure x);

struct http_response {
  failure error = failure::none;
  std::string error_message;
  int status = 0;
  /// Header values by lower-case name.
  std::map<std::string, std::string> headers;
  std::string body;
  bool keep_alive = false;
  /// For a failed request: bytes of the response received before the
  /// failure.
  std::size_t partial_bytes = 0;

  bool ok() const noexcept {
    return error == failure::none;
  }

  bool has_header(const std::string& name) const {
    return headers.count(name) > 0;
  }

  /// The header's value, or "" if absent.
  std::string header(const std::string& name) const;
};

struct tls_options {
  /// PEM file of the CA to trust.
  std::string ca_file;
  /// SNI and the name the certificate must match.
  std::string server_name = "localhost";
};

using header_list = std::vector<std::pair<std::string, std::string>>;

/// One keep-alive connection to 127.0.0.1:port, opened lazily and reopened
/// after the server closed it or a request failed.
class http_client {
 public:
  explicit http_client(uint16_t port,
                       std::optional<tls_options> tls = std::nullopt);
  ~http_client();

  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  /// Opens a new connection (closing any previous one).
  failure connect(std::chrono::milliseconds timeout = 2s);

  /// Sends one request and reads the response, each step bounded by
  /// `timeout`. Adds Host, Content-Type (with a body) and Content-Length.
  http_response request(std::string_view method, std::string_view target,
                        std::string_view body = {},
                        const header_list& headers = {},
                        std::chrono::milliseconds timeout = 5s);

  /// POST `body` to /v1/embeddings.
  http_response embed(std::string_view body, const header_list& headers = {},
                      std::chrono::milliseconds timeout = 5s) {
    return request("POST", "/v1/embeddings", body, headers, timeout);
  }

  /// Sends a request without reading the answer.
  failure send_only(std::string_view method, std::string_view target,
                    std::string_view body = {}, const header_list& headers = {},
                    std::chrono::milliseconds timeout = 2s);

  /// Sends raw bytes (e.g. a malformed request) and reads one response.
  http_response raw(std::string_view bytes,
                    std::chrono::milliseconds timeout = 5s);

  /// Sends raw bytes without reading.
  failure send_raw(std::string_view bytes,
                   std::chrono::milliseconds timeout = 2s);

  /// Waits until the server closes the connection (true) or the timeout
  /// passes (false). Discards anything received.
  bool wait_for_close(std::chrono::milliseconds timeout);

  bool is_open() const noexcept;

  void close();

  /// Connections opened so far.
  int connects() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Sends one request on each of `n` concurrent connections (all opened
/// before any request is sent) and returns the status of each (0 for a
/// failed request). Runs in the calling thread.
std::vector<int> concurrent_requests(uint16_t port, std::size_t n,
                                     std::string body,
                                     const header_list& headers = {},
                                     std::chrono::milliseconds timeout = 10s);

/// Builds an embeddings request body.
std::string embed_body(const std::vector<std::string>& inputs,
                       std::optional<int> dimensions = std::nullopt,
                       bool base64 = false, std::string model = "m");

} // namespace embedrt::test
