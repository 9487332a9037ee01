// The method's building blocks: mask selection against a naive scan, the fused masked
// Adam + clamp against dense Adam, masked backward against the full backward, BN folding,
// auto eps, and an obfuscation that leaves every unmasked weight bit-identical.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/nn/layers.h"
#include "core/random.h"
#include "core/splitter/mask.h"
#include "core/splitter/obfuscator.h"
#include "kernels/ops.h"

using namespace nns;

namespace {

std::unique_ptr<models::Model> small_model(const std::string& arch, uint64_t seed = 1) {
  models::ModelSpec s;
  s.arch = arch;
  s.in_channels = arch.rfind("vgg", 0) == 0 || arch == "mobilenet_v2" ? 3 : 1;
  s.input_size = arch.rfind("vgg", 0) == 0 ? 32 : (arch == "lenet5" ? 28 : 16);
  s.num_classes = 10;
  s.width_mult = arch == "lenet5" ? 1.0f : 0.25f;
  auto m = models::build_model(s, seed);
  // Non-trivial BatchNorm statistics so that folding is tested for real.
  Rng rng(seed + 7);
  for (auto& e : m->state()) {
    if (e.key.find("running_var") != std::string::npos)
      for (int64_t i = 0; i < e.tensor->numel(); ++i) e.tensor->f32()[i] = float(0.5 + rng.uniform());
    if (e.key.find("running_mean") != std::string::npos || e.key.find("bn") != std::string::npos)
      if (e.tensor->dtype() == DType::F32 && e.key.find("running_var") == std::string::npos)
        for (int64_t i = 0; i < e.tensor->numel(); ++i)
          e.tensor->f32()[i] += float(rng.uniform(-0.2, 0.2));
  }
  return m;
}

Tensor random_input(const models::Model& m, int n, uint64_t seed) {
  const auto& s = m.spec();
  Tensor x({n, s.in_channels, s.input_size, s.input_size});
  Rng rng(seed);
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = float(rng.normal());
  return x;
}

TEST(Mask, SelectsExactlyWhatANaiveScanSelects) {
  for (std::string rule : {"spatial", "all"}) {
    auto m = small_model("resnet20");
    auto layers = splitter::eligible(*m, rule);
    ASSERT_EQ(layers.size(), rule == "spatial" ? 20u : 22u);
    auto stats = splitter::eligible_stats(layers);
    float c = float(stats.mean), eps = 0.05f;
    Rng rng(3);
    std::vector<std::vector<int32_t>> filters(layers.size());
    for (size_t l = 0; l < layers.size(); ++l)
      for (int j = 0; j < 3; ++j) filters[l].push_back(int32_t(rng.below(layers[l].filters)));
    auto masks = splitter::select_mask(layers, filters, c, eps);
    int64_t total = 0;
    for (size_t l = 0; l < layers.size(); ++l) {
      std::vector<int64_t> naive;
      const float* w = layers[l].param->value.f32();
      for (int64_t j = 0; j < layers[l].param->value.numel(); ++j) {
        int32_t f = int32_t(j / layers[l].filter_size);
        bool chosen = std::find(filters[l].begin(), filters[l].end(), f) != filters[l].end();
        if (chosen && std::fabs(w[j] - c) < eps) naive.push_back(j);
      }
      EXPECT_EQ(masks[l].index, naive) << rule << " " << layers[l].key;
      total += int64_t(naive.size());
    }
    EXPECT_GT(total, 0);
  }
}

TEST(Mask, StrictInequalityAtEps) {
  auto m = small_model("lenet5");
  auto layers = splitter::eligible(*m, "spatial");
  float* w = layers[0].param->value.f32();
  w[0] = 0.5f;
  w[1] = 0.25f;  // |0.25 - 0.5| == 0.25 exactly: not selected
  w[2] = 0.2500001f;
  std::vector<std::vector<int32_t>> filters(layers.size());
  filters[0] = {0};
  auto masks = splitter::select_mask(layers, filters, 0.5f, 0.25f);
  EXPECT_NE(std::find(masks[0].index.begin(), masks[0].index.end(), 0), masks[0].index.end());
  EXPECT_EQ(std::find(masks[0].index.begin(), masks[0].index.end(), 1), masks[0].index.end());
  EXPECT_NE(std::find(masks[0].index.begin(), masks[0].index.end(), 2), masks[0].index.end());
}

TEST(Mask, AutoEpsIsTheSmallestReachingTheTarget) {
  auto m = small_model("resnet20");
  auto layers = splitter::eligible(*m, "spatial");
  float c = float(splitter::eligible_stats(layers).mean);
  auto expected = [&](float eps) {
    double total = 0;
    for (auto& l : layers) {
      int64_t cnt = 0;
      for (int64_t j = 0; j < l.param->value.numel(); ++j)
        if (std::fabs(l.param->value.f32()[j] - c) < eps) ++cnt;
      total += double(cnt) / l.filters;
    }
    return total / double(layers.size());
  };
  for (double target : {3.0, 10.0}) {
    float eps = splitter::auto_eps(layers, c, 1, target);
    EXPECT_GE(expected(eps), target);
    EXPECT_LT(expected(std::nextafter(eps, 0.0f) - 1e-9f), target);
  }
  EXPECT_THROW(splitter::auto_eps(layers, c, 1, 1e9), std::runtime_error);
}

TEST(MaskedAdam, FusedSparseUpdateEqualsDenseAdamOnTheMask) {
  ops::Context ctx;
  const int64_t n = 1000;
  Rng rng(5);
  std::vector<float> w(n), w_dense(n);
  for (auto& v : w) v = float(rng.uniform(-0.3, 0.3));
  w_dense = w;
  const std::vector<float> w0 = w;
  std::vector<int64_t> idx;
  for (int64_t j = 0; j < n; j += 7) idx.push_back(j);
  const int64_t k = int64_t(idx.size());
  std::vector<float> m(k, 0), v(k, 0), md(n, 0), vd(n, 0), g(n), gd(n);
  const float lo = -0.2f, hi = 0.25f, l1 = 0.01f;
  for (int64_t t = 1; t <= 20; ++t) {
    for (auto& x : g) x = float(rng.normal());
    ops::masked_adam_clamp(ctx, k, idx.data(), w.data(), g.data(), m.data(), v.data(), 0.05f, 0.9f,
                           0.999f, 1e-8f, t, -1.0f, l1, lo, hi);
    // Dense reference: the objective gradient on the masked entries, zero elsewhere.
    std::fill(gd.begin(), gd.end(), 0.0f);
    for (int64_t j : idx) {
      float s = w_dense[j] > 0 ? 1.0f : (w_dense[j] < 0 ? -1.0f : 0.0f);
      gd[j] = -g[j] + l1 * s;
    }
    ops::adam_update(ctx, n, w_dense.data(), gd.data(), md.data(), vd.data(), 0.05f, 0.9f, 0.999f,
                     1e-8f, 0.0f, t);
    for (int64_t j : idx) w_dense[j] = std::min(std::max(w_dense[j], lo), hi);
    for (int64_t j : idx) ASSERT_NEAR(w[j], w_dense[j], 1e-6) << "step " << t << " index " << j;
  }
  for (int64_t j = 0; j < n; ++j)
    if (j % 7) ASSERT_EQ(std::memcmp(&w[j], &w0[j], 4), 0) << "unmasked entry " << j << " moved";
  for (int64_t j : idx) {
    EXPECT_GE(w[j], lo);
    EXPECT_LE(w[j], hi);
  }
}

// Masked mode (eval, BN folded, weight gradients only for the selected filters) gives the same
// logits and the same gradients for the selected filters as the plain eval-mode backward.
TEST(MaskedBackward, BatchStatisticsModeIsTrainingModeBatchNormThatKeepsItsBuffers) {
  // splitter.bn_stats: batch. Logits and the masked filters' gradients equal a training-mode
  // pass of a copy (BatchNorm on the batch's statistics), and no buffer changes: the running
  // statistics and num_batches_tracked stay bit-identical (the obfuscated file may differ from
  // the original in the secret entries only). Afterwards BatchNorm is back in eval mode.
  for (std::string arch : {"resnet20", "vgg11_bn"}) {
    auto m = small_model(arch);
    auto layers = splitter::eligible(*m, "spatial");
    Tensor x = random_input(*m, 3, 12);
    std::vector<int32_t> labels = {2, 5, 9};
    ops::Context ctx;
    const int k = 10;
    std::vector<splitter::LayerMask> masks(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
      masks[l].layer = int(l);
      masks[l].filters = {int32_t(l % layers[l].filters)};
      masks[l].index = {int64_t(masks[l].filters[0]) * layers[l].filter_size};
    }
    auto pass = [&](models::Model& model) {
      for (auto& [key, p] : model.parameters()) {
        p->ensure_grad();
        p->grad.fill(0.0f);
      }
      Tensor logits = model.forward(x).clone();
      Tensor probs({3, k}), dl({3, k});
      float loss;
      ops::softmax_cross_entropy_forward(ctx, 3, k, logits.f32(), labels.data(), probs.f32(), &loss);
      ops::softmax_cross_entropy_backward(ctx, 3, k, probs.f32(), labels.data(), 1.0f, dl.f32());
      model.backward(dl);
      return logits;
    };
    // The reference: a copy with its BatchNorm layers (only: VGG's dropout stays off) in
    // ordinary training mode.
    auto ref = models::clone_model(*m);
    ref->set_training(false);
    for (auto& [name, mod] : ref->modules())
      if (dynamic_cast<nn::BatchNorm2d*>(mod)) mod->set_training(true);
    const Tensor ref_logits = pass(*ref);
    auto ref_layers = splitter::eligible(*ref, "spatial");

    std::vector<Tensor> buffers;
    for (auto& e : m->state()) buffers.push_back(e.tensor->clone());
    splitter::enter_masked_mode(*m, layers, masks, /*bn_batch_stats=*/true);
    const Tensor logits = pass(*m);
    for (int64_t i = 0; i < logits.numel(); ++i)
      ASSERT_NEAR(logits.f32()[i], ref_logits.f32()[i], 1e-4 * (1 + std::fabs(ref_logits.f32()[i])))
          << arch;
    for (size_t l = 0; l < layers.size(); ++l) {
      const int64_t fs = layers[l].filter_size, f = masks[l].filters[0];
      const float* g = layers[l].param->grad.f32();
      const float* r = ref_layers[l].param->grad.f32();
      double scale = 1e-6;
      for (int64_t j = 0; j < fs; ++j) scale = std::max(scale, double(std::fabs(r[f * fs + j])));
      for (int64_t j = 0; j < fs; ++j)
        ASSERT_NEAR(g[f * fs + j], r[f * fs + j], 1e-4 * scale) << arch << " " << layers[l].key;
    }
    splitter::leave_masked_mode(*m);
    size_t i = 0;
    for (auto& e : m->state()) {
      ASSERT_EQ(std::memcmp(e.tensor->raw(), buffers[i].raw(), buffers[i].nbytes()), 0)
          << arch << " " << e.key;
      ++i;
    }
    for (auto& [name, mod] : m->modules())
      if (auto* b = dynamic_cast<nn::BatchNorm2d*>(mod)) {
        EXPECT_FALSE(b->training()) << name;
        EXPECT_TRUE(b->tracks_stats()) << name;
      }
  }
}

TEST(MaskedBackward, SelectedFilterGradientsEqualTheFullBackward) {
  for (std::string arch : {"resnet20", "lenet5", "mobilenet_v2", "vgg11_bn"}) {
    auto m = small_model(arch);
    auto layers = splitter::eligible(*m, arch == "mobilenet_v2" ? "all" : "spatial");
    Tensor x = random_input(*m, 3, 11);
    std::vector<int32_t> labels = {1, 4, 7};
    ops::Context ctx;
    int k = 10;
    auto run = [&](bool masked, const std::vector<splitter::LayerMask>& masks) {
      if (masked) splitter::enter_masked_mode(*m, layers, masks);
      else m->set_training(false);
      for (auto& [key, p] : m->parameters()) {
        p->ensure_grad();
        p->grad.fill(0.0f);
      }
      Tensor logits = m->forward(x).clone();
      Tensor probs({3, k}), dl({3, k});
      float loss;
      ops::softmax_cross_entropy_forward(ctx, 3, k, logits.f32(), labels.data(), probs.f32(), &loss);
      ops::softmax_cross_entropy_backward(ctx, 3, k, probs.f32(), labels.data(), 1.0f, dl.f32());
      m->backward(dl);
      std::vector<Tensor> grads;
      for (auto& l : layers) grads.push_back(l.param->grad.clone());
      if (masked) splitter::leave_masked_mode(*m);
      return std::make_pair(logits, grads);
    };
    Rng rng(9);
    std::vector<splitter::LayerMask> masks(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
      masks[l].layer = int(l);
      if (l % 2 == 0) continue;  // some layers not masked at all
      masks[l].filters = {int32_t(rng.below(layers[l].filters))};
      masks[l].index = {int64_t(masks[l].filters[0]) * layers[l].filter_size};
    }
    auto [ref_logits, ref_grads] = run(false, masks);
    auto [logits, grads] = run(true, masks);
    for (int64_t i = 0; i < logits.numel(); ++i)
      ASSERT_NEAR(logits.f32()[i], ref_logits.f32()[i], 1e-4 * (1 + std::fabs(ref_logits.f32()[i])))
          << arch;
    int compared = 0;
    for (size_t l = 0; l < layers.size(); ++l) {
      const int64_t fs = layers[l].filter_size;
      for (int32_t f : masks[l].filters) {
        double scale = 1e-6;
        for (int64_t j = 0; j < fs; ++j) scale = std::max(scale, double(std::fabs(ref_grads[l].f32()[f * fs + j])));
        for (int64_t j = 0; j < fs; ++j)
          ASSERT_NEAR(grads[l].f32()[f * fs + j], ref_grads[l].f32()[f * fs + j], 1e-4 * scale)
              << arch << " " << layers[l].key << " filter " << f;
        ++compared;
      }
      // Unselected layers get no gradient at all in masked mode (zeroed before the pass).
      if (masks[l].filters.empty())
        for (int64_t j = 0; j < grads[l].numel(); ++j) ASSERT_EQ(grads[l].f32()[j], 0.0f);
    }
    EXPECT_GT(compared, 0) << arch;
  }
}

TEST(Obfuscator, UnmaskedWeightsStayBitIdenticalAndBestIsKept) {
  auto m = small_model("resnet20");
  auto layers = splitter::eligible(*m, "spatial");
  std::vector<Tensor> before;
  for (auto& e : m->state()) before.push_back(e.tensor->clone());
  std::vector<std::vector<int32_t>> filters(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) filters[l] = {int32_t(l % layers[l].filters)};
  auto stats = splitter::eligible_stats(layers);
  float eps = splitter::auto_eps(layers, float(stats.mean), 1, 8);
  auto masks = splitter::select_mask(layers, filters, float(stats.mean), eps);
  Tensor x = random_input(*m, 16, 2);
  Tensor y({16}, DType::I32);
  for (int i = 0; i < 16; ++i) y.i32()[i] = i % 10;
  int calls = 0;
  std::vector<double> accs = {0.8, 0.3, 0.5, 0.6};  // the best (lowest) is the second evaluation
  std::vector<std::vector<float>> snapshots;
  splitter::ObfuscationData data;
  data.next_batch = [&](Tensor& bx, Tensor& by) {
    if (calls++ % 3 == 2) return false;  // epochs of 2 batches
    bx = x;
    by = y;
    return true;
  };
  int evals = 0;
  data.accuracy = [&] {
    std::vector<float> snap;
    for (auto& mk : masks)
      for (int64_t j : mk.index) snap.push_back(layers[mk.layer].param->value.f32()[j]);
    snapshots.push_back(snap);
    return accs[std::min<size_t>(evals++, accs.size() - 1)];
  };
  splitter::ObfuscatorOptions o;
  o.clamp_lo = stats.min;
  o.clamp_hi = stats.max;
  o.patience = 2;
  o.eval_every = 3;
  auto r = splitter::obfuscate(*m, layers, masks, data, o);
  EXPECT_EQ(r.evaluations, 4);  // 0.8, 0.3 (best), 0.5, 0.6 -> patience 2 exhausted
  EXPECT_DOUBLE_EQ(r.best_accuracy, 0.3);
  // Masked entries hold the snapshot of the best evaluation; everything else is untouched.
  std::vector<float> now;
  for (auto& mk : masks)
    for (int64_t j : mk.index) now.push_back(layers[mk.layer].param->value.f32()[j]);
  EXPECT_EQ(now, snapshots[1]);
  EXPECT_NE(now, snapshots[0]);
  int64_t moved_masked = 0;
  auto& st = m->state();
  for (size_t i = 0; i < st.size(); ++i) {
    const Tensor& a = *st[i].tensor;
    const Tensor& b = before[i];
    ASSERT_EQ(a.nbytes(), b.nbytes());
    const splitter::LayerMask* mk = nullptr;
    for (auto& mm : masks)
      if (layers[mm.layer].key == st[i].key) mk = &mm;
    for (int64_t j = 0; j < a.numel(); ++j) {
      size_t es = dtype_size(a.dtype());
      bool same = std::memcmp(static_cast<const char*>(a.raw()) + j * es,
                              static_cast<const char*>(b.raw()) + j * es, es) == 0;
      bool masked = mk && std::binary_search(mk->index.begin(), mk->index.end(), j);
      if (!masked) ASSERT_TRUE(same) << st[i].key << "[" << j << "] changed but is not masked";
      else if (!same) ++moved_masked;
    }
  }
  EXPECT_GT(moved_masked, 0);
  for (auto& l : layers)
    for (int64_t j = 0; j < l.param->value.numel(); ++j) {
      ASSERT_GE(l.param->value.f32()[j], stats.min);
      ASSERT_LE(l.param->value.f32()[j], stats.max);
    }
}

}  // namespace
