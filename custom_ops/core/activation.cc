#include "activation.h"

#include <cstring>

namespace recopt {
namespace {
const char* const kNames[kActCount] = {
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu",
    "sigmoid", "tanh", "softplus", "swish", "gelu", "gelu_tanh",
};
}  // namespace

Activation ActivationFromName(const char* name) {
  for (int i = 0; i < kActCount; ++i) {
    if (std::strcmp(name, kNames[i]) == 0) return static_cast<Activation>(i);
  }
  return kActCount;
}

const char* ActivationName(Activation act) {
  return (act >= 0 && act < kActCount) ? kNames[act] : "unknown";
}

}  // namespace recopt
