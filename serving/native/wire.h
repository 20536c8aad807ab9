// PredictRequest / PredictResponse on the wire without their generated
// classes: tensorflow_serving's protos are not in TensorFlow's wheel, but
// only their outer layer is needed (a map<string, TensorProto>), and each
// TensorProto is parsed and written by TensorFlow's own generated code.
#ifndef TF_RECOPT_SERVING_NATIVE_WIRE_H_
#define TF_RECOPT_SERVING_NATIVE_WIRE_H_

#include <string>
#include <string_view>
#include <vector>

#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/status.h"

namespace recopt_serving {

// One signature input's contract, with the words its messages use.
struct Expect {
  tensorflow::DataType dtype;
  std::string dtype_name;  // tf.DType.name: "float32", "int64", "string"
  std::string shape_str;   // "[?, 13]"
  bool known_rank = false;
  std::vector<int64_t> dims;  // -1: any size
};

// PredictRequest.inputs[keys[i]] -> (*inputs)[i], checked against expect[i].
tensorflow::Status DecodeInputs(std::string_view request, const std::vector<std::string>& keys,
                                const std::vector<Expect>& expect, const std::string& signature,
                                std::vector<tensorflow::Tensor>* inputs);

// PredictResponse.outputs entries (field 1) for outputs[want[k]] named
// names[want[k]]. The caller appends model_spec (field 2): fields of one
// message may be concatenated on the wire.
void EncodeOutputs(const std::vector<tensorflow::Tensor>& outputs, const std::vector<std::string>& names,
                   const std::vector<int>& want, std::string* response);

}  // namespace recopt_serving

#endif  // TF_RECOPT_SERVING_NATIVE_WIRE_H_
