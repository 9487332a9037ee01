// The graph IR: shape rules and checks (core/graph/graph.h) and the zoo's lowering (lower.h).
#include <gtest/gtest.h>

#include "core/graph/graph.h"
#include "core/graph/lower.h"
#include "core/models/zoo.h"

namespace nns::graph {
namespace {

int count(const Graph& g, OpKind op) {
  int n = 0;
  for (const Node& node : g.nodes()) n += node.op == op;
  return n;
}

TEST(GraphLower, ResNet20NodesShapesAndModules) {
  models::ModelSpec spec{"resnet20", 1, 28, 10, 1.0f};
  auto m = models::build_model(spec);
  Graph g = lower_module_tree(m->net(), 1, 28);
  EXPECT_EQ(count(g, OpKind::Conv), 21);  // 19 3x3 + 2 downsamples
  EXPECT_EQ(count(g, OpKind::BatchNorm), 21);
  EXPECT_EQ(count(g, OpKind::Add), 9);
  EXPECT_EQ(count(g, OpKind::Linear), 1);
  EXPECT_EQ(g.value(g.output()).dims, (std::vector<int64_t>{kBatch, 10}));
  // Every conv node points at the module that holds the weight of the same path.
  for (const Node& n : g.nodes()) {
    if (n.op != OpKind::Conv) continue;
    EXPECT_EQ(n.module, m->module_for(n.name + ".weight")) << n.name;
  }
  // layer3's first block: stride 2, 32 -> 64 at 14x14 -> 7x7.
  bool seen = false;
  for (const Node& n : g.nodes()) {
    if (n.name != "layer3.0.conv1") continue;
    seen = true;
    EXPECT_EQ(g.value(n.inputs[0]).dims, (std::vector<int64_t>{kBatch, 32, 14, 14}));
    EXPECT_EQ(g.value(n.outputs[0]).dims, (std::vector<int64_t>{kBatch, 64, 7, 7}));
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(g.shapes(5)[size_t(g.output())], (Shape{5, 10}));
}

TEST(GraphLower, EveryZooModelLowers) {
  for (const auto& arch : models::model_names()) {
    const bool cifar = arch != "lenet5" && arch != "resnet20";
    models::ModelSpec spec{arch, cifar ? 3 : 1, cifar ? 32 : 28, 10, 0.25f};
    if (arch == "lenet5" || arch == "resnet20") spec.width_mult = 1.0f;
    auto m = models::build_model(spec);
    Graph g = lower_module_tree(m->net(), spec.in_channels, spec.input_size);
    EXPECT_EQ(g.value(g.output()).dims, (std::vector<int64_t>{kBatch, 10})) << arch;
    // One graph node per parameterised leaf module.
    int convs = 0, linears = 0;
    for (auto& [name, mod] : m->modules()) {
      convs += dynamic_cast<nn::Conv2d*>(mod) != nullptr;
      linears += dynamic_cast<nn::Linear*>(mod) != nullptr;
    }
    EXPECT_EQ(count(g, OpKind::Conv), convs) << arch;
    EXPECT_EQ(count(g, OpKind::Linear), linears) << arch;
  }
}

TEST(GraphLower, UnknownModuleIsNamed) {
  struct Odd : nn::Module {
    const Tensor& forward(const Tensor& x) override { return x; }
    const Tensor& backward(const Tensor& dy) override { return dy; }
    std::string describe() const override { return "Odd"; }
  };
  nn::Sequential s;
  s.add("weird", std::make_unique<Odd>());
  try {
    lower_module_tree(s, 1, 8);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'weird' (Odd)"), std::string::npos) << e.what();
  }
}

TEST(GraphShapes, RulesOfTheDataMovementOps) {
  Graph g;
  ValueId x = g.add_input("x", {kBatch, 8, 6, 6});
  Attr r;
  r.dims = {kBatch, 2, 4, 6, 6};  // channel shuffle: [N, g, C/g, H, W]
  ValueId a = g.nodes()[size_t(g.add_node(OpKind::Reshape, "r", {x}, r))].outputs[0];
  Attr t;
  t.perm = {0, 2, 1, 3, 4};
  ValueId b = g.nodes()[size_t(g.add_node(OpKind::Transpose, "t", {a}, t))].outputs[0];
  Attr r2;
  r2.dims = {kBatch, -1, 6, 6};
  ValueId c = g.nodes()[size_t(g.add_node(OpKind::Reshape, "r2", {b}, r2))].outputs[0];
  Attr sp;
  sp.axis = 1;
  sp.sizes = {3, 5};
  int split = g.add_node(OpKind::Split, "split", {c}, sp, nullptr, 2);
  ValueId s0 = g.nodes()[size_t(split)].outputs[0], s1 = g.nodes()[size_t(split)].outputs[1];
  Attr pad;
  pad.pads = {0, 0, 1, 0, 0, 0, 2, 1};
  ValueId p = g.nodes()[size_t(g.add_node(OpKind::Pad, "pad", {s0}, pad))].outputs[0];
  Attr sl;
  sl.axis = 2;
  sl.start = 1;
  sl.end = 100;  // clamped
  sl.step = 2;
  ValueId q = g.nodes()[size_t(g.add_node(OpKind::Slice, "slice", {p}, sl))].outputs[0];
  Attr cat;
  cat.axis = 1;
  ValueId gp = g.nodes()[size_t(g.add_node(OpKind::GlobalAvgPool, "gap", {s1}))].outputs[0];
  ValueId m = g.nodes()[size_t(g.add_node(OpKind::Mul, "mul", {s1, gp}))].outputs[0];
  Attr rm;
  rm.axes = {2, 3};
  rm.keepdims = false;
  ValueId red = g.nodes()[size_t(g.add_node(OpKind::ReduceMean, "rm", {m}, rm))].outputs[0];
  ValueId red2 = g.nodes()[size_t(g.add_node(OpKind::ReduceMean, "rm2", {q}, rm))].outputs[0];
  ValueId out = g.nodes()[size_t(g.add_node(OpKind::Concat, "cat", {red2, red}, cat))].outputs[0];
  g.set_output(out);
  g.infer_dims();
  EXPECT_EQ(g.value(c).dims, (std::vector<int64_t>{kBatch, 8, 6, 6}));
  EXPECT_EQ(g.value(p).dims, (std::vector<int64_t>{kBatch, 3, 9, 7}));
  EXPECT_EQ(g.value(q).dims, (std::vector<int64_t>{kBatch, 3, 4, 7}));
  EXPECT_EQ(g.value(m).dims, (std::vector<int64_t>{kBatch, 5, 6, 6}));
  EXPECT_EQ(g.value(out).dims, (std::vector<int64_t>{kBatch, 8}));
}

TEST(GraphShapes, ErrorsNameTheNode) {
  auto expect_error = [](auto build, const std::string& needle) {
    Graph g;
    ValueId x = g.add_input("x", {kBatch, 4, 5, 5});
    g.set_output(build(g, x));
    try {
      g.infer_dims();
      ADD_FAILURE() << "expected an error with " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(
      [](Graph& g, ValueId x) {
        Attr a;
        a.dims = {kBatch, 3, -1};
        return g.nodes()[size_t(g.add_node(OpKind::Reshape, "bad_reshape", {x}, a))].outputs[0];
      },
      "'bad_reshape' (Reshape): target does not divide");
  expect_error(
      [](Graph& g, ValueId x) {
        Attr a;
        a.axis = 0;
        return g.nodes()[size_t(g.add_node(OpKind::Flatten, "flat0", {x}, a))].outputs[0];
      },
      "'flat0' (Flatten): the batch would be merged");
  expect_error(
      [](Graph& g, ValueId x) {
        Attr a;
        a.dims = {kBatch, 4, 25};
        ValueId r = g.nodes()[size_t(g.add_node(OpKind::Reshape, "r", {x}, a))].outputs[0];
        return g.nodes()[size_t(g.add_node(OpKind::Add, "add", {x, r}))].outputs[0];
      },
      "'add' (Add): shapes");
  expect_error(
      [](Graph& g, ValueId x) {
        g.add_node(OpKind::Relu, "dangling", {x});
        return g.nodes()[size_t(g.add_node(OpKind::Sigmoid, "s", {x}))].outputs[0];
      },
      "'dangling' is never read");
  expect_error(
      [](Graph& g, ValueId x) {
        Attr a;
        a.pool.kh = a.pool.kw = 7;
        return g.nodes()[size_t(g.add_node(OpKind::MaxPool, "pool", {x}, a))].outputs[0];
      },
      "'pool' (MaxPool): window larger");
}

TEST(GraphShapes, CeilModePoolingFollowsPyTorch) {
  // PyTorch: MaxPool2d(3, 2, ceil_mode=True) on 6x6 gives 3x3; on 7x7 gives 3x3 (the last
  // window would start outside the input).
  for (auto [in, want] : {std::pair{6, 3}, std::pair{7, 3}, std::pair{8, 4}}) {
    Graph g;
    ValueId x = g.add_input("x", {kBatch, 1, in, in});
    Attr a;
    a.pool.kh = a.pool.kw = 3;
    a.pool.stride_h = a.pool.stride_w = 2;
    a.pool.ceil_mode = true;
    g.set_output(g.nodes()[size_t(g.add_node(OpKind::MaxPool, "p", {x}, a))].outputs[0]);
    g.infer_dims();
    EXPECT_EQ(g.value(g.output()).dims[2], want) << in;
  }
}

}  // namespace
}  // namespace nns::graph
