// Upstream endpoints: base URLs as in OPENAI_BASE_URL, and the HTTP target and
// auth headers of an embeddings call for each provider kind.
#pragma once

#include "embedrt/protocol/provider.hpp"

#include <caf/expected.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace embedrt {

/// A parsed base URL such as `https://api.openai.com/v1` or
/// `http://127.0.0.1:8080/v1`.
struct base_url {
  bool tls = false;
  /// Host name or IP address as given; IPv6 addresses without brackets.
  std::string host;
  /// The port; 80 or 443 when the URL names none.
  uint16_t port = 0;
  /// Path prefix without a trailing slash, e.g. "/v1" or "" (kept as given).
  std::string path;

  /// Renders the URL back, e.g. "http://127.0.0.1:8080/v1" (the default
  /// port of the scheme is omitted, IPv6 hosts are bracketed).
  std::string to_string() const;

  /// The value of the HTTP `Host` header: host, bracketed if IPv6, plus
  /// ":port" unless it is the scheme's default port.
  std::string authority() const;
};

/// Parses `http[s]://host[:port][/path]` (IPv6 hosts in brackets). Rejects
/// other schemes, user-info, queries, fragments, empty hosts and bad ports
/// with `invalid_input`.
caf::expected<base_url> parse_base_url(std::string_view url);

/// How to call the embeddings endpoint of one upstream.
struct endpoint_config {
  base_url url;
  provider_kind provider = provider_kind::openai;
  /// Azure only: the `api-version` query parameter.
  std::string azure_api_version = "2024-02-01";
};

/// The request target (path + query) for an embeddings call:
/// `{path}/embeddings`, plus `?api-version=...` for Azure (whose base URL is
/// `https://RES.openai.azure.com/openai/deployments/DEPLOYMENT`).
std::string embeddings_target(const endpoint_config& cfg);

/// The authentication header for an API key: `Authorization: Bearer KEY`, or
/// `api-key: KEY` for Azure. Empty name when `key` is empty.
std::pair<std::string, std::string> auth_header(provider_kind provider,
                                                const std::string& key);

} // namespace embedrt
