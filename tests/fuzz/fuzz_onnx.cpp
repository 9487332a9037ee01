// Fuzzes io::parse_onnx (every --weights model.onnx goes through it): the protobuf parse, the
// import (shape arithmetic, op and attribute checks, limits), then for what imports: a forward
// pass of one image when the network is small, and the writer's round trip (what it writes
// parses back to the same state). Input: the file's bytes.
#include <cstring>

#include "core/graph/graph_net.h"
#include "core/io/onnx.h"
#include "core/splitter/secrets.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.onnx";
  std::unique_ptr<nns::models::Model> m;
  try {
    m = nns::io::parse_onnx(std::string(reinterpret_cast<const char*>(data), size), kName);
  } catch (const nns::io::UnsupportedModel& e) {
    nns::fuzz::expect_named(std::runtime_error(e.what()), kName);
    return 0;
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
    return 0;
  }
  const auto& s = m->spec();
  nns::fuzz::expect(s.in_channels >= 1 && s.input_size >= 1 && s.num_classes >= 1, "spec");
  // A forward pass of one image when every value is small (the limits allow far larger ones).
  auto* net = dynamic_cast<nns::graph::GraphNet*>(&m->net());
  nns::fuzz::expect(net != nullptr, "a GraphNet");
  int64_t elements = 0;
  for (const auto& shape : net->graph().shapes(1)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    elements += n;
  }
  for (auto& e : m->state()) elements += e.tensor->numel();
  if (elements < (int64_t(1) << 20)) {
    nns::Tensor x({1, s.in_channels, s.input_size, s.input_size});
    m->set_training(false);
    const nns::Tensor& y = m->forward(x);
    nns::fuzz::expect(y.ndim() == 2 && y.dim(0) == 1 && y.dim(1) == s.num_classes, "logits shape");
  }
  // The writer's output reads back to the same state.
  auto back = nns::io::parse_onnx(nns::io::serialize_onnx(*m, {{"k", "v"}}), kName);
  nns::fuzz::expect(nns::splitter::fingerprint(*back) == nns::splitter::fingerprint(*m),
                    "round trip");
  return 0;
}
