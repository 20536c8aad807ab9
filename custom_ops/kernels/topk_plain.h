// TopKV2's CPU algorithm for one row, shared by the TopK kernels for the
// rows the sampled path cannot take.
#ifndef RECOPT_KERNELS_TOPK_PLAIN_H_
#define RECOPT_KERNELS_TOPK_PLAIN_H_

#include <algorithm>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../core/isa_kernels.h"
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

// Rows this short take ShortSortedRow (sorted=true only).
constexpr int64_t kShortRowMaxCols = recopt::kShortTopKMaxCols;

// TopKV2's sorted answer for a short row without NaN: larger values first,
// equal values by ascending index, which is the order TopKV2's heap gives
// wherever no NaN is compared. Returns false, writing nothing, for a row
// with a NaN, so the caller reruns PlainRow and reproduces TopKV2's
// comparison-order-dependent answer. Why: TopKV2's TopN heap costs ~700 ns
// on a 26-long row (DeepCTR's KMaxPooling over 16k rows was 13 of CCPM's
// 18 ms at batch 512). float32 rows go to the ISA kernels' rank count;
// other types (rare here) to an insertion sort.
template <typename T>
inline bool ShortSortedRow(const T* x, int64_t n, int k, T* values, int32* indices) {
  for (int64_t c = 0; c < n; ++c) {
    if (x[c] != x[c]) return false;  // NaN
  }
  if constexpr (std::is_same<T, float>::value) {
    static_assert(sizeof(int32) == sizeof(int), "indices are written as int");
    recopt::SelectedIsaKernels().short_topk_row(x, static_cast<int>(n), k, values,
                                                reinterpret_cast<int*>(indices));
  } else {
    int count = 0;
    for (int64_t c = 0; c < n; ++c) {
      const T v = x[c];
      if (count == k && !(v > values[k - 1])) continue;  // an equal value with a later index loses
      int p = count < k ? count++ : k - 1;
      for (; p > 0 && values[p - 1] < v; --p) {
        values[p] = values[p - 1];
        indices[p] = indices[p - 1];
      }
      values[p] = v;
      indices[p] = static_cast<int32>(c);
    }
  }
  return true;
}

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_TOPK_PLAIN_H_
