// ONNX models in and out: the common currency for "my model, outside my framework"
// (torch.onnx.export writes it). docs/bring-your-model.md is the user's side of this header.
//
// Reading turns an ONNX ModelProto into a models::Model whose network is a graph::GraphNet
// (ModelSpec::arch "onnx", ModelSpec::graph set):
//   - the input is one float tensor [N, C, S, S] (any batch: fixed or symbolic, it becomes the
//     batch symbol), the output one [N, classes];
//   - the state holds every initializer a layer or a constant uses, under its name, in node
//     order: Conv and Gemm/MatMul weights and biases, BatchNormalization's scale, bias, mean and
//     var, and the initializers multiplied or added in. A MatMul's (or Gemm transB=0's) weight
//     [in, out] is held as PyTorch's Linear holds it, [out, in] (the file stores the transpose;
//     the writer transposes it back);
//   - shape arithmetic on constants and on the dims of values (Constant, Shape, Gather,
//     Unsqueeze, Squeeze, Concat, Add, Sub, Mul, Div, Cast, ConstantOfShape, Reshape, Slice,
//     Transpose, Identity) is evaluated at import, the batch as a symbol; a Reshape target or a
//     Slice bound that depends on the batch other than as the batch itself is refused;
//   - supported ops of the network: Conv (2-d; groups, dilation, stride, pads, auto_pad; bias
//     or not), BatchNormalization, Relu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, Mul, Add,
//     Sub and Div by a constant, Concat, MaxPool and AveragePool (2-d, ceil_mode, symmetric
//     pads), Pad (constant mode), GlobalAveragePool, ReduceMean over trailing axes, Flatten,
//     Reshape, Squeeze, Unsqueeze, Transpose, Slice (positive steps), Split, Gemm, MatMul (by an
//     initializer), Dropout, Identity. Nodes nothing reads (a value read only by Shape) are
//     dropped.
//     Anything else is an UnsupportedModel error naming the op, the node and the file, raised
//     before any work starts.
// Limits (errors name the file): the file size, the number of nodes, the elements of any
// tensor (initializer, constant, or value of the network for one image), the dims of a value.
//
// Writing puts a model read from ONNX back: the same ModelProto (graph, opsets, names) with
// every initializer the state holds replaced by the state's current values, in the
// representation the file used (raw_data or float_data), and the given metadata as
// metadata_props. Unchanged tensors come back bit for bit.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "core/models/zoo.h"

namespace nns::io {

inline constexpr uint64_t kOnnxMaxFileBytes = uint64_t(1) << 31;   // protobuf's message limit
inline constexpr int kOnnxMaxNodes = 100000;
inline constexpr int64_t kOnnxMaxTensorElements = int64_t(1) << 30;  // 4 GiB of F32
inline constexpr int64_t kOnnxMaxDim = int64_t(1) << 24;

// The model uses something this reader does not support (an op, an attribute value, a
// dynamic shape it cannot evaluate). The CLI exits 2 on it.
struct UnsupportedModel : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Whether a file holds ONNX rather than safetensors, by its first bytes (a protobuf
// ModelProto's first field) or, failing that, its ".onnx" extension. False for safetensors
// (an 8-byte length and '{').
bool looks_like_onnx(const std::string& path);
bool looks_like_onnx_bytes(const std::string& head);

// Reads an ONNX file. Malformed bytes: std::runtime_error "<path>: ..."; an unsupported model:
// UnsupportedModel "<path>: node 'NAME' (Op): ...". `metadata` receives metadata_props.
std::unique_ptr<models::Model> load_onnx(const std::string& path,
                                         std::map<std::string, std::string>* metadata = nullptr);
// The same from bytes (the fuzz harness; name_for_errors prefixes every message).
std::unique_ptr<models::Model> parse_onnx(const std::string& bytes,
                                          const std::string& name_for_errors,
                                          std::map<std::string, std::string>* metadata = nullptr);

// True for a model read by load_onnx/parse_onnx (and its clones).
bool is_onnx_model(const models::Model& model);
// Writes it back (see above), atomically (core/io/atomic_file.h). std::invalid_argument when
// the model was not read from ONNX.
void save_onnx(models::Model& model, const std::string& path,
               const std::map<std::string, std::string>& metadata);
// Every initializer of an ONNX file as "data type, dims: bytes" (the bytes as stored:
// raw_data, or the packed typed field), by name: what "bit for bit" compares (tests, restore).
std::map<std::string, std::string> onnx_initializer_bytes(const std::string& path);
// The bytes save_onnx would write.
std::string serialize_onnx(models::Model& model, const std::map<std::string, std::string>& metadata);

}  // namespace nns::io
