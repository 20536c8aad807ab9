"""Request and batching metrics in Prometheus text format, under TF
Serving's metric names (its exporter turns /tensorflow/serving/x into
:tensorflow:serving:x), so existing dashboards keep working.

Why not prometheus_client: it always exposes a counter as <name>_total
(plus a <name>_created gauge), for Counter and for a custom collector's
CounterMetricFamily alike (checked with prometheus_client 0.26.0), so TF
Serving's `:tensorflow:serving:request_count` could not keep its name. The
exposition below is the text format's four lines per series, no more."""
import bisect
import threading

# Microseconds, roughly x2 apart: 10 us .. 10 s.
LATENCY_BUCKETS_US = tuple(10 * 2 ** i for i in range(21))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def _labels(names, values, extra=""):
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    def __init__(self, name, help_text, label_names):
        self.name, self.help, self.label_names = name, help_text, label_names
        self._values = {}
        self._lock = threading.Lock()

    def inc(self, *labels, amount=1):
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def render(self):
        with self._lock:
            items = sorted(self._values.items())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(self.label_names, k)} {v}" for k, v in items]
        return lines


class Histogram:
    def __init__(self, name, help_text, label_names, buckets):
        self.name, self.help, self.label_names, self.buckets = name, help_text, label_names, buckets
        self._series = {}
        self._lock = threading.Lock()

    def observe(self, value, *labels):
        with self._lock:
            counts, total = self._series.get(labels, ([0] * (len(self.buckets) + 1), 0.0))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._series[labels] = (counts, total + value)

    def render(self):
        with self._lock:
            items = sorted((k, (list(c), s)) for k, (c, s) in self._series.items())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total) in items:
            running = 0
            for bound, count in zip(self.buckets + ("+Inf",), counts):
                running += count
                le = 'le="%s"' % bound
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {total}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {running}")
        return lines


class ServingMetrics:
    def __init__(self):
        self.request_count = Counter(":tensorflow:serving:request_count",
                                     "The total number of requests.", ("model_name", "status"))
        self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                         "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                                         ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
        self.batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                    "Tracks the batch size distribution on processing (after padding).",
                                    ("model_name",), BATCH_BUCKETS)
        self.padding_size = Histogram(":tensorflow:serving:batching_session:padding_size",
                                      "Tracks the padding size distribution on batches.",
                                      ("model_name",), BATCH_BUCKETS)
        self.queuing_latency = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                         "Tracks the latency (in microseconds) a request waits in the batch queue.",
                                         ("model_name",), LATENCY_BUCKETS_US)
        self.load_latency = Histogram(":tensorflow:cc:saved_model:load_latency",
                                      "Latency in microseconds for SavedModels that were successfully loaded.",
                                      ("model_path",), LATENCY_BUCKETS_US)

    def record_request(self, model, api, entrypoint, code_name, seconds):
        self.request_count.inc(model, code_name)
        if code_name == "OK":  # TF Serving records latency for successful requests only
            self.request_latency.observe(seconds * 1e6, model, api, entrypoint)

    def record_batch(self, model, rows, padded, waits):
        self.batch_size.observe(padded, model)
        self.padding_size.observe(padded - rows, model)
        for w in waits:
            self.queuing_latency.observe(w * 1e6, model)

    def render(self):
        lines = []
        for metric in (self.request_count, self.request_latency, self.batch_size, self.padding_size,
                       self.queuing_latency, self.load_latency):
            lines += metric.render()
        return "\n".join(lines) + "\n"
