#include "embedded_default.hpp"

#include <iostream>

namespace embedrt::app {

std::unique_ptr<mock::mock_server>
start_embedded_default(app_config& cfg, std::string_view command,
                       std::string& error) {
  if (!cfg.uses_embedded_default)
    return nullptr;
  auto server = std::make_unique<mock::mock_server>(mock::mock_options{});
  if (server->start() == 0) {
    error = "cannot start the built-in upstream: " + server->error();
    return nullptr;
  }
  use_embedded_upstream(cfg, server->base_url());
  std::cerr << "embedrt " << command
            << ": no upstream configured and no API key: using the built-in "
               "upstream (the embedded default: deterministic lexical hash "
               "embeddings, not semantic) at "
            << server->base_url() << '\n';
  return server;
}

} // namespace embedrt::app
