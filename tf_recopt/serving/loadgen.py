"""Closed-loop gRPC load against a model server, shared by `tf-recopt tune`
and bench.serving: each of `concurrency` clients sends its next Predict when
the last one returns, through TF Serving's own stubs."""
import threading
import time

import numpy as np


def predict_request(model_dir, model_name, batch, signature="serving_default", seed=1):
    """A PredictRequest of `batch` generated examples for the signature
    (of a stock or an optimized model: the op library is loaded first)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    import tf_recopt
    from tf_recopt.benchmark import sample_feeds
    tf_recopt.load_ops()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for k, v in sample_feeds(model_dir, signature, batch, seed=seed).items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(np.asarray(v)))
    return request


def closed_loop(stub, request, concurrency, max_requests, seconds):
    """Returns (latencies in s, error strings, wall seconds); stops after
    max_requests or `seconds`, whichever comes first."""
    lock = threading.Lock()
    sent = [0]
    latencies, errors = [], []
    deadline = time.monotonic() + seconds

    def client():
        while True:
            with lock:
                if sent[0] >= max_requests or time.monotonic() > deadline:
                    return
                sent[0] += 1
            t0 = time.perf_counter()
            try:
                stub.Predict(request, timeout=30)
            except Exception as exc:  # counted and reported, never fatal for the run
                with lock:
                    errors.append(str(exc)[:200])
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.monotonic() - started
