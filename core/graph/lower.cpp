#include "core/graph/lower.h"

#include <stdexcept>

#include "core/graph/graph_net.h"
#include "core/nn/blocks.h"
#include "core/nn/layers.h"

namespace nns::graph {

namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

class Lowering {
 public:
  explicit Lowering(Graph& g) : g_(g) {}

  // Appends the nodes of module m (at `path`) reading value x; returns the value it writes.
  ValueId lower(nn::Module& m, const std::string& path, ValueId x) {
    if (auto* s = dynamic_cast<nn::Sequential*>(&m)) {
      for (auto& [name, child] : s->children()) x = lower(*child, join(path, name), x);
      return x;
    }
    if (auto* b = dynamic_cast<nn::BasicBlock*>(&m)) return basic_block(*b, path, x);
    if (auto* r = dynamic_cast<nn::InvertedResidual*>(&m)) {
      ValueId y = lower(*r->conv, join(path, "conv"), x);
      if (!r->use_res_connect) return y;
      return node(OpKind::Add, join(path, "add"), {y, x});
    }
    return leaf(m, path, x);
  }

 private:
  ValueId node(OpKind op, const std::string& name, std::vector<ValueId> in, Attr a = {},
               nn::Module* mod = nullptr) {
    int id = g_.add_node(op, name, std::move(in), std::move(a), mod);
    return g_.nodes()[size_t(id)].outputs[0];
  }

  ValueId basic_block(nn::BasicBlock& b, const std::string& path, ValueId x) {
    ValueId y = leaf(*b.conv1, join(path, "conv1"), x);
    y = leaf(*b.bn1, join(path, "bn1"), y);
    y = leaf(*b.relu1, join(path, "relu"), y);
    y = leaf(*b.conv2, join(path, "conv2"), y);
    y = leaf(*b.bn2, join(path, "bn2"), y);
    ValueId sc = b.downsample ? lower(*b.downsample, join(path, "downsample"), x) : x;
    ValueId sum = node(OpKind::Add, join(path, "add"), {y, sc});
    return node(OpKind::Relu, join(path, "relu_out"), {sum});
  }

  ValueId leaf(nn::Module& m, const std::string& path, ValueId x) {
    Attr a;
    if (auto* c = dynamic_cast<nn::Conv2d*>(&m)) {
      ConvAttr& ca = a.conv;
      ca.c_in = c->c_in;
      ca.c_out = c->c_out;
      ca.kh = c->kh;
      ca.kw = c->kw;
      ca.stride_h = c->stride_h;
      ca.stride_w = c->stride_w;
      ca.pad_t = ca.pad_b = c->pad_h;
      ca.pad_l = ca.pad_r = c->pad_w;
      ca.dil_h = c->dil_h;
      ca.dil_w = c->dil_w;
      ca.groups = c->groups;
      ca.bias = c->has_bias;
      return node(OpKind::Conv, path, {x}, a, c);
    }
    if (auto* l = dynamic_cast<nn::Linear*>(&m)) {
      a.in = l->in;
      a.out = l->out;
      a.bias = l->has_bias;
      return node(OpKind::Linear, path, {x}, a, l);
    }
    if (auto* b = dynamic_cast<nn::BatchNorm2d*>(&m)) {
      a.channels = b->c;
      a.eps = b->eps;
      a.momentum = b->momentum;
      return node(OpKind::BatchNorm, path, {x}, a, b);
    }
    if (auto* act = dynamic_cast<nn::Activation*>(&m)) {
      switch (act->kind()) {
        case ops::Activation::ReLU: return node(OpKind::Relu, path, {x});
        case ops::Activation::ReLU6: return node(OpKind::Relu6, path, {x});
        case ops::Activation::Tanh: return node(OpKind::Tanh, path, {x});
        case ops::Activation::Sigmoid: return node(OpKind::Sigmoid, path, {x});
        case ops::Activation::None: return node(OpKind::Identity, path, {x});
      }
    }
    if (auto* p = dynamic_cast<nn::MaxPool2d*>(&m)) {
      a.pool = pool(p->kernel(), p->stride(), p->padding());
      return node(OpKind::MaxPool, path, {x}, a);
    }
    if (auto* p = dynamic_cast<nn::AvgPool2d*>(&m)) {
      a.pool = pool(p->kernel(), p->stride(), p->padding());
      return node(OpKind::AvgPool, path, {x}, a);
    }
    if (dynamic_cast<nn::GlobalAvgPoolFlatten*>(&m)) {
      ValueId y = node(OpKind::GlobalAvgPool, path, {x});
      a.axis = 1;
      return node(OpKind::Flatten, path + ".flatten", {y}, a);
    }
    if (dynamic_cast<nn::Flatten*>(&m)) {
      a.axis = 1;
      return node(OpKind::Flatten, path, {x}, a);
    }
    if (auto* d = dynamic_cast<nn::Dropout*>(&m)) {
      a.p = d->p();
      return node(OpKind::Dropout, path, {x}, a, d);
    }
    throw std::invalid_argument("lower: module '" + path + "' (" + m.describe() +
                                ") has no graph form");
  }

  static PoolAttr pool(int k, int s, int p) {
    PoolAttr pa;
    pa.kh = pa.kw = k;
    pa.stride_h = pa.stride_w = s;
    pa.pad_t = pa.pad_l = pa.pad_b = pa.pad_r = p;
    return pa;
  }

  Graph& g_;
};

}  // namespace

Graph lower_module_tree(nn::Module& net, int in_channels, int size) {
  if (auto* gn = dynamic_cast<GraphNet*>(&net)) {
    const auto& d = gn->graph().value(gn->graph().input()).dims;
    if (d.size() != 4 || d[1] != in_channels || d[2] != size || d[3] != size)
      throw std::invalid_argument("lower: " + gn->describe() + " takes inputs " + dims_str(d) +
                                  ", not [N, " + std::to_string(in_channels) + ", " +
                                  std::to_string(size) + ", " + std::to_string(size) + "]");
    return gn->graph();
  }
  Graph g;
  ValueId x = g.add_input("input", {kBatch, in_channels, size, size});
  Lowering l(g);
  g.set_output(l.lower(net, "", x));
  g.infer_dims();
  return g;
}

}  // namespace nns::graph
