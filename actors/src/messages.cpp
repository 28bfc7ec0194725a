#include "messages.hpp"

namespace embedrt::detail {

const char* to_string(call_verdict v) {
  switch (v) {
    case call_verdict::success: return "success";
    case call_verdict::failure: return "failure";
    case call_verdict::ignored: return "ignored";
  }
  return "unknown";
}

} // namespace embedrt::detail
