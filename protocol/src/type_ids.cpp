#include "embedrt/protocol/type_ids.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>

namespace embedrt {

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::embedrt>();
  cfg.add_error_category(error_category(),
                         [](uint8_t code, caf::atom_value,
                            const caf::message& ctx) -> std::string {
                           auto err = caf::error{code, error_category(), ctx};
                           return render_error(err);
                         });
}

} // namespace embedrt
