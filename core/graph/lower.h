// Lowering a zoo module tree (core/models/zoo.h) into a graph::Graph whose nodes point at the
// tree's leaf modules, so that both run on the same weights and modes.
#pragma once

#include "core/graph/graph.h"
#include "core/nn/module.h"

namespace nns::graph {

// The graph of `net` for inputs [N, in_channels, size, size]. Knows Sequential, BasicBlock,
// InvertedResidual and every leaf layer of core/nn/layers.h; any other module type throws
// std::invalid_argument naming its path. Node names are the module paths ("layer1.0.conv1");
// the ops a block does itself are named after the block ("layer1.0.add", "layer1.0.relu_out").
// The result has had infer_dims(). A graph::GraphNet (a model read from ONNX) gives its own
// graph (nodes pointing at its modules), after checking the input shape.
Graph lower_module_tree(nn::Module& net, int in_channels, int size);

}  // namespace nns::graph
