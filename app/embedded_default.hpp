// The embedded default upstream: with no upstream and no API key configured
// (app_config::uses_embedded_default), a command runs the built-in upstream
// (`embedrt mock`'s server) in its own process on 127.0.0.1 and sends its
// requests there, so the whole path - HTTP, pool, batching - runs for real.
#pragma once

#include "mock/mock_server.hpp"
#include "node_config.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace embedrt::app {

/// When `cfg.uses_embedded_default`: starts the built-in upstream on
/// 127.0.0.1 (a free port), points `cfg` at it (`use_embedded_upstream`) and
/// says so on stderr ("embedrt COMMAND: no upstream configured and no API
/// key: using the built-in upstream ... at URL"). Returns the running server,
/// which must outlive every actor system using it (declare it first). Returns
/// null when `cfg` names an upstream, and null with `error` set when the
/// server cannot start.
std::unique_ptr<mock::mock_server>
start_embedded_default(app_config& cfg, std::string_view command,
                       std::string& error);

} // namespace embedrt::app
