// tf_recopt.serving.request_path: the request path of `tf-recopt serve` below
// Python. A SavedModel loaded by TensorFlow's C++ loader (the one
// tensorflow_model_server uses), Session callables, PredictRequest bytes ->
// Tensors -> RunCallable -> PredictResponse bytes, and the C++ batcher; the
// GIL is released from the first byte parsed to the last byte written.
//
// Why: the Python path spent ~120 us a request of a 27-input model on
// TensorProto -> numpy -> Tensor and back under the GIL, and its batching
// queue took two GIL hand-offs per request (serving/README.md has numbers).
// The gRPC transport stays grpcio: TensorFlow's wheel does not export
// grpc::ServerBuilder, so no C++ gRPC server can be linked against it.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstring>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "batcher.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "wire.h"

namespace {

using recopt_serving::Batcher;
using recopt_serving::BatchingParams;
using tensorflow::DataType;
using tensorflow::Tensor;

PyObject* g_error = nullptr;  // request_path.Error(code, message); code is tensorflow.error.Code (= gRPC's)

PyObject* RaiseStatus(const tensorflow::Status& s) {
  PyObject* args = Py_BuildValue("(is#)", static_cast<int>(s.code()), s.message().data(),
                                 static_cast<Py_ssize_t>(s.message().size()));
  if (args != nullptr) {
    PyErr_SetObject(g_error, args);
    Py_DECREF(args);
  }
  return nullptr;
}

// ---- capsules ------------------------------------------------------------

struct Bundle {
  tensorflow::SavedModelBundle bundle;
  bool closed = false;
};

struct BatcherBox {
  std::unique_ptr<Batcher> batcher;
  PyObject* observer = nullptr;  // owned; called with the GIL once per batch
};

constexpr const char* kBundle = "tf_recopt.serving.request_path.Bundle";
constexpr const char* kBatcher = "tf_recopt.serving.request_path.Batcher";

void DeleteBundle(PyObject* capsule) {
  auto* b = static_cast<Bundle*>(PyCapsule_GetPointer(capsule, kBundle));
  Py_BEGIN_ALLOW_THREADS;
  delete b;
  Py_END_ALLOW_THREADS;
}

void DeleteBatcher(PyObject* capsule) {
  auto* box = static_cast<BatcherBox*>(PyCapsule_GetPointer(capsule, kBatcher));
  // Batch threads may be waiting for the GIL inside the observer.
  Py_BEGIN_ALLOW_THREADS;
  box->batcher.reset();
  Py_END_ALLOW_THREADS;
  Py_XDECREF(box->observer);
  delete box;
}

Bundle* GetBundle(PyObject* obj) {
  auto* b = static_cast<Bundle*>(PyCapsule_GetPointer(obj, kBundle));
  if (b != nullptr && b->closed) {
    PyErr_SetString(PyExc_ValueError, "this model version was unloaded");
    return nullptr;
  }
  return b;
}

Batcher* GetBatcher(PyObject* obj) {
  if (obj == Py_None) return nullptr;
  auto* box = static_cast<BatcherBox*>(PyCapsule_GetPointer(obj, kBatcher));
  return box == nullptr ? nullptr : box->batcher.get();
}

// ---- running one signature, batched or not ---------------------------------

struct CallSpec {
  Bundle* bundle;
  int64_t handle;
  Batcher* batcher;
  bool batchable;
  std::string label;
  const std::vector<std::string>* output_names;
};

// Rows shared by every input (dimension 0), or -1 when they differ or an
// input is a scalar: such requests run unbatched, as in TF Serving.
int64_t CommonRows(const std::vector<Tensor>& inputs) {
  int64_t rows = -1;
  for (const Tensor& t : inputs) {
    if (t.dims() == 0) return -1;
    if (rows != -1 && t.dim_size(0) != rows) return -1;
    rows = t.dim_size(0);
  }
  return rows;
}

tensorflow::Status Call(const CallSpec& spec, const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) {
  tensorflow::Session* session = spec.bundle->bundle.session.get();
  const int64_t rows = CommonRows(inputs);
  if (spec.batcher == nullptr || !spec.batchable || rows <= 0)
    return session->RunCallable(spec.handle, inputs, outputs, nullptr);
  std::string key = std::to_string(reinterpret_cast<uintptr_t>(spec.bundle)) + "/" + std::to_string(spec.handle);
  for (const Tensor& t : inputs) {
    key += "|" + std::to_string(t.dtype());
    for (int d = 1; d < t.dims(); ++d) key += "," + std::to_string(t.dim_size(d));
  }
  const auto* names = spec.output_names;
  auto runner = [session, handle = spec.handle, names](const std::vector<Tensor>& merged,
                                                       std::vector<Tensor>* outs) -> tensorflow::Status {
    tensorflow::Status s = session->RunCallable(handle, merged, outs, nullptr);
    if (!s.ok()) return s;
    const int64_t padded = merged[0].dim_size(0);
    for (size_t j = 0; j < outs->size(); ++j) {
      const Tensor& o = (*outs)[j];
      if (o.dims() == 0 || o.dim_size(0) != padded)
        return absl::InternalError("Batched output tensor `" + (*names)[j] + "` has shape " +
                                   o.shape().DebugString() + ": its 0th dimension does not equal the batch size " +
                                   std::to_string(padded) + "; this signature cannot be batched (disable batching)");
    }
    return absl::OkStatus();
  };
  return spec.batcher->Run(key, runner, inputs, rows, spec.label, outputs);
}

bool ParseCallSpec(PyObject* bundle_obj, long long handle, PyObject* batcher_obj, int batchable, const char* label,
                   CallSpec* spec) {
  spec->bundle = GetBundle(bundle_obj);
  if (spec->bundle == nullptr) return false;
  spec->batcher = GetBatcher(batcher_obj);
  if (spec->batcher == nullptr && PyErr_Occurred()) return false;
  spec->handle = handle;
  spec->batchable = batchable != 0;
  spec->label = label;
  return true;
}

bool StringList(PyObject* list, std::vector<std::string>* out, const char* what) {
  if (!PyList_Check(list)) {
    PyErr_Format(PyExc_TypeError, "%s must be a list of str", what);
    return false;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); ++i) {
    Py_ssize_t n;
    const char* s = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(list, i), &n);
    if (s == nullptr) return false;
    out->emplace_back(s, n);
  }
  return true;
}

// ---- module functions --------------------------------------------------------

// The C++ loader instantiates functions lazily, so a graph naming an op no
// loaded library registers would load and then fail every request; the
// Python loader failed the load, and so does this.
tensorflow::Status CheckOpsRegistered(const tensorflow::MetaGraphDef& meta) {
  const tensorflow::OpRegistrationData* unused;
  std::unordered_set<std::string> functions;  // a node may call a library function by its name
  for (const auto& fn : meta.graph_def().library().function()) functions.insert(fn.signature().name());
  auto check = [&](const std::string& op, const std::string& where) -> tensorflow::Status {
    if (functions.count(op) || tensorflow::OpRegistry::Global()->LookUp(op, &unused).ok()) return absl::OkStatus();
    return absl::NotFoundError("Op type not registered '" + op + "' (node " + where +
                               ") in this process: load the op library that defines it (for Recopt> ops, "
                               "--load_recopt_ops or tf_recopt.load_ops()) before loading the model");
  };
  for (const auto& node : meta.graph_def().node()) {
    tensorflow::Status s = check(node.op(), node.name());
    if (!s.ok()) return s;
  }
  for (const auto& fn : meta.graph_def().library().function())
    for (const auto& node : fn.node_def()) {
      tensorflow::Status s = check(node.op(), fn.signature().name() + "/" + node.name());
      if (!s.ok()) return s;
    }
  return absl::OkStatus();
}

PyObject* Load(PyObject*, PyObject* args) {
  const char* dir;
  PyObject* tag_list;
  const char* config;
  Py_ssize_t config_len;
  if (!PyArg_ParseTuple(args, "sO!y#", &dir, &PyList_Type, &tag_list, &config, &config_len)) return nullptr;
  std::vector<std::string> tag_vec;
  if (!StringList(tag_list, &tag_vec, "tags")) return nullptr;
  tensorflow::SessionOptions options;
  if (!options.config.ParseFromArray(config, static_cast<int>(config_len))) {
    PyErr_SetString(PyExc_ValueError, "config is not a serialized ConfigProto");
    return nullptr;
  }
  std::unordered_set<std::string> tags(tag_vec.begin(), tag_vec.end());
  auto b = std::make_unique<Bundle>();
  tensorflow::Status s;
  std::string export_dir(dir);
  Py_BEGIN_ALLOW_THREADS;
  s = tensorflow::LoadSavedModel(options, tensorflow::RunOptions(), export_dir, tags, &b->bundle);
  if (s.ok()) s = CheckOpsRegistered(b->bundle.meta_graph_def);
  Py_END_ALLOW_THREADS;
  if (!s.ok()) return RaiseStatus(s);
  return PyCapsule_New(b.release(), kBundle, DeleteBundle);
}

PyObject* SignatureDefs(PyObject*, PyObject* args) {
  PyObject* obj;
  if (!PyArg_ParseTuple(args, "O", &obj)) return nullptr;
  Bundle* b = GetBundle(obj);
  if (b == nullptr) return nullptr;
  PyObject* out = PyDict_New();
  for (const auto& [key, sig] : b->bundle.meta_graph_def.signature_def()) {
    std::string bytes;
    sig.SerializeToString(&bytes);
    PyObject* value = PyBytes_FromStringAndSize(bytes.data(), bytes.size());
    if (value == nullptr || PyDict_SetItemString(out, key.c_str(), value) < 0) {
      Py_XDECREF(value);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(value);
  }
  return out;
}

PyObject* MakeCallable(PyObject*, PyObject* args) {
  PyObject* obj;
  const char* options;
  Py_ssize_t len;
  if (!PyArg_ParseTuple(args, "Oy#", &obj, &options, &len)) return nullptr;
  Bundle* b = GetBundle(obj);
  if (b == nullptr) return nullptr;
  tensorflow::CallableOptions callable;
  if (!callable.ParseFromArray(options, static_cast<int>(len))) {
    PyErr_SetString(PyExc_ValueError, "options is not a serialized CallableOptions");
    return nullptr;
  }
  tensorflow::Session::CallableHandle handle;
  tensorflow::Status s = b->bundle.session->MakeCallable(callable, &handle);
  if (!s.ok()) return RaiseStatus(s);
  return PyLong_FromLongLong(handle);
}

PyObject* Close(PyObject*, PyObject* args) {
  PyObject* obj;
  if (!PyArg_ParseTuple(args, "O", &obj)) return nullptr;
  auto* b = static_cast<Bundle*>(PyCapsule_GetPointer(obj, kBundle));
  if (b == nullptr) return nullptr;
  if (!b->closed) {
    b->closed = true;
    Py_BEGIN_ALLOW_THREADS;
    b->bundle.session->Close().IgnoreError();
    Py_END_ALLOW_THREADS;
  }
  Py_RETURN_NONE;
}

// run(bundle, handle, feeds, batcher, batchable, label, output_names)
// feeds: [(dtype enum, shape tuple, buffer | list of bytes)]; returns the
// outputs in the same form (bytes for numeric data).
PyObject* Run(PyObject*, PyObject* args) {
  PyObject *bundle_obj, *feeds, *batcher_obj, *names_obj;
  long long handle;
  int batchable;
  const char* label;
  if (!PyArg_ParseTuple(args, "OLO!OpsO!", &bundle_obj, &handle, &PyList_Type, &feeds, &batcher_obj, &batchable,
                        &label, &PyList_Type, &names_obj))
    return nullptr;
  CallSpec spec;
  std::vector<std::string> names;
  if (!ParseCallSpec(bundle_obj, handle, batcher_obj, batchable, label, &spec) ||
      !StringList(names_obj, &names, "output_names"))
    return nullptr;
  spec.output_names = &names;
  std::vector<Tensor> inputs;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(feeds); ++i) {
    int dtype;
    PyObject *shape_obj, *data;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(feeds, i), "iO!O", &dtype, &PyTuple_Type, &shape_obj, &data))
      return nullptr;
    tensorflow::TensorShape shape;
    for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(shape_obj); ++d) {
      const long long dim = PyLong_AsLongLong(PyTuple_GET_ITEM(shape_obj, d));
      if (dim == -1 && PyErr_Occurred()) return nullptr;
      if (!shape.AddDimWithStatus(dim).ok()) {
        PyErr_Format(PyExc_ValueError, "feed %zd: bad dimension %lld", i, dim);
        return nullptr;
      }
    }
    Tensor t(static_cast<DataType>(dtype), shape);
    if (dtype == tensorflow::DT_STRING) {
      if (!PyList_Check(data) || PyList_GET_SIZE(data) != shape.num_elements()) {
        PyErr_Format(PyExc_ValueError, "feed %zd: string data must be a list of %lld bytes", i,
                     static_cast<long long>(shape.num_elements()));
        return nullptr;
      }
      auto flat = t.flat<tensorflow::tstring>();
      for (Py_ssize_t k = 0; k < PyList_GET_SIZE(data); ++k) {
        char* s;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(data, k), &s, &n) < 0) return nullptr;
        flat(k).assign(s, n);
      }
    } else {
      Py_buffer view;
      if (PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0) return nullptr;
      const size_t want = t.TotalBytes();
      if (static_cast<size_t>(view.len) != want) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "feed %zd: %zd bytes for a tensor of %zu", i, view.len, want);
        return nullptr;
      }
      if (want) std::memcpy(const_cast<char*>(t.tensor_data().data()), view.buf, want);
      PyBuffer_Release(&view);
    }
    inputs.push_back(std::move(t));
  }
  std::vector<Tensor> outputs;
  tensorflow::Status s;
  Py_BEGIN_ALLOW_THREADS;
  s = Call(spec, inputs, &outputs);
  Py_END_ALLOW_THREADS;
  if (!s.ok()) return RaiseStatus(s);
  PyObject* result = PyList_New(outputs.size());
  for (size_t j = 0; j < outputs.size(); ++j) {
    const Tensor& t = outputs[j];
    PyObject* shape = PyTuple_New(t.dims());
    for (int d = 0; d < t.dims(); ++d) PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(t.dim_size(d)));
    PyObject* data;
    if (t.dtype() == tensorflow::DT_STRING) {
      auto flat = t.flat<tensorflow::tstring>();
      data = PyList_New(flat.size());
      for (int64_t k = 0; k < flat.size(); ++k)
        PyList_SET_ITEM(data, k, PyBytes_FromStringAndSize(flat(k).data(), flat(k).size()));
    } else {
      data = PyBytes_FromStringAndSize(t.tensor_data().data(), t.tensor_data().size());
    }
    PyList_SET_ITEM(result, j, Py_BuildValue("(iNN)", static_cast<int>(t.dtype()), shape, data));
  }
  return result;
}

// predict(bundle, handle, request, keys, expects, want, output_names,
//         batcher, batchable, label, signature) -> PredictResponse.outputs
// entries as bytes. Python has parsed the request's model_spec and checked
// the input names and output_filter; `expects` holds, per key, (dtype enum,
// dims tuple with -1 for unknown or None for unknown rank, dtype name,
// shape string) for the messages.
PyObject* Predict(PyObject*, PyObject* args) {
  PyObject *bundle_obj, *keys_obj, *expects, *want_obj, *names_obj, *batcher_obj;
  long long handle;
  const char *request, *label, *signature;
  Py_ssize_t request_len;
  int batchable;
  if (!PyArg_ParseTuple(args, "OLy#O!O!O!O!Opss", &bundle_obj, &handle, &request, &request_len, &PyList_Type,
                        &keys_obj, &PyList_Type, &expects, &PyList_Type, &want_obj, &PyList_Type, &names_obj,
                        &batcher_obj, &batchable, &label, &signature))
    return nullptr;
  CallSpec spec;
  std::vector<std::string> keys, names;
  if (!ParseCallSpec(bundle_obj, handle, batcher_obj, batchable, label, &spec) ||
      !StringList(keys_obj, &keys, "keys") || !StringList(names_obj, &names, "output_names"))
    return nullptr;
  spec.output_names = &names;
  std::vector<recopt_serving::Expect> expect(keys.size());
  if (PyList_GET_SIZE(expects) != static_cast<Py_ssize_t>(keys.size())) {
    PyErr_SetString(PyExc_ValueError, "one expects entry per key");
    return nullptr;
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    PyObject *dims, *dtype_name, *shape_str;
    int dtype;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(expects, i), "iOUU", &dtype, &dims, &dtype_name, &shape_str))
      return nullptr;
    expect[i].dtype = static_cast<DataType>(dtype);
    expect[i].dtype_name = PyUnicode_AsUTF8(dtype_name);
    expect[i].shape_str = PyUnicode_AsUTF8(shape_str);
    expect[i].known_rank = dims != Py_None;
    if (expect[i].known_rank) {
      if (!PyTuple_Check(dims)) {
        PyErr_SetString(PyExc_TypeError, "dims must be a tuple or None");
        return nullptr;
      }
      for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(dims); ++d)
        expect[i].dims.push_back(PyLong_AsLongLong(PyTuple_GET_ITEM(dims, d)));
    }
  }
  std::vector<int> want;
  for (Py_ssize_t j = 0; j < PyList_GET_SIZE(want_obj); ++j) {
    const long w = PyLong_AsLong(PyList_GET_ITEM(want_obj, j));
    if (w < 0 || w >= static_cast<long>(names.size())) {
      PyErr_SetString(PyExc_ValueError, "want: output index out of range");
      return nullptr;
    }
    want.push_back(static_cast<int>(w));
  }
  std::string response;
  tensorflow::Status s;
  Py_BEGIN_ALLOW_THREADS;
  std::vector<Tensor> inputs, outputs;
  s = recopt_serving::DecodeInputs(std::string_view(request, request_len), keys, expect, signature, &inputs);
  if (s.ok()) s = Call(spec, inputs, &outputs);
  if (s.ok()) recopt_serving::EncodeOutputs(outputs, names, want, &response);
  Py_END_ALLOW_THREADS;
  if (!s.ok()) return RaiseStatus(s);
  return PyBytes_FromStringAndSize(response.data(), response.size());
}

// batcher(max_batch_size, batch_timeout_micros, max_enqueued_batches,
//         num_batch_threads, allowed_batch_sizes, enable_large_batch_splitting,
//         observer | None)
PyObject* NewBatcher(PyObject*, PyObject* args) {
  BatchingParams p;
  PyObject *sizes, *observer;
  int split;
  if (!PyArg_ParseTuple(args, "LLLiO!pO", &p.max_batch_size, &p.batch_timeout_micros, &p.max_enqueued_batches,
                        &p.num_batch_threads, &PyTuple_Type, &sizes, &split, &observer))
    return nullptr;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(sizes); ++i)
    p.allowed_batch_sizes.push_back(PyLong_AsLongLong(PyTuple_GET_ITEM(sizes, i)));
  if (PyErr_Occurred()) return nullptr;
  p.enable_large_batch_splitting = split != 0;
  auto box = std::make_unique<BatcherBox>();
  recopt_serving::BatchObserver call;
  if (observer != Py_None) {
    Py_INCREF(observer);
    box->observer = observer;
    call = [observer](const std::string& label, int64_t rows, int64_t padded, const std::vector<double>& waits) {
      PyGILState_STATE gil = PyGILState_Ensure();
      PyObject* w = PyList_New(waits.size());
      for (size_t i = 0; i < waits.size(); ++i) PyList_SET_ITEM(w, i, PyFloat_FromDouble(waits[i]));
      PyObject* r = PyObject_CallFunction(observer, "s#LLN", label.data(), static_cast<Py_ssize_t>(label.size()),
                                          static_cast<long long>(rows), static_cast<long long>(padded), w);
      if (r == nullptr) PyErr_WriteUnraisable(observer);  // metrics must never fail a batch
      Py_XDECREF(r);
      PyGILState_Release(gil);
    };
  }
  box->batcher = std::make_unique<Batcher>(p, call);
  return PyCapsule_New(box.release(), kBatcher, DeleteBatcher);
}

PyObject* StopBatcher(PyObject*, PyObject* args) {
  PyObject* obj;
  if (!PyArg_ParseTuple(args, "O", &obj)) return nullptr;
  Batcher* b = GetBatcher(obj);
  if (b == nullptr) return PyErr_Occurred() ? nullptr : (Py_INCREF(Py_None), Py_None);
  Py_BEGIN_ALLOW_THREADS;
  b->Stop();
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"load", Load, METH_VARARGS, "load(export_dir, tags, config_bytes) -> bundle"},
    {"signature_defs", SignatureDefs, METH_VARARGS, "signature_defs(bundle) -> {key: SignatureDef bytes}"},
    {"make_callable", MakeCallable, METH_VARARGS, "make_callable(bundle, CallableOptions bytes) -> handle"},
    {"close", Close, METH_VARARGS, "close(bundle): closes the Session"},
    {"run", Run, METH_VARARGS, "run(bundle, handle, feeds, batcher, batchable, label, output_names) -> outputs"},
    {"predict", Predict, METH_VARARGS, "predict(...) -> PredictResponse.outputs bytes"},
    {"batcher", NewBatcher, METH_VARARGS, "batcher(params..., observer) -> batcher"},
    {"stop_batcher", StopBatcher, METH_VARARGS, "stop_batcher(batcher)"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "request_path", "tf-recopt's C++ request path", -1, kMethods};

}  // namespace

PyMODINIT_FUNC PyInit_request_path() {
  PyObject* m = PyModule_Create(&kModule);
  if (m == nullptr) return nullptr;
  g_error = PyErr_NewException("tf_recopt.serving.request_path.Error", nullptr, nullptr);
  Py_INCREF(g_error);
  if (PyModule_AddObject(m, "Error", g_error) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
