#include "hugepages.h"

#include <sys/mman.h>

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1+; older kernels return EINVAL
#endif

namespace recopt {
namespace {

constexpr uintptr_t kHugePage = uintptr_t{1} << 21;
constexpr size_t kMinBytes = size_t{4} << 20;

// Leaked on purpose: the worker may still run while the process exits.
struct Collapser {
  std::mutex mu;
  std::condition_variable cv;
  std::set<uintptr_t> seen;
  std::deque<std::pair<uintptr_t, uintptr_t>> queue;
  bool started = false;

  void Work() {
    for (;;) {
      std::pair<uintptr_t, uintptr_t> range;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [this] { return !queue.empty(); });
        range = queue.front();
        queue.pop_front();
      }
      void* start = reinterpret_cast<void*>(range.first);
      const size_t len = range.second - range.first;
      madvise(start, len, MADV_HUGEPAGE);
      madvise(start, len, MADV_COLLAPSE);
    }
  }
};

bool Enabled() {
  const char* env = std::getenv("RECOPT_HUGEPAGES");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

}  // namespace

void AdviseHugePages(const void* data, size_t bytes) {
  static const bool enabled = Enabled();
  if (!enabled || bytes < kMinBytes) return;
  static Collapser* collapser = new Collapser();
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end <= begin) return;
  std::lock_guard<std::mutex> lock(collapser->mu);
  if (!collapser->seen.insert(begin).second) return;
  collapser->queue.emplace_back(begin, end);
  if (!collapser->started) {
    collapser->started = true;
    std::thread([] { collapser->Work(); }).detach();
  }
  collapser->cv.notify_one();
}

}  // namespace recopt
