// embedrt's single public include for library users.
#pragma once

#include "embedrt/client.hpp"
#include "embedrt/config.hpp"
#include "embedrt/distributed.hpp"
#include "embedrt/interfaces.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/policies.hpp"
#include "embedrt/protocol/endpoint.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/openai.hpp"
#include "embedrt/protocol/provider.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
