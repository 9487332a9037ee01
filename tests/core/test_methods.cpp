// The protection methods behind splitter::Method: each changes only the entries of its episode's
// mask set, undoes them bit-exactly, and its best episode is exactly what diff_secrets finds and
// apply_secrets restores. nnsplitter equals the building blocks it wraps (select_mask +
// obfuscate); permute keeps every layer's multiset of values; quantile keeps every changed
// value inside its own bounds, which lie between the configured quantiles of its layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "core/random.h"
#include "core/splitter/method.h"
#include "core/splitter/secrets.h"
#include "kernels/ops.h"

using namespace nns;

namespace {

// A resnet20 at width 0.25 with random weights and random BatchNorm statistics and affine
// parameters; data: random
// images labelled by the model's own predictions, so the oracle starts at accuracy 1.
struct Case {
  std::unique_ptr<models::Model> model, original;
  std::vector<splitter::EligibleLayer> layers;
  Tensor x, y;
  splitter::FilterChoice filters;
  splitter::MethodOptions opt;

  explicit Case(const std::string& method, const std::string& arch = "resnet20") {
    models::ModelSpec s;
    s.arch = arch;
    s.in_channels = 1;
    s.input_size = 16;
    s.num_classes = 10;
    s.width_mult = 0.25f;
    model = models::build_model(s, 3);
    Rng rng(11);
    for (auto& e : model->state())
      if (e.key.find("running_var") != std::string::npos)
        for (int64_t i = 0; i < e.tensor->numel(); ++i) e.tensor->f32()[i] = float(0.5 + rng.uniform());
    // Distinct BatchNorm scales and shifts (a fresh model has all ones and zeros), so that
    // exchanging two channels' values changes something.
    for (auto& [key, p] : model->parameters())
      if (key.find("bn") != std::string::npos || key.find("downsample.1") != std::string::npos)
        for (int64_t i = 0; i < p->value.numel(); ++i)
          p->value.f32()[i] = float(key.ends_with("weight") ? 0.5 + rng.uniform() : 0.2 * rng.normal());
    original = models::clone_model(*model);
    layers = splitter::eligible(*model, "spatial");
    x = Tensor({32, 1, 16, 16});
    for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = float(rng.normal());
    model->set_training(false);
    const Tensor& logits = model->forward(x);
    Tensor lh = logits.to(Device::CPU);
    y = Tensor({32}, DType::I32);
    for (int i = 0; i < 32; ++i)
      y.i32()[i] = int32_t(std::max_element(lh.f32() + i * 10, lh.f32() + i * 10 + 10) - (lh.f32() + i * 10));
    for (size_t l = 0; l < layers.size(); ++l) filters.push_back({int32_t((l * 5) % layers[l].filters)});
    auto stats = splitter::eligible_stats(layers);
    opt.method = method;
    opt.c = float(stats.mean);
    opt.eps = splitter::auto_eps(layers, opt.c, 1, 6);
    opt.obfuscator.clamp_lo = stats.min;
    opt.obfuscator.clamp_hi = stats.max;
    opt.obfuscator.lr = 0.2f;
    opt.obfuscator.eval_every = 4;
    opt.obfuscator.max_steps = 16;
    opt.params.set("rounds", "4");   // permute, swap
    opt.params.set("batches", "1");  // permute, swap
    opt.params.set("steps", "1");    // attack_aware: one small step (its data are the oracle's
    opt.params.set("lr", "1e-3");    // 32 images, which a strong attacker would simply learn)
  }

  // One unit per layer, of the units the method chooses (filters; input channels for spread).
  void choose_for(const splitter::Method& m) {
    const auto n = m.choices_per_layer();
    filters.clear();
    for (size_t l = 0; l < n.size(); ++l) filters.push_back({int32_t((l * 5) % n[l])});
  }

  splitter::ObfuscationData data() {
    splitter::ObfuscationData d;
    auto calls = std::make_shared<int>(0);
    d.next_batch = [this, calls](Tensor& bx, Tensor& by) {
      if ((*calls)++ % 4 == 3) return false;  // epochs of 3 batches
      bx = x;
      by = y;
      return true;
    };
    d.accuracy = [this] {
      ops::Context ctx{model->device(), nullptr};
      const Tensor& logits = model->forward(x);
      Tensor pred({32}, DType::I32);
      return double(ops::argmax_accuracy(ctx, 32, 10, logits.f32(), y.i32(), pred.i32())) / 32.0;
    };
    return d;
  }
};

bool same_state(models::Model& a, models::Model& b) {
  return splitter::fingerprint(a) == splitter::fingerprint(b);
}

// Entries (key, flat index) where the two models differ bitwise.
std::set<std::pair<std::string, int64_t>> changed(models::Model& a, models::Model& b) {
  std::set<std::pair<std::string, int64_t>> out;
  for (auto& t : splitter::diff_secrets(a, b).tensors)
    for (int64_t i : t.index) out.insert({t.key, i});
  return out;
}

std::set<std::pair<std::string, int64_t>> listed(const splitter::Method& m) {
  std::set<std::pair<std::string, int64_t>> out;
  for (auto& mk : m.best().masks())
    for (int64_t i : mk.index) out.insert({m.layers()[mk.layer].key, i});
  return out;
}

class Methods : public ::testing::TestWithParam<std::string> {};

TEST_P(Methods, ChangeOnlyListedEntriesUndoAndRestoreBitExactly) {
  Case c(GetParam());
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  c.choose_for(*method);
  auto data = c.data();
  auto out = method->run_episode(c.filters, data, 5);
  EXPECT_LT(out.accuracy, 1.0) << "the episode did not lower the accuracy";
  method->keep_episode_as_best();
  auto during = changed(*c.original, *c.model);
  auto allowed = listed(*method);
  EXPECT_FALSE(during.empty());
  for (auto& e : during) EXPECT_TRUE(allowed.count(e)) << e.first << "[" << e.second << "] not listed";
  method->undo_episode();
  EXPECT_TRUE(same_state(*c.model, *c.original)) << "undo is not bit-exact";
  method->apply_best();
  EXPECT_EQ(changed(*c.original, *c.model), during);
  // The secrets of the obfuscated model restore the original bit for bit.
  auto secrets = splitter::diff_secrets(*c.original, *c.model);
  auto copy = models::clone_model(*c.model);
  splitter::apply_secrets(*copy, secrets);
  EXPECT_TRUE(same_state(*copy, *c.original));
}

TEST_P(Methods, BestSurvivesExportAndImport) {
  Case c(GetParam());
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  c.choose_for(*method);
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  method->keep_episode_as_best();
  method->undo_episode();
  auto saved = method->export_best();
  std::map<std::string, const Tensor*> tensors;
  for (auto& [name, t] : saved) tensors[name] = &t;
  auto again = splitter::make_method(*c.model, c.layers, c.opt);
  again->import_best(c.filters, tensors, "saved");
  again->apply_best();
  auto via_import = splitter::fingerprint(*c.model);
  again->best().put_original();
  method->apply_best();
  EXPECT_EQ(splitter::fingerprint(*c.model), via_import);
  tensors.erase(tensors.begin());
  EXPECT_THROW(again->import_best(c.filters, tensors, "saved"), std::runtime_error);
}

INSTANTIATE_TEST_SUITE_P(All, Methods, ::testing::ValuesIn(splitter::method_names()));

TEST(NNSplitterMethod, EqualsSelectMaskAndObfuscate) {
  Case c("nnsplitter");
  auto reference = models::clone_model(*c.model);
  auto ref_layers = splitter::eligible(*reference, "spatial");
  auto masks = splitter::select_mask(ref_layers, c.filters, c.opt.c, c.opt.eps);
  auto ref_data = c.data();
  ref_data.accuracy = [&] {  // the same oracle on the reference model
    ops::Context ctx{Device::CPU, nullptr};
    const Tensor& logits = reference->forward(c.x);
    Tensor pred({32}, DType::I32);
    return double(ops::argmax_accuracy(ctx, 32, 10, logits.f32(), c.y.i32(), pred.i32())) / 32.0;
  };
  auto r = splitter::obfuscate(*reference, ref_layers, masks, ref_data, c.opt.obfuscator);
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  auto data = c.data();
  auto out = method->run_episode(c.filters, data, 5);
  EXPECT_DOUBLE_EQ(out.accuracy, r.best_accuracy);
  EXPECT_EQ(out.steps, r.steps);
  EXPECT_TRUE(same_state(*c.model, *reference));
}

// Every F32 state tensor of a holds the same multiset of values (bitwise) as in b.
void expect_same_multisets(models::Model& a, models::Model& b) {
  auto& sa = a.state();
  auto& sb = b.state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].tensor->dtype() != DType::F32) continue;
    std::vector<float> va(sa[i].tensor->f32(), sa[i].tensor->f32() + sa[i].tensor->numel());
    std::vector<float> vb(sb[i].tensor->f32(), sb[i].tensor->f32() + sb[i].tensor->numel());
    std::sort(va.begin(), va.end());
    std::sort(vb.begin(), vb.end());
    ASSERT_EQ(std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)), 0) << sa[i].key;
  }
}

TEST(PermuteMethod, EveryLayerKeepsItsMultisetOfValues) {
  Case c("permute");
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  EXPECT_GT(changed(*c.original, *c.model).size(), 0u);
  expect_same_multisets(*c.model, *c.original);
}

// swap: multisets kept; every value that moved (in both its old and its new position) lies
// strictly inside its layer's [q, 1 - q] quantiles, checked by counting the layer's pretrained
// values beyond it; each layer stays within NNSplitter's mask size (rounded up to even); and
// some swaps reach outside the chosen filters (the method's point).
TEST(SwapMethod, KeepsMultisetsAndMovesOnlyValuesInsideTheQuantiles) {
  Case c("swap");
  c.opt.params.set("quantile", "0.2");  // large enough that the bound below is not vacuous on small layers
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  expect_same_multisets(*c.model, *c.original);
  auto budget = splitter::select_mask(c.layers, c.filters, c.opt.c, c.opt.eps);
  std::map<std::string, std::vector<int64_t>> by_layer;
  for (auto& [key, i] : changed(*c.original, *c.model)) by_layer[key].push_back(i);
  ASSERT_FALSE(by_layer.empty());
  int64_t outside = 0;
  for (size_t l = 0; l < c.layers.size(); ++l) {
    const auto& layer = c.layers[l];
    auto it = by_layer.find(layer.key);
    if (it == by_layer.end()) continue;
    EXPECT_LE(int64_t(it->second.size()), int64_t(budget[l].index.size() + 1) / 2 * 2) << layer.key;
    const float* before = nullptr;
    for (auto& e : c.original->state())
      if (e.key == layer.key) before = e.tensor->f32();
    ASSERT_NE(before, nullptr);
    const int64_t n = layer.param->value.numel();
    for (int64_t i : it->second) {
      for (float v : {before[i], layer.param->value.f32()[i]}) {
        int64_t below = 0, above = 0;
        for (int64_t k = 0; k < n; ++k) {
          below += before[k] < v;
          above += before[k] > v;
        }
        EXPECT_GE(double(below) / double(n), c.opt.number("quantile") - 1.0 / double(n)) << layer.key;
        EXPECT_GE(double(above) / double(n), c.opt.number("quantile") - 1.0 / double(n)) << layer.key;
      }
      const int32_t f = int32_t(i / layer.filter_size);
      outside += std::find(c.filters[l].begin(), c.filters[l].end(), f) == c.filters[l].end();
    }
  }
  EXPECT_GT(outside, 0) << "no swap left the chosen filters";
}

TEST(QuantileMethod, ChangedValuesStayInsideTheirBoundsAndTheBoundsInsideTheQuantiles) {
  Case c("quantile");
  splitter::QuantileMethod method(*c.model, c.layers, c.opt);
  auto masks = splitter::select_mask(c.layers, c.filters, c.opt.c, c.opt.eps);
  auto [lo, hi] = method.bounds(masks, 9000);
  auto data = c.data();
  method.run_episode(c.filters, data, 9000);
  int64_t checked = 0;
  for (size_t m = 0; m < masks.size(); ++m) {
    const auto& l = c.layers[masks[m].layer];
    std::vector<float> layer_vals;
    for (auto& e : c.original->state())
      if (e.key == l.key) layer_vals.assign(e.tensor->f32(), e.tensor->f32() + e.tensor->numel());
    const double n = double(layer_vals.size());
    for (size_t i = 0; i < masks[m].index.size(); ++i) {
      const float v = l.param->value.f32()[masks[m].index[i]];
      ASSERT_LE(lo[m][i], hi[m][i]);
      ASSERT_GE(v, lo[m][i]) << l.key;
      ASSERT_LE(v, hi[m][i]) << l.key;
      // Naive: the share of the layer's weights strictly beyond each bound is within the
      // quantile levels (one weight of slack for the interpolation).
      double above = 0, below = 0;
      for (float w : layer_vals) {
        above += w > hi[m][i];
        below += w < lo[m][i];
      }
      EXPECT_GE(above / n, c.opt.number("inner") - 1.0 / n);
      EXPECT_LE(above / n, c.opt.number("outer") + 1.0 / n);
      EXPECT_GE(below / n, c.opt.number("inner") - 1.0 / n);
      EXPECT_LE(below / n, c.opt.number("outer") + 1.0 / n);
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  EXPECT_FALSE(changed(*c.original, *c.model).empty());
}

TEST(MethodTable, EveryEntryIsNamedOnceAndReadsItsDefaults) {
  std::set<std::string> names;
  for (const auto& m : splitter::method_table()) {
    EXPECT_TRUE(names.insert(m.name).second) << m.name;
    EXPECT_FALSE(m.summary.empty()) << m.name;
    EXPECT_FALSE(m.hypothesis.empty()) << m.name;
    splitter::MethodOptions o;
    o.method = m.name;
    for (const auto& k : m.keys) EXPECT_EQ(o.text(k.name), k.default_value) << m.name << "." << k.name;
    EXPECT_THROW(o.text("no_such_key"), std::invalid_argument);
  }
  EXPECT_EQ(splitter::method_names().front(), "nnsplitter");
  splitter::MethodOptions o;
  o.method = "swap";
  o.params.set("rounds", "7");
  EXPECT_EQ(o.integer("rounds"), 7);
  EXPECT_DOUBLE_EQ(o.number("quantile"), 0.01);
  EXPECT_EQ(splitter::make_method(*Case("swap").model, {}, o)->metadata().at("swap_rounds"), "7");
}

// spread: every changed weight lies in the chosen input channel of its layer, and the changes
// of a layer reach several output filters (the point of the method).
TEST(SpreadMethod, ChangesOnlyTheChosenInputChannelsAcrossFilters) {
  Case c("spread");
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  c.choose_for(*method);
  for (size_t l = 0; l < c.layers.size(); ++l)
    EXPECT_EQ(method->choices_per_layer()[l], int(c.layers[l].param->value.dim(1)));
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  std::map<std::string, std::set<int64_t>> filters_hit;
  size_t changes = 0;
  for (auto& [key, i] : changed(*c.original, *c.model)) {
    size_t l = 0;
    while (c.layers[l].key != key) ++l;
    const Tensor& w = c.layers[l].param->value;
    const int64_t in = w.dim(1), area = w.numel() / (w.dim(0) * in);
    EXPECT_EQ((i / area) % in, c.filters[l][0]) << key << "[" << i << "]";
    filters_hit[key].insert(i / (in * area));
    ++changes;
  }
  ASSERT_GT(changes, 0u);
  size_t most = 0;
  for (auto& [key, f] : filters_hit) most = std::max(most, f.size());
  EXPECT_GT(most, 1u) << "no layer's changes reached more than one output filter";
}

float value_at(models::Model& m, const std::string& key, int64_t i) {
  for (auto& e : m.state())
    if (e.key == key) return e.tensor->f32()[i];
  throw std::runtime_error("no " + key);
}

// bn_secret (negate): the chosen filter of conv1 has bn1's scale and shift of its channel
// negated, bit for bit, and they are listed like the weights.
TEST(BnSecretMethod, NegatesTheChosenChannelsScaleAndShift) {
  Case c("bn_secret");
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  c.choose_for(*method);
  ASSERT_EQ(method->choices_per_layer().size(), c.layers.size());
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  method->keep_episode_as_best();
  ASSERT_EQ(c.layers[0].key, "conv1.weight");
  const int64_t f = c.filters[0][0];
  for (const char* key : {"bn1.weight", "bn1.bias"}) {
    EXPECT_EQ(value_at(*c.model, key, f), -value_at(*c.original, key, f)) << key;
    EXPECT_TRUE(listed(*method).count({key, f})) << key;
  }
}

TEST(BnSecretMethod, SwapKeepsEveryBatchNormsValues) {
  Case c("bn_secret");
  c.opt.params.set("mode", "swap");
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  c.choose_for(*method);
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  int moved = 0;
  for (auto& [key, i] : changed(*c.original, *c.model)) moved += key.find("bn") != std::string::npos;
  EXPECT_GE(moved, 4);  // at least one channel's scale and shift, and its partner's
  for (auto& e : c.model->state()) {
    if (e.key.find("bn") == std::string::npos || e.tensor->dtype() != DType::F32) continue;
    std::vector<float> a = e.tensor->to_vector(), b;
    for (auto& o : c.original->state())
      if (o.key == e.key) b = o.tensor->to_vector();
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b) << e.key;
  }
}

TEST(BnSecretMethod, WithoutBatchNormItIsNNSplitter) {
  Case a("bn_secret", "lenet5"), b("nnsplitter", "lenet5");
  auto ma = splitter::make_method(*a.model, a.layers, a.opt);
  auto mb = splitter::make_method(*b.model, b.layers, b.opt);
  auto da = a.data(), db = b.data();
  ma->run_episode(a.filters, da, 5);
  mb->run_episode(b.filters, db, 5);
  EXPECT_EQ(splitter::fingerprint(*a.model), splitter::fingerprint(*b.model));
}

// attack_aware: the episode's score is the worse of the deployed accuracy and the accuracy after
// the simulated attacker, so it is never below the deployed model's accuracy.
TEST(AttackAwareMethod, ScoreIsTheWorseOfDeployedAndAttacked) {
  Case c("attack_aware");
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  c.choose_for(*method);
  auto data = c.data();
  auto out = method->run_episode(c.filters, data, 5);
  c.model->set_training(false);
  EXPECT_GE(out.accuracy, data.accuracy());
  EXPECT_GT(out.steps, 0);
  EXPECT_FALSE(changed(*c.original, *c.model).empty());
}

// critical: the changed entries are the largest-magnitude ones of the chosen filters, as many
// per layer as nnsplitter's mask of the same filters holds.
TEST(CriticalMethod, TakesTheLargestWeightsOfTheChosenFiltersWithNNSplittersBudget) {
  Case c("critical");
  auto method = splitter::make_method(*c.model, c.layers, c.opt);
  auto data = c.data();
  method->run_episode(c.filters, data, 5);
  method->keep_episode_as_best();
  const auto budget = splitter::select_mask(c.layers, c.filters, c.opt.c, c.opt.eps);
  size_t checked = 0;
  for (const auto& m : method->best().masks()) {
    const auto& l = c.layers[size_t(m.layer)];
    ASSERT_EQ(m.index.size(), budget[size_t(m.layer)].index.size()) << l.key;
    if (m.index.empty()) continue;
    std::vector<float> w;
    for (auto& e : c.original->state())
      if (e.key == l.key) w = e.tensor->to_vector();
    float smallest_taken = INFINITY;
    for (int64_t i : m.index) smallest_taken = std::min(smallest_taken, std::fabs(w[size_t(i)]));
    const int64_t f = c.filters[size_t(m.layer)][0];
    for (int64_t j = 0; j < l.filter_size; ++j) {
      const int64_t i = f * l.filter_size + j;
      if (!std::binary_search(m.index.begin(), m.index.end(), i))
        EXPECT_LE(std::fabs(w[size_t(i)]), smallest_taken) << l.key << "[" << i << "]";
    }
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}

TEST(Methods, UnknownNameIsRefused) {
  Case c("nnsplitter");
  c.opt.method = "nope";
  EXPECT_THROW(splitter::make_method(*c.model, c.layers, c.opt), std::invalid_argument);
}

}  // namespace
