#include "mock/mock_options.hpp"

#include <boost/asio/ip/address.hpp>
#include <charconv>
#include <cmath>
#include <utility>

namespace embedrt::mock {

namespace {

std::optional<double> to_double(std::string_view text) {
  if (text.empty())
    return std::nullopt;
  double x = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (ec != std::errc{} || end != text.data() + text.size()
      || !std::isfinite(x))
    return std::nullopt;
  return x;
}

std::optional<int> to_int(std::string_view text) {
  if (text.empty())
    return std::nullopt;
  int x = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (ec != std::errc{} || end != text.data() + text.size())
    return std::nullopt;
  return x;
}

std::string quoted(std::string_view text) {
  std::string out = "'";
  out.append(text.data(), text.size());
  out += '\'';
  return out;
}

struct named_kind {
  const char* name;
  fault_kind kind;
};

constexpr named_kind named_kinds[] = {
    {"quota", fault_kind::quota},     {"hang", fault_kind::hang},
    {"reset", fault_kind::reset},     {"malformed", fault_kind::malformed},
    {"baddims", fault_kind::baddims}, {"nan", fault_kind::nan},
    {"close", fault_kind::close},     {"none", fault_kind::none},
};

} // namespace

std::string to_string(const fault& f) {
  switch (f.kind) {
    case fault_kind::none: return "none";
    case fault_kind::status: return std::to_string(f.status);
    case fault_kind::rate_limit: return "429";
    default:
      for (const auto& nk : named_kinds)
        if (nk.kind == f.kind)
          return nk.name;
  }
  return "unknown";
}

parse_result<fault> parse_fault(std::string_view text) {
  for (const auto& nk : named_kinds)
    if (text == nk.name)
      return parse_result<fault>::ok(fault{nk.kind, 0});
  if (auto status = to_int(text)) {
    if (*status < 400 || *status > 599)
      return parse_result<fault>::fail("fault status " + quoted(text)
                                       + " is not in 400-599");
    if (*status == 429)
      return parse_result<fault>::ok(fault{fault_kind::rate_limit, 429});
    return parse_result<fault>::ok(fault{fault_kind::status, *status});
  }
  return parse_result<fault>::fail(
      "unknown fault kind " + quoted(text)
      + " (expected a status 400-599 or one of quota, hang, reset, malformed, "
        "baddims, nan, close)");
}

parse_result<std::vector<fault_rate>> parse_fault_spec(std::string_view text) {
  using result = parse_result<std::vector<fault_rate>>;
  std::vector<fault_rate> out;
  if (text.empty())
    return result::fail("empty fault spec (expected KIND:RATE,...)");
  double sum = 0.0;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{}
                                           : text.substr(comma + 1);
    if (comma != std::string_view::npos && text.empty())
      return result::fail("fault spec ends with ','");
    auto colon = item.rfind(':');
    if (colon == std::string_view::npos)
      return result::fail("fault " + quoted(item)
                          + " has no rate (expected KIND:RATE)");
    auto kind = parse_fault(item.substr(0, colon));
    if (!kind)
      return result::fail(kind.error);
    auto rate = to_double(item.substr(colon + 1));
    if (!rate || *rate < 0.0 || *rate > 1.0)
      return result::fail("fault rate " + quoted(item.substr(colon + 1))
                          + " of " + to_string(*kind.value)
                          + " is not a number in [0, 1]");
    for (const auto& prev : out)
      if (prev.what == *kind.value)
        return result::fail("fault " + to_string(*kind.value)
                            + " is given twice");
    sum += *rate;
    out.push_back(fault_rate{*kind.value, *rate});
  }
  if (sum > 1.0 + 1e-9)
    return result::fail("fault rates sum to " + std::to_string(sum)
                        + ", more than 1");
  return result::ok(std::move(out));
}

parse_result<latency_model> parse_latency_spec(std::string_view text) {
  using result = parse_result<latency_model>;
  constexpr std::string_view lognormal = "lognormal:";
  constexpr std::string_view fixed = "fixed:";
  latency_model m;
  if (text.substr(0, lognormal.size()) == lognormal) {
    auto rest = text.substr(lognormal.size());
    auto colon = rest.find(':');
    if (colon == std::string_view::npos)
      return result::fail("latency " + quoted(text)
                          + " is not lognormal:MEDIAN_MS:P99_MS");
    auto median = to_double(rest.substr(0, colon));
    auto p99 = to_double(rest.substr(colon + 1));
    if (!median || !p99)
      return result::fail("latency " + quoted(text)
                          + " is not lognormal:MEDIAN_MS:P99_MS with numbers");
    if (*median <= 0.0 || *p99 < *median)
      return result::fail("latency " + quoted(text)
                          + " needs 0 < MEDIAN_MS <= P99_MS");
    m.kind = latency_model::shape::lognormal;
    m.median_ms = *median;
    m.p99_ms = *p99;
    return result::ok(m);
  }
  auto value = text.substr(0, fixed.size()) == fixed ? text.substr(fixed.size())
                                                     : text;
  auto ms = to_double(value);
  if (!ms || *ms < 0.0)
    return result::fail("latency " + quoted(text)
                        + " is neither a number of milliseconds >= 0 nor "
                          "lognormal:MEDIAN_MS:P99_MS");
  m.kind = *ms > 0.0 ? latency_model::shape::fixed : latency_model::shape::none;
  m.fixed_ms = *ms;
  return result::ok(m);
}

parse_result<listen_address> parse_listen(std::string_view text) {
  using result = parse_result<listen_address>;
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos)
    return result::fail("listen address " + quoted(text) + " is not HOST:PORT");
  auto host = text.substr(0, colon);
  auto port = to_int(text.substr(colon + 1));
  if (!port || *port < 0 || *port > 65535)
    return result::fail("listen port " + quoted(text.substr(colon + 1))
                        + " is not a number in 0-65535");
  std::string ip{host};
  if (host == "localhost") {
    ip = "127.0.0.1";
  } else if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    ip = std::string{host.substr(1, host.size() - 2)};
  }
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(ip, ec);
  if (ec || (addr.is_v6() && host.front() != '['))
    return result::fail("listen host " + quoted(host)
                        + " is not an IP address (IPv6 in brackets) or "
                          "localhost");
  return result::ok(listen_address{ip, static_cast<uint16_t>(*port)});
}

std::string validate(const mock_options& opts) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(opts.host, ec);
  if (ec)
    return "host '" + opts.host + "' is not an IP address";
  if (opts.threads < 1 || opts.threads > 256)
    return "threads must be in 1-256";
  if (opts.dims_max < 1)
    return "dims_max must be >= 1";
  if (opts.dims_default < 1 || opts.dims_default > opts.dims_max)
    return "dims-default must be in 1-" + std::to_string(opts.dims_max);
  if (opts.max_body_bytes < 64)
    return "max-body-bytes must be >= 64";
  if (opts.rpm < 0 || opts.tpm < 0)
    return "rpm and tpm must be >= 0";
  if (opts.retry_after_ms < 0)
    return "retry-after-ms must be >= 0";
  if (opts.tls_cert_file.empty() != opts.tls_key_file.empty())
    return "TLS needs both a certificate and a key";
  double sum = 0.0;
  for (const auto& f : opts.faults) {
    if (f.what.kind == fault_kind::none || f.probability < 0.0
        || f.probability > 1.0)
      return "fault rates must name a fault and be in [0, 1]";
    sum += f.probability;
  }
  if (sum > 1.0 + 1e-9)
    return "fault rates sum to more than 1";
  using shape = latency_model::shape;
  const auto& lat = opts.latency;
  if (lat.kind == shape::fixed && !(lat.fixed_ms >= 0.0))
    return "fixed latency must be >= 0";
  if (lat.kind == shape::lognormal
      && !(lat.median_ms > 0.0 && lat.p99_ms >= lat.median_ms))
    return "lognormal latency needs 0 < median <= p99";
  return {};
}

} // namespace embedrt::mock
