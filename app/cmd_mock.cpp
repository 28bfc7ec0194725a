// `embedrt mock`: runs the built-in OpenAI-compatible upstream until SIGINT
// or SIGTERM. Prints exactly one line to stdout once it accepts connections:
// "listening on http://127.0.0.1:PORT/v1".
#include "cli_args.hpp"
#include "commands.hpp"
#include "mock/mock_server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <iostream>
#include <limits>

namespace embedrt::app {

namespace {

cli::arg_parser make_parser() {
  cli::arg_parser p{"embedrt mock [options]",
                    "Runs the built-in OpenAI-compatible embeddings upstream "
                    "(deterministic lexical\nhash embeddings) with optional "
                    "latency and fault injection."};
  p.option("listen", "HOST:PORT",
           "address to listen on (default 127.0.0.1:0; port 0 picks one)")
      .option("latency-ms", "N", "fixed latency of every embeddings response")
      .option("latency", "SPEC",
              "latency model: N, fixed:N or lognormal:MEDIAN_MS:P99_MS")
      .option("fault", "SPEC",
              "fault rates, e.g. 500:0.1,429:0.05,hang:0.02,reset:0.02,"
              "malformed:0.01,baddims:0.01,nan:0.005 (also quota, close, any "
              "status 400-599)")
      .option("rpm", "N", "requests per minute limit (default unlimited)")
      .option("tpm", "N", "tokens per minute limit (default unlimited)")
      .option("tls-cert", "FILE", "PEM certificate chain (enables HTTPS)")
      .option("tls-key", "FILE", "PEM private key of --tls-cert")
      .option("dims-default", "N",
              "dimensions when a request asks for none (default 256)")
      .option("threads", "N", "I/O threads (default 1)")
      .option("seed", "N", "seed of the fault and latency RNGs (default 1)")
      .option("max-body-bytes", "N",
              "largest request body, larger gets 413 (default 16777216)")
      .option("max-tokens-per-request", "N",
              "tokens one request may carry in total (default 300000)")
      .option("retry-after-ms", "N",
              "retry-after-ms of an injected 429 (default 20)")
      .option("model", "NAME",
              "model name reported in responses (default: the request's)")
      .flag("refuse-base64",
            "answer encoding_format base64 with 400 (an upstream that only "
            "answers floats)");
  return p;
}

int usage_error(const std::string& msg) {
  return cli::usage_error("mock", msg);
}

} // namespace

int cmd_mock(const std::vector<std::string>& args) {
  auto p = make_parser();
  if (!p.parse(args))
    return usage_error(p.error());
  if (p.help_requested()) {
    std::cout << p.help();
    return 0;
  }
  mock::mock_options opts;
  if (auto listen = p.value("listen")) {
    auto addr = mock::parse_listen(*listen);
    if (!addr)
      return usage_error(addr.error);
    opts.host = addr.value->host;
    opts.port = addr.value->port;
  }
  if (p.has("latency-ms") && p.has("latency"))
    return usage_error("--latency-ms and --latency are exclusive");
  if (auto lat = p.value("latency-ms")) {
    auto model = mock::parse_latency_spec("fixed:" + *lat);
    if (!model)
      return usage_error("--latency-ms: " + model.error);
    opts.latency = *model.value;
  }
  if (auto lat = p.value("latency")) {
    auto model = mock::parse_latency_spec(*lat);
    if (!model)
      return usage_error("--latency: " + model.error);
    opts.latency = *model.value;
  }
  if (auto spec = p.value("fault")) {
    auto faults = mock::parse_fault_spec(*spec);
    if (!faults)
      return usage_error("--fault: " + faults.error);
    opts.faults = std::move(*faults.value);
  }
  constexpr auto i64max = std::numeric_limits<int64_t>::max();
  int64_t dims = opts.dims_default;
  int64_t threads = static_cast<int64_t>(opts.threads);
  int64_t max_body = static_cast<int64_t>(opts.max_body_bytes);
  if (!p.get("rpm", opts.rpm, 0, i64max) || !p.get("tpm", opts.tpm, 0, i64max)
      || !p.get("tls-cert", opts.tls_cert_file)
      || !p.get("tls-key", opts.tls_key_file)
      || !p.get("dims-default", dims, 1, opts.dims_max)
      || !p.get("threads", threads, 1, 256)
      || !p.get("seed", opts.seed, 0, std::numeric_limits<uint64_t>::max())
      || !p.get("max-body-bytes", max_body, 64, int64_t{1} << 40)
      || !p.get("retry-after-ms", opts.retry_after_ms, 0, 3600000)
      || !p.get("max-tokens-per-request", opts.max_tokens_per_request, 1,
                i64max)
      || !p.get("model", opts.model))
    return usage_error(p.error());
  opts.refuse_base64 = p.has("refuse-base64");
  opts.dims_default = static_cast<int32_t>(dims);
  opts.threads = static_cast<std::size_t>(threads);
  opts.max_body_bytes = static_cast<std::size_t>(max_body);
  if (auto msg = mock::validate(opts); !msg.empty())
    return usage_error(msg);
  cli::raise_fd_limit();
  // Install the signal handlers before the server runs, so that a signal
  // right after the "listening" line is never lost.
  boost::asio::io_context signals_ctx;
  boost::asio::signal_set signals{signals_ctx, SIGINT, SIGTERM};
  int received = 0;
  signals.async_wait([&received](const boost::system::error_code& ec, int sig) {
    if (!ec)
      received = sig;
  });
  mock::mock_server server{opts};
  if (server.start() == 0) {
    std::cerr << "embedrt mock: " << server.error() << '\n';
    return 1;
  }
  std::cout << "listening on " << server.base_url() << std::endl;
  signals_ctx.run();
  server.stop();
  std::cerr << "embedrt mock: stopped by signal " << received << '\n';
  return 0;
}

} // namespace embedrt::app
