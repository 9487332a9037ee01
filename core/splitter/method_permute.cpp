// The permute method (hypothesis in method.h): values swapped among the entries of the chosen
// filters, so every layer keeps its multiset of values exactly.
//
// Per layer the budget of displaced entries is the size of NNSplitter's mask for the same
// filters (|w - c| < eps), rounded up to even: the same number of secrets, spent on swaps.
// A round: the loss gradient g over a few training batches at the current weights; per layer,
// the disjoint pairs (i, j) of the filters' entries with the largest first-order loss gain
// (g_i - g_j)(v_j - v_i) > 0 that keep the layer within its budget; then the validation
// accuracy. The lowest accuracy's permutation is kept; `patience` rounds without a new minimum
// (or permute_rounds) end the episode.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/splitter/method.h"
#include "kernels/ops.h"

namespace nns::splitter {

namespace {

// Bitwise: a swap of +0.0 and -0.0 is a change the secrets must hold.
bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

struct LayerState {
  int layer = 0;
  std::vector<int64_t> index;          // every entry of the chosen filters, ascending
  std::vector<float> original, value;  // pretrained and current values at `index`
  std::vector<double> grad;
  int64_t budget = 0;
  int64_t displaced() const {
    int64_t d = 0;
    for (size_t i = 0; i < value.size(); ++i) d += !same_bits(value[i], original[i]);
    return d;
  }
};

void write_values(const std::vector<EligibleLayer>& layers, const LayerState& s,
                  const std::vector<float>& values) {
  Tensor& w = layers[s.layer].param->value;
  const int64_t n = int64_t(s.index.size());
  Tensor ih({n}, DType::I64), vh({n});
  std::copy(s.index.begin(), s.index.end(), ih.i64());
  std::copy(values.begin(), values.end(), vh.f32());
  Tensor id = ih.to(w.device()), vd = vh.to(w.device());
  ops::scatter(ops::Context{w.device(), nullptr}, n, id.i64(), vd.f32(), w.f32());
}

// Adds dLoss/dw at the layers' entries over `batches` training batches to each state's grad.
// The model is in masked mode (gradients only for the chosen filters).
void accumulate_gradient(models::Model& model, const std::vector<EligibleLayer>& layers,
                         std::vector<LayerState>& states, ObfuscationData& data, int batches) {
  const Device dev = model.device();
  Tensor x(Shape{1}, DType::F32, dev), y(Shape{1}, DType::I32, dev);
  Tensor probs(Shape{1}, DType::F32, dev), dlogits(Shape{1}, DType::F32, dev);
  for (auto& s : states) s.grad.assign(s.index.size(), 0.0);
  for (int b = 0; b < batches; ++b) {
    if (!data.next_batch(x, y) && !data.next_batch(x, y)) break;  // epoch end: start the next
    cross_entropy_backward(model, x, y, probs, dlogits);
    for (auto& s : states) {
      Tensor g = layers[s.layer].param->grad.to(Device::CPU);
      for (size_t i = 0; i < s.index.size(); ++i) s.grad[i] += g.f32()[s.index[i]];
    }
  }
}

// One round of swaps in one layer; returns how many pairs were swapped.
int swap_round(LayerState& s, int max_pairs) {
  struct Pair {
    double gain;
    uint32_t i, j;
  };
  std::vector<Pair> pairs;
  const size_t n = s.index.size();
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      double gain = (s.grad[i] - s.grad[j]) * (double(s.value[j]) - double(s.value[i]));
      if (gain > 0) pairs.push_back({gain, uint32_t(i), uint32_t(j)});
    }
  std::sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
    return a.gain > b.gain || (a.gain == b.gain && (a.i < b.i || (a.i == b.i && a.j < b.j)));
  });
  std::vector<char> used(n, 0);
  int64_t displaced = s.displaced();
  int done = 0;
  for (const auto& p : pairs) {
    if (done >= max_pairs) break;
    if (used[p.i] || used[p.j]) continue;
    // Displacement after the swap: each of i, j is displaced unless it gets its original back.
    auto change = [&](uint32_t a, uint32_t b) {
      return int64_t(!same_bits(s.value[b], s.original[a])) -
             int64_t(!same_bits(s.value[a], s.original[a]));
    };
    const int64_t next = displaced + change(p.i, p.j) + change(p.j, p.i);
    if (next > s.budget) continue;
    std::swap(s.value[p.i], s.value[p.j]);
    displaced = next;
    used[p.i] = used[p.j] = 1;
    ++done;
  }
  return done;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

MaskSet PermuteMethod::obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                         uint64_t, EpisodeOutcome& out) {
  // Budgets from NNSplitter's mask; candidates: every entry of the chosen filters.
  auto budget_masks = select_mask(layers_, filters, opt_.c, opt_.eps);
  std::vector<LayerState> states;
  std::vector<LayerMask> grad_masks;
  for (const auto& bm : budget_masks) {
    if (bm.index.size() == 0 || bm.filters.empty()) continue;
    const EligibleLayer& l = layers_[bm.layer];
    LayerState s;
    s.layer = bm.layer;
    for (int32_t f : bm.filters)
      for (int64_t j = 0; j < l.filter_size; ++j) s.index.push_back(int64_t(f) * l.filter_size + j);
    s.budget = std::min<int64_t>(int64_t(s.index.size()), int64_t(bm.index.size() + 1) / 2 * 2);
    Tensor w = l.param->value.to(Device::CPU);
    for (int64_t i : s.index) s.original.push_back(w.f32()[i]);
    s.value = s.original;
    LayerMask gm = bm;
    gm.index = s.index;
    grad_masks.push_back(std::move(gm));
    states.push_back(std::move(s));
  }
  std::vector<std::vector<float>> best_values;
  for (auto& s : states) best_values.push_back(s.value);
  double best = INFINITY;
  if (!states.empty()) {
    const auto* stop = opt_.obfuscator.stop;
    int since_best = 0;
    enter_masked_mode(model_, layers_, grad_masks);
    try {
      for (int round = 0; round <= opt_.permute_rounds; ++round) {
        if (stop && stop->load()) break;
        if (round > 0) {
          accumulate_gradient(model_, layers_, states, data, opt_.permute_batches);
          int swapped = 0;
          for (auto& s : states) {
            int pairs = std::max(1, int(std::ceil(opt_.permute_step * double(s.budget) / 2)));
            if (swap_round(s, pairs) > 0) {
              write_values(layers_, s, s.value);
              ++swapped;
            }
          }
          ++out.steps;
          if (swapped == 0) break;
        }
        const double acc = data.accuracy();
        ++out.evaluations;
        if (acc < best) {
          best = acc;
          since_best = 0;
          for (size_t i = 0; i < states.size(); ++i) best_values[i] = states[i].value;
        } else if (++since_best >= opt_.obfuscator.patience) {
          break;
        }
      }
    } catch (...) {
      leave_masked_mode(model_);
      throw;
    }
    leave_masked_mode(model_);
    for (auto& s : states) write_values(layers_, s, s.original);
  } else {
    best = data.accuracy();
    out.evaluations = 1;
  }
  // The secret entries: those whose best value differs from the pretrained one.
  std::vector<LayerMask> changed(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    changed[l].layer = int(l);
    changed[l].filters = budget_masks[l].filters;
  }
  for (size_t i = 0; i < states.size(); ++i)
    for (size_t e = 0; e < states[i].index.size(); ++e)
      if (!same_bits(best_values[i][e], states[i].original[e]))
        changed[states[i].layer].index.push_back(states[i].index[e]);
  MaskSet set(layers_, std::move(changed));  // reads the pretrained values, now back in place
  for (size_t i = 0; i < states.size(); ++i) write_values(layers_, states[i], best_values[i]);
  out.accuracy = best;
  return set;
}

std::map<std::string, std::string> PermuteMethod::metadata() const {
  auto m = Method::metadata();
  m["permute_rounds"] = std::to_string(opt_.permute_rounds);
  m["permute_batches"] = std::to_string(opt_.permute_batches);
  m["permute_step"] = num(opt_.permute_step);
  return m;
}

}  // namespace nns::splitter
