// The random filter policy: k distinct filters per layer, sorted, inside each layer's range;
// the same Rng stream gives the same draws; a layer with k or fewer filters gives all of them.
#include <gtest/gtest.h>

#include <set>

#include "rl/random_policy.h"

using namespace nns;

TEST(RandomPolicy, DrawsKDistinctSortedFiltersPerLayer) {
  rl::RandomPolicy p({4, 16, 3}, 3);
  Rng a(5), b(5);
  std::set<int32_t> seen_in_16;
  for (int i = 0; i < 50; ++i) {
    auto e = p.sample(a);
    ASSERT_EQ(e.filters.size(), 3u);
    const int sizes[] = {4, 16, 3};
    for (size_t l = 0; l < 3; ++l) {
      ASSERT_EQ(e.filters[l].size(), 3u);
      for (size_t j = 0; j < 3; ++j) {
        EXPECT_GE(e.filters[l][j], 0);
        EXPECT_LT(e.filters[l][j], sizes[l]);
        if (j) EXPECT_LT(e.filters[l][j - 1], e.filters[l][j]);
        if (l == 1) seen_in_16.insert(e.filters[l][j]);
      }
    }
    EXPECT_EQ(p.sample(b).filters, e.filters);
  }
  EXPECT_EQ(seen_in_16.size(), 16u) << "50 draws of 3 should reach every one of 16 filters";
  Rng c(6);
  auto small = rl::RandomPolicy({4, 2}, 3).sample(c);
  EXPECT_EQ(small.filters[0].size(), 3u);
  EXPECT_EQ(small.filters[1], (std::vector<int32_t>{0, 1}));
  EXPECT_THROW(rl::RandomPolicy({4, 2}, 0), std::invalid_argument);
}
