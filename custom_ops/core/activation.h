// Activation codes shared by the op attrs, the packer and the ISA kernels.
// Plain C++ (no TensorFlow, no std templates) so the per-ISA translation
// units can include it without instantiating anything ODR-sensitive.
#ifndef RECOPT_CORE_ACTIVATION_H_
#define RECOPT_CORE_ACTIVATION_H_

namespace recopt {

enum Activation : int {
  kActNone = 0,
  kActRelu,
  kActRelu6,
  kActLeakyRelu,
  kActElu,
  kActSelu,
  kActSigmoid,
  kActTanh,
  kActSoftplus,
  kActSwish,
  kActGeluExact,
  kActGeluTanh,
  kActCount,
};

// Returns kActCount for an unknown name; names follow tf.keras.activations.
Activation ActivationFromName(const char* name);
const char* ActivationName(Activation act);

}  // namespace recopt

#endif  // RECOPT_CORE_ACTIVATION_H_
