#include "embedrt/protocol/endpoint.hpp"

#include "embedrt/protocol/errc.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace embedrt {

namespace {

// Error details never echo the URL: it could carry credentials.
caf::error bad_url(std::string what) {
  return make_error(errc::invalid_input, "invalid base URL: " + what);
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
      || (c >= '0' && c <= '9');
}

bool is_unreserved(char c) {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

// RFC 3986 pchar and '/', with percent-encoded octets checked for form.
bool valid_path(std::string_view path) {
  auto is_hex = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
        || (c >= 'A' && c <= 'F');
  };
  for (std::size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (is_unreserved(c) || c == '/' || c == ':' || c == '@')
      continue;
    switch (c) {
      case '!':
      case '$':
      case '&':
      case '\'':
      case '(':
      case ')':
      case '*':
      case '+':
      case ',':
      case ';':
      case '=': continue;
      case '%':
        if (i + 2 < path.size() && is_hex(path[i + 1]) && is_hex(path[i + 2])) {
          i += 2;
          continue;
        }
        return false;
      default: return false;
    }
  }
  return true;
}

bool valid_reg_name(std::string_view host) {
  for (char c : host)
    if (!is_alnum(c) && c != '-' && c != '.' && c != '_')
      return false;
  return true;
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size())
    return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i])
      return false;
  }
  return true;
}

uint16_t default_port(bool tls) {
  return tls ? 443 : 80;
}

std::string_view trim_blanks(std::string_view url) {
  while (!url.empty() && (url.front() == ' ' || url.front() == '\t'))
    url.remove_prefix(1);
  while (!url.empty() && (url.back() == ' ' || url.back() == '\t'))
    url.remove_suffix(1);
  return url;
}

// Removes "http://" or "https://" (any case) from `url`; sets `tls`.
caf::error strip_scheme(std::string_view& url, bool& tls) {
  if (iequals_prefix(url, "https://")) {
    tls = true;
    url.remove_prefix(8);
    return {};
  }
  if (iequals_prefix(url, "http://")) {
    url.remove_prefix(7);
    return {};
  }
  if (url.find("://") != std::string_view::npos)
    return bad_url("unsupported scheme (use http:// or https://)");
  return bad_url("missing scheme (use http:// or https://)");
}

// The host and the port text of an authority; `has_port` if a ':' came
// after the host.
struct host_and_port {
  std::string host;
  std::string_view port_text;
  bool has_port = false;
};

// "[v6-address]" with an optional ":port".
caf::error split_ipv6_authority(std::string_view authority,
                                host_and_port& out) {
  auto close = authority.find(']');
  if (close == std::string_view::npos)
    return bad_url("unterminated IPv6 address (missing ']')");
  auto host = authority.substr(1, close - 1);
  std::string host_str{host};
  in6_addr addr;
  if (host.empty() || inet_pton(AF_INET6, host_str.c_str(), &addr) != 1)
    return bad_url("invalid IPv6 address");
  out.host = std::move(host_str);
  auto rest = authority.substr(close + 1);
  if (!rest.empty()) {
    if (rest.front() != ':')
      return bad_url("unexpected characters after the IPv6 address");
    out.has_port = true;
    out.port_text = rest.substr(1);
  }
  return {};
}

// "name-or-ipv4" with an optional ":port".
caf::error split_authority(std::string_view authority, host_and_port& out) {
  if (!authority.empty() && authority.front() == '[')
    return split_ipv6_authority(authority, out);
  auto colon = authority.find(':');
  auto host = authority.substr(0, colon);
  if (colon != std::string_view::npos) {
    out.has_port = true;
    out.port_text = authority.substr(colon + 1);
    if (out.port_text.find(':') != std::string_view::npos)
      return bad_url("IPv6 addresses must be enclosed in brackets");
  }
  if (host.empty())
    return bad_url("empty host");
  if (!valid_reg_name(host))
    return bad_url("invalid character in host");
  out.host.assign(host);
  return {};
}

caf::error parse_port(std::string_view text, uint16_t& out) {
  unsigned port = 0;
  if (text.empty() || text.size() > 5)
    return bad_url("invalid port");
  for (char c : text) {
    if (c < '0' || c > '9')
      return bad_url("invalid port");
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port == 0 || port > 65535)
    return bad_url("port out of range (1-65535)");
  out = static_cast<uint16_t>(port);
  return {};
}

} // namespace

caf::expected<base_url> parse_base_url(std::string_view url) {
  url = trim_blanks(url);
  base_url result;
  if (auto err = strip_scheme(url, result.tls))
    return err;
  if (url.find('#') != std::string_view::npos)
    return bad_url("fragments (#...) are not allowed");
  if (url.find('?') != std::string_view::npos)
    return bad_url("queries (?...) are not allowed");
  auto slash = url.find('/');
  auto authority = url.substr(0, slash);
  auto path = slash == std::string_view::npos ? std::string_view{}
                                              : url.substr(slash);
  if (authority.find('@') != std::string_view::npos)
    return bad_url("user-info (user:password@) is not allowed");
  host_and_port hp;
  if (auto err = split_authority(authority, hp))
    return err;
  result.host = std::move(hp.host);
  result.port = default_port(result.tls);
  if (hp.has_port)
    if (auto err = parse_port(hp.port_text, result.port))
      return err;
  if (!valid_path(path))
    return bad_url("invalid character in path");
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  result.path.assign(path);
  return result;
}

std::string base_url::authority() const {
  std::string out;
  if (host.find(':') != std::string::npos) {
    out += '[';
    out += host;
    out += ']';
  } else {
    out += host;
  }
  if (port != default_port(tls)) {
    out += ':';
    out += std::to_string(port);
  }
  return out;
}

std::string base_url::to_string() const {
  std::string out = tls ? "https://" : "http://";
  out += authority();
  out += path;
  return out;
}

std::string embeddings_target(const endpoint_config& cfg) {
  std::string target = cfg.url.path + "/embeddings";
  if (cfg.provider == provider_kind::azure) {
    target += "?api-version=";
    constexpr char hex[] = "0123456789ABCDEF";
    for (char c : cfg.azure_api_version) {
      if (is_unreserved(c)) {
        target += c;
      } else {
        auto b = static_cast<unsigned char>(c);
        target += '%';
        target += hex[b >> 4];
        target += hex[b & 0xF];
      }
    }
  }
  return target;
}

std::pair<std::string, std::string> auth_header(provider_kind provider,
                                                const std::string& key) {
  if (key.empty())
    return {};
  if (provider == provider_kind::azure)
    return {"api-key", key};
  return {"Authorization", "Bearer " + key};
}

} // namespace embedrt
