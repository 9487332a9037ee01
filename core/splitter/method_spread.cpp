// The spread method. Hypothesis (docs/methods.md): on a BatchNorm network NNSplitter's damage is
// confined to one output channel per layer, and a per-channel renormalisation (BN statistics
// re-estimated, or BN's affine relearned) absorbs it like a dropped channel. If the changed
// weights instead sit in one *input* channel of every filter, each output channel receives a
// corrupted, spatially varying copy of that input map (sum over taps of dw * x_i), which no
// per-channel shift or scale can cancel: the damage is mixed into every output channel.
//
// The search chooses k input channels per layer (the controller's action space is the layer's
// input channels); the mask is the entries of W[:, i, ...] for the chosen i with |w - c| < eps,
// across all output filters; then NNSplitter's Adam and shared clamp. Same budget rule as
// nnsplitter (eps auto targets the same expected number of entries).
#include <algorithm>
#include <cmath>
#include <set>

#include "core/splitter/method.h"

namespace nns::splitter {

namespace {

class SpreadMethod : public Method {
 public:
  using Method::Method;

  std::vector<int> choices_per_layer() const override {
    std::vector<int> n;
    for (const auto& l : layers_) n.push_back(int(l.param->value.dim(1)));
    return n;
  }

  int64_t choice_size(size_t l) const override {
    const Tensor& w = layers_.at(l).param->value;
    return w.numel() / w.dim(1);
  }

  // Per layer: the entries of the chosen input channels within eps of c, ascending, and the
  // output filters they lie in (the filters whose weight gradient the obfuscation needs).
  std::vector<LayerMask> spread_mask(const FilterChoice& channels) const {
    if (channels.size() != layers_.size())
      throw std::invalid_argument("spread: " + std::to_string(channels.size()) +
                                  " channel lists for " + std::to_string(layers_.size()) +
                                  " layers");
    std::vector<LayerMask> masks(layers_.size());
    for (size_t l = 0; l < layers_.size(); ++l) {
      LayerMask& m = masks[l];
      m.layer = int(l);
      const Tensor w = layers_[l].param->value.to(Device::CPU);
      const int64_t out = w.dim(0), in = w.dim(1), area = w.numel() / (out * in);
      std::set<int32_t> chosen(channels[l].begin(), channels[l].end());
      std::set<int32_t> filters;
      for (int32_t i : chosen) {
        if (i < 0 || i >= in)
          throw std::out_of_range("spread: input channel " + std::to_string(i) + " of layer " +
                                  layers_[l].key + " outside [0, " + std::to_string(in) + ")");
        for (int64_t o = 0; o < out; ++o)
          for (int64_t r = 0; r < area; ++r) {
            const int64_t flat = (o * in + i) * area + r;
            if (std::fabs(w.f32()[flat] - opt_.c) < opt_.eps) {
              m.index.push_back(flat);
              filters.insert(int32_t(o));
            }
          }
      }
      std::sort(m.index.begin(), m.index.end());
      m.filters.assign(filters.begin(), filters.end());
    }
    return masks;
  }

 protected:
  MaskSet obfuscate_episode(const FilterChoice& channels, ObfuscationData& data, uint64_t,
                            EpisodeOutcome& out) override {
    return adam_episode(MaskSet(layers_, spread_mask(channels)), data, out);
  }
};

}  // namespace

MethodInfo spread_method_info() {
  return {"spread",
          "nnsplitter's objective on the entries |w - c| < eps of k chosen input channels across "
          "every filter of the layer (the search chooses input channels), so every output "
          "channel is damaged",
          "damage confined to a few output channels is absorbed by per-channel renormalisation "
          "(BN re-estimation, BN affine relearned); damage spread over one input channel of "
          "every filter reaches every output channel as a spatially varying term that no "
          "per-channel shift or scale cancels",
          {},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<SpreadMethod>(m, std::move(l), std::move(o));
          }};
}

}  // namespace nns::splitter
