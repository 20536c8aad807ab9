#include "wire.h"

#include <map>

#include "absl/status/status.h"
#include "tensorflow/core/framework/tensor.pb.h"

namespace recopt_serving {
namespace {

constexpr int kLen = 2;  // wire type of strings, bytes and messages

class Reader {
 public:
  explicit Reader(std::string_view data) : p_(data.data()), end_(data.data() + data.size()) {}
  bool done() const { return p_ >= end_; }

  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const uint8_t b = static_cast<uint8_t>(*p_++);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  bool Bytes(std::string_view* out) {
    uint64_t n;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *out = std::string_view(p_, n);
    p_ += n;
    return true;
  }
  bool Skip(int wire_type) {
    uint64_t v;
    std::string_view s;
    switch (wire_type) {
      case 0: return Varint(&v);
      case 1: return Advance(8);
      case kLen: return Bytes(&s);
      case 5: return Advance(4);
      default: return false;  // groups are not used by these messages
    }
  }

 private:
  bool Advance(size_t n) {
    if (n > static_cast<size_t>(end_ - p_)) return false;
    p_ += n;
    return true;
  }
  const char* p_;
  const char* end_;
};

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutBytes(int field, std::string_view bytes, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | kLen, out);
  PutVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

std::string ShapeString(const tensorflow::Tensor& t) {
  std::string s = "[";
  for (int d = 0; d < t.dims(); ++d) s += (d ? ", " : "") + std::to_string(t.dim_size(d));
  return s + "]";
}

std::string DtypeName(tensorflow::DataType dtype) {
  switch (dtype) {
    case tensorflow::DT_FLOAT: return "float32";
    case tensorflow::DT_DOUBLE: return "float64";
    case tensorflow::DT_HALF: return "float16";
    case tensorflow::DT_BFLOAT16: return "bfloat16";
    case tensorflow::DT_INT8: return "int8";
    case tensorflow::DT_INT16: return "int16";
    case tensorflow::DT_INT32: return "int32";
    case tensorflow::DT_INT64: return "int64";
    case tensorflow::DT_UINT8: return "uint8";
    case tensorflow::DT_UINT16: return "uint16";
    case tensorflow::DT_UINT32: return "uint32";
    case tensorflow::DT_UINT64: return "uint64";
    case tensorflow::DT_BOOL: return "bool";
    case tensorflow::DT_STRING: return "string";
    default: return tensorflow::DataTypeString(dtype);
  }
}

// Values in the typed field of `proto`'s dtype, or -1 for dtypes this check
// leaves to Tensor::FromProto.
int64_t TypedValues(const tensorflow::TensorProto& proto) {
  switch (proto.dtype()) {
    case tensorflow::DT_FLOAT: return proto.float_val_size();
    case tensorflow::DT_DOUBLE: return proto.double_val_size();
    case tensorflow::DT_INT32: return proto.int_val_size();
    case tensorflow::DT_INT64: return proto.int64_val_size();
    case tensorflow::DT_BOOL: return proto.bool_val_size();
    case tensorflow::DT_STRING: return proto.string_val_size();
    default: return -1;
  }
}

}  // namespace

tensorflow::Status DecodeInputs(std::string_view request, const std::vector<std::string>& keys,
                                const std::vector<Expect>& expect, const std::string& signature,
                                std::vector<tensorflow::Tensor>* inputs) {
  const auto malformed = absl::InvalidArgumentError("malformed PredictRequest");
  std::map<std::string_view, std::string_view> found;  // a repeated map key: the last wins, as in protobuf
  Reader r(request);
  while (!r.done()) {
    uint64_t tag;
    if (!r.Varint(&tag)) return malformed;
    if (tag != ((2u << 3) | kLen)) {  // PredictRequest.inputs
      if (!r.Skip(tag & 7)) return malformed;
      continue;
    }
    std::string_view entry, key, value;
    if (!r.Bytes(&entry)) return malformed;
    Reader e(entry);
    while (!e.done()) {
      uint64_t t;
      if (!e.Varint(&t)) return malformed;
      if (t == ((1u << 3) | kLen)) {
        if (!e.Bytes(&key)) return malformed;
      } else if (t == ((2u << 3) | kLen)) {
        if (!e.Bytes(&value)) return malformed;
      } else if (!e.Skip(t & 7)) {
        return malformed;
      }
    }
    found[key] = value;
  }
  inputs->clear();
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    auto it = found.find(key);
    if (it == found.end()) return absl::InvalidArgumentError("input `" + key + "` is missing from the request");
    tensorflow::TensorProto proto;
    tensorflow::Tensor t;
    // Tensor::FromProto truncates a long value list and pads a short one
    // with its last value; like the Python path, only an empty list or a
    // single value to repeat is accepted short, and a long one is refused.
    bool parsed = proto.ParseFromArray(it->second.data(), static_cast<int>(it->second.size()));
    if (parsed && proto.tensor_content().empty()) {
      const int64_t given = TypedValues(proto);
      int64_t want = 1;
      for (const auto& d : proto.tensor_shape().dim()) want *= d.size() < 0 ? 0 : d.size();
      parsed = given < 0 || given == want || given == 0 || (given == 1 && want > 1);
    }
    if (!parsed || !t.FromProto(proto))
      return absl::InvalidArgumentError("input `" + key + "`: malformed TensorProto (dtype " +
                                        DtypeName(proto.dtype()) + ", shape " +
                                        tensorflow::TensorShapeProto(proto.tensor_shape()).ShortDebugString() +
                                        "): its values do not fill its shape");
    const Expect& x = expect[i];
    if (t.dtype() != x.dtype)
      return absl::InvalidArgumentError("input `" + key + "` of signature `" + signature + "` expects dtype " +
                                        x.dtype_name + ", got " + DtypeName(t.dtype()));
    bool shape_ok = !x.known_rank || static_cast<int>(x.dims.size()) == t.dims();
    for (int d = 0; shape_ok && x.known_rank && d < t.dims(); ++d)
      shape_ok = x.dims[d] < 0 || x.dims[d] == t.dim_size(d);
    if (!shape_ok)
      return absl::InvalidArgumentError("input `" + key + "` of signature `" + signature + "` expects shape " +
                                        x.shape_str + ", got " + ShapeString(t));
    inputs->push_back(std::move(t));
  }
  return absl::OkStatus();
}

void EncodeOutputs(const std::vector<tensorflow::Tensor>& outputs, const std::vector<std::string>& names,
                   const std::vector<int>& want, std::string* response) {
  std::string entry, tensor;
  for (int j : want) {
    tensorflow::TensorProto proto;
    // Strings as string_val, numbers as tensor_content: what
    // tf.make_ndarray reads and what the Python path wrote.
    if (outputs[j].dtype() == tensorflow::DT_STRING)
      outputs[j].AsProtoField(&proto);
    else
      outputs[j].AsProtoTensorContent(&proto);
    tensor.clear();
    proto.SerializeToString(&tensor);
    entry.clear();
    PutBytes(1, names[j], &entry);
    PutBytes(2, tensor, &entry);
    PutBytes(1, entry, response);
  }
}

}  // namespace recopt_serving
