// Server-side batching in C++ with TF Serving's parameters and semantics
// (the Python BatchScheduler in tf_recopt/serving/batching.py is the
// reference it is tested against): requests for one signature and input
// shape queue into batches of at most max_batch_size rows; a batch runs when
// full, or when its oldest request has waited batch_timeout_micros and a
// batch thread is free; it is padded to the next allowed batch size with
// copies of the last task's first row; outputs are split back by rows.
//
// Why C++: with the queue, the merge and the wake-ups in Python, every
// request paid two GIL hand-offs and the batch thread held the GIL while it
// concatenated, so batching lowered QPS (BENCHMARKS.md, Serving section).
#ifndef TF_RECOPT_SERVING_NATIVE_BATCHER_H_
#define TF_RECOPT_SERVING_NATIVE_BATCHER_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/status.h"

namespace recopt_serving {

using Clock = std::chrono::steady_clock;
using tensorflow::Tensor;

struct BatchingParams {
  int64_t max_batch_size = 1000;
  int64_t batch_timeout_micros = 0;
  int64_t max_enqueued_batches = 10;
  int num_batch_threads = 1;
  std::vector<int64_t> allowed_batch_sizes;
  bool enable_large_batch_splitting = false;

  int64_t PaddedSize(int64_t rows) const;
};

// Runs one merged batch: inputs in, outputs out.
using BatchRunner = std::function<tensorflow::Status(const std::vector<Tensor>&, std::vector<Tensor>*)>;

// Called once per batch after its requests were answered: (label, rows,
// padded rows, each task's queueing seconds).
using BatchObserver = std::function<void(const std::string&, int64_t, int64_t, const std::vector<double>&)>;

class Batcher {
 public:
  Batcher(BatchingParams params, BatchObserver observer);
  ~Batcher();  // Stop()s

  // Blocks until this request's rows of the batch outputs are ready. `key`
  // must differ between signatures and between non-batch input shapes.
  tensorflow::Status Run(const std::string& key, const BatchRunner& runner, const std::vector<Tensor>& inputs,
                         int64_t rows, const std::string& label, std::vector<Tensor>* outputs);
  // Fails queued requests with UNAVAILABLE and joins the batch threads.
  void Stop();
  const BatchingParams& params() const { return params_; }

 private:
  struct Task;
  struct Batch;
  tensorflow::Status RunOne(const std::string& key, const BatchRunner& runner, const std::vector<Tensor>& inputs,
                            int64_t rows, const std::string& label, std::vector<Tensor>* outputs);
  std::unique_ptr<Batch> NextReady(Clock::time_point now, Clock::duration* wait);
  void Work();
  void Process(Batch& batch);

  const BatchingParams params_;
  const BatchObserver observer_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::deque<std::unique_ptr<Batch>>> queues_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

}  // namespace recopt_serving

#endif  // TF_RECOPT_SERVING_NATIVE_BATCHER_H_
