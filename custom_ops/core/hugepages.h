// Backs large embedding tables with 2 MiB pages. Lookups touch rows at
// random across hundreds of MB, so with 4 KiB pages nearly every row costs
// a TLB miss and a page walk (bench/embedding.py reads 26 tables of
// 100k x 64 at random).
#ifndef RECOPT_CORE_HUGEPAGES_H_
#define RECOPT_CORE_HUGEPAGES_H_

#include <cstddef>

namespace recopt {

// Queues [data, data + bytes) for a one-time madvise(MADV_HUGEPAGE) and
// MADV_COLLAPSE on a background thread, so no request waits for the
// copy (about 1.7 s per GB here). Buffers under 4 MiB and buffers already
// seen are skipped. Contents never change; failure (old kernel, THP off)
// only leaves the small pages. RECOPT_HUGEPAGES=0 turns it off.
void AdviseHugePages(const void* data, size_t bytes);

}  // namespace recopt

#endif  // RECOPT_CORE_HUGEPAGES_H_
