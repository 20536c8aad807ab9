"""TF-Serving-compatible model server (`tf-recopt serve`).

status.py     ServingError: gRPC code + message, HTTP mapping
servable.py   one loaded version: signatures, input checks, the TF call
native.py     the C++ request path (the request_path extension, from serving/native/): C++ loader, Predict bytes, batcher
manager.py    versions per model: file-system polling, version policy, hot swap
batching.py   server-side batch scheduler (TF Serving's BatchingParameters), the Python path's
service.py    request handling shared by both front ends
examples.py   Classify/Regress: tf.Example inputs and results
tensors.py    gRPC TensorProto <-> numpy
json_codec.py REST JSON (row/columnar, b64) <-> numpy
grpc_api.py   PredictionService + ModelService servicers; Predict as raw bytes on the C++ path
rest_api.py   /v1/models/... HTTP front end, Prometheus endpoint
metrics.py    Prometheus counters/histograms under TF Serving's names
config.py     model config, batching and monitoring text protos
warmup.py     assets.extra/tf_serving_warmup_requests replay
server.py     flags, start/stop
launch.py     the server in a subprocess on free ports (tests, bench, smoke tests)
loadgen.py    closed-loop gRPC load (tune, bench.serving)
tune.py       `tf-recopt tune`: threads x batching measured against a p99 SLA
"""
