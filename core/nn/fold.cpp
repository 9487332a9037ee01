// Folding frozen BatchNorm (and the activation after it) into convolution epilogues, for the
// eval-mode passes of the obfuscator and of evaluation. A graph::GraphNet (a model read from
// ONNX) folds where the graph allows it (GraphNet::fold_batchnorm).
#include "core/graph/graph_net.h"
#include "core/nn/blocks.h"
#include "core/nn/layers.h"

namespace nns::nn {

namespace {

bool fold_pair(Conv2d* conv, BatchNorm2d* bn, Activation* act) {
  if (!conv || !bn) return false;
  if (!fold_conv_bn(*conv, *bn, act ? act->kind() : ops::Activation::None)) return false;
  if (act) act->set_bypass(true);
  return true;
}

int fold_rec(Module& m) {
  if (auto* g = dynamic_cast<graph::GraphNet*>(&m)) return g->fold_batchnorm();
  int n = 0;
  if (auto* b = dynamic_cast<BasicBlock*>(&m)) {
    n += fold_pair(b->conv1.get(), b->bn1.get(), b->relu1.get());
    n += fold_pair(b->conv2.get(), b->bn2.get(), nullptr);
  }
  const auto& ch = m.children();
  for (size_t i = 0; i + 1 < ch.size(); ++i) {
    auto* conv = dynamic_cast<Conv2d*>(ch[i].second);
    auto* bn = dynamic_cast<BatchNorm2d*>(ch[i + 1].second);
    if (!conv || !bn) continue;
    Activation* act = i + 2 < ch.size() ? dynamic_cast<Activation*>(ch[i + 2].second) : nullptr;
    n += fold_pair(conv, bn, act);
  }
  for (auto& [name, c] : ch) n += fold_rec(*c);
  return n;
}

void unfold_rec(Module& m) {
  if (auto* g = dynamic_cast<graph::GraphNet*>(&m)) g->unfold_batchnorm();
  if (auto* c = dynamic_cast<Conv2d*>(&m)) c->unfold();
  if (auto* b = dynamic_cast<BatchNorm2d*>(&m)) b->set_bypass(false);
  if (auto* a = dynamic_cast<Activation*>(&m)) a->set_bypass(false);
  for (auto& [name, c] : m.children()) unfold_rec(*c);
}

}  // namespace

bool fold_conv_bn(Conv2d& conv, BatchNorm2d& bn, ops::Activation act) {
  if (conv.folded() || bn.bypassed()) return false;
  Tensor scale({bn.c}, DType::F32, conv.device()), shift({bn.c}, DType::F32, conv.device());
  ops::Context ctx{conv.device(), nullptr};
  ops::batchnorm_fold(ctx, bn.c, bn.weight.value.f32(), bn.bias.value.f32(),
                      bn.running_mean.f32(), bn.running_var.f32(), bn.eps, scale.f32(),
                      shift.f32());
  conv.fold(std::move(scale), std::move(shift), act);
  bn.set_bypass(true);
  return true;
}

int fold_batchnorm(Module& root) { return fold_rec(root); }
void unfold_batchnorm(Module& root) { unfold_rec(root); }

}  // namespace nns::nn
