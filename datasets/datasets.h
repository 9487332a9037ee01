// The datasets layer in one include: Dataset and friends, file readers, the batch Loader.
#pragma once

#include "datasets/dataset.h"
#include "datasets/loader.h"
#include "datasets/readers.h"
