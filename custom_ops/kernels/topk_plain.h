// TopKV2's CPU algorithm for one row, shared by the TopK kernels for the
// rows the sampled path cannot take.
#ifndef RECOPT_KERNELS_TOPK_PLAIN_H_
#define RECOPT_KERNELS_TOPK_PLAIN_H_

#include <algorithm>
#include <memory>
#include <numeric>
#include <vector>

#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/lib/gtl/top_n.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace recopt_kernels {

// TopKV2's CPU algorithm for one row (core/kernels/topk_op.cc): a max
// reduction for k = 1, a sort for k = n, a TopN heap otherwise. Reproduced
// rather than approximated because with NaN its answer depends on the order
// in which it compares.
template <typename T>
inline void PlainRow(const T* x, int64_t n, int k, bool sorted, T* values, int32* indices) {
  if (k == 1) {
    Eigen::TensorMap<Eigen::Tensor<const T, 1, Eigen::RowMajor>> row(x, n);
    const Eigen::Tensor<T, 0, Eigen::RowMajor> max = row.maximum();
    indices[0] = 0;
    for (int64_t c = 0; c < n; ++c) {
      if (max() == x[c]) {
        indices[0] = static_cast<int32>(c);
        break;
      }
    }
    values[0] = x[indices[0]];
    return;
  }
  if (k == n) {
    std::iota(indices, indices + k, 0);
    std::sort(indices, indices + k, [x](int32 a, int32 b) { return x[b] < x[a]; });
    // Equal values keep ascending indices.
    for (int32* run = indices; run != indices + k;) {
      int32* end = run + 1;
      while (end != indices + k && x[*end] == x[*run]) ++end;
      std::sort(run, end);
      run = end;
    }
  } else {
    const auto stable = [x](int32 a, int32 b) {
      if (x[b] < x[a]) return true;
      if (x[b] > x[a]) return false;
      return a < b;
    };
    gtl::TopN<int32, decltype(stable)> filter(k, stable);
    filter.reserve(n);
    for (int32 c = 0; c < n; ++c) filter.push(c);
    int i = 0;
    if (sorted) {
      std::unique_ptr<std::vector<int32>> top(filter.Extract());
      for (int32 c : *top) indices[i++] = c;
    } else {
      for (auto it = filter.unsorted_begin(); it != filter.unsorted_end(); ++it) indices[i++] = *it;
    }
  }
  for (int i = 0; i < k; ++i) values[i] = x[indices[i]];
}

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_TOPK_PLAIN_H_
