#include "core/splitter/method_common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "kernels/ops.h"

namespace nns::splitter::detail {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

std::vector<std::vector<float>> sorted_layer_values(const std::vector<EligibleLayer>& layers) {
  std::vector<std::vector<float>> out;
  for (const auto& l : layers) {
    Tensor w = l.param->value.to(Device::CPU);
    out.emplace_back(w.f32(), w.f32() + w.numel());
    std::sort(out.back().begin(), out.back().end());
  }
  return out;
}

float quantile(const std::vector<float>& sorted, double q) {
  const double pos = q * double(sorted.size() - 1);
  const size_t i = size_t(pos);
  if (i + 1 >= sorted.size()) return sorted.back();
  const double f = pos - double(i);
  return float(double(sorted[i]) + f * (double(sorted[i + 1]) - double(sorted[i])));
}

int64_t SwapLayer::displaced() const {
  int64_t d = 0;
  for (size_t i = 0; i < value.size(); ++i) d += !same_bits(value[i], original[i]);
  return d;
}

int take_pairs(SwapLayer& s, std::vector<SwapPair> pairs, int max_pairs) {
  auto better = [](const SwapPair& a, const SwapPair& b) {
    return a.gain > b.gain || (a.gain == b.gain && (a.i < b.i || (a.i == b.i && a.j < b.j)));
  };
  std::vector<char> used(s.index.size(), 0);
  int64_t displaced = s.displaced();
  int done = 0;
  // Displacement after a swap: each of a, b is displaced unless it gets its original back.
  auto change = [&](uint32_t a, uint32_t b) {
    return int64_t(!same_bits(s.value[b], s.original[a])) -
           int64_t(!same_bits(s.value[a], s.original[a]));
  };
  auto scan = [&](std::vector<SwapPair>::iterator from, std::vector<SwapPair>::iterator to) {
    for (auto p = from; p != to && done < max_pairs; ++p) {
      if (used[p->i] || used[p->j]) continue;
      const int64_t next = displaced + change(p->i, p->j) + change(p->j, p->i);
      if (next > s.budget) continue;
      std::swap(s.value[p->i], s.value[p->j]);
      displaced = next;
      used[p->i] = used[p->j] = 1;
      ++done;
    }
  };
  // The order is total (ties broken by the positions), so sorting a head that is likely to hold
  // every pair taken, then the rest only when it did not, equals one full sort.
  const size_t head = std::min(pairs.size(), size_t(64) * size_t(std::max(max_pairs, 1)) + 1024);
  std::nth_element(pairs.begin(), pairs.begin() + ptrdiff_t(head), pairs.end(), better);
  std::sort(pairs.begin(), pairs.begin() + ptrdiff_t(head), better);
  scan(pairs.begin(), pairs.begin() + ptrdiff_t(head));
  if (done < max_pairs && head < pairs.size()) {
    std::sort(pairs.begin() + ptrdiff_t(head), pairs.end(), better);
    scan(pairs.begin() + ptrdiff_t(head), pairs.end());
  }
  return done;
}

namespace {

void write_values(const std::vector<EligibleLayer>& layers, const SwapLayer& s,
                  const std::vector<float>& values) {
  Tensor& w = layers[s.layer].param->value;
  const int64_t n = int64_t(s.index.size());
  Tensor ih({n}, DType::I64), vh({n});
  std::copy(s.index.begin(), s.index.end(), ih.i64());
  std::copy(values.begin(), values.end(), vh.f32());
  Tensor id = ih.to(w.device()), vd = vh.to(w.device());
  ops::scatter(ops::Context{w.device(), nullptr}, n, id.i64(), vd.f32(), w.f32());
}

// Sets each state's grad to dLoss/dw at its entries, summed over `batches` training batches. The
// model is in masked mode with the states' grad_filters.
void accumulate_gradient(models::Model& model, const std::vector<EligibleLayer>& layers,
                         std::vector<SwapLayer>& states, ObfuscationData& data, int batches) {
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

// The rounds; returns the lowest accuracy and leaves its values in best_values (the model holds
// the last round's values).
double run_rounds(models::Model& model, const std::vector<EligibleLayer>& layers,
                  std::vector<SwapLayer>& states, ObfuscationData& data, const SwapRounds& opt,
                  const PairSource& source, EpisodeOutcome& out,
                  std::vector<std::vector<float>>& best_values) {
  double best = INFINITY;
  int since_best = 0;
  for (int round = 0; round <= opt.rounds; ++round) {
    if (opt.stop && opt.stop->load()) break;
    if (round > 0) {
      accumulate_gradient(model, layers, states, data, opt.batches);
      int swapped = 0;
      for (size_t k = 0; k < states.size(); ++k) {
        auto& s = states[k];
        const int pairs = std::max(1, int(std::ceil(opt.step * double(s.budget) / 2)));
        if (take_pairs(s, source(k, s), pairs) > 0) {
          write_values(layers, s, s.value);
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
    } else if (++since_best >= opt.patience) {
      break;
    }
  }
  return best;
}

}  // namespace

MaskSet swap_search(models::Model& model, const std::vector<EligibleLayer>& layers,
                    std::vector<SwapLayer> states, const std::vector<LayerMask>& chosen,
                    ObfuscationData& data, const SwapRounds& opt, const PairSource& source,
                    EpisodeOutcome& out) {
  std::vector<std::vector<float>> best_values;
  for (auto& s : states) best_values.push_back(s.value);
  double best = INFINITY;
  if (!states.empty()) {
    std::vector<LayerMask> grad_masks;
    for (const auto& s : states) grad_masks.push_back({s.layer, s.grad_filters, s.index});
    enter_masked_mode(model, layers, grad_masks, opt.bn_batch_stats);
    try {
      best = run_rounds(model, layers, states, data, opt, source, out, best_values);
    } catch (...) {
      leave_masked_mode(model);
      throw;
    }
    leave_masked_mode(model);
    for (auto& s : states) write_values(layers, s, s.original);
  } else {
    best = data.accuracy();
    out.evaluations = 1;
  }
  // The secret entries: those whose best value differs from the pretrained one.
  std::vector<LayerMask> changed(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    changed[l].layer = int(l);
    changed[l].filters = chosen.at(l).filters;
  }
  for (size_t i = 0; i < states.size(); ++i)
    for (size_t e = 0; e < states[i].index.size(); ++e)
      if (!same_bits(best_values[i][e], states[i].original[e]))
        changed[states[i].layer].index.push_back(states[i].index[e]);
  MaskSet set(layers, std::move(changed));  // reads the pretrained values, now back in place
  for (size_t i = 0; i < states.size(); ++i) write_values(layers, states[i], best_values[i]);
  out.accuracy = best;
  return set;
}

}  // namespace nns::splitter::detail
