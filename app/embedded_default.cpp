#include "embedded_default.hpp"

namespace embedrt::app {

std::unique_ptr<mock::mock_server> start_embedded_default(app_config& cfg,
                                                          std::string& error) {
  auto server = std::make_unique<mock::mock_server>(mock::mock_options{});
  if (server->start() == 0) {
    error = "cannot start the built-in upstream: " + server->error();
    return nullptr;
  }
  use_embedded_upstream(cfg, server->base_url());
  return server;
}

} // namespace embedrt::app
