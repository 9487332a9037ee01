#include "core/graph/graph_net.h"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "kernels/ops.h"

namespace nns::graph {

ConstantTensor::ConstantTensor(Tensor v) : value(std::move(v)) { register_buffer("value", &value); }

const Tensor* constant_value(const nn::Module& m) {
  auto* c = dynamic_cast<const ConstantTensor*>(&m);
  return c ? &c->value : nullptr;
}

namespace {

[[noreturn]] void unsupported(const GraphDef& d, const Node& n, const std::string& what) {
  throw std::invalid_argument(d.source + ": node '" + n.name + "' (" + op_name(n.op) + "): " +
                              what);
}

Shape strides_of(const Shape& d) {
  Shape s(d.size(), 1);
  for (size_t i = d.size(); i-- > 1;) s[i - 1] = s[i] * d[i];
  return s;
}

int64_t prod(const Shape& d, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= d[i];
  return p;
}

int norm_axis(int64_t axis, size_t rank) { return int(axis < 0 ? axis + int64_t(rank) : axis); }

ops::Pool2dShape pool_shape(const PoolAttr& p, const Shape& x) {
  ops::Pool2dShape s;
  s.n = int(x[0]);
  s.c = int(x[1]);
  s.h = int(x[2]);
  s.w = int(x[3]);
  s.kh = p.kh;
  s.kw = p.kw;
  s.stride_h = p.stride_h;
  s.stride_w = p.stride_w;
  s.pad_h = p.pad_t;
  s.pad_w = p.pad_l;
  s.ceil_mode = p.ceil_mode;
  s.count_include_pad = p.count_include_pad;
  return s;
}

ops::BroadcastShape broadcast_shape(const Shape& a, const Shape& b, const Shape& out) {
  ops::BroadcastShape s;
  s.rank = int(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const size_t ia = out.size() - a.size(), ib = out.size() - b.size();
    s.out[i] = out[i];
    s.a[i] = i < ia ? 1 : a[i - ia];
    s.b[i] = i < ib ? 1 : b[i - ib];
  }
  return s;
}

// A copy of the block [outer, len * inner] of src (row stride src_row) to dst (row stride
// dst_row): the data movement of Concat and Split along an axis.
ops::StridedCopy rows_copy(int64_t outer, int64_t width, int64_t src_row, int64_t dst_row) {
  ops::StridedCopy c;
  c.rank = 2;
  c.n[0] = outer;
  c.n[1] = width;
  c.src_stride[0] = src_row;
  c.src_stride[1] = 1;
  c.dst_stride[0] = dst_row;
  c.dst_stride[1] = 1;
  return c;
}

// Slice along axis `ax`: start (normalised as the shape rule does) and the copy from the input.
struct SliceGeom {
  int64_t start, outer, len, inner, dim;
};
SliceGeom slice_geom(const Attr& a, const Shape& in, const Shape& out) {
  const int ax = norm_axis(a.axis, in.size());
  SliceGeom g;
  g.dim = in[size_t(ax)];
  int64_t s = a.start < 0 ? a.start + g.dim : a.start;
  g.start = std::clamp<int64_t>(s, 0, g.dim);
  g.outer = prod(in, 0, size_t(ax));
  g.len = out[size_t(ax)];
  g.inner = prod(in, size_t(ax) + 1, in.size());
  return g;
}
ops::StridedCopy slice_copy(const SliceGeom& g, int64_t step) {
  ops::StridedCopy c;
  c.rank = 3;
  c.n[0] = g.outer;
  c.n[1] = g.len;
  c.n[2] = g.inner;
  c.src_stride[0] = g.dim * g.inner;
  c.src_stride[1] = step * g.inner;
  c.src_stride[2] = 1;
  c.dst_stride[0] = g.len * g.inner;
  c.dst_stride[1] = g.inner;
  c.dst_stride[2] = 1;
  return c;
}

// The interior of a Pad: the input (contiguous) into the output at the pads' offsets (the
// offset of the first element: pad_offset).
ops::StridedCopy pad_copy(const Shape& in, const Shape& out) {
  ops::StridedCopy c;
  c.rank = int(in.size());
  const Shape is = strides_of(in), os = strides_of(out);
  for (size_t i = 0; i < in.size(); ++i) {
    c.n[i] = in[i];
    c.src_stride[i] = is[i];
    c.dst_stride[i] = os[i];
  }
  return c;
}
int64_t pad_offset(const std::vector<int64_t>& pads, const Shape& out) {
  const Shape os = strides_of(out);
  int64_t off = 0;
  for (size_t k = 0; k < out.size(); ++k) off += pads[k] * os[k];
  return off;
}

}  // namespace

GraphNet::GraphNet(std::shared_ptr<const GraphDef> def) : def_(std::move(def)) {
  if (!def_) throw std::invalid_argument("GraphNet: no graph");
  graph_ = def_->graph;
  auto& nodes = graph_.nodes();
  if (def_->state_names.size() != nodes.size() || def_->constants.size() != nodes.size())
    throw std::logic_error(def_->source + ": GraphDef tables do not match the nodes");
  std::set<std::string> module_names;
  std::map<std::string, Slot> first;
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node& n = nodes[i];
    const Attr& a = n.attr;
    for (ValueId v : n.outputs)
      if (graph_.value(v).dims.size() > size_t(ops::kMaxDims))
        unsupported(*def_, n, "a value of more than " + std::to_string(ops::kMaxDims) + " dims");
    std::unique_ptr<nn::Module> m;
    switch (n.op) {
      case OpKind::Conv: {
        const ConvAttr& c = a.conv;
        if (c.pad_t != c.pad_b || c.pad_l != c.pad_r)
          unsupported(*def_, n, "asymmetric pads (an importer writes them as a Pad node)");
        nn::ConvGeometry g{c.kh,     c.kw,     c.stride_h, c.stride_w, c.pad_t,
                           c.pad_l,  c.dil_h,  c.dil_w,    c.groups,   c.bias};
        m = std::make_unique<nn::Conv2d>(c.c_in, c.c_out, g);
        break;
      }
      case OpKind::Linear: m = std::make_unique<nn::Linear>(a.in, a.out, a.bias); break;
      case OpKind::BatchNorm:
        m = std::make_unique<nn::BatchNorm2d>(a.channels, a.eps, a.momentum);
        break;
      case OpKind::Dropout: m = std::make_unique<nn::Dropout>(a.p, 0xd000 + i); break;
      case OpKind::Constant:
        if (!def_->constants[i].defined()) unsupported(*def_, n, "constant without a value");
        m = std::make_unique<ConstantTensor>(def_->constants[i].clone());
        break;
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        if (a.pool.pad_t != a.pool.pad_b || a.pool.pad_l != a.pool.pad_r)
          unsupported(*def_, n, "asymmetric pads");
        break;
      case OpKind::ReduceMean: {
        const size_t r = graph_.value(n.inputs.at(0)).dims.size();
        std::vector<bool> red(r, false);
        for (int64_t ax : a.axes) red[size_t(norm_axis(ax, r))] = true;
        size_t first_red = r;
        for (size_t k = 0; k < r; ++k)
          if (red[k]) {
            first_red = k;
            break;
          }
        for (size_t k = first_red; k < r; ++k)
          if (!red[k]) unsupported(*def_, n, "reduces over axes that are not the trailing ones");
        break;
      }
      default: break;
    }
    if (!m) continue;
    n.module = m.get();
    auto sl = slots(n);
    const auto& names = def_->state_names[i];
    if (names.size() != sl.size())
      throw std::logic_error(def_->source + ": node '" + n.name + "' has " +
                             std::to_string(names.size()) + " state names for " +
                             std::to_string(sl.size()) + " tensors");
    // The module's name: the prefix of a state_dict-style weight name ("layer1.0.conv1"),
    // else the node's name; unique.
    std::string base = n.name;
    if (!names.empty()) {
      const std::string& w = names[0];
      const std::string suffix = ".weight";
      if (w.size() > suffix.size() && w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0)
        base = w.substr(0, w.size() - suffix.size());
    }
    if (base.empty()) base = std::string(op_name(n.op)) + "_" + std::to_string(i);
    std::string name = base;
    for (int k = 2; module_names.count(name); ++k) name = base + "#" + std::to_string(k);
    module_names.insert(name);
    register_module(name, m.get());
    for (size_t k = 0; k < sl.size(); ++k) {
      if (names[k].empty()) continue;
      auto it = first.find(names[k]);
      if (it == first.end()) {
        first.emplace(names[k], sl[k]);
        owner_of_[names[k]] = n.module;
        state_.push_back({names[k], sl[k].tensor, sl[k].param});
        continue;
      }
      if (it->second.tensor->shape() != sl[k].tensor->shape())
        unsupported(*def_, n, "uses '" + names[k] + "' as a tensor of shape " +
                                  shape_str(sl[k].tensor->shape()) + ", another node as " +
                                  shape_str(it->second.tensor->shape()));
      *sl[k].tensor = *it->second.tensor;
      shares_.push_back({it->second.tensor, sl[k].tensor, it->second.param, sl[k].param});
    }
    owned_.push_back(std::move(m));
  }
  const size_t nv = graph_.values().size();
  bypass_.assign(nodes.size(), false);
  needs_grad_.assign(nv, false);
  fanout_.assign(nv, 0);
  needs_grad_[size_t(graph_.input())] = true;
  for (const Node& n : nodes) {
    bool any = false;
    for (ValueId v : n.inputs) {
      any = any || needs_grad_[size_t(v)];
      ++fanout_[size_t(v)];
    }
    for (ValueId v : n.outputs) needs_grad_[size_t(v)] = any;
  }
  ++fanout_[size_t(graph_.output())];
  val_.resize(nv);
  buf_.resize(nv);
  grad_.resize(nv);
  acc_.resize(nv);
  gbuf_.resize(nodes.size());
  argmax_.resize(nodes.size());
}

std::vector<GraphNet::Slot> GraphNet::slots(const Node& n) const {
  std::vector<Slot> out;
  switch (n.op) {
    case OpKind::Conv: {
      auto* c = static_cast<nn::Conv2d*>(n.module);
      out.push_back({&c->weight.value, &c->weight});
      if (c->has_bias) out.push_back({&c->bias.value, &c->bias});
      break;
    }
    case OpKind::Linear: {
      auto* l = static_cast<nn::Linear*>(n.module);
      out.push_back({&l->weight.value, &l->weight});
      if (l->has_bias) out.push_back({&l->bias.value, &l->bias});
      break;
    }
    case OpKind::BatchNorm: {
      auto* b = static_cast<nn::BatchNorm2d*>(n.module);
      out.push_back({&b->weight.value, &b->weight});
      out.push_back({&b->bias.value, &b->bias});
      out.push_back({&b->running_mean, nullptr});
      out.push_back({&b->running_var, nullptr});
      break;
    }
    case OpKind::Constant:
      out.push_back({&static_cast<ConstantTensor*>(n.module)->value, nullptr});
      break;
    default: break;
  }
  return out;
}

std::string GraphNet::describe() const {
  return "GraphNet(" + def_->source + ", " + std::to_string(graph_.nodes().size()) + " nodes)";
}

void GraphNet::collect_state(const std::string& prefix, std::vector<nn::StateEntry>& out) {
  for (const auto& e : state_) out.push_back({prefix + e.key, e.tensor, e.param});
}

void GraphNet::relink() {
  for (const Share& s : shares_) *s.user = *s.owner;
}

void GraphNet::to(Device device) {
  nn::Module::to(device);
  relink();
}

nn::Module* GraphNet::module_for(const std::string& key) const {
  auto it = owner_of_.find(key);
  return it == owner_of_.end() ? nullptr : it->second;
}

int GraphNet::fold_batchnorm() {
  int folded = 0;
  auto& nodes = graph_.nodes();
  const ValueId out = graph_.output();
  for (Node& c : nodes) {
    if (c.op != OpKind::Conv) continue;
    const ValueId v = c.outputs[0];
    if (v == out || fanout_[size_t(v)] != 1) continue;
    const std::vector<int> readers = graph_.consumers(v);
    if (readers.size() != 1 || nodes[size_t(readers[0])].op != OpKind::BatchNorm) continue;
    Node& bn = nodes[size_t(readers[0])];
    const ValueId w = bn.outputs[0];
    int act_node = -1;
    ops::Activation act = ops::Activation::None;
    if (w != out && fanout_[size_t(w)] == 1) {
      const std::vector<int> next = graph_.consumers(w);
      const OpKind k = next.size() == 1 ? nodes[size_t(next[0])].op : OpKind::Identity;
      if (k == OpKind::Relu || k == OpKind::Relu6) {
        act_node = next[0];
        act = k == OpKind::Relu ? ops::Activation::ReLU : ops::Activation::ReLU6;
      }
    }
    if (nn::fold_conv_bn(*static_cast<nn::Conv2d*>(c.module),
                         *static_cast<nn::BatchNorm2d*>(bn.module), act)) {
      ++folded;
      if (act_node >= 0) bypass_[size_t(act_node)] = true;
    }
  }
  return folded;
}

void GraphNet::unfold_batchnorm() {
  for (Node& n : graph_.nodes()) {
    if (n.op == OpKind::Conv) static_cast<nn::Conv2d*>(n.module)->unfold();
    if (n.op == OpKind::BatchNorm) static_cast<nn::BatchNorm2d*>(n.module)->set_bypass(false);
  }
  std::fill(bypass_.begin(), bypass_.end(), false);
}

void GraphNet::bind(int64_t batch) {
  if (batch == batch_) return;
  shapes_ = graph_.shapes(batch);
  batch_ = batch;
}

Tensor& GraphNet::buffer(ValueId v, const Shape& shape) {
  Tensor& t = buf_[size_t(v)];
  if (!t.defined() || t.device() != device_)
    t = Tensor(shape, DType::F32, device_);
  else if (t.shape() != shape)
    t.resize(shape);
  return t;
}

Tensor& GraphNet::grad_buffer(int node, size_t slot, const Shape& shape) {
  auto& g = gbuf_[size_t(node)];
  if (g.size() <= slot) g.resize(slot + 1);
  Tensor& t = g[slot];
  if (!t.defined() || t.device() != device_)
    t = Tensor(shape, DType::F32, device_);
  else if (t.shape() != shape)
    t.resize(shape);
  return t;
}

const Tensor& GraphNet::forward(const Tensor& x) {
  const ValueId in = graph_.input();
  const auto& want = graph_.value(in).dims;
  if (x.ndim() != int(want.size()) || x.dim(0) < 1 ||
      bind_batch(want, x.dim(0)) != x.shape())
    throw std::invalid_argument(def_->source + ": expected input " + dims_str(want) + ", got " +
                                shape_str(x.shape()));
  bind(x.dim(0));
  const ops::Context c = ctx();
  val_[size_t(in)] = x;
  const auto& nodes = graph_.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    const Attr& a = n.attr;
    const ValueId o = n.outputs[0];
    const Shape& os = shapes_[size_t(o)];
    auto input = [&](size_t k) -> const Tensor& { return val_[size_t(n.inputs[k])]; };
    auto ishape = [&](size_t k) -> const Shape& { return shapes_[size_t(n.inputs[k])]; };
    if (bypass_[i]) {
      val_[size_t(o)] = input(0);
      continue;
    }
    switch (n.op) {
      case OpKind::Conv:
      case OpKind::Linear:
      case OpKind::BatchNorm:
      case OpKind::Dropout: val_[size_t(o)] = n.module->forward(input(0)); break;
      case OpKind::Constant: val_[size_t(o)] = static_cast<ConstantTensor*>(n.module)->value; break;
      case OpKind::Identity: val_[size_t(o)] = input(0); break;
      case OpKind::Flatten:
      case OpKind::Reshape: val_[size_t(o)] = input(0).view(os); break;
      case OpKind::Relu:
      case OpKind::Relu6:
      case OpKind::Sigmoid:
      case OpKind::Tanh: {
        const ops::Activation act = n.op == OpKind::Relu    ? ops::Activation::ReLU
                                    : n.op == OpKind::Relu6 ? ops::Activation::ReLU6
                                    : n.op == OpKind::Tanh  ? ops::Activation::Tanh
                                                            : ops::Activation::Sigmoid;
        Tensor& y = buffer(o, os);
        ops::activation_forward(c, act, y.numel(), input(0).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::Clip: {
        Tensor& y = buffer(o, os);
        ops::clip_forward(c, y.numel(), a.lo, a.hi, input(0).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::HardSigmoid: {
        Tensor& y = buffer(o, os);
        ops::hardsigmoid_forward(c, y.numel(), a.alpha, a.beta, input(0).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::Add:
      case OpKind::Mul: {
        Tensor& y = buffer(o, os);
        if (n.op == OpKind::Add && ishape(0) == os && ishape(1) == os)
          ops::add(c, y.numel(), input(0).f32(), input(1).f32(), y.f32());
        else
          ops::broadcast_forward(c, n.op == OpKind::Add ? ops::Binary::Add : ops::Binary::Mul,
                                 broadcast_shape(ishape(0), ishape(1), os), input(0).f32(),
                                 input(1).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::MaxPool: {
        Tensor& y = buffer(o, os);
        Tensor& am = argmax_[i];
        if (!am.defined() || am.device() != device_)
          am = Tensor(os, DType::I32, device_);
        else if (am.shape() != os)
          am.resize(os);
        ops::maxpool2d_forward(c, pool_shape(a.pool, ishape(0)), input(0).f32(), y.f32(),
                               am.i32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::AvgPool: {
        Tensor& y = buffer(o, os);
        ops::avgpool2d_forward(c, pool_shape(a.pool, ishape(0)), input(0).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::GlobalAvgPool: {
        const Shape& s = ishape(0);
        Tensor& y = buffer(o, os);
        ops::global_avgpool_forward(c, int(s[0]), int(s[1]), int(s[2] * s[3]), input(0).f32(),
                                    y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::ReduceMean: {
        const Shape& s = ishape(0);
        Tensor& y = buffer(o, os);
        const int64_t outer = y.numel(), inner = prod(s, 0, s.size()) / std::max<int64_t>(outer, 1);
        ops::global_avgpool_forward(c, int(outer), 1, int(inner), input(0).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::Transpose: {
        const Shape& s = ishape(0);
        const Shape st = strides_of(s), ot = strides_of(os);
        ops::StridedCopy cp;
        cp.rank = int(s.size());
        for (size_t k = 0; k < s.size(); ++k) {
          const int p = norm_axis(a.perm[k], s.size());
          cp.n[k] = os[k];
          cp.src_stride[k] = st[size_t(p)];
          cp.dst_stride[k] = ot[k];
        }
        Tensor& y = buffer(o, os);
        ops::copy_strided(c, cp, input(0).f32(), y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::Concat: {
        Tensor& y = buffer(o, os);
        const int ax = norm_axis(a.axis, os.size());
        const int64_t outer = prod(os, 0, size_t(ax)), row = prod(os, size_t(ax), os.size());
        int64_t off = 0;
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          const int64_t width = prod(ishape(k), size_t(ax), os.size());
          ops::copy_strided(c, rows_copy(outer, width, width, row), input(k).f32(),
                            y.f32() + off);
          off += width;
        }
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::Split: {
        const Shape& s = ishape(0);
        const int ax = norm_axis(a.axis, s.size());
        const int64_t outer = prod(s, 0, size_t(ax)), row = prod(s, size_t(ax), s.size());
        int64_t off = 0;
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          const ValueId ok = n.outputs[k];
          const Shape& ks = shapes_[size_t(ok)];
          const int64_t width = prod(ks, size_t(ax), ks.size());
          Tensor& y = buffer(ok, ks);
          ops::copy_strided(c, rows_copy(outer, width, row, width), input(0).f32() + off, y.f32());
          val_[size_t(ok)] = y;
          off += width;
        }
        break;
      }
      case OpKind::Slice: {
        const SliceGeom g = slice_geom(a, ishape(0), os);
        Tensor& y = buffer(o, os);
        ops::copy_strided(c, slice_copy(g, a.step), input(0).f32() + g.start * g.inner, y.f32());
        val_[size_t(o)] = y;
        break;
      }
      case OpKind::Pad: {
        const Shape& s = ishape(0);
        Tensor& y = buffer(o, os);
        ops::fill(c, y.numel(), a.lo, y.f32());
        ops::copy_strided(c, pad_copy(s, os), input(0).f32(), y.f32() + pad_offset(a.pads, os));
        val_[size_t(o)] = y;
        break;
      }
    }
  }
  return val_[size_t(graph_.output())];
}

void GraphNet::accumulate(ValueId v, const Tensor& g) {
  if (!g.defined()) return;
  Tensor& cur = grad_[size_t(v)];
  if (!cur.defined()) {
    cur = g;
    return;
  }
  Tensor& acc = acc_[size_t(v)];
  const ops::Context c = ctx();
  if (cur.raw() != acc.raw()) {
    if (!acc.defined() || acc.device() != device_ || acc.numel() != cur.numel())
      acc = Tensor(cur.shape(), DType::F32, device_);
    else if (acc.shape() != cur.shape())
      acc.resize(cur.shape());
    ops::copy_bytes(device_, acc.raw(), cur.device(), cur.raw(), cur.nbytes());
    cur = acc;
  }
  ops::add(c, acc.numel(), acc.f32(), g.f32(), acc.f32());
}

const Tensor& GraphNet::backward(const Tensor& dy) {
  if (batch_ < 0) throw std::logic_error(def_->source + ": backward before forward");
  const ops::Context c = ctx();
  for (auto& g : grad_) g = Tensor();
  const ValueId in = graph_.input();
  accumulate(graph_.output(), dy);
  const auto& nodes = graph_.nodes();
  for (size_t i = nodes.size(); i-- > 0;) {
    const Node& n = nodes[i];
    const Attr& a = n.attr;
    bool any = false;
    for (ValueId v : n.outputs) any = any || grad_[size_t(v)].defined();
    if (!any || n.op == OpKind::Constant) continue;
    const ValueId o = n.outputs[0];
    const Tensor& g = grad_[size_t(o)];
    const Shape& os = shapes_[size_t(o)];
    auto need = [&](size_t k) {
      const ValueId v = n.inputs[k];
      return needs_grad_[size_t(v)] && (v != in || needs_input_grad_);
    };
    auto input = [&](size_t k) -> const Tensor& { return val_[size_t(n.inputs[k])]; };
    auto ishape = [&](size_t k) -> const Shape& { return shapes_[size_t(n.inputs[k])]; };
    auto gbuf = [&](size_t k) -> Tensor& { return grad_buffer(int(i), k, ishape(k)); };
    if (bypass_[i]) {
      if (need(0)) accumulate(n.inputs[0], g);
      continue;
    }
    switch (n.op) {
      case OpKind::Constant: break;
      case OpKind::Conv:
      case OpKind::Linear:
      case OpKind::BatchNorm:
      case OpKind::Dropout: {
        n.module->set_needs_input_grad(need(0));
        const Tensor& dx = n.module->backward(g);
        if (need(0)) accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Identity:
        if (need(0)) accumulate(n.inputs[0], g);
        break;
      case OpKind::Flatten:
      case OpKind::Reshape:
        if (need(0)) accumulate(n.inputs[0], g.view(ishape(0)));
        break;
      case OpKind::Relu:
      case OpKind::Relu6:
      case OpKind::Sigmoid:
      case OpKind::Tanh: {
        if (!need(0)) break;
        const ops::Activation act = n.op == OpKind::Relu    ? ops::Activation::ReLU
                                    : n.op == OpKind::Relu6 ? ops::Activation::ReLU6
                                    : n.op == OpKind::Tanh  ? ops::Activation::Tanh
                                                            : ops::Activation::Sigmoid;
        Tensor& dx = gbuf(0);
        ops::activation_backward(c, act, dx.numel(), val_[size_t(o)].f32(), g.f32(), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Clip: {
        if (!need(0)) break;
        Tensor& dx = gbuf(0);
        ops::clip_backward(c, dx.numel(), a.lo, a.hi, input(0).f32(), g.f32(), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::HardSigmoid: {
        if (!need(0)) break;
        Tensor& dx = gbuf(0);
        ops::hardsigmoid_backward(c, dx.numel(), a.alpha, a.beta, input(0).f32(), g.f32(),
                                  dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Add:
      case OpKind::Mul: {
        const bool n0 = need(0), n1 = need(1);
        if (!n0 && !n1) break;
        if (n.op == OpKind::Add && ishape(0) == os && ishape(1) == os) {
          if (n0) accumulate(n.inputs[0], g);
          if (n1) accumulate(n.inputs[1], g);
          break;
        }
        float* da = n0 ? gbuf(0).f32() : nullptr;
        float* db = n1 ? gbuf(1).f32() : nullptr;
        ops::broadcast_backward(c, n.op == OpKind::Add ? ops::Binary::Add : ops::Binary::Mul,
                                broadcast_shape(ishape(0), ishape(1), os), input(0).f32(),
                                input(1).f32(), g.f32(), da, db);
        if (n0) accumulate(n.inputs[0], gbuf(0));
        if (n1) accumulate(n.inputs[1], gbuf(1));
        break;
      }
      case OpKind::MaxPool: {
        if (!need(0)) break;
        Tensor& dx = gbuf(0);
        ops::maxpool2d_backward(c, pool_shape(a.pool, ishape(0)), g.f32(), argmax_[i].i32(),
                                dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::AvgPool: {
        if (!need(0)) break;
        Tensor& dx = gbuf(0);
        ops::avgpool2d_backward(c, pool_shape(a.pool, ishape(0)), g.f32(), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::GlobalAvgPool: {
        if (!need(0)) break;
        const Shape& s = ishape(0);
        Tensor& dx = gbuf(0);
        ops::global_avgpool_backward(c, int(s[0]), int(s[1]), int(s[2] * s[3]), g.f32(), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::ReduceMean: {
        if (!need(0)) break;
        Tensor& dx = gbuf(0);
        const int64_t outer = g.numel(), inner = dx.numel() / std::max<int64_t>(outer, 1);
        ops::global_avgpool_backward(c, int(outer), 1, int(inner), g.f32(), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Transpose: {
        if (!need(0)) break;
        // dx[perm-permuted index] = dy: the forward copy with source and destination swapped.
        const Shape& s = ishape(0);
        const Shape st = strides_of(s), ot = strides_of(os);
        ops::StridedCopy cp;
        cp.rank = int(s.size());
        for (size_t k = 0; k < s.size(); ++k) {
          const int p = norm_axis(a.perm[k], s.size());
          cp.n[k] = os[k];
          cp.src_stride[k] = ot[k];
          cp.dst_stride[k] = st[size_t(p)];
        }
        Tensor& dx = gbuf(0);
        ops::copy_strided(c, cp, g.f32(), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Concat: {
        const int ax = norm_axis(a.axis, os.size());
        const int64_t outer = prod(os, 0, size_t(ax)), row = prod(os, size_t(ax), os.size());
        int64_t off = 0;
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          const int64_t width = prod(ishape(k), size_t(ax), os.size());
          if (need(k)) {
            Tensor& dx = gbuf(k);
            ops::copy_strided(c, rows_copy(outer, width, row, width), g.f32() + off, dx.f32());
            accumulate(n.inputs[k], dx);
          }
          off += width;
        }
        break;
      }
      case OpKind::Split: {
        if (!need(0)) break;
        const Shape& s = ishape(0);
        const int ax = norm_axis(a.axis, s.size());
        const int64_t outer = prod(s, 0, size_t(ax)), row = prod(s, size_t(ax), s.size());
        Tensor& dx = gbuf(0);
        bool all = true;
        for (ValueId v : n.outputs) all = all && grad_[size_t(v)].defined();
        if (!all) ops::fill(c, dx.numel(), 0.0f, dx.f32());  // an unused chunk: zero gradient
        int64_t off = 0;
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          const Shape& ks = shapes_[size_t(n.outputs[k])];
          const int64_t width = prod(ks, size_t(ax), ks.size());
          const Tensor& gk = grad_[size_t(n.outputs[k])];
          if (gk.defined())
            ops::copy_strided(c, rows_copy(outer, width, width, row), gk.f32(), dx.f32() + off);
          off += width;
        }
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Slice: {
        if (!need(0)) break;
        const SliceGeom sg = slice_geom(a, ishape(0), os);
        Tensor& dx = gbuf(0);
        ops::fill(c, dx.numel(), 0.0f, dx.f32());
        ops::StridedCopy cp = slice_copy(sg, a.step);
        std::swap(cp.src_stride, cp.dst_stride);
        ops::copy_strided(c, cp, g.f32(), dx.f32() + sg.start * sg.inner);
        accumulate(n.inputs[0], dx);
        break;
      }
      case OpKind::Pad: {
        if (!need(0)) break;
        ops::StridedCopy cp = pad_copy(ishape(0), os);
        std::swap(cp.src_stride, cp.dst_stride);
        Tensor& dx = gbuf(0);
        ops::copy_strided(c, cp, g.f32() + pad_offset(a.pads, os), dx.f32());
        accumulate(n.inputs[0], dx);
        break;
      }
    }
  }
  // A tensor several layers use: its gradient is the sum over them, in the owner's grad.
  for (const Share& s : shares_) {
    if (!s.owner_param || !s.user_param || !s.user_param->grad.defined() ||
        !s.owner_param->grad.defined())
      continue;
    ops::add(c, s.owner_param->grad.numel(), s.owner_param->grad.f32(), s.user_param->grad.f32(),
             s.owner_param->grad.f32());
  }
  dx_ = grad_[size_t(in)];
  return dx_;
}

}  // namespace nns::graph
