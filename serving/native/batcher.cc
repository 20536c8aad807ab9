#include "batcher.h"

#include <algorithm>

#include "absl/status/status.h"
#include "tensorflow/core/framework/tensor_util.h"

namespace recopt_serving {
namespace {

// Rows [start, end) of t. Slices share t's buffer, and a slice whose first
// row is not 64-byte aligned would trip the kernels' and flat<>()'s
// alignment CHECKs, so those are copied.
Tensor Rows(const Tensor& t, int64_t start, int64_t end) {
  Tensor slice = t.Slice(start, end);
  return slice.IsAligned() ? slice : tensorflow::tensor::DeepCopy(slice);
}

}  // namespace

int64_t BatchingParams::PaddedSize(int64_t rows) const {
  for (int64_t size : allowed_batch_sizes)
    if (size >= rows) return size;
  return rows;
}

struct Batcher::Task {
  const std::vector<Tensor>* inputs;
  int64_t rows;
  Clock::time_point enqueued = Clock::now();
  std::vector<Tensor> outputs;
  tensorflow::Status status;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;

  void Finish() {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_one();
  }
};

struct Batcher::Batch {
  BatchRunner runner;
  std::string label;
  std::vector<Task*> tasks;
  int64_t rows = 0;
  Clock::time_point created = Clock::now();
};

Batcher::Batcher(BatchingParams params, BatchObserver observer)
    : params_(std::move(params)), observer_(std::move(observer)) {
  for (int i = 0; i < params_.num_batch_threads; ++i) threads_.emplace_back([this] { Work(); });
}

Batcher::~Batcher() { Stop(); }

tensorflow::Status Batcher::Run(const std::string& key, const BatchRunner& runner, const std::vector<Tensor>& inputs,
                                int64_t rows, const std::string& label, std::vector<Tensor>* outputs) {
  const int64_t limit = params_.max_batch_size;
  if (rows <= limit) return RunOne(key, runner, inputs, rows, label, outputs);
  if (!params_.enable_large_batch_splitting)
    return absl::InvalidArgumentError("Task size " + std::to_string(rows) + " is larger than maximum input batch size " +
                                      std::to_string(limit) +
                                      " (batching parameter max_batch_size); send smaller requests or set "
                                      "enable_large_batch_splitting");
  std::vector<std::vector<Tensor>> parts;
  for (int64_t start = 0; start < rows; start += limit) {
    const int64_t n = std::min(limit, rows - start);
    std::vector<Tensor> slice;
    for (const Tensor& t : inputs) slice.push_back(Rows(t, start, start + n));
    parts.emplace_back();
    tensorflow::Status s = RunOne(key, runner, slice, n, label, &parts.back());
    if (!s.ok()) return s;
  }
  outputs->clear();
  for (size_t j = 0; j < parts[0].size(); ++j) {
    std::vector<Tensor> pieces;
    for (const auto& p : parts) pieces.push_back(p[j]);
    outputs->emplace_back();
    tensorflow::Status s = tensorflow::tensor::Concat(pieces, &outputs->back());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

tensorflow::Status Batcher::RunOne(const std::string& key, const BatchRunner& runner,
                                   const std::vector<Tensor>& inputs, int64_t rows, const std::string& label,
                                   std::vector<Tensor>* outputs) {
  Task task;
  task.inputs = &inputs;
  task.rows = rows;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::UnavailableError("the server is shutting down");
    auto& queue = queues_[key];
    if (queue.empty() || queue.back()->rows + rows > params_.max_batch_size) {
      if (static_cast<int64_t>(queue.size()) >= params_.max_enqueued_batches) {
        if (queue.empty()) queues_.erase(key);
        return absl::UnavailableError("The batch scheduling queue for " + label +
                                      " is full (max_enqueued_batches=" +
                                      std::to_string(params_.max_enqueued_batches) +
                                      "); retry later or raise num_batch_threads");
      }
      auto batch = std::make_unique<Batch>();
      batch->runner = runner;
      batch->label = label;
      queue.push_back(std::move(batch));
    }
    queue.back()->tasks.push_back(&task);
    queue.back()->rows += rows;
  }
  cv_.notify_one();
  std::unique_lock<std::mutex> lock(task.mu);
  task.cv.wait(lock, [&] { return task.done; });
  if (!task.status.ok()) return task.status;
  *outputs = std::move(task.outputs);
  return absl::OkStatus();
}

std::unique_ptr<Batcher::Batch> Batcher::NextReady(Clock::time_point now, Clock::duration* wait) {
  const auto timeout = std::chrono::microseconds(params_.batch_timeout_micros);
  auto ready = queues_.end();
  bool have_wait = false;
  for (auto it = queues_.begin(); it != queues_.end(); ++it) {
    const Batch& head = *it->second.front();
    if (it->second.size() > 1 || head.rows >= params_.max_batch_size || now - head.created >= timeout) {
      if (ready == queues_.end() || head.created < ready->second.front()->created) ready = it;
    } else {
      const auto remaining = head.created + timeout - now;
      if (!have_wait || remaining < *wait) *wait = remaining;
      have_wait = true;
    }
  }
  if (ready == queues_.end()) {
    if (!have_wait) *wait = Clock::duration::max();
    return nullptr;
  }
  std::unique_ptr<Batch> batch = std::move(ready->second.front());
  ready->second.pop_front();
  if (ready->second.empty()) queues_.erase(ready);
  return batch;
}

void Batcher::Work() {
  for (;;) {
    std::unique_ptr<Batch> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        Clock::duration wait;
        batch = NextReady(Clock::now(), &wait);
        if (batch) break;
        if (stopped_) return;
        if (wait == Clock::duration::max())
          cv_.wait(lock);
        else
          cv_.wait_for(lock, wait);
      }
    }
    Process(*batch);
  }
}

void Batcher::Process(Batch& batch) {
  const int64_t padded = params_.PaddedSize(batch.rows);
  const auto started = Clock::now();
  tensorflow::Status status;
  std::vector<Tensor> merged, outputs;
  const size_t n_inputs = batch.tasks[0]->inputs->size();
  for (size_t i = 0; i < n_inputs && status.ok(); ++i) {
    std::vector<Tensor> parts;
    for (Task* t : batch.tasks) parts.push_back((*t->inputs)[i]);
    for (int64_t pad = padded - batch.rows; pad > 0; --pad) parts.push_back(parts.back().Slice(0, 1));
    if (parts.size() == 1) {
      merged.push_back(parts[0]);
    } else {
      merged.emplace_back();
      status = tensorflow::tensor::Concat(parts, &merged.back());
    }
  }
  if (status.ok()) status = batch.runner(merged, &outputs);
  for (size_t j = 0; j < outputs.size() && status.ok(); ++j) {
    if (outputs[j].dims() == 0 || outputs[j].dim_size(0) != padded)
      status = absl::InternalError("Batched output tensor " + std::to_string(j) + " has shape " +
                                   outputs[j].shape().DebugString() +
                                   ": its 0th dimension does not equal the batch size " + std::to_string(padded) +
                                   "; this signature cannot be batched (disable batching)");
  }
  int64_t start = 0;
  std::vector<double> waits;
  for (Task* t : batch.tasks) {
    waits.push_back(std::chrono::duration<double>(started - t->enqueued).count());
    t->status = status;
    if (status.ok())
      for (const Tensor& out : outputs) t->outputs.push_back(Rows(out, start, start + t->rows));
    start += t->rows;
  }
  const std::string label = batch.label;
  const int64_t rows = batch.rows;
  for (Task* t : batch.tasks) t->Finish();  // the tasks live on their callers' stacks: not touched after this
  if (observer_) observer_(label, rows, padded, waits);
}

void Batcher::Stop() {
  std::vector<Task*> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ && threads_.empty()) return;
    stopped_ = true;
    for (auto& [key, queue] : queues_)
      for (auto& batch : queue)
        for (Task* t : batch->tasks) pending.push_back(t);
    queues_.clear();
  }
  cv_.notify_all();
  for (Task* t : pending) {
    t->status = absl::UnavailableError("the server is shutting down");
    t->Finish();
  }
  for (auto& th : threads_)
    if (th.joinable()) th.join();
  threads_.clear();
}

}  // namespace recopt_serving
