// ONNX import and export (core/io/onnx.h). The ModelProto is parsed with the protobuf classes
// of Debian's libonnx-dev; the import walks the nodes once, in the file's (topological) order:
// constants and shape arithmetic are evaluated on the spot (Const, the batch a symbol), every
// other node becomes a graph::Graph node whose dims are inferred at once, so a later Shape
// reads them.
#include "core/io/onnx.h"

#include "core/io/input_file.h"

#include <fcntl.h>
#include <onnx/onnx_pb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include "core/graph/graph_net.h"
#include "core/io/atomic_file.h"
#include "kernels/ops.h"

namespace nns::io {

namespace {

using graph::Attr;
using graph::GraphDef;
using graph::kBatch;
using graph::OpKind;
using graph::ValueId;

// What the writer needs beside the graph: the file it came from.
struct OnnxDef : GraphDef {
  onnx::ModelProto proto;
  std::set<std::string> transposed;  // state names held as the transpose of the initializer
};

[[noreturn]] void malformed(const std::string& file, const std::string& what) {
  throw std::runtime_error(file + ": " + what);
}

// ---------------------------------------------------------------------------------------------
// Constants: tensors known at import. Integers may hold the batch symbol: value lit * N^pow.
struct Sym {
  int64_t lit = 0;
  int pow = 0;
};

struct Const {
  bool is_float = true;
  std::vector<int64_t> dims;
  std::vector<float> f;  // is_float
  std::vector<Sym> i;    // !is_float (INT64, INT32, BOOL, ...)
  std::string init;      // the initializer it is ("" when computed)
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
};
using ConstPtr = std::shared_ptr<const Const>;

// A value of the ONNX graph during the import: a value of our graph, or a constant.
struct Val {
  ValueId id = -1;
  ConstPtr c;
  bool runtime() const { return !c; }
};

std::string dims_text(const std::vector<int64_t>& d) { return graph::dims_str(d); }

class Importer {
 public:
  Importer(const onnx::ModelProto& m, std::string file) : m_(m), file_(std::move(file)) {}

  std::shared_ptr<OnnxDef> run();
  std::map<std::string, ConstPtr> initial_values;  // state name -> value (as the state holds it)

 private:
  // ---- errors
  [[noreturn]] void unsupported(const onnx::NodeProto& n, const std::string& what) const {
    throw UnsupportedModel(file_ + ": node '" + node_name(n) + "' (" + n.op_type() + "): " +
                           what);
  }
  [[noreturn]] void bad(const onnx::NodeProto& n, const std::string& what) const {
    malformed(file_, "node '" + node_name(n) + "' (" + n.op_type() + "): " + what);
  }
  std::string node_name(const onnx::NodeProto& n) const {
    return n.name().empty() ? n.op_type() + "#" + std::to_string(node_index_) : n.name();
  }

  // ---- tensors
  ConstPtr tensor_const(const onnx::TensorProto& t, const std::string& what);
  void check_elements(int64_t n, const std::string& what) const {
    if (n < 0 || n > kOnnxMaxTensorElements)
      throw UnsupportedModel(file_ + ": " + what + " has " + std::to_string(n) +
                             " elements (limit " + std::to_string(kOnnxMaxTensorElements) + ")");
  }

  // ---- values
  const Val& get(const onnx::NodeProto& n, int k) const {
    if (k >= n.input_size() || n.input(k).empty()) bad(n, "missing input " + std::to_string(k));
    auto it = env_.find(n.input(k));
    if (it == env_.end())
      bad(n, "input '" + n.input(k) + "' is not defined before this node (or is an output "
             "this reader does not compute, such as BatchNormalization's running statistics)");
    return it->second;
  }
  bool has(const onnx::NodeProto& n, int k) const { return k < n.input_size() && !n.input(k).empty(); }
  const Const& konst(const onnx::NodeProto& n, int k, const char* what) const {
    const Val& v = get(n, k);
    if (v.runtime())
      unsupported(n, std::string(what) + " '" + n.input(k) +
                         "' is computed by the network; only constants are supported there");
    return *v.c;
  }
  std::vector<int64_t> ints_of(const onnx::NodeProto& n, const Const& c, const char* what) const;
  float scalar_float(const onnx::NodeProto& n, int k, const char* what) const;
  const std::vector<int64_t>& dims_of(ValueId v) const { return g_.value(v).dims; }
  // Input k as a value of the network (a constant there is refused).
  const Val& network_input(const onnx::NodeProto& n, int k) const {
    const Val& v = get(n, k);
    if (!v.runtime()) unsupported(n, "applied to a constant ('" + n.input(k) + "')");
    return v;
  }
  void define(const onnx::NodeProto& n, int k, Val v) {
    if (k >= n.output_size() || n.output(k).empty()) return;
    if (env_.count(n.output(k))) bad(n, "output '" + n.output(k) + "' is defined twice");
    env_[n.output(k)] = std::move(v);
  }
  void define_const(const onnx::NodeProto& n, std::shared_ptr<Const> c) {
    if (c->numel() > kMaxImportConst)
      unsupported(n, "a constant of " + std::to_string(c->numel()) + " elements computed at import "
                     "(limit " + std::to_string(kMaxImportConst) + ")");
    define(n, 0, Val{-1, std::move(c)});
  }
  // Adds a node of our graph and infers its dims; returns its first output.
  ValueId add(const onnx::NodeProto& n, OpKind op, std::vector<ValueId> in, Attr a = {},
              std::vector<std::string> names = {}, int n_out = 1,
              std::vector<std::string> out_names = {}, const std::string& suffix = "");
  // The graph value of an input: a runtime value, or a Constant node for a float constant.
  ValueId runtime_or_constant(const onnx::NodeProto& n, int k);
  ValueId constant_node(const onnx::NodeProto& n, const ConstPtr& c, const std::string& label,
                        const std::string& state);
  void sub_div(const onnx::NodeProto& n, bool div);
  void squeeze(const onnx::NodeProto& n, bool un);  // of a value of the network: a Reshape
  void prune();

  // ---- attributes
  const onnx::AttributeProto* attr(const onnx::NodeProto& n, const char* name) const {
    for (const auto& a : n.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  int64_t attr_int(const onnx::NodeProto& n, const char* name, int64_t def) const {
    const auto* a = attr(n, name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::INT) bad(n, std::string("attribute ") + name + " is not an int");
    return a->i();
  }
  float attr_float(const onnx::NodeProto& n, const char* name, float def) const {
    const auto* a = attr(n, name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::FLOAT) bad(n, std::string("attribute ") + name + " is not a float");
    return a->f();
  }
  std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const char* name,
                                 std::vector<int64_t> def) const {
    const auto* a = attr(n, name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::INTS) bad(n, std::string("attribute ") + name + " is not a list of ints");
    return std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }
  std::string attr_string(const onnx::NodeProto& n, const char* name, const std::string& def) const {
    const auto* a = attr(n, name);
    if (!a) return def;
    if (a->type() != onnx::AttributeProto::STRING) bad(n, std::string("attribute ") + name + " is not a string");
    return a->s();
  }
  int opset() const { return opset_; }

  // ---- ops
  void node(const onnx::NodeProto& n);
  bool const_op(const onnx::NodeProto& n);  // evaluates n when its inputs are constants
  void conv(const onnx::NodeProto& n);
  void pool(const onnx::NodeProto& n, bool max);
  void batchnorm(const onnx::NodeProto& n);
  void gemm(const onnx::NodeProto& n, bool matmul);
  // The Conv or Linear node of a weight initializer w (its initial value already recorded) and
  // an optional bias input 2: their state names, one user per weight.
  void define_weighted(const onnx::NodeProto& n, OpKind op, ValueId in, const Attr& a,
                       const Const& w, const Const* b);
  void reshape(const onnx::NodeProto& n);
  void slice(const onnx::NodeProto& n);
  void pad(const onnx::NodeProto& n);
  void split(const onnx::NodeProto& n);
  void clip(const onnx::NodeProto& n);
  void binary(const onnx::NodeProto& n, OpKind op);
  // Initializer (alias) name of input k, which must be one: a layer's weights are state.
  const Const& weight(const onnx::NodeProto& n, int k, const char* what);
  // 2-d spatial attributes: pads begin/end per axis, from pads or auto_pad.
  void spatial(const onnx::NodeProto& n, const std::vector<int64_t>& in, int kh, int kw, int sh,
               int sw, int dh, int dw, int* pads /* t, l, b, r */);

  static constexpr int64_t kMaxImportConst = int64_t(1) << 24;

  const onnx::ModelProto& m_;
  std::string file_;
  int opset_ = 0;
  int node_index_ = 0;
  graph::Graph g_;
  std::map<std::string, Val> env_;
  std::vector<std::vector<std::string>> state_names_;
  std::vector<Tensor> constants_;
  std::set<std::string> transposed_;
  std::map<std::string, std::string> weight_user_;  // initializer of a Conv/Gemm weight -> node
};

// ---------------------------------------------------------------------------------------------
ConstPtr Importer::tensor_const(const onnx::TensorProto& t, const std::string& what) {
  auto c = std::make_shared<Const>();
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > kOnnxMaxTensorElements)
      malformed(file_, what + " has dim " + std::to_string(d));
    n *= d;
    check_elements(n, what);
    c->dims.push_back(d);
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0)
    throw UnsupportedModel(file_ + ": " + what + " is stored in an external file (save the model "
                           "with its data inside: onnx.save(model, path, "
                           "save_as_external_data=False))");
  const bool raw = t.has_raw_data();
  auto need = [&](size_t have, size_t elem) {
    if (have != size_t(n) * elem)
      malformed(file_, what + " holds " + std::to_string(have / std::max<size_t>(elem, 1)) +
                           " values, its dims " + dims_text(c->dims) + " need " + std::to_string(n));
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: {  // the data checked first: the dims alone allocate nothing
      c->is_float = true;
      if (raw) {
        need(t.raw_data().size(), 4);
        c->f.resize(size_t(n));
        std::memcpy(c->f.data(), t.raw_data().data(), size_t(n) * 4);  // little-endian hosts
      } else {
        need(size_t(t.float_data_size()) * 4, 4);
        c->f.assign(t.float_data().begin(), t.float_data().end());
      }
      break;
    }
    case onnx::TensorProto::INT64:
    case onnx::TensorProto::INT32:
    case onnx::TensorProto::BOOL:
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::INT16: {
      c->is_float = false;
      const int dt = t.data_type();
      const size_t elem = dt == onnx::TensorProto::INT64   ? 8
                          : dt == onnx::TensorProto::INT32 ? 4
                          : dt == onnx::TensorProto::INT16 ? 2
                                                           : 1;
      if (raw)
        need(t.raw_data().size(), elem);
      else if (dt == onnx::TensorProto::INT64)
        need(size_t(t.int64_data_size()) * 8, 8);
      else
        need(size_t(t.int32_data_size()) * 4, 4);
      c->i.resize(size_t(n));
      if (raw) {
        const char* p = t.raw_data().data();
        for (int64_t k = 0; k < n; ++k) {
          int64_t v = 0;
          if (elem == 8) {
            std::memcpy(&v, p + 8 * k, 8);
          } else if (elem == 4) {
            int32_t x;
            std::memcpy(&x, p + 4 * k, 4);
            v = x;
          } else if (elem == 2) {
            int16_t x;
            std::memcpy(&x, p + 2 * k, 2);
            v = x;
          } else {
            v = dt == onnx::TensorProto::INT8 ? int64_t(int8_t(p[k])) : int64_t(uint8_t(p[k]));
          }
          c->i[size_t(k)] = Sym{v, 0};
        }
      } else if (dt == onnx::TensorProto::INT64) {
        for (int64_t k = 0; k < n; ++k) c->i[size_t(k)] = Sym{t.int64_data(int(k)), 0};
      } else {
        for (int64_t k = 0; k < n; ++k) c->i[size_t(k)] = Sym{t.int32_data(int(k)), 0};
      }
      break;
    }
    default:
      throw UnsupportedModel(file_ + ": " + what + " has ONNX data type " +
                             std::to_string(t.data_type()) +
                             " (supported: FLOAT, and integers for shapes)");
  }
  return c;
}

std::vector<int64_t> Importer::ints_of(const onnx::NodeProto& n, const Const& c,
                                       const char* what) const {
  std::vector<int64_t> out;
  if (c.is_float) unsupported(n, std::string(what) + " must be integers");
  for (const Sym& s : c.i) {
    if (s.pow != 0) unsupported(n, std::string(what) + " depends on the batch size");
    out.push_back(s.lit);
  }
  return out;
}

float Importer::scalar_float(const onnx::NodeProto& n, int k, const char* what) const {
  const Const& c = konst(n, k, what);
  if (c.numel() != 1) bad(n, std::string(what) + " must hold one value");
  if (c.is_float) return c.f[0];
  if (c.i[0].pow != 0) unsupported(n, std::string(what) + " depends on the batch size");
  return float(c.i[0].lit);
}

ValueId Importer::add(const onnx::NodeProto& n, OpKind op, std::vector<ValueId> in, Attr a,
                      std::vector<std::string> names, int n_out,
                      std::vector<std::string> out_names, const std::string& suffix) {
  const std::string name = node_name(n) + suffix;
  if (int(g_.nodes().size()) >= kOnnxMaxNodes)
    throw UnsupportedModel(file_ + ": more than " + std::to_string(kOnnxMaxNodes) + " nodes");
  int id = -1;
  try {
    id = g_.add_node(op, name, std::move(in), std::move(a), nullptr, n_out, std::move(out_names));
    state_names_.push_back(std::move(names));
    constants_.emplace_back();
    g_.infer_node_dims(id);
  } catch (const std::invalid_argument& e) {
    throw UnsupportedModel(file_ + ": " + e.what());
  }
  for (ValueId v : g_.nodes()[size_t(id)].outputs) {
    if (dims_of(v).size() > size_t(ops::kMaxDims))
      throw UnsupportedModel(file_ + ": node '" + name + "' makes a tensor of " +
                             std::to_string(dims_of(v).size()) + " dims (limit " +
                             std::to_string(ops::kMaxDims) + ")");
    int64_t per_image = 1;
    for (int64_t d : dims_of(v)) {
      if (d == kBatch) continue;
      if (d > kOnnxMaxDim)
        throw UnsupportedModel(file_ + ": node '" + name + "' makes a dim of " +
                               std::to_string(d) + " (limit " + std::to_string(kOnnxMaxDim) + ")");
      per_image *= d;
      if (per_image > kOnnxMaxTensorElements)
        throw UnsupportedModel(file_ + ": node '" + name + "' makes a tensor of more than " +
                               std::to_string(kOnnxMaxTensorElements) + " elements per image");
    }
  }
  return g_.nodes()[size_t(id)].outputs[0];
}

ValueId Importer::runtime_or_constant(const onnx::NodeProto& n, int k) {
  const Val& v = get(n, k);
  if (v.runtime()) return v.id;
  return constant_node(n, v.c, n.input(k), v.c->init);
}

ValueId Importer::constant_node(const onnx::NodeProto& n, const ConstPtr& c,
                                const std::string& label, const std::string& state) {
  if (!c->is_float) unsupported(n, "integer constant '" + label + "' used as a tensor");
  for (int64_t d : c->dims)
    if (d < 1) unsupported(n, "empty constant '" + label + "'");
  Attr a;
  a.dims = c->dims;
  Tensor t(Shape(c->dims.begin(), c->dims.end()));
  std::copy(c->f.begin(), c->f.end(), t.f32());
  // A constant node of its own, named after the value.
  const int id = int(g_.nodes().size());
  ValueId out = add(n, OpKind::Constant, {}, a, {state}, 1, {label + "#const" + std::to_string(id)},
                    ":" + label);
  constants_.back() = t;
  if (!state.empty()) initial_values.emplace(state, c);
  return out;
}

void Importer::sub_div(const onnx::NodeProto& n, bool div) {
  const Val& a = get(n, 0);
  const Val& b = get(n, 1);
  if (!a.runtime() || b.runtime())
    unsupported(n, std::string(div ? "a division" : "a subtraction") +
                       " other than of a tensor of the network by a constant");
  // x - c = x + (-c), x / c = x * (1/c): a constant of the graph (not state: the file's
  // initializer, if it is one, is never changed).
  auto c = std::make_shared<Const>(*b.c);
  c->init.clear();
  if (!c->is_float) unsupported(n, "an integer constant operand");
  for (float& v : c->f) v = div ? 1.0f / v : -v;
  const ValueId k = constant_node(n, c, n.input(1), "");
  define(n, 0, Val{add(n, div ? OpKind::Mul : OpKind::Add, {a.id, k}), nullptr});
}

void Importer::squeeze(const onnx::NodeProto& n, bool un) {
  const Val& x = network_input(n, 0);
  const std::vector<int64_t> d = dims_of(x.id);
  std::vector<int64_t> axes = opset() >= 13 && has(n, 1) ? ints_of(n, konst(n, 1, "axes"), "axes")
                                                         : attr_ints(n, "axes", {});
  Attr a;
  if (un) {
    const int64_t r = int64_t(d.size() + axes.size());
    for (auto& ax : axes) ax = ax < 0 ? ax + r : ax;
    std::sort(axes.begin(), axes.end());
    a.dims = d;
    for (int64_t ax : axes) {
      if (ax < 1 || ax > int64_t(a.dims.size())) unsupported(n, "an axis before the batch or out of range");
      a.dims.insert(a.dims.begin() + ax, 1);
    }
  } else {
    const int64_t r = int64_t(d.size());
    for (int64_t k = 0; k < r; ++k) {
      bool drop = axes.empty() && d[size_t(k)] == 1;
      for (int64_t ax : axes)
        if (ax == k || (ax < 0 && ax + r == k)) drop = true;
      if (drop && d[size_t(k)] != 1) unsupported(n, "squeezes a dim that is not 1 (the batch?)");
      if (!drop) a.dims.push_back(d[size_t(k)]);
    }
  }
  define(n, 0, Val{add(n, OpKind::Reshape, {x.id}, a), nullptr});
}

void Importer::prune() {
  // Nodes whose outputs nothing reads (a value read only by Shape, evaluated at import; an
  // unused branch of the file): dropped, so that the graph's every-value-read check holds.
  const auto& nodes = g_.nodes();
  std::vector<bool> live_val(g_.values().size(), false), live(nodes.size(), false);
  live_val[size_t(g_.output())] = true;
  bool all = true;
  for (size_t i = nodes.size(); i-- > 0;) {
    for (ValueId v : nodes[i].outputs) live[i] = live[i] || live_val[size_t(v)];
    if (!live[i]) {
      all = false;
      continue;
    }
    for (ValueId v : nodes[i].inputs) live_val[size_t(v)] = true;
  }
  if (all) return;
  graph::Graph g;
  std::vector<ValueId> map(g_.values().size(), -1);
  map[size_t(g_.input())] = g.add_input(g_.value(g_.input()).name, g_.value(g_.input()).dims);
  std::vector<std::vector<std::string>> names;
  std::vector<Tensor> consts;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!live[i]) continue;
    const graph::Node& nd = nodes[i];
    std::vector<ValueId> in;
    for (ValueId v : nd.inputs) in.push_back(map[size_t(v)]);
    std::vector<std::string> outs;
    for (ValueId v : nd.outputs) outs.push_back(g_.value(v).name);
    const int id = g.add_node(nd.op, nd.name, in, nd.attr, nullptr, int(outs.size()), outs);
    g.infer_node_dims(id);
    for (size_t k = 0; k < nd.outputs.size(); ++k)
      map[size_t(nd.outputs[k])] = g.nodes()[size_t(id)].outputs[k];
    names.push_back(state_names_[i]);
    consts.push_back(constants_[i]);
  }
  g.set_output(map[size_t(g_.output())]);
  g_ = std::move(g);
  state_names_ = std::move(names);
  constants_ = std::move(consts);
}

const Const& Importer::weight(const onnx::NodeProto& n, int k, const char* what) {
  const Val& v = get(n, k);
  if (v.runtime() || v.c->init.empty())
    unsupported(n, std::string(what) + " '" + n.input(k) +
                       "' must be an initializer of the file (a weight computed by the graph is "
                       "not supported)");
  if (!v.c->is_float) unsupported(n, std::string(what) + " '" + n.input(k) + "' is not FLOAT");
  return *v.c;
}

// ---------------------------------------------------------------------------------------------
// Shape arithmetic on constants.
namespace cx {

std::vector<int64_t> strides(const std::vector<int64_t>& d) {
  std::vector<int64_t> s(d.size(), 1);
  for (size_t i = d.size(); i-- > 1;) s[i - 1] = s[i] * d[i];
  return s;
}

}  // namespace cx

bool Importer::const_op(const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  // Every input a constant (Shape needs only the dims of its input).
  for (int k = 0; k < n.input_size(); ++k)
    if (!n.input(k).empty() && get(n, k).runtime() && op != "Shape") return false;
  auto out = std::make_shared<Const>();
  // Integer arithmetic on file-given values: overflow is an error, not undefined behaviour.
  auto checked = [&](bool overflow, int64_t v) {
    if (overflow) unsupported(n, "shape arithmetic overflows 64 bits");
    return v;
  };
  auto sym_mul = [&](Sym a, Sym b) {
    int64_t v;
    const bool o = __builtin_mul_overflow(a.lit, b.lit, &v);
    if (std::abs(a.pow + b.pow) > 8) unsupported(n, "shape arithmetic with the batch size to a high power");
    return Sym{checked(o, v), a.pow + b.pow};
  };
  if (op == "Shape") {
    const Val& v = get(n, 0);
    std::vector<int64_t> d = v.runtime() ? dims_of(v.id) : v.c->dims;
    const int64_t r = int64_t(d.size());
    int64_t start = attr_int(n, "start", 0), end = attr_int(n, "end", r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = std::clamp<int64_t>(start, 0, r);
    end = std::clamp<int64_t>(end, start, r);
    out->is_float = false;
    out->dims = {end - start};
    for (int64_t k = start; k < end; ++k)
      out->i.push_back(d[size_t(k)] == kBatch ? Sym{1, 1} : Sym{d[size_t(k)], 0});
  } else if (op == "Constant") {
    const auto* a = n.attribute_size() == 1 ? &n.attribute(0) : nullptr;
    if (!a) bad(n, "a Constant needs exactly one attribute");
    if (a->name() == "value") {
      if (a->type() != onnx::AttributeProto::TENSOR) bad(n, "value is not a tensor");
      auto c = tensor_const(a->t(), "constant '" + n.output(0) + "'");
      *out = *c;
    } else if (a->name() == "value_float") {
      out->f = {a->f()};
    } else if (a->name() == "value_floats") {
      out->f.assign(a->floats().begin(), a->floats().end());
      out->dims = {int64_t(out->f.size())};
    } else if (a->name() == "value_int") {
      out->is_float = false;
      out->i = {Sym{a->i(), 0}};
    } else if (a->name() == "value_ints") {
      out->is_float = false;
      for (int64_t v : a->ints()) out->i.push_back(Sym{v, 0});
      out->dims = {int64_t(out->i.size())};
    } else {
      unsupported(n, "Constant with attribute '" + a->name() + "'");
    }
    out->init.clear();
  } else if (op == "Identity") {
    env_[n.output(0)] = get(n, 0);  // an alias keeps its initializer name
    return true;
  } else if (op == "Cast") {
    const Const& x = konst(n, 0, "input");
    const int64_t to = attr_int(n, "to", onnx::TensorProto::FLOAT);
    *out = x;
    out->init.clear();
    if (to == onnx::TensorProto::FLOAT || to == onnx::TensorProto::DOUBLE) {
      if (!x.is_float) {
        out->f.clear();
        for (const Sym& s : x.i) {
          if (s.pow) unsupported(n, "casts the batch size to a float");
          out->f.push_back(float(s.lit));
        }
        out->i.clear();
        out->is_float = true;
      }
    } else if (to == onnx::TensorProto::INT64 || to == onnx::TensorProto::INT32 ||
               to == onnx::TensorProto::BOOL) {
      if (x.is_float) {
        out->i.clear();
        for (float v : x.f) {
          if (!std::isfinite(v)) unsupported(n, "casts a non-finite float to an integer");
          out->i.push_back(Sym{to == onnx::TensorProto::BOOL ? int64_t(v != 0) : int64_t(v), 0});
        }
        out->f.clear();
        out->is_float = false;
      }
    } else {
      unsupported(n, "Cast to ONNX type " + std::to_string(to));
    }
  } else if (op == "ConstantOfShape") {
    const std::vector<int64_t> d = ints_of(n, konst(n, 0, "shape"), "shape");
    int64_t count = 1;
    for (int64_t x : d) {
      if (x < 0 || x > kMaxImportConst) unsupported(n, "shape " + dims_text(d));
      count *= x;
      if (count > kMaxImportConst) unsupported(n, "a constant of more than 2^24 elements");
    }
    out->dims = d;
    const auto* a = attr(n, "value");
    ConstPtr v;
    if (a) v = tensor_const(a->t(), "value of '" + node_name(n) + "'");
    if (!v || v->is_float) {
      out->f.assign(size_t(count), v ? v->f.at(0) : 0.0f);
    } else {
      out->is_float = false;
      out->i.assign(size_t(count), v->i.at(0));
    }
  } else if (op == "Unsqueeze" || op == "Squeeze") {
    const Const& x = konst(n, 0, "input");
    std::vector<int64_t> axes = opset() >= 13 && has(n, 1) ? ints_of(n, konst(n, 1, "axes"), "axes")
                                                           : attr_ints(n, "axes", {});
    *out = x;
    out->init.clear();
    if (op == "Unsqueeze") {
      const int64_t r = int64_t(x.dims.size() + axes.size());
      for (auto& a : axes) a = a < 0 ? a + r : a;
      std::sort(axes.begin(), axes.end());
      for (int64_t a : axes) {
        if (a < 0 || a > int64_t(out->dims.size())) bad(n, "axis out of range");
        out->dims.insert(out->dims.begin() + a, 1);
      }
    } else {
      const int64_t r = int64_t(x.dims.size());
      std::vector<int64_t> d;
      for (int64_t k = 0; k < r; ++k) {
        bool drop = axes.empty() ? x.dims[size_t(k)] == 1 : false;
        for (int64_t a : axes)
          if (a == k || (a < 0 && a + r == k)) drop = true;
        if (drop && x.dims[size_t(k)] != 1) bad(n, "squeezes a dim that is not 1");
        if (!drop) d.push_back(x.dims[size_t(k)]);
      }
      out->dims = d;
    }
  } else if (op == "Gather") {
    const Const& x = konst(n, 0, "data");
    const Const& idx = konst(n, 1, "indices");
    if (x.dims.size() != 1) unsupported(n, "Gather on constants of rank other than 1");
    if (attr_int(n, "axis", 0) != 0) unsupported(n, "Gather along an axis other than 0");
    const std::vector<int64_t> ix = ints_of(n, idx, "indices");
    *out = x;
    out->init.clear();
    out->dims = idx.dims;
    out->f.clear();
    out->i.clear();
    const int64_t len = x.dims[0];
    for (int64_t k : ix) {
      if (k < 0) k += len;
      if (k < 0 || k >= len) bad(n, "index " + std::to_string(k) + " out of range");
      if (x.is_float)
        out->f.push_back(x.f[size_t(k)]);
      else
        out->i.push_back(x.i[size_t(k)]);
    }
  } else if (op == "Concat") {
    const int64_t axis0 = attr_int(n, "axis", 0);
    const Const& first = konst(n, 0, "input");
    const int64_t r = int64_t(first.dims.size());
    const int64_t axis = axis0 < 0 ? axis0 + r : axis0;
    if (axis < 0 || axis >= r) bad(n, "axis out of range");
    out->is_float = first.is_float;
    out->dims = first.dims;
    out->dims[size_t(axis)] = 0;
    std::vector<const Const*> ins;
    for (int k = 0; k < n.input_size(); ++k) {
      const Const& c = konst(n, k, "input");
      if (c.is_float != first.is_float || c.dims.size() != first.dims.size())
        unsupported(n, "concatenates constants of different types or ranks");
      for (int64_t d = 0; d < r; ++d)
        if (d != axis && c.dims[size_t(d)] != first.dims[size_t(d)]) bad(n, "dims differ off the axis");
      out->dims[size_t(axis)] += c.dims[size_t(axis)];
      ins.push_back(&c);
    }
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= first.dims[size_t(d)];
    for (int64_t o = 0; o < outer; ++o)
      for (const Const* c : ins) {
        const int64_t w = c->numel() / std::max<int64_t>(outer, 1);
        if (c->is_float)
          out->f.insert(out->f.end(), c->f.begin() + o * w, c->f.begin() + (o + 1) * w);
        else
          out->i.insert(out->i.end(), c->i.begin() + o * w, c->i.begin() + (o + 1) * w);
      }
  } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    const Const& a = konst(n, 0, "A");
    const Const& b = konst(n, 1, "B");
    if (a.is_float != b.is_float) unsupported(n, "mixes float and integer constants");
    // Broadcast (NumPy rules).
    const size_t r = std::max(a.dims.size(), b.dims.size());
    std::vector<int64_t> da(r, 1), db(r, 1), d(r, 1);
    std::copy(a.dims.begin(), a.dims.end(), da.begin() + long(r - a.dims.size()));
    std::copy(b.dims.begin(), b.dims.end(), db.begin() + long(r - b.dims.size()));
    for (size_t k = 0; k < r; ++k) {
      if (da[k] != db[k] && da[k] != 1 && db[k] != 1) bad(n, "shapes do not broadcast");
      d[k] = std::max(da[k], db[k]);
      if (da[k] == 0 || db[k] == 0) d[k] = 0;
    }
    out->is_float = a.is_float;
    out->dims = d;
    const auto so = cx::strides(d), sa = cx::strides(da), sb = cx::strides(db);
    int64_t count = 1;
    for (int64_t x : d) count *= x;
    if (count > kMaxImportConst) unsupported(n, "a constant of more than 2^24 elements");
    for (int64_t e = 0; e < count; ++e) {
      int64_t ia = 0, ib = 0, rem = e;
      for (size_t k = 0; k < r; ++k) {
        const int64_t c = rem / so[k];
        rem -= c * so[k];
        if (da[k] != 1) ia += c * sa[k];
        if (db[k] != 1) ib += c * sb[k];
      }
      if (a.is_float) {
        const float x = a.f[size_t(ia)], y = b.f[size_t(ib)];
        out->f.push_back(op == "Add" ? x + y : op == "Sub" ? x - y : op == "Mul" ? x * y : x / y);
        continue;
      }
      const Sym x = a.i[size_t(ia)], y = b.i[size_t(ib)];
      Sym z;
      if (op == "Mul") {
        z = sym_mul(x, y);
      } else if (op == "Add" || op == "Sub") {
        if (op == "Sub" && y.lit == std::numeric_limits<int64_t>::min())
          unsupported(n, "shape arithmetic overflows 64 bits");
        const int64_t yl = op == "Add" ? y.lit : -y.lit;
        if (x.pow == y.pow || x.lit == 0 || y.lit == 0) {
          int64_t v;
          const bool o = __builtin_add_overflow(x.lit, yl, &v);
          z = Sym{checked(o, v), x.lit == 0 ? y.pow : x.pow};
          if (z.lit == 0) z.pow = 0;
        } else {
          unsupported(n, "shape arithmetic that adds the batch size to another number");
        }
      } else {  // Div: integer division, truncating
        if (y.lit == 0) bad(n, "division by zero");
        if (y.lit == -1 && x.lit == std::numeric_limits<int64_t>::min())
          unsupported(n, "shape arithmetic overflows 64 bits");
        if (y.pow > x.pow || x.lit % y.lit != 0) {
          if (x.pow == 0 && y.pow == 0) {
            z = Sym{x.lit / y.lit, 0};
          } else {
            unsupported(n, "shape arithmetic that divides the batch size");
          }
        } else {
          z = Sym{x.lit / y.lit, x.pow - y.pow};
        }
      }
      out->i.push_back(z);
    }
  } else if (op == "Reshape") {
    const Const& x = konst(n, 0, "data");
    std::vector<int64_t> shape = ints_of(n, konst(n, 1, "shape"), "shape");
    int64_t known = 1, infer = -1;
    for (size_t k = 0; k < shape.size(); ++k) {
      if (shape[k] == 0 && !attr_int(n, "allowzero", 0)) shape[k] = k < x.dims.size() ? x.dims[k] : 1;
      if (shape[k] == -1) {
        if (infer >= 0) bad(n, "two -1 in the shape");
        infer = int64_t(k);
      } else if (shape[k] < 0) {
        bad(n, "negative dim in the shape");
      } else {
        int64_t v;
        const bool o = __builtin_mul_overflow(known, shape[k], &v);
        known = checked(o, v);
      }
    }
    if (infer >= 0) shape[size_t(infer)] = known ? x.numel() / known : 0;
    int64_t total = 1;
    for (int64_t d : shape) total *= d;
    if (total != x.numel()) bad(n, "shape " + dims_text(shape) + " does not hold " + dims_text(x.dims));
    *out = x;
    out->init.clear();
    out->dims = shape;
  } else if (op == "Transpose") {
    const Const& x = konst(n, 0, "data");
    const size_t r = x.dims.size();
    std::vector<int64_t> perm = attr_ints(n, "perm", {});
    if (perm.empty())
      for (size_t k = 0; k < r; ++k) perm.push_back(int64_t(r - 1 - k));
    if (perm.size() != r) bad(n, "perm does not match the rank");
    std::vector<int64_t> d(r);
    for (size_t k = 0; k < r; ++k) {
      if (perm[k] < 0 || perm[k] >= int64_t(r)) bad(n, "perm out of range");
      d[k] = x.dims[size_t(perm[k])];
    }
    const auto si = cx::strides(x.dims), so = cx::strides(d);
    out->is_float = x.is_float;
    out->dims = d;
    for (int64_t e = 0; e < x.numel(); ++e) {
      int64_t src = 0, rem = e;
      for (size_t k = 0; k < r; ++k) {
        const int64_t c = rem / so[k];
        rem -= c * so[k];
        src += c * si[size_t(perm[k])];
      }
      if (x.is_float)
        out->f.push_back(x.f[size_t(src)]);
      else
        out->i.push_back(x.i[size_t(src)]);
    }
  } else if (op == "Slice") {
    const Const& x = konst(n, 0, "data");
    const size_t r = x.dims.size();
    std::vector<int64_t> starts, ends, axes, steps;
    if (opset() >= 10) {
      starts = ints_of(n, konst(n, 1, "starts"), "starts");
      ends = ints_of(n, konst(n, 2, "ends"), "ends");
      if (has(n, 3)) axes = ints_of(n, konst(n, 3, "axes"), "axes");
      if (has(n, 4)) steps = ints_of(n, konst(n, 4, "steps"), "steps");
    } else {
      starts = attr_ints(n, "starts", {});
      ends = attr_ints(n, "ends", {});
      axes = attr_ints(n, "axes", {});
    }
    if (axes.empty())
      for (size_t k = 0; k < starts.size(); ++k) axes.push_back(int64_t(k));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      bad(n, "starts, ends, axes and steps differ in length");
    // Per axis: first index, step, count.
    std::vector<int64_t> first(r, 0), step(r, 1), cnt(x.dims);
    for (size_t k = 0; k < axes.size(); ++k) {
      int64_t a = axes[k] < 0 ? axes[k] + int64_t(r) : axes[k];
      if (a < 0 || a >= int64_t(r)) bad(n, "axis out of range");
      const int64_t dim = x.dims[size_t(a)], st = steps[k];
      if (st == 0) bad(n, "step 0");
      int64_t s = starts[k], e = ends[k];
      if (s < 0) s += dim;
      if (e < 0) e += dim;
      if (st > 0) {
        s = std::clamp<int64_t>(s, 0, dim);
        e = std::clamp<int64_t>(e, 0, dim);
        cnt[size_t(a)] = e > s ? (e - s - 1) / st + 1 : 0;
      } else {
        s = std::clamp<int64_t>(s, -1, dim - 1);
        e = std::clamp<int64_t>(e, -1, dim - 1);
        if (st == std::numeric_limits<int64_t>::min()) bad(n, "step out of range");
        cnt[size_t(a)] = s > e ? (s - e - 1) / (-st) + 1 : 0;
      }
      first[size_t(a)] = s;
      step[size_t(a)] = st;
    }
    out->is_float = x.is_float;
    out->dims = cnt;
    const auto si = cx::strides(x.dims), so = cx::strides(cnt);
    int64_t count = 1;
    for (int64_t d : cnt) count *= d;
    for (int64_t e = 0; e < count; ++e) {
      int64_t src = 0, rem = e;
      for (size_t k = 0; k < r; ++k) {
        const int64_t c = rem / so[k];
        rem -= c * so[k];
        src += (first[k] + c * step[k]) * si[k];
      }
      if (x.is_float)
        out->f.push_back(x.f[size_t(src)]);
      else
        out->i.push_back(x.i[size_t(src)]);
    }
  } else {
    return false;  // a network op on constants only: handled (or refused) as a network op
  }
  define_const(n, out);
  return true;
}

// ---------------------------------------------------------------------------------------------
void Importer::spatial(const onnx::NodeProto& n, const std::vector<int64_t>& in, int kh, int kw,
                       int sh, int sw, int dh, int dw, int* p) {
  const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
  std::vector<int64_t> pads = attr_ints(n, "pads", {0, 0, 0, 0});
  if (pads.size() != 4) unsupported(n, "pads for other than 2 spatial dims");
  for (int64_t v : pads)
    if (v < 0 || v > kOnnxMaxDim) unsupported(n, "pads " + dims_text(pads));
  if (auto_pad == "VALID") {
    pads = {0, 0, 0, 0};
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    const int64_t size[2] = {in[2], in[3]}, k[2] = {kh, kw}, s[2] = {sh, sw}, d[2] = {dh, dw};
    for (int a = 0; a < 2; ++a) {
      const int64_t out = (size[a] + s[a] - 1) / s[a];
      const int64_t total = std::max<int64_t>(0, (out - 1) * s[a] + (k[a] - 1) * d[a] + 1 - size[a]);
      const int64_t small = total / 2, large = total - small;
      pads[size_t(a)] = auto_pad == "SAME_UPPER" ? small : large;
      pads[size_t(a) + 2] = auto_pad == "SAME_UPPER" ? large : small;
    }
  } else if (auto_pad != "NOTSET") {
    unsupported(n, "auto_pad " + auto_pad);
  }
  p[0] = int(pads[0]);
  p[1] = int(pads[1]);
  p[2] = int(pads[2]);
  p[3] = int(pads[3]);
}

void Importer::define_weighted(const onnx::NodeProto& n, OpKind op, ValueId in, const Attr& a,
                               const Const& w, const Const* b) {
  std::vector<std::string> names{w.init};
  if (b) {
    names.push_back(b->init);
    initial_values.emplace(b->init, get(n, 2).c);
  }
  auto [it, fresh] = weight_user_.emplace(w.init, node_name(n));
  if (!fresh)
    unsupported(n, "weight '" + w.init + "' is also used by node '" + it->second +
                       "' (shared convolution or linear weights are not supported)");
  define(n, 0, Val{add(n, op, {in}, a, names), nullptr});
}

void Importer::conv(const onnx::NodeProto& n) {
  const Val& xv = get(n, 0);
  if (!xv.runtime()) unsupported(n, "a convolution of a constant");
  const std::vector<int64_t> x = dims_of(xv.id);
  const Const& w = weight(n, 1, "weight");
  if (w.dims.size() != 4) unsupported(n, "a " + std::to_string(int(w.dims.size()) - 2) + "-d convolution (only 2-d)");
  if (x.size() != 4) bad(n, "input " + dims_text(x) + " is not 4-d");
  const Const* b = has(n, 2) ? &weight(n, 2, "bias") : nullptr;
  const int64_t group = attr_int(n, "group", 1);
  const auto ks = attr_ints(n, "kernel_shape", {w.dims[2], w.dims[3]});
  if (ks.size() != 2 || ks[0] != w.dims[2] || ks[1] != w.dims[3])
    bad(n, "kernel_shape " + dims_text(ks) + " does not match the weight " + dims_text(w.dims));
  const auto st = attr_ints(n, "strides", {1, 1});
  const auto dl = attr_ints(n, "dilations", {1, 1});
  if (st.size() != 2 || dl.size() != 2) unsupported(n, "strides/dilations for other than 2 dims");
  for (int64_t v : {st[0], st[1], dl[0], dl[1]})
    if (v < 1 || v > kOnnxMaxDim) unsupported(n, "strides " + dims_text(st) + ", dilations " + dims_text(dl));
  if (group < 1 || group > kOnnxMaxDim || x[1] == kBatch || x[1] % group ||
      w.dims[1] * group != x[1] || w.dims[0] % group)
    bad(n, "weight " + dims_text(w.dims) + " with group " + std::to_string(group) +
               " does not fit the input " + dims_text(x));
  if (b && (b->numel() != w.dims[0]))
    bad(n, "bias " + dims_text(b->dims) + " does not match " + std::to_string(w.dims[0]) + " filters");
  int p[4];
  spatial(n, x, int(w.dims[2]), int(w.dims[3]), int(st[0]), int(st[1]), int(dl[0]), int(dl[1]), p);
  ValueId in = xv.id;
  // Asymmetric pads: the extra part as a Pad node before the convolution.
  const int sym_h = std::min(p[0], p[2]), sym_w = std::min(p[1], p[3]);
  if (p[0] != p[2] || p[1] != p[3]) {
    Attr pa;
    pa.pads = {0, 0, p[0] - sym_h, p[1] - sym_w, 0, 0, p[2] - sym_h, p[3] - sym_w};
    pa.lo = 0.0f;
    in = add(n, OpKind::Pad, {in}, pa, {}, 1, {}, ":pad");
  }
  Attr a;
  a.conv.c_in = int(x[1]);
  a.conv.c_out = int(w.dims[0]);
  a.conv.kh = int(w.dims[2]);
  a.conv.kw = int(w.dims[3]);
  a.conv.stride_h = int(st[0]);
  a.conv.stride_w = int(st[1]);
  a.conv.dil_h = int(dl[0]);
  a.conv.dil_w = int(dl[1]);
  a.conv.pad_t = a.conv.pad_b = sym_h;
  a.conv.pad_l = a.conv.pad_r = sym_w;
  a.conv.groups = int(group);
  a.conv.bias = b != nullptr;
  initial_values.emplace(w.init, get(n, 1).c);
  define_weighted(n, OpKind::Conv, in, a, w, b);
}

void Importer::pool(const onnx::NodeProto& n, bool max) {
  const Val& xv = get(n, 0);
  if (!xv.runtime()) unsupported(n, "pooling of a constant");
  const std::vector<int64_t> x = dims_of(xv.id);
  if (x.size() != 4) unsupported(n, "pooling of a " + std::to_string(x.size()) + "-d tensor (only 4-d)");
  const auto ks = attr_ints(n, "kernel_shape", {});
  if (ks.size() != 2) unsupported(n, "kernel_shape " + dims_text(ks) + " (only 2-d pooling)");
  const auto st = attr_ints(n, "strides", {1, 1});
  const auto dl = attr_ints(n, "dilations", {1, 1});
  if (st.size() != 2) unsupported(n, "strides " + dims_text(st));
  if (dl != std::vector<int64_t>{1, 1}) unsupported(n, "dilated pooling");
  for (int64_t v : {ks[0], ks[1], st[0], st[1]})
    if (v < 1 || v > kOnnxMaxDim) unsupported(n, "kernel " + dims_text(ks) + ", strides " + dims_text(st));
  if (max && attr_int(n, "storage_order", 0) != 0) unsupported(n, "storage_order 1");
  if (max && n.output_size() > 1 && !n.output(1).empty())
    unsupported(n, "the Indices output of MaxPool");
  int p[4];
  spatial(n, x, int(ks[0]), int(ks[1]), int(st[0]), int(st[1]), 1, 1, p);
  if (p[0] != p[2] || p[1] != p[3]) unsupported(n, "asymmetric pads in pooling");
  Attr a;
  a.pool.kh = int(ks[0]);
  a.pool.kw = int(ks[1]);
  a.pool.stride_h = int(st[0]);
  a.pool.stride_w = int(st[1]);
  a.pool.pad_t = a.pool.pad_b = p[0];
  a.pool.pad_l = a.pool.pad_r = p[1];
  a.pool.ceil_mode = attr_int(n, "ceil_mode", 0) != 0;
  a.pool.count_include_pad = !max && attr_int(n, "count_include_pad", 0) != 0;
  if (2 * p[0] > ks[0] || 2 * p[1] > ks[1])
    unsupported(n, "pads larger than half the kernel (PyTorch's limit)");
  define(n, 0, Val{add(n, max ? OpKind::MaxPool : OpKind::AvgPool, {xv.id}, a), nullptr});
}

void Importer::batchnorm(const onnx::NodeProto& n) {
  const Val& xv = get(n, 0);
  if (!xv.runtime()) unsupported(n, "batch normalization of a constant");
  const std::vector<int64_t> x = dims_of(xv.id);
  if (x.size() != 4 && x.size() != 2) unsupported(n, "input " + dims_text(x) + " (only [N, C] or [N, C, H, W])");
  const char* what[4] = {"scale", "bias", "mean", "var"};
  std::vector<std::string> names;
  for (int k = 0; k < 4; ++k) {
    const Const& c = weight(n, k + 1, what[k]);
    if (c.numel() != x[1] || c.dims.size() != 1)
      bad(n, std::string(what[k]) + " " + dims_text(c.dims) + " does not match " +
                 std::to_string(x[1]) + " channels");
    names.push_back(c.init);
    initial_values.emplace(c.init, get(n, k + 1).c);
  }
  Attr a;
  a.channels = int(x[1]);
  a.eps = attr_float(n, "epsilon", 1e-5f);
  a.momentum = 1.0f - attr_float(n, "momentum", 0.9f);
  if (!(a.eps > 0) || !(a.momentum >= 0 && a.momentum <= 1)) bad(n, "epsilon or momentum out of range");
  define(n, 0, Val{add(n, OpKind::BatchNorm, {xv.id}, a, names), nullptr});
}

void Importer::gemm(const onnx::NodeProto& n, bool matmul) {
  const Val& xv = get(n, 0);
  if (!xv.runtime()) unsupported(n, "a product of constants");
  const std::vector<int64_t> x = dims_of(xv.id);
  if (x.size() != 2) unsupported(n, "input " + dims_text(x) + " (only [N, features])");
  const Val& wv = get(n, 1);
  if (wv.runtime()) unsupported(n, "a product by a tensor the network computes (only by an initializer)");
  const Const& w = weight(n, 1, "weight");
  if (w.dims.size() != 2) bad(n, "weight " + dims_text(w.dims) + " is not 2-d");
  bool trans_b = false;
  if (!matmul) {
    if (attr_float(n, "alpha", 1.0f) != 1.0f || attr_float(n, "beta", 1.0f) != 1.0f)
      unsupported(n, "alpha or beta other than 1");
    if (attr_int(n, "transA", 0) != 0) unsupported(n, "transA");
    trans_b = attr_int(n, "transB", 0) != 0;
  }
  const int64_t in = trans_b ? w.dims[1] : w.dims[0], out = trans_b ? w.dims[0] : w.dims[1];
  if (x[1] != in) bad(n, "weight " + dims_text(w.dims) + " does not fit the input " + dims_text(x));
  const Const* b = !matmul && has(n, 2) ? &weight(n, 2, "bias C") : nullptr;
  if (b && b->numel() != out) unsupported(n, "bias C " + dims_text(b->dims) + " (only [" + std::to_string(out) + "])");
  Attr a;
  a.in = int(in);
  a.out = int(out);
  a.bias = b != nullptr;
  if (trans_b) {
    initial_values.emplace(w.init, wv.c);
  } else {  // the state holds [out, in], as PyTorch's Linear
    auto t = std::make_shared<Const>(w);
    t->dims = {out, in};
    for (int64_t r = 0; r < out; ++r)
      for (int64_t c = 0; c < in; ++c) t->f[size_t(r * in + c)] = w.f[size_t(c * out + r)];
    initial_values.emplace(w.init, t);
    transposed_.insert(w.init);
  }
  define_weighted(n, OpKind::Linear, xv.id, a, w, b);
}

void Importer::reshape(const onnx::NodeProto& n) {
  const Val& xv = network_input(n, 0);
  const std::vector<int64_t> x = dims_of(xv.id);
  const Const& s = konst(n, 1, "shape");
  if (s.is_float || s.dims.size() != 1) bad(n, "shape must be a 1-d integer tensor");
  const bool allowzero = attr_int(n, "allowzero", 0) != 0;
  Attr a;
  int64_t known = 1;
  if (s.i.size() > size_t(ops::kMaxDims)) unsupported(n, "a target of more than 6 dims");
  for (size_t k = 0; k < s.i.size(); ++k) {
    const Sym v = s.i[k];
    if (v.pow == 1 && v.lit == 1) {
      a.dims.push_back(kBatch);
    } else if (v.pow != 0) {
      unsupported(n, "a target shape entry that is a multiple or power of the batch size");
    } else if (v.lit == 0 && !allowzero) {
      if (k >= x.size()) bad(n, "0 in the shape copies a dim the input does not have");
      a.dims.push_back(x[k]);
    } else if (v.lit == -1 || v.lit > 0) {
      if (v.lit > kOnnxMaxDim) unsupported(n, "dim " + std::to_string(v.lit));
      if (v.lit > 0) {
        known *= v.lit;  // each <= 2^24, checked as it grows: no overflow
        if (known > kOnnxMaxTensorElements) unsupported(n, "a target shape of more than 2^30 elements");
      }
      a.dims.push_back(v.lit);
    } else {
      unsupported(n, "target dim " + std::to_string(v.lit));
    }
  }
  define(n, 0, Val{add(n, OpKind::Reshape, {xv.id}, a), nullptr});
}

void Importer::slice(const onnx::NodeProto& n) {
  const Val& xv = network_input(n, 0);
  const std::vector<int64_t> x = dims_of(xv.id);
  std::vector<Sym> starts, ends;
  std::vector<int64_t> axes, steps;
  auto syms = [&](int k, const char* what) {
    const Const& c = konst(n, k, what);
    if (c.is_float) bad(n, std::string(what) + " must be integers");
    return c.i;
  };
  if (opset() >= 10) {
    starts = syms(1, "starts");
    ends = syms(2, "ends");
    if (has(n, 3)) axes = ints_of(n, konst(n, 3, "axes"), "axes");
    if (has(n, 4)) steps = ints_of(n, konst(n, 4, "steps"), "steps");
  } else {
    for (int64_t v : attr_ints(n, "starts", {})) starts.push_back(Sym{v, 0});
    for (int64_t v : attr_ints(n, "ends", {})) ends.push_back(Sym{v, 0});
    axes = attr_ints(n, "axes", {});
  }
  if (axes.empty())
    for (size_t k = 0; k < starts.size(); ++k) axes.push_back(int64_t(k));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    bad(n, "starts, ends, axes and steps differ in length");
  ValueId cur = xv.id;
  int added = 0;
  for (size_t k = 0; k < starts.size(); ++k) {
    const int64_t ax = axes[k] < 0 ? axes[k] + int64_t(x.size()) : axes[k];
    if (ax < 0 || ax >= int64_t(x.size())) bad(n, "axis " + std::to_string(axes[k]) + " out of range");
    const int64_t dim = x[size_t(ax)];
    const Sym s = starts[k], e = ends[k];
    if (steps[k] <= 0) unsupported(n, "a step of " + std::to_string(steps[k]) + " (only positive steps)");
    if (dim == kBatch) {
      // The whole batch (0 .. the batch or beyond) is no slice at all.
      const bool whole = s.pow == 0 && s.lit == 0 && steps[k] == 1 &&
                         ((e.pow == 1 && e.lit == 1) || (e.pow == 0 && e.lit >= kOnnxMaxDim));
      if (!whole) unsupported(n, "slices the batch");
      continue;
    }
    if (s.pow != 0 || e.pow != 0) unsupported(n, "a slice bound that depends on the batch size");
    Attr a;
    a.axis = int(ax);
    a.start = std::clamp<int64_t>(s.lit, -kOnnxMaxTensorElements, kOnnxMaxTensorElements);
    a.end = std::clamp<int64_t>(e.lit, -kOnnxMaxTensorElements, kOnnxMaxTensorElements);
    a.step = std::min(steps[k], kOnnxMaxTensorElements);  // a longer step: the first element
    cur = add(n, OpKind::Slice, {cur}, a, {}, 1, {}, added ? ":" + std::to_string(added) : "");
    ++added;
  }
  define(n, 0, Val{cur, nullptr});
}

void Importer::pad(const onnx::NodeProto& n) {
  const Val& xv = network_input(n, 0);
  const std::vector<int64_t> x = dims_of(xv.id);
  if (attr_string(n, "mode", "constant") != "constant")
    unsupported(n, "mode '" + attr_string(n, "mode", "") + "' (only constant)");
  std::vector<int64_t> pads;
  float value = 0.0f;
  if (opset() >= 11) {
    pads = ints_of(n, konst(n, 1, "pads"), "pads");
    if (has(n, 2)) value = scalar_float(n, 2, "constant_value");
    if (has(n, 3)) unsupported(n, "the axes input");
  } else {
    pads = attr_ints(n, "pads", {});
    value = attr_float(n, "value", 0.0f);
  }
  if (pads.size() != 2 * x.size()) bad(n, "pads " + dims_text(pads) + " for a " + std::to_string(x.size()) + "-d input");
  bool zero = true;
  for (int64_t p : pads) {
    if (p < 0) unsupported(n, "negative pads (cropping)");
    if (p > kOnnxMaxDim) unsupported(n, "pads " + dims_text(pads));
    zero = zero && p == 0;
  }
  if (zero) {
    define(n, 0, Val{xv.id, nullptr});
    return;
  }
  Attr a;
  a.pads = pads;
  a.lo = value;
  define(n, 0, Val{add(n, OpKind::Pad, {xv.id}, a), nullptr});
}

void Importer::split(const onnx::NodeProto& n) {
  const Val& xv = network_input(n, 0);
  const std::vector<int64_t> x = dims_of(xv.id);
  int64_t axis = attr_int(n, "axis", 0);
  if (axis < 0) axis += int64_t(x.size());
  if (axis < 0 || axis >= int64_t(x.size())) bad(n, "axis out of range");
  const int64_t dim = x[size_t(axis)];
  if (dim == kBatch) unsupported(n, "splits the batch");
  std::vector<int64_t> sizes;
  if (opset() >= 13 && has(n, 1))
    sizes = ints_of(n, konst(n, 1, "split"), "split");
  else
    sizes = attr_ints(n, "split", {});
  const int n_out = n.output_size();
  if (n_out < 1) bad(n, "no outputs");
  if (sizes.empty()) {
    const int64_t parts = attr_int(n, "num_outputs", n_out);
    if (parts != n_out) bad(n, "num_outputs does not match the outputs");
    const int64_t each = (dim + parts - 1) / parts;
    for (int64_t k = 0; k < parts; ++k) sizes.push_back(std::min(each, dim - k * each));
  }
  if (int64_t(sizes.size()) != n_out) bad(n, "split sizes do not match the outputs");
  Attr a;
  a.axis = int(axis);
  a.sizes = sizes;
  std::vector<std::string> out_names;
  for (int k = 0; k < n_out; ++k)
    out_names.push_back(n.output(k).empty() ? node_name(n) + ":" + std::to_string(k) : n.output(k));
  add(n, OpKind::Split, {xv.id}, a, {}, n_out, out_names);
  const auto& outs = g_.nodes().back().outputs;
  for (int k = 0; k < n_out; ++k) define(n, k, Val{outs[size_t(k)], nullptr});
}

void Importer::clip(const onnx::NodeProto& n) {
  const Val& xv = network_input(n, 0);
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  if (opset() >= 11) {
    if (has(n, 1)) lo = scalar_float(n, 1, "min");
    if (has(n, 2)) hi = scalar_float(n, 2, "max");
  } else {
    lo = attr_float(n, "min", lo);
    hi = attr_float(n, "max", hi);
  }
  if (!(lo <= hi)) unsupported(n, "min above max");
  Attr a;
  OpKind op = OpKind::Clip;
  if (lo == 0.0f && hi == 6.0f) op = OpKind::Relu6;  // PyTorch's ReLU6 (folds into a conv)
  if (lo == 0.0f && std::isinf(hi) && hi > 0) op = OpKind::Relu;
  a.lo = lo;
  a.hi = hi;
  define(n, 0, Val{add(n, op, {xv.id}, a), nullptr});
}

void Importer::binary(const onnx::NodeProto& n, OpKind op) {
  const ValueId a = runtime_or_constant(n, 0);
  const ValueId b = runtime_or_constant(n, 1);
  define(n, 0, Val{add(n, op, {a, b}), nullptr});
}

void Importer::node(const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  if (!n.domain().empty() && n.domain() != "ai.onnx")
    unsupported(n, "domain '" + n.domain() + "' (only the default ONNX domain)");
  if (n.output_size() < 1 || n.output(0).empty()) bad(n, "no output");
  if (const_op(n)) return;
  auto unary = [&](OpKind k, Attr a = {}) {
    const Val& x = get(n, 0);
    if (!x.runtime()) unsupported(n, "applied to a constant");
    define(n, 0, Val{add(n, k, {x.id}, a), nullptr});
  };
  if (op == "Conv") return conv(n);
  if (op == "BatchNormalization") return batchnorm(n);
  if (op == "Relu") return unary(OpKind::Relu);
  if (op == "Sigmoid") return unary(OpKind::Sigmoid);
  if (op == "Tanh") return unary(OpKind::Tanh);
  if (op == "Clip") return clip(n);
  if (op == "HardSigmoid") {
    Attr a;
    a.alpha = attr_float(n, "alpha", 0.2f);
    a.beta = attr_float(n, "beta", 0.5f);
    return unary(OpKind::HardSigmoid, a);
  }
  if (op == "HardSwish") {  // x * HardSigmoid(x; 1/6, 1/2)
    const Val& x = get(n, 0);
    if (!x.runtime()) unsupported(n, "applied to a constant");
    Attr a;
    a.alpha = 1.0f / 6.0f;
    a.beta = 0.5f;
    const ValueId hs = add(n, OpKind::HardSigmoid, {x.id}, a, {}, 1, {}, ":hardsigmoid");
    define(n, 0, Val{add(n, OpKind::Mul, {x.id, hs}), nullptr});
    return;
  }
  if (op == "Add") return binary(n, OpKind::Add);
  if (op == "Mul") return binary(n, OpKind::Mul);
  if (op == "Sub") return sub_div(n, false);
  if (op == "Div") return sub_div(n, true);
  if (op == "Squeeze") return squeeze(n, false);
  if (op == "Unsqueeze") return squeeze(n, true);
  if (op == "MaxPool") return pool(n, true);
  if (op == "AveragePool") return pool(n, false);
  if (op == "GlobalAveragePool") {
    const Val& x = get(n, 0);
    if (!x.runtime() || dims_of(x.id).size() != 4) unsupported(n, "only on a 4-d tensor of the network");
    return unary(OpKind::GlobalAvgPool);
  }
  if (op == "ReduceMean") {
    const Val& x = get(n, 0);
    if (!x.runtime()) unsupported(n, "applied to a constant");
    const size_t r = dims_of(x.id).size();
    Attr a;
    a.keepdims = attr_int(n, "keepdims", 1) != 0;
    a.axes = opset() >= 18 && has(n, 1) ? ints_of(n, konst(n, 1, "axes"), "axes")
                                        : attr_ints(n, "axes", {});
    if (a.axes.empty())
      for (size_t k = 0; k < r; ++k) a.axes.push_back(int64_t(k));
    std::vector<bool> red(r, false);
    for (int64_t ax : a.axes) {
      const int64_t v = ax < 0 ? ax + int64_t(r) : ax;
      if (v < 0 || v >= int64_t(r)) bad(n, "axis " + std::to_string(ax) + " out of range");
      red[size_t(v)] = true;
    }
    bool seen = false;
    for (size_t k = 0; k < r; ++k) {
      if (red[k]) seen = true;
      if (seen && !red[k]) unsupported(n, "a mean over axes that are not the trailing ones");
    }
    return unary(OpKind::ReduceMean, a);
  }
  if (op == "Flatten") {
    Attr a;
    a.axis = int(attr_int(n, "axis", 1));
    return unary(OpKind::Flatten, a);
  }
  if (op == "Reshape") return reshape(n);
  if (op == "Transpose") {
    const Val& x = get(n, 0);
    if (!x.runtime()) unsupported(n, "applied to a constant");
    Attr a;
    const size_t r = dims_of(x.id).size();
    a.perm = attr_ints(n, "perm", {});
    if (a.perm.empty())
      for (size_t k = 0; k < r; ++k) a.perm.push_back(int64_t(r - 1 - k));
    if (!a.perm.empty() && (a.perm[0] != 0 && a.perm[0] != -int64_t(r)))
      unsupported(n, "a transpose that moves the batch dim");
    return unary(OpKind::Transpose, a);
  }
  if (op == "Concat") {
    std::vector<ValueId> ins;
    for (int k = 0; k < n.input_size(); ++k) ins.push_back(runtime_or_constant(n, k));
    Attr a;
    a.axis = int(attr_int(n, "axis", 0));
    define(n, 0, Val{add(n, OpKind::Concat, ins, a), nullptr});
    return;
  }
  if (op == "Split") return split(n);
  if (op == "Slice") return slice(n);
  if (op == "Pad") return pad(n);
  if (op == "Gemm") return gemm(n, false);
  if (op == "MatMul") return gemm(n, true);
  if (op == "Dropout") {
    const Val& x = get(n, 0);
    if (!x.runtime()) unsupported(n, "applied to a constant");
    if (n.output_size() > 1 && !n.output(1).empty()) {
      // The mask output is allowed when nothing reads it: it is never defined.
    }
    Attr a;
    a.p = opset() >= 12 ? (has(n, 1) ? scalar_float(n, 1, "ratio") : 0.5f)
                        : attr_float(n, "ratio", 0.5f);
    if (!(a.p >= 0 && a.p < 1)) bad(n, "ratio outside [0, 1)");
    define(n, 0, Val{add(n, OpKind::Dropout, {x.id}, a, {}), nullptr});
    return;
  }
  if (op == "Identity") {
    env_[n.output(0)] = get(n, 0);
    return;
  }
  unsupported(n, "op " + op + " is not supported (supported: Conv, BatchNormalization, Relu, "
                 "Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, Mul, Add, Sub and Div by a "
                 "constant, Concat, MaxPool, AveragePool, Pad, GlobalAveragePool, ReduceMean, "
                 "Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Slice, Split, Gemm, MatMul, "
                 "Dropout, Identity; and shape arithmetic on constants; see "
                 "docs/bring-your-model.md)");
}

std::shared_ptr<OnnxDef> Importer::run() {
  // Opset of the default domain.
  for (const auto& o : m_.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset_ = int(std::min<int64_t>(o.version(), 1000));
  if (opset_ == 0) throw UnsupportedModel(file_ + ": no opset of the default ONNX domain");
  if (opset_ < 7 || opset_ > 21)
    throw UnsupportedModel(file_ + ": opset " + std::to_string(opset_) + " (supported: 7 to 21)");
  if (!m_.has_graph()) malformed(file_, "no graph (not an ONNX model?)");
  const onnx::GraphProto& gp = m_.graph();
  if (gp.node_size() > kOnnxMaxNodes)
    throw UnsupportedModel(file_ + ": " + std::to_string(gp.node_size()) + " nodes (limit " +
                           std::to_string(kOnnxMaxNodes) + ")");
  if (gp.node_size() == 0) malformed(file_, "the graph has no nodes");
  std::set<std::string> inits;
  for (const auto& t : gp.initializer()) {
    if (t.name().empty()) malformed(file_, "an initializer without a name");
    if (!inits.insert(t.name()).second) malformed(file_, "initializer '" + t.name() + "' defined twice");
    auto c = tensor_const(t, "initializer '" + t.name() + "'");
    auto named = std::make_shared<Const>(*c);
    named->init = t.name();
    env_[t.name()] = Val{-1, named};
  }
  if (gp.sparse_initializer_size() > 0) throw UnsupportedModel(file_ + ": sparse initializers");
  // The input: [N, C, S, S].
  const onnx::ValueInfoProto* input = nullptr;
  for (const auto& in : gp.input()) {
    if (inits.count(in.name())) continue;
    if (input) throw UnsupportedModel(file_ + ": more than one input ('" + input->name() + "', '" + in.name() + "')");
    input = &in;
  }
  if (!input) malformed(file_, "the graph has no input");
  if (!input->type().has_tensor_type())
    throw UnsupportedModel(file_ + ": input '" + input->name() + "' is not a tensor");
  const auto& tt = input->type().tensor_type();
  if (tt.elem_type() != onnx::TensorProto::FLOAT)
    throw UnsupportedModel(file_ + ": input '" + input->name() + "' is not FLOAT");
  std::vector<int64_t> dims;
  for (int k = 0; k < tt.shape().dim_size(); ++k) {
    const auto& d = tt.shape().dim(k);
    if (k == 0) {
      dims.push_back(kBatch);  // symbolic or fixed: the batch
      continue;
    }
    if (!d.has_dim_value() || d.dim_value() < 1 || d.dim_value() > kOnnxMaxDim)
      throw UnsupportedModel(file_ + ": input '" + input->name() + "' dim " + std::to_string(k) +
                             " is not a fixed size (only the batch may vary)");
    dims.push_back(d.dim_value());
  }
  if (dims.size() != 4 || dims[2] != dims[3])
    throw UnsupportedModel(file_ + ": input '" + input->name() + "' has shape " +
                           dims_text(dims) + "; supported: images [N, C, S, S]");
  env_[input->name()] = Val{g_.add_input(input->name(), dims), nullptr};
  for (int k = 0; k < gp.node_size(); ++k) {
    node_index_ = k;
    node(gp.node(k));
  }
  if (gp.output_size() != 1)
    throw UnsupportedModel(file_ + ": " + std::to_string(gp.output_size()) +
                           " outputs (supported: one, the logits)");
  auto it = env_.find(gp.output(0).name());
  if (it == env_.end()) malformed(file_, "output '" + gp.output(0).name() + "' is never computed");
  if (!it->second.runtime()) throw UnsupportedModel(file_ + ": the output is a constant");
  const auto& od = dims_of(it->second.id);
  if (od.size() != 2 || od[0] != kBatch || od[1] < 1)
    throw UnsupportedModel(file_ + ": output '" + gp.output(0).name() + "' has shape " +
                           dims_text(od) + "; supported: logits [N, classes]");
  g_.set_output(it->second.id);
  try {
    prune();
    g_.infer_dims();
  } catch (const std::invalid_argument& e) {
    throw UnsupportedModel(file_ + ": " + e.what());
  }
  auto def = std::make_shared<OnnxDef>();
  def->graph = std::move(g_);
  def->state_names = std::move(state_names_);
  def->constants = std::move(constants_);
  def->source = file_;
  def->transposed = std::move(transposed_);
  return def;
}

// ---------------------------------------------------------------------------------------------
std::string read_bounded(const std::string& path) {
  // A regular file only (core/io/input_file.h): /dev/zero or a FIFO is refused by its kind.
  if (const std::string kind = non_regular_kind(path); !kind.empty() && kind != "not found")
    malformed(path, "is " + kind + ", not an ONNX file (a model file must be a regular file)");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    malformed(path, e == ENOENT ? "file not found" : std::string("cannot open: ") + std::strerror(e));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) malformed(path, std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISREG(st.st_mode) && uint64_t(st.st_size) > kOnnxMaxFileBytes)
    throw UnsupportedModel(path + ": " + std::to_string(st.st_size) + " bytes; ONNX files are "
                           "limited to 2 GiB (larger models keep their weights in external "
                           "data files, which this reader does not support)");
  std::string buf;
  char chunk[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      malformed(path, std::string("read error: ") + std::strerror(errno));
    }
    if (r == 0) break;
    buf.append(chunk, size_t(r));
    if (buf.size() > kOnnxMaxFileBytes)
      throw UnsupportedModel(path + ": more than 2 GiB (the ONNX file limit)");
  }
  return buf;
}

}  // namespace

namespace {
bool safetensors_head(const std::string& head) {
  return head.size() >= 9 && head[8] == '{';  // 8-byte header length, then the JSON
}
}  // namespace

bool looks_like_onnx_bytes(const std::string& head) {
  if (head.empty() || safetensors_head(head)) return false;
  // The first field of a ModelProto: ir_version (1, varint), producer_name (2), producer_version
  // (3), domain (4), model_version (5, varint), doc_string (6), graph (7), opset_import (8),
  // metadata_props (14).
  switch (static_cast<unsigned char>(head[0])) {
    case 0x08: case 0x12: case 0x1a: case 0x22: case 0x28: case 0x32: case 0x3a: case 0x42:
    case 0x72:
      return true;
    default:
      return false;
  }
}

bool looks_like_onnx(const std::string& path) {
  std::string head;
  // Not even opened unless a regular file: opening a FIFO without a writer blocks, and the
  // reader that follows refuses the path by its kind.
  if (!non_regular_kind(path).empty()) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      char buf[16];
      const ssize_t r = ::read(fd, buf, sizeof buf);
      if (r > 0) head.assign(buf, size_t(r));
    }
    ::close(fd);
  }
  if (looks_like_onnx_bytes(head)) return true;
  if (safetensors_head(head)) return false;
  return path.size() >= 5 && path.compare(path.size() - 5, 5, ".onnx") == 0;
}

std::unique_ptr<models::Model> parse_onnx(const std::string& bytes, const std::string& file,
                                          std::map<std::string, std::string>* metadata) {
  if (bytes.size() > kOnnxMaxFileBytes) throw UnsupportedModel(file + ": more than 2 GiB");
  onnx::ModelProto m;
  if (bytes.empty() || !m.ParseFromArray(bytes.data(), int(bytes.size())))
    malformed(file, "not an ONNX model (the protobuf ModelProto does not parse)");
  Importer imp(m, file);
  std::shared_ptr<OnnxDef> def = imp.run();
  std::map<std::string, std::string> meta;
  for (const auto& p : m.metadata_props()) meta[p.key()] = p.value();
  def->proto = std::move(m);
  // Initializer data lives in our state: drop it from the kept proto? No: the writer keeps the
  // file's representation of every tensor, and tensors the state does not hold stay as they are.
  models::ModelSpec spec;
  spec.arch = models::kGraphArch;
  const auto& in = def->graph.value(def->graph.input()).dims;
  spec.in_channels = int(in[1]);
  spec.input_size = int(in[2]);
  spec.num_classes = int(def->graph.value(def->graph.output()).dims[1]);
  spec.graph = def;
  std::unique_ptr<models::Model> model;
  try {
    model = models::build_model(spec);
  } catch (const std::invalid_argument& e) {  // GraphNet's own checks (they name the file)
    throw UnsupportedModel(e.what());
  }
  for (auto& e : model->state()) {
    auto it = imp.initial_values.find(e.key);
    if (it == imp.initial_values.end())
      throw std::logic_error(file + ": no initial value for state entry '" + e.key + "'");
    const Const& c = *it->second;
    if (!c.is_float || c.numel() != e.tensor->numel())
      throw UnsupportedModel(file + ": initializer '" + e.key + "' " + dims_text(c.dims) +
                             " does not fit its use " + shape_str(e.tensor->shape()));
    for (float v : c.f)
      if (!std::isfinite(v))
        throw std::runtime_error(file + ": initializer '" + e.key + "' holds a non-finite value");
    std::memcpy(e.tensor->raw(), c.f.data(), size_t(c.numel()) * sizeof(float));
  }
  if (metadata) *metadata = meta;
  return model;
}

std::unique_ptr<models::Model> load_onnx(const std::string& path,
                                         std::map<std::string, std::string>* metadata) {
  return parse_onnx(read_bounded(path), path, metadata);
}

bool is_onnx_model(const models::Model& model) {
  return dynamic_cast<const OnnxDef*>(model.spec().graph.get()) != nullptr;
}

std::string serialize_onnx(models::Model& model, const std::map<std::string, std::string>& metadata) {
  auto* def = dynamic_cast<const OnnxDef*>(model.spec().graph.get());
  if (!def) throw std::invalid_argument("save_onnx: model " + model.spec().arch + " was not read from ONNX");
  onnx::ModelProto m = def->proto;
  std::map<std::string, const Tensor*> state;
  for (auto& e : model.state()) state[e.key] = e.tensor;
  for (auto& t : *m.mutable_graph()->mutable_initializer()) {
    auto it = state.find(t.name());
    if (it == state.end()) continue;
    Tensor cpu = it->second->to(Device::CPU);
    std::vector<float> v(cpu.f32(), cpu.f32() + cpu.numel());
    if (def->transposed.count(t.name())) {  // held [out, in]; the file has [in, out]
      const int64_t out = cpu.dim(0), in = cpu.dim(1);
      for (int64_t r = 0; r < out; ++r)
        for (int64_t c = 0; c < in; ++c) v[size_t(c * out + r)] = cpu.f32()[r * in + c];
    }
    if (t.has_raw_data()) {
      t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
    } else {
      t.clear_float_data();
      for (float x : v) t.add_float_data(x);
    }
  }
  m.clear_metadata_props();
  for (const auto& [k, v] : metadata) {
    auto* p = m.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  std::string out;
  if (!m.SerializeToString(&out)) throw std::runtime_error("save_onnx: serialization failed");
  return out;
}

std::map<std::string, std::string> onnx_initializer_bytes(const std::string& path) {
  onnx::ModelProto m;
  const std::string bytes = read_bounded(path);
  if (!m.ParseFromArray(bytes.data(), int(bytes.size())))
    malformed(path, "not an ONNX model (the protobuf ModelProto does not parse)");
  std::map<std::string, std::string> out;
  for (const auto& t : m.graph().initializer()) {
    std::string key = std::to_string(t.data_type()) + " " +
                      dims_text(std::vector<int64_t>(t.dims().begin(), t.dims().end())) + ": ";
    std::string data = t.raw_data();
    auto append = [&](const void* p, size_t n) { data.append(static_cast<const char*>(p), n); };
    for (float v : t.float_data()) append(&v, sizeof v);
    for (int32_t v : t.int32_data()) append(&v, sizeof v);
    for (int64_t v : t.int64_data()) append(&v, sizeof v);
    for (double v : t.double_data()) append(&v, sizeof v);
    out[t.name()] = key + data;
  }
  return out;
}

void save_onnx(models::Model& model, const std::string& path,
               const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, serialize_onnx(model, metadata));
}

}  // namespace nns::io
