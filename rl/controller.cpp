#include "rl/controller.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include "kernels/ops.h"

namespace nns::rl {

namespace {

// log sum exp of z over the entries not marked in `taken` (all when taken is empty).
double logsumexp(const float* z, int n, const std::vector<char>& taken) {
  double m = -std::numeric_limits<double>::infinity();
  for (int f = 0; f < n; ++f)
    if (taken.empty() || !taken[f]) m = std::max(m, double(z[f]));
  if (!std::isfinite(m)) return m;
  double s = 0;
  for (int f = 0; f < n; ++f)
    if (taken.empty() || !taken[f]) s += std::exp(double(z[f]) - m);
  return m + std::log(s);
}

// Index drawn from the (unnormalised) weights w over the entries not taken.
int draw_index(const std::vector<double>& w, const std::vector<char>& taken, Rng& rng) {
  double total = 0;
  int last = -1;
  for (size_t f = 0; f < w.size(); ++f)
    if (!taken[f]) {
      total += w[f];
      if (w[f] > 0) last = static_cast<int>(f);
    }
  if (last < 0) {  // every remaining weight underflowed: uniform over the remaining
    std::vector<int> rem;
    for (size_t f = 0; f < w.size(); ++f)
      if (!taken[f]) rem.push_back(static_cast<int>(f));
    return rem[rng.below(rem.size())];
  }
  const double u = rng.uniform() * total;
  double cum = 0;
  for (size_t f = 0; f < w.size(); ++f) {
    if (taken[f] || w[f] <= 0) continue;
    cum += w[f];
    if (u < cum) return static_cast<int>(f);
  }
  return last;  // rounding at the top end
}

void ensure(Tensor& t, const Shape& shape, Device device) {
  if (!t.defined() || t.device() != device || t.dtype() != DType::F32)
    t = Tensor(shape, DType::F32, device);
  else
    t.resize(shape);
}

}  // namespace

double draw_log_prob(const float* z, int n, const std::vector<int32_t>& draws,
                     bool with_replacement, std::vector<double>* grad) {
  if (grad) grad->assign(static_cast<size_t>(n), 0.0);
  for (int32_t d : draws)
    if (d < 0 || d >= n)
      throw std::invalid_argument("draw_log_prob: filter " + std::to_string(d) +
                                  " out of range [0, " + std::to_string(n) + ")");
  double lp = 0;
  if (with_replacement) {
    const double lse = logsumexp(z, n, {});
    for (int32_t d : draws) lp += double(z[d]) - lse;
    if (grad) {
      const double k = double(draws.size());
      for (int f = 0; f < n; ++f) (*grad)[f] = -k * std::exp(double(z[f]) - lse);
      for (int32_t d : draws) (*grad)[d] += 1.0;
    }
    return lp;
  }
  if (static_cast<int>(draws.size()) > n)
    throw std::invalid_argument("draw_log_prob: more draws than filters without replacement");
  std::vector<char> taken(static_cast<size_t>(n), 0);
  for (int32_t d : draws) {
    if (taken[d])
      throw std::invalid_argument("draw_log_prob: filter " + std::to_string(d) +
                                  " drawn twice without replacement");
    // log q(d) = z_d - log sum_{f not taken} exp z_f; d q-renormalised gradient:
    // d log q(d) / dz_f = [f == d] - q(f) for f not taken, 0 for taken f.
    const double lse = logsumexp(z, n, taken);
    lp += double(z[d]) - lse;
    if (grad) {
      for (int f = 0; f < n; ++f)
        if (!taken[f]) (*grad)[f] -= std::exp(double(z[f]) - lse);
      (*grad)[d] += 1.0;
    }
    taken[d] = 1;
  }
  return lp;
}

Controller::Controller(std::vector<int> filters_per_layer, ControllerOptions opt)
    : filters_(std::move(filters_per_layer)), opt_(std::move(opt)) {
  if (filters_.empty()) throw std::invalid_argument("controller: no layers");
  if (opt_.hidden < 1 || opt_.token_size < 1)
    throw std::invalid_argument("controller: hidden and token_size must be positive");
  if (opt_.k < 1) throw std::invalid_argument("controller: k must be at least 1");
  int min_filters = std::numeric_limits<int>::max();
  for (int n : filters_) {
    if (n < 1) throw std::invalid_argument("controller: every layer needs at least one filter");
    min_filters = std::min(min_filters, n);
  }
  max_token_ = std::min(opt_.token_size - 1, min_filters);
  offset_.resize(filters_.size() + 1, 0);
  for (size_t l = 0; l < filters_.size(); ++l) offset_[l + 1] = offset_[l] + filters_[l];
  total_filters_ = offset_.back();

  cell_ = make_cell(opt_.cell, opt_.token_size, opt_.hidden, opt_.device);
  Rng rng(opt_.seed);
  cell_->init_uniform(rng, opt_.init_range);
  const size_t L = filters_.size();
  head_w_.resize(L);
  head_b_.resize(L);
  for (size_t l = 0; l < L; ++l) {
    std::vector<float> w(size_t(filters_[l]) * size_t(opt_.hidden));
    for (auto& e : w)
      e = static_cast<float>(rng.uniform(-double(opt_.init_range), double(opt_.init_range)));
    head_w_[l].value = Tensor::from_vector(w, {filters_[l], opt_.hidden}).to(opt_.device);
    head_b_[l].value = Tensor({filters_[l]}, DType::F32, opt_.device);  // zero
  }
  optim::AdamOptions ao;
  ao.lr = opt_.lr;
  adam_ = std::make_unique<optim::Adam>(parameters(), ao);
}

Controller::~Controller() = default;

int64_t Controller::adam_steps() const { return adam_->steps(); }

std::vector<std::pair<std::string, nn::Parameter*>> Controller::parameters() {
  std::vector<std::pair<std::string, nn::Parameter*>> out;
  for (auto& [name, p] : cell_->parameters()) out.emplace_back("cell." + name, p);
  for (size_t l = 0; l < filters_.size(); ++l) {
    out.emplace_back("decoders." + std::to_string(l) + ".weight", &head_w_[l]);
    out.emplace_back("decoders." + std::to_string(l) + ".bias", &head_b_[l]);
  }
  return out;
}

void Controller::forward(const std::vector<const std::vector<int32_t>*>& tokens) {
  const int L = num_layers(), B = static_cast<int>(tokens.size()), H = opt_.hidden;
  const int V = opt_.token_size;
  batch_ = B;
  // One-hot inputs [L, B, V], built on the host.
  std::vector<float> x(size_t(L) * B * V, 0.0f);
  for (int b = 0; b < B; ++b) {
    const auto& tk = *tokens[b];
    if (static_cast<int>(tk.size()) != L)
      throw std::invalid_argument("controller: " + std::to_string(tk.size()) +
                                  " tokens for " + std::to_string(L) + " layers");
    for (int l = 0; l < L; ++l) {
      if (tk[l] < 0 || tk[l] >= V)
        throw std::invalid_argument("controller: token " + std::to_string(tk[l]) +
                                    " out of range [0, " + std::to_string(V) + ")");
      x[(size_t(l) * B + b) * V + tk[l]] = 1.0f;
    }
  }
  ensure(x_, {L, B, V}, opt_.device);
  x_.copy_from(Tensor::from_vector(x, {L, B, V}));
  const Tensor& h = cell_->forward(x_);

  const ops::Context ctx{opt_.device, nullptr};
  ensure(logits_, {total_filters_ * B}, opt_.device);
  for (int l = 0; l < L; ++l) {
    ops::Epilogue epi;
    epi.bias = head_b_[l].value.f32();
    ops::linear_forward(ctx, B, H, filters_[l], h.f32() + int64_t(l) * B * H,
                        head_w_[l].value.f32(), epi, logits_.f32() + offset_[l] * B);
  }
  logits_host_ = logits_.to_vector();
}

const float* Controller::host_logits(int layer, int b) const {
  return logits_host_.data() + offset_[layer] * batch_ + int64_t(b) * filters_[layer];
}

const std::vector<int32_t>& Controller::draw_order(const Episode& e, int layer) const {
  return e.draws.empty() ? e.filters[layer] : e.draws[layer];
}

int Controller::draws_in(size_t layer) const {
  return opt_.with_replacement ? opt_.k : std::min(opt_.k, filters_[layer]);
}

void Controller::check_episode(const Episode& e) const {
  const size_t L = filters_.size();
  const auto& d = e.draws.empty() ? e.filters : e.draws;
  if (e.tokens.size() != L || d.size() != L)
    throw std::invalid_argument("controller: episode does not match the " + std::to_string(L) +
                                " layers");
  for (size_t l = 0; l < L; ++l)
    if (static_cast<int>(d[l].size()) != draws_in(l))
      throw std::invalid_argument("controller: episode layer " + std::to_string(l) + " has " +
                                  std::to_string(d[l].size()) + " draws, expected " +
                                  std::to_string(draws_in(l)));
}

Controller::Episode Controller::sample(Rng& rng) {
  const int L = num_layers();
  Episode e;
  e.tokens.resize(L);
  for (int l = 0; l < L; ++l) e.tokens[l] = static_cast<int32_t>(rng.below(uint64_t(max_token_) + 1));
  forward({&e.tokens});
  e.filters.resize(L);
  e.draws.resize(L);
  for (int l = 0; l < L; ++l) {
    const int n = filters_[l];
    const float* z = host_logits(l, 0);
    double m = -std::numeric_limits<double>::infinity();
    for (int f = 0; f < n; ++f) m = std::max(m, double(z[f]));
    std::vector<double> w(n);
    for (int f = 0; f < n; ++f) w[f] = std::exp(double(z[f]) - m);
    std::vector<char> taken(n, 0);
    auto& dr = e.draws[l];
    for (int j = 0; j < draws_in(size_t(l)); ++j) {
      const int f = draw_index(w, taken, rng);
      dr.push_back(f);
      if (!opt_.with_replacement) taken[f] = 1;
    }
    e.filters[l] = dr;
    std::sort(e.filters[l].begin(), e.filters[l].end());
    e.log_prob += draw_log_prob(z, n, dr, opt_.with_replacement);
  }
  return e;
}

double Controller::log_prob(const Episode& e) {
  check_episode(e);
  forward({&e.tokens});
  double lp = 0;
  for (int l = 0; l < num_layers(); ++l)
    lp += draw_log_prob(host_logits(l, 0), filters_[l], draw_order(e, l), opt_.with_replacement);
  return lp;
}

std::vector<std::vector<float>> Controller::probabilities(const std::vector<int32_t>& tokens) {
  forward({&tokens});
  std::vector<std::vector<float>> out(filters_.size());
  for (int l = 0; l < num_layers(); ++l) {
    const int n = filters_[l];
    const float* z = host_logits(l, 0);
    const double lse = logsumexp(z, n, {});
    out[l].resize(n);
    for (int f = 0; f < n; ++f) out[l][f] = static_cast<float>(std::exp(double(z[f]) - lse));
  }
  return out;
}

double Controller::backward(const std::vector<Episode>& episodes,
                            const std::vector<double>& rewards) {
  if (episodes.empty()) throw std::invalid_argument("controller update: no episodes");
  if (episodes.size() != rewards.size())
    throw std::invalid_argument("controller update: " + std::to_string(episodes.size()) +
                                " episodes but " + std::to_string(rewards.size()) + " rewards");
  for (const auto& e : episodes) check_episode(e);
  const int L = num_layers(), B = static_cast<int>(episodes.size()), H = opt_.hidden;
  double baseline = 0;
  for (double r : rewards) baseline += r;
  baseline /= B;

  std::vector<const std::vector<int32_t>*> tokens;
  for (const auto& e : episodes) tokens.push_back(&e.tokens);
  forward(tokens);

  // d loss / d logits on the host: loss = -sum_i A_i log pi_i, A_i = R_i - b.
  double loss = 0;
  std::vector<float> dlog(size_t(total_filters_) * B, 0.0f);
  std::vector<double> g;
  for (int l = 0; l < L; ++l) {
    const int n = filters_[l];
    for (int b = 0; b < B; ++b) {
      const double adv = rewards[b] - baseline;
      const double lp =
          draw_log_prob(host_logits(l, b), n, draw_order(episodes[b], l), opt_.with_replacement, &g);
      loss -= adv * lp;
      float* d = dlog.data() + offset_[l] * B + int64_t(b) * n;
      for (int f = 0; f < n; ++f) d[f] = static_cast<float>(-adv * g[f]);
    }
  }

  const ops::Context ctx{opt_.device, nullptr};
  ensure(dlogits_, {total_filters_ * B}, opt_.device);
  dlogits_.copy_from(Tensor::from_vector(dlog, {total_filters_ * B}));
  ensure(dh_, {L, B, H}, opt_.device);
  const Tensor& h = cell_->output();
  for (int l = 0; l < L; ++l) {
    const float* dz = dlogits_.f32() + offset_[l] * B;
    const float* hl = h.f32() + int64_t(l) * B * H;
    head_w_[l].ensure_grad();
    head_b_[l].ensure_grad();
    ops::linear_backward_weight(ctx, B, H, filters_[l], hl, dz, head_w_[l].grad.f32(),
                                head_b_[l].grad.f32(), nullptr, 0);
    ops::linear_backward_data(ctx, B, H, filters_[l], dz, head_w_[l].value.f32(),
                              dh_.f32() + int64_t(l) * B * H);
  }
  cell_->backward(dh_, /*need_dx=*/false);
  return loss;
}

double Controller::update(const std::vector<Episode>& episodes,
                          const std::vector<double>& rewards) {
  const double loss = backward(episodes, rewards);
  adam_->step();
  return loss;
}

std::vector<std::pair<std::string, Tensor>> Controller::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  // parameters() and Adam::state() do not modify anything; they are non-const for their
  // callers' sake.
  auto* self = const_cast<Controller*>(this);
  for (auto& [name, p] : self->parameters()) out.emplace_back(name, p->value.to(Device::CPU));
  for (auto& [name, t] : adam_->state()) out.emplace_back(name, t->to(Device::CPU));
  Tensor step({1}, DType::I64);
  step.i64()[0] = adam_->steps();
  out.emplace_back("adam_step", step);
  return out;
}

void Controller::load_state(const std::vector<std::pair<std::string, Tensor>>& state) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state) by_name[name] = &t;
  auto find = [&](const std::string& name, const Tensor& like) -> const Tensor& {
    auto it = by_name.find(name);
    if (it == by_name.end())
      throw std::invalid_argument("controller load_state: missing '" + name + "'");
    const Tensor& t = *it->second;
    if (t.dtype() != like.dtype() || t.shape() != like.shape())
      throw std::invalid_argument("controller load_state: '" + name + "' is " +
                                  dtype_name(t.dtype()) + shape_str(t.shape()) + ", expected " +
                                  dtype_name(like.dtype()) + shape_str(like.shape()));
    return t;
  };
  // Validate everything before touching anything.
  auto params = parameters();
  auto moments = adam_->state();
  for (auto& [name, p] : params) find(name, p->value);
  for (auto& [name, t] : moments) find(name, *t);
  Tensor step_like({1}, DType::I64);
  const Tensor& step = find("adam_step", step_like);
  for (auto& [name, p] : params) p->value.copy_from(*by_name[name]);
  for (auto& [name, t] : moments) t->copy_from(*by_name[name]);
  const int64_t t = step.device() == Device::CPU ? step.i64()[0] : step.to(Device::CPU).i64()[0];
  if (t < 0) throw std::invalid_argument("controller load_state: negative adam_step");
  adam_->set_steps(t);
}

}  // namespace nns::rl
