// What the GPU OpKernels share: TensorFlow's CUDA stream for the op, a
// scratch buffer from TensorFlow's allocator, and core errors as Status.
// Compiled only with RECOPT_CUDA=1 (custom_ops/build.py); plain C++, the
// device code lives in custom_ops/gpu/.
#ifndef RECOPT_KERNELS_GPU_SUPPORT_H_
#define RECOPT_KERNELS_GPU_SUPPORT_H_

#include <string>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "xla/stream_executor/stream.h"

namespace tensorflow {
namespace recopt_kernels {

// The cudaStream_t TensorFlow runs this op on, as the core takes it.
inline Status GpuStream(OpKernelContext* ctx, void** stream) {
  auto* device_context = ctx->op_device_context();
  stream_executor::Stream* s = device_context ? device_context->stream() : nullptr;
  *stream = s ? s->platform_specific_handle().stream : nullptr;
  if (*stream == nullptr) {
    return errors::Internal(ctx->op_kernel().name(), ": no CUDA stream for this op");
  }
  return OkStatus();
}

// Device scratch of `bytes`, alive until `scratch` goes out of scope; the
// allocator keeps it ordered with the op's stream.
inline Status GpuScratch(OpKernelContext* ctx, size_t bytes, Tensor* scratch, void** data) {
  TF_RETURN_IF_ERROR(
      ctx->allocate_temp(DT_INT8, TensorShape({static_cast<int64_t>(bytes > 0 ? bytes : 1)}), scratch));
  *data = scratch->flat<int8>().data();
  return OkStatus();
}

// Core messages that follow argument checks become InvalidArgument;
// everything else (a CUDA or cuBLAS call) is Internal.
inline Status CoreStatus(const OpKernelContext* ctx, const std::string& err, bool invalid_argument = false) {
  if (err.empty()) return OkStatus();
  const std::string message = ctx->op_kernel().name() + " (GPU): " + err;
  return invalid_argument ? errors::InvalidArgument(message) : errors::Internal(message);
}

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_GPU_SUPPORT_H_
