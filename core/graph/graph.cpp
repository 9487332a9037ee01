#include "core/graph/graph.h"

#include <algorithm>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "core/nn/layers.h"

namespace nns::graph {

const char* op_name(OpKind op) {
  switch (op) {
    case OpKind::Conv: return "Conv";
    case OpKind::Linear: return "Linear";
    case OpKind::BatchNorm: return "BatchNorm";
    case OpKind::Dropout: return "Dropout";
    case OpKind::Relu: return "Relu";
    case OpKind::Relu6: return "Relu6";
    case OpKind::Clip: return "Clip";
    case OpKind::Sigmoid: return "Sigmoid";
    case OpKind::HardSigmoid: return "HardSigmoid";
    case OpKind::Tanh: return "Tanh";
    case OpKind::Identity: return "Identity";
    case OpKind::Add: return "Add";
    case OpKind::Mul: return "Mul";
    case OpKind::MaxPool: return "MaxPool";
    case OpKind::AvgPool: return "AvgPool";
    case OpKind::GlobalAvgPool: return "GlobalAvgPool";
    case OpKind::ReduceMean: return "ReduceMean";
    case OpKind::Flatten: return "Flatten";
    case OpKind::Reshape: return "Reshape";
    case OpKind::Transpose: return "Transpose";
    case OpKind::Concat: return "Concat";
    case OpKind::Split: return "Split";
    case OpKind::Slice: return "Slice";
    case OpKind::Pad: return "Pad";
    case OpKind::Constant: return "Constant";
  }
  return "?";
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += dims[i] == kBatch ? std::string("N") : std::to_string(dims[i]);
  }
  return s + "]";
}

Shape bind_batch(const std::vector<int64_t>& dims, int64_t batch) {
  Shape s(dims.begin(), dims.end());
  for (auto& d : s)
    if (d == kBatch) d = batch;
  return s;
}

ValueId Graph::add_input(const std::string& name, std::vector<int64_t> dims) {
  if (input_ >= 0) throw std::invalid_argument("graph: a second input '" + name + "'");
  values_.push_back({name, std::move(dims)});
  producer_.push_back(-1);
  known_.push_back(true);
  input_ = ValueId(values_.size() - 1);
  return input_;
}

int Graph::add_node(OpKind op, const std::string& name, std::vector<ValueId> inputs, Attr attr,
                    nn::Module* module, int n_outputs, std::vector<std::string> out_names) {
  for (ValueId v : inputs)
    if (v < 0 || size_t(v) >= values_.size())
      throw std::invalid_argument("graph: node '" + name + "' reads an undefined value");
  if (!out_names.empty() && int(out_names.size()) != n_outputs)
    throw std::invalid_argument("graph: node '" + name + "': output names do not match outputs");
  Node n;
  n.op = op;
  n.name = name;
  n.inputs = std::move(inputs);
  n.attr = std::move(attr);
  n.module = module;
  const int id = int(nodes_.size());
  for (int o = 0; o < n_outputs; ++o) {
    std::string vname = out_names.empty()
                            ? (n_outputs == 1 ? name : name + ":" + std::to_string(o))
                            : out_names[size_t(o)];
    values_.push_back({vname, {}});
    producer_.push_back(id);
    known_.push_back(false);
    n.outputs.push_back(ValueId(values_.size() - 1));
  }
  nodes_.push_back(std::move(n));
  return id;
}

int Graph::producer(ValueId v) const { return producer_.at(size_t(v)); }

std::vector<int> Graph::consumers(ValueId v) const {
  std::vector<int> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    for (ValueId in : nodes_[i].inputs)
      if (in == v) {
        out.push_back(int(i));
        break;
      }
  return out;
}

namespace {

// A dim is a literal (> 0) or kBatch; products of dims are B^k * literal.
struct Sym {
  int batch_pow = 0;
  int64_t lit = 1;
};
Sym product(const std::vector<int64_t>& d, size_t from, size_t to) {
  Sym s;
  for (size_t i = from; i < to; ++i) {
    if (d[i] == kBatch)
      ++s.batch_pow;
    else
      s.lit *= d[i];
  }
  return s;
}

[[noreturn]] void bad(const Node& n, const std::string& what) {
  throw std::invalid_argument(std::string("graph: node '") + n.name + "' (" + op_name(n.op) +
                              "): " + what);
}

int norm_axis(const Node& n, int64_t axis, size_t rank) {
  int64_t a = axis < 0 ? axis + int64_t(rank) : axis;
  if (a < 0 || a >= int64_t(rank))
    bad(n, "axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  return int(a);
}

// Output size of a sliding window: floor or ceil mode (PyTorch's rule: in ceil mode the last
// window must start inside the input or its left padding).
int64_t window_out(const Node& n, int64_t in, int k, int s, int p0, int p1, int dil, bool ceil) {
  if (in == kBatch) bad(n, "a spatial dim is the batch");
  const int64_t eff = int64_t(dil) * (k - 1) + 1;
  const int64_t span = in + p0 + p1 - eff;
  if (span < 0) bad(n, "window larger than the padded input");
  int64_t out = ceil ? (span + s - 1) / s + 1 : span / s + 1;
  if (ceil && (out - 1) * s >= in + p0) --out;
  return out;
}

std::vector<int64_t> broadcast(const Node& n, const std::vector<int64_t>& a,
                               const std::vector<int64_t>& b) {
  std::vector<int64_t> out(std::max(a.size(), b.size()), 1);
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    int64_t db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    if (da == db || db == 1)
      out[i] = da;
    else if (da == 1)
      out[i] = db;
    else
      bad(n, "shapes " + dims_str(a) + " and " + dims_str(b) + " do not broadcast");
  }
  return out;
}

void check_module_shapes(const Node& n, const std::vector<int64_t>& x) {
  const Attr& a = n.attr;
  switch (n.op) {
    case OpKind::Conv: {
      auto* c = dynamic_cast<nn::Conv2d*>(n.module);
      if (!c) bad(n, "no nn::Conv2d module");
      const Shape& w = c->weight.value.shape();
      const ConvAttr& ca = a.conv;
      if (w != Shape{ca.c_out, ca.c_in / ca.groups, ca.kh, ca.kw})
        bad(n, "module weight " + shape_str(w) + " does not match the attributes");
      if (c->has_bias != ca.bias) bad(n, "module bias does not match the attributes");
      if (c->groups != ca.groups || c->stride_h != ca.stride_h || c->stride_w != ca.stride_w ||
          c->dil_h != ca.dil_h || c->dil_w != ca.dil_w || c->pad_h != ca.pad_t ||
          c->pad_h != ca.pad_b || c->pad_w != ca.pad_l || c->pad_w != ca.pad_r)
        bad(n, "module " + c->describe() + " does not match the attributes");
      if (x[1] != ca.c_in)
        bad(n, "input " + dims_str(x) + " has not " + std::to_string(ca.c_in) + " channels");
      break;
    }
    case OpKind::Linear: {
      auto* l = dynamic_cast<nn::Linear*>(n.module);
      if (!l) bad(n, "no nn::Linear module");
      if (l->in != a.in || l->out != a.out || l->has_bias != a.bias)
        bad(n, "module does not match the attributes");
      if (x[1] != a.in)
        bad(n, "input " + dims_str(x) + " has not " + std::to_string(a.in) + " features");
      break;
    }
    case OpKind::BatchNorm: {
      auto* b = dynamic_cast<nn::BatchNorm2d*>(n.module);
      if (!b) bad(n, "no nn::BatchNorm2d module");
      if (x.size() < 2 || x[1] != b->c)
        bad(n, "input " + dims_str(x) + " has not " + std::to_string(b->c) + " channels");
      break;
    }
    case OpKind::Dropout:
      if (!dynamic_cast<nn::Dropout*>(n.module)) bad(n, "no nn::Dropout module");
      break;
    default: break;
  }
}

}  // namespace

void Graph::infer_dims() {
  if (input_ < 0) throw std::invalid_argument("graph: no input");
  if (output_ < 0) throw std::invalid_argument("graph: no output");
  for (size_t i = 0; i < nodes_.size(); ++i) infer_node_dims(int(i));
  check_all_read();
}

void Graph::infer_node_dims(int node) {
  {
    Node& n = nodes_.at(size_t(node));
    const Attr& a = n.attr;
    auto in = [&](size_t i) -> const std::vector<int64_t>& {
      if (i >= n.inputs.size()) bad(n, "missing input " + std::to_string(i));
      return values_[size_t(n.inputs[i])].dims;
    };
    auto rank = [&](size_t i, size_t r) {
      if (in(i).size() != r)
        bad(n, "expected a " + std::to_string(r) + "-d input, got " + dims_str(in(i)));
    };
    auto set = [&](size_t o, std::vector<int64_t> d) {
      if (o >= n.outputs.size()) bad(n, "missing output " + std::to_string(o));
      values_[size_t(n.outputs[o])].dims = std::move(d);
      known_[size_t(n.outputs[o])] = true;
    };
    for (ValueId v : n.inputs)
      if (!known_[size_t(v)])
        bad(n, "reads '" + values_[size_t(v)].name + "' before it is written");
    const size_t want_inputs =
        (n.op == OpKind::Add || n.op == OpKind::Mul) ? 2 : (n.op == OpKind::Concat ? 0 : 1);
    if (n.op == OpKind::Constant && !n.inputs.empty()) bad(n, "a constant has no inputs");
    if (n.op != OpKind::Constant && want_inputs && n.inputs.size() != want_inputs)
      bad(n, "expected " + std::to_string(want_inputs) + " inputs, got " +
                 std::to_string(n.inputs.size()));
    if (n.op != OpKind::Split && n.outputs.size() != 1) bad(n, "expected one output");
    if (n.module && n.op != OpKind::Constant) check_module_shapes(n, in(0));
    switch (n.op) {
      case OpKind::Conv: {
        rank(0, 4);
        const ConvAttr& c = a.conv;
        if (c.groups < 1 || c.c_in % c.groups || c.c_out % c.groups)
          bad(n, "groups must divide the channels");
        const auto& x = in(0);
        set(0, {x[0], c.c_out,
                window_out(n, x[2], c.kh, c.stride_h, c.pad_t, c.pad_b, c.dil_h, false),
                window_out(n, x[3], c.kw, c.stride_w, c.pad_l, c.pad_r, c.dil_w, false)});
        break;
      }
      case OpKind::Linear:
        rank(0, 2);
        set(0, {in(0)[0], a.out});
        break;
      case OpKind::BatchNorm:
      case OpKind::Dropout:
      case OpKind::Relu:
      case OpKind::Relu6:
      case OpKind::Clip:
      case OpKind::Sigmoid:
      case OpKind::HardSigmoid:
      case OpKind::Tanh:
      case OpKind::Identity: set(0, in(0)); break;
      case OpKind::Add:
      case OpKind::Mul: set(0, broadcast(n, in(0), in(1))); break;
      case OpKind::MaxPool:
      case OpKind::AvgPool: {
        rank(0, 4);
        const PoolAttr& p = a.pool;
        const auto& x = in(0);
        set(0, {x[0], x[1], window_out(n, x[2], p.kh, p.stride_h, p.pad_t, p.pad_b, 1, p.ceil_mode),
                window_out(n, x[3], p.kw, p.stride_w, p.pad_l, p.pad_r, 1, p.ceil_mode)});
        break;
      }
      case OpKind::GlobalAvgPool: {
        rank(0, 4);
        set(0, {in(0)[0], in(0)[1], 1, 1});
        break;
      }
      case OpKind::ReduceMean: {
        auto d = in(0);
        std::vector<bool> reduce(d.size(), false);
        for (int64_t ax : a.axes) reduce[size_t(norm_axis(n, ax, d.size()))] = true;
        std::vector<int64_t> out;
        for (size_t i = 0; i < d.size(); ++i) {
          if (reduce[i] && d[i] == kBatch) bad(n, "reduces over the batch");
          if (!reduce[i])
            out.push_back(d[i]);
          else if (a.keepdims)
            out.push_back(1);
        }
        set(0, out);
        break;
      }
      case OpKind::Flatten: {
        const auto& d = in(0);
        const int ax = a.axis == int(d.size()) ? int(d.size()) : norm_axis(n, a.axis, d.size());
        Sym lead = product(d, 0, size_t(ax)), tail = product(d, size_t(ax), d.size());
        if (tail.batch_pow || lead.batch_pow > 1 || (lead.batch_pow == 1 && lead.lit != 1))
          bad(n, "the batch would be merged with other dims of " + dims_str(d));
        set(0, {lead.batch_pow ? kBatch : lead.lit, tail.lit});
        break;
      }
      case OpKind::Reshape: {
        const auto& d = in(0);
        Sym total = product(d, 0, d.size());
        std::vector<int64_t> out = a.dims;
        int infer = -1;
        Sym known;
        for (size_t i = 0; i < out.size(); ++i) {
          if (out[i] == -1) {
            if (infer >= 0) bad(n, "more than one -1 in the target " + dims_str(out));
            infer = int(i);
          } else if (out[i] == kBatch) {
            ++known.batch_pow;
          } else if (out[i] > 0) {
            known.lit *= out[i];
          } else {
            bad(n, "target dim " + std::to_string(out[i]) + " (0 must be resolved at import)");
          }
        }
        const int left_pow = total.batch_pow - known.batch_pow;
        if (infer >= 0) {
          if (known.lit == 0 || total.lit % known.lit) bad(n, "target does not divide the input");
          const int64_t rest = total.lit / known.lit;
          if (left_pow == 0)
            out[size_t(infer)] = rest;
          else if (left_pow == 1 && rest == 1)
            out[size_t(infer)] = kBatch;
          else
            bad(n, "the batch would be merged with other dims: " + dims_str(d) + " -> " +
                       dims_str(a.dims));
        } else if (left_pow != 0 || known.lit != total.lit) {
          bad(n, "target " + dims_str(out) + " does not hold the input " + dims_str(d));
        }
        set(0, out);
        break;
      }
      case OpKind::Transpose: {
        const auto& d = in(0);
        if (a.perm.size() != d.size()) bad(n, "perm does not match the rank");
        std::vector<int64_t> out(d.size());
        std::vector<bool> seen(d.size(), false);
        for (size_t i = 0; i < d.size(); ++i) {
          int p = norm_axis(n, a.perm[i], d.size());
          if (seen[size_t(p)]) bad(n, "perm repeats an axis");
          seen[size_t(p)] = true;
          out[i] = d[size_t(p)];
        }
        set(0, out);
        break;
      }
      case OpKind::Concat: {
        if (n.inputs.empty()) bad(n, "no inputs");
        auto out = in(0);
        const int ax = norm_axis(n, a.axis, out.size());
        if (out[size_t(ax)] == kBatch) bad(n, "concatenates along the batch");
        for (size_t i = 1; i < n.inputs.size(); ++i) {
          const auto& d = in(i);
          if (d.size() != out.size()) bad(n, "inputs of different ranks");
          for (size_t k = 0; k < d.size(); ++k)
            if (int(k) != ax && d[k] != out[k])
              bad(n, "inputs " + dims_str(out) + " and " + dims_str(d) + " differ off the axis");
          out[size_t(ax)] += d[size_t(ax)];
        }
        set(0, out);
        break;
      }
      case OpKind::Split: {
        const auto& d = in(0);
        const int ax = norm_axis(n, a.axis, d.size());
        if (d[size_t(ax)] == kBatch) bad(n, "splits the batch");
        if (a.sizes.size() != n.outputs.size()) bad(n, "sizes do not match the outputs");
        int64_t sum = 0;
        for (int64_t s : a.sizes) {
          if (s <= 0) bad(n, "split sizes must be positive");
          sum += s;
        }
        if (sum != d[size_t(ax)]) bad(n, "split sizes do not add up to the dim");
        for (size_t o = 0; o < a.sizes.size(); ++o) {
          auto out = d;
          out[size_t(ax)] = a.sizes[o];
          set(o, out);
        }
        break;
      }
      case OpKind::Slice: {
        auto out = in(0);
        const int ax = norm_axis(n, a.axis, out.size());
        const int64_t dim = out[size_t(ax)];
        if (dim == kBatch) bad(n, "slices the batch");
        if (a.step <= 0) bad(n, "step must be positive");
        auto clampi = [&](int64_t v) {
          if (v < 0) v += dim;
          return std::clamp<int64_t>(v, 0, dim);
        };
        const int64_t s = clampi(a.start), e = clampi(a.end);
        const int64_t len = e > s ? (e - s + a.step - 1) / a.step : 0;
        if (len <= 0) bad(n, "empty slice");
        out[size_t(ax)] = len;
        set(0, out);
        break;
      }
      case OpKind::Constant: {
        for (int64_t d : a.dims)
          if (d < 1) bad(n, "constant dims " + dims_str(a.dims) + " must be literals >= 1");
        if (n.module) {
          const Tensor* v = constant_value(*n.module);
          if (!v) bad(n, "the module is not a graph::ConstantTensor");
          if (v->shape() != Shape(a.dims.begin(), a.dims.end()))
            bad(n, "module value " + shape_str(v->shape()) + " does not match " + dims_str(a.dims));
        }
        set(0, a.dims);
        break;
      }
      case OpKind::Pad: {
        auto out = in(0);
        if (a.pads.size() != 2 * out.size()) bad(n, "pads must hold 2 entries per dim");
        for (size_t i = 0; i < out.size(); ++i) {
          const int64_t p0 = a.pads[i], p1 = a.pads[i + out.size()];
          if (p0 < 0 || p1 < 0) bad(n, "negative pads are not supported");
          if (out[i] == kBatch) {
            if (p0 || p1) bad(n, "pads the batch");
            continue;
          }
          out[i] += p0 + p1;
        }
        set(0, out);
        break;
      }
    }
  }
}

void Graph::check_all_read() const {
  // Every value but the output is read (a forgotten branch of a lowering or an import).
  std::vector<bool> read(values_.size(), false);
  for (const Node& n : nodes_) {
    for (ValueId v : n.inputs) read[size_t(v)] = true;
    if (n.op == OpKind::Split)  // a chunk may go unused
      for (ValueId v : n.outputs) read[size_t(v)] = true;
  }
  for (size_t v = 0; v < values_.size(); ++v)
    if (!read[v] && ValueId(v) != output_)
      throw std::invalid_argument("graph: value '" + values_[v].name + "' is never read");
}

std::vector<Shape> Graph::shapes(int64_t batch) const {
  std::vector<Shape> out;
  out.reserve(values_.size());
  for (const Value& v : values_) out.push_back(bind_batch(v.dims, batch));
  return out;
}

std::string Graph::describe() const {
  std::ostringstream o;
  o << "input " << values_[size_t(input_)].name << " " << dims_str(values_[size_t(input_)].dims)
    << "\n";
  for (const Node& n : nodes_) {
    o << n.name << ": " << op_name(n.op) << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i)
      o << (i ? ", " : "") << values_[size_t(n.inputs[i])].name;
    o << ") ->";
    for (ValueId v : n.outputs) o << " " << values_[size_t(v)].name << " " << dims_str(values_[size_t(v)].dims);
    o << "\n";
  }
  o << "output " << values_[size_t(output_)].name << "\n";
  return o.str();
}

}  // namespace nns::graph
