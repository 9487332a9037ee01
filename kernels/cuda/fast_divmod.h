// Integer division by a run-time constant without a hardware divide: q = umulhi(n, mul) >> shr
// (Granlund & Montgomery, "Division by invariant integers using multiplication", PLDI 1994; the
// same construction as CUTLASS's FastDivmod). The implicit-GEMM convolutions split a flat GEMM
// index into (image, row, column) or (channel, kh, kw) for every element they load; a 32-bit
// integer divide costs ~20 instructions on the GPU, this costs three.
//
// Valid for divisors d in [1, 2^31) and dividends n in [0, 2^31); callers check that their
// index ranges fit in int32 before building one. Host and device compute the same result, so
// the host tests exercise exactly this code.
#pragma once

#include <stdint.h>

#include "kernels/common/hd.h"

namespace nns::ops::cuda {

struct FastDivmod {
  int divisor = 1;
  unsigned mul = 0;
  unsigned shr = 0;

  FastDivmod() = default;
  // With l = ceil(log2 d) and p = 31 + l: mul = ceil(2^p / d) < 2^32, shr = p - 32; then
  // floor(n / d) = floor(n * mul / 2^p) for every n < 2^31. d == 1 is special-cased.
  explicit FastDivmod(int d) : divisor(d) {
    if (d > 1) {
      unsigned l = 0;
      while ((1u << l) < static_cast<unsigned>(d)) ++l;
      const unsigned p = 31 + l;
      mul = static_cast<unsigned>(((uint64_t(1) << p) + static_cast<unsigned>(d) - 1) /
                                  static_cast<unsigned>(d));
      shr = p - 32;
    }
  }

  NNS_HD int div(int n) const {
    if (divisor == 1) return n;
#if defined(__CUDA_ARCH__)
    const unsigned hi = __umulhi(static_cast<unsigned>(n), mul);
#else
    const unsigned hi =
        static_cast<unsigned>((uint64_t(static_cast<unsigned>(n)) * uint64_t(mul)) >> 32);
#endif
    return static_cast<int>(hi >> shr);
  }

  // q = n / divisor, r = n % divisor.
  NNS_HD void divmod(int n, int& q, int& r) const {
    q = div(n);
    r = n - q * divisor;
  }
};

}  // namespace nns::ops::cuda
