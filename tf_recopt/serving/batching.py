"""Server-side batching with TF Serving's parameters and semantics
(batching_session.cc / shared_batch_scheduler.h): requests for the same
signature are queued into batches of at most max_batch_size rows; a batch
runs when full or when its oldest request has waited batch_timeout_micros
and a batch thread is free; it is padded up to the next allowed batch size
with copies of the last task's first row; outputs are split back by rows.

Unlike TF Serving, requests whose inputs differ in a non-batch dimension go
to separate queues instead of failing the batch they land in."""
import collections
import dataclasses
import os
import threading
import time
from typing import Callable, Dict, Optional, Tuple

import grpc
import numpy as np

from tf_recopt.serving import status


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: Tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False

    def __post_init__(self):
        for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, field) < 1:
                raise ValueError(f"batching parameter {field} must be >= 1, got {getattr(self, field)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batching parameter batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size or sizes[0] < 1):
            raise ValueError(f"allowed_batch_sizes {sizes} must be increasing, positive and end with "
                             f"max_batch_size ({self.max_batch_size})")

    def padded_size(self, rows):
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


class _Task:
    __slots__ = ("feeds", "rows", "enqueued", "done", "outputs", "error")

    def __init__(self, feeds, rows):
        self.feeds, self.rows = feeds, rows
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.outputs = self.error = None


class _Batch:
    def __init__(self, runner, label):
        self.runner, self.label = runner, label
        self.tasks = []
        self.rows = 0
        self.created = time.monotonic()


def merge(tasks, padded_rows):
    """Concatenates the tasks' feeds along dimension 0 and pads."""
    merged = {}
    for key in tasks[0].feeds:
        parts = [t.feeds[key] for t in tasks]
        pad = padded_rows - sum(t.rows for t in tasks)
        if pad:
            parts.append(np.repeat(parts[-1][:1], pad, axis=0))
        merged[key] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged


def split(outputs, tasks, padded_rows):
    for key, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != padded_rows:
            raise status.ServingError(
                grpc.StatusCode.INTERNAL,
                f"Batched output tensor `{key}` has shape {list(value.shape)}: its 0th dimension does not equal "
                f"the batch size {padded_rows}; this signature cannot be batched (disable batching)")
    start = 0
    for task in tasks:
        task.outputs = {k: v[start:start + task.rows] for k, v in outputs.items()}
        start += task.rows


class BatchScheduler:
    """One scheduler per server; queues keyed by signature and input shape."""

    def __init__(self, params: BatchingParameters, on_batch: Optional[Callable] = None):
        self.params = params
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._queues: Dict[tuple, collections.deque] = {}
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"recopt-batch-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for t in self._threads:
            t.start()

    def run(self, key, runner: Callable, feeds: Dict[str, np.ndarray], rows: int, label=""):
        """Blocks until this request's rows of the batched outputs are ready."""
        limit = self.params.max_batch_size
        if rows > limit:
            if not self.params.enable_large_batch_splitting:
                raise status.invalid_argument(
                    f"Task size {rows} is larger than maximum input batch size {limit} (batching parameter "
                    "max_batch_size); send smaller requests or set enable_large_batch_splitting")
            parts = [self.run(key, runner, {k: v[i:i + limit] for k, v in feeds.items()}, min(limit, rows - i), label)
                     for i in range(0, rows, limit)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        task = _Task(feeds, rows)
        self._enqueue(key, runner, task, label)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _enqueue(self, key, runner, task, label):
        with self._cond:
            if self._stopped:
                raise status.unavailable("the server is shutting down")
            queue = self._queues.setdefault(key, collections.deque())
            if not queue or queue[-1].rows + task.rows > self.params.max_batch_size:
                if len(queue) >= self.params.max_enqueued_batches:
                    raise status.unavailable(
                        f"The batch scheduling queue for {label} is full (max_enqueued_batches="
                        f"{self.params.max_enqueued_batches}); retry later or raise num_batch_threads")
                queue.append(_Batch(runner, label))
            queue[-1].tasks.append(task)
            queue[-1].rows += task.rows
            self._cond.notify()

    def _next_ready(self):
        """(batch, None) for the oldest batch ready to run, else (None, seconds to wait)."""
        now = time.monotonic()
        timeout = self.params.batch_timeout_micros / 1e6
        ready_key, wait = None, None
        for key, queue in self._queues.items():
            head = queue[0]
            if len(queue) > 1 or head.rows >= self.params.max_batch_size or now - head.created >= timeout:
                if ready_key is None or head.created < self._queues[ready_key][0].created:
                    ready_key = key
            else:
                remaining = head.created + timeout - now
                wait = remaining if wait is None else min(wait, remaining)
        if ready_key is None:
            return None, wait
        queue = self._queues[ready_key]
        batch = queue.popleft()
        if not queue:
            del self._queues[ready_key]
        return batch, None

    def _work(self):
        while True:
            with self._cond:
                batch, wait = self._next_ready()
                while batch is None:
                    if self._stopped:
                        return
                    self._cond.wait(wait)
                    batch, wait = self._next_ready()
            self._process(batch)

    def _process(self, batch):
        tasks = batch.tasks
        padded = self.params.padded_size(batch.rows)
        started = time.monotonic()
        try:
            outputs = batch.runner(merge(tasks, padded))
            split(outputs, tasks, padded)
        except status.ServingError as exc:
            for t in tasks:
                t.error = exc
        except Exception as exc:  # a batch failure answers its requests; the thread lives on
            for t in tasks:
                t.error = status.ServingError(grpc.StatusCode.INTERNAL, f"batch failed: {exc}")
        if self._on_batch is not None:
            self._on_batch(batch.label, batch.rows, padded, [started - t.enqueued for t in tasks])
        for t in tasks:
            t.done.set()

    def stop(self):
        """Fails queued requests (their clients are told to retry) and ends the threads."""
        with self._cond:
            self._stopped = True
            pending = [t for q in self._queues.values() for b in q for t in b.tasks]
            self._queues.clear()
            self._cond.notify_all()
        for t in pending:
            t.error = status.unavailable("the server is shutting down")
            t.done.set()
