#include "kernels/cpu/cpu_isa.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cpu/direct_micro.h"

namespace nns::ops::cpu {

namespace {

CpuIsa g_override = CpuIsa::Auto;

// NNS_CPU_ISA, else the best usable; read once.
CpuIsa from_environment() {
  static const CpuIsa isa = [] {
    const char* v = std::getenv("NNS_CPU_ISA");
    const std::string s = v ? v : "";
    if (s.empty() || s == "auto") return cpu_avx512_usable() ? CpuIsa::Avx512 : CpuIsa::Avx2;
    if (s == "avx2") return CpuIsa::Avx2;
    if (s == "avx512") {
      if (!cpu_avx512_usable())
        throw std::runtime_error(
            "NNS_CPU_ISA=avx512, but this CPU (or this build) cannot run AVX-512 kernels");
      return CpuIsa::Avx512;
    }
    throw std::runtime_error("NNS_CPU_ISA='" + s + "': expected avx2, avx512 or auto");
  }();
  return isa;
}

}  // namespace

bool cpu_avx512_usable() {
  // __builtin_cpu_supports checks the OS's XCR0 state as well as cpuid. The micro-kernels use
  // AVX512F only; x86-64-v4 (their compile target) also implies BW, CD, DQ and VL.
  static const bool usable =
      direct_kernels_avx512() != nullptr && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return usable;
}

CpuIsa cpu_isa() { return g_override != CpuIsa::Auto ? g_override : from_environment(); }

void set_cpu_isa(CpuIsa isa) {
  if (isa == CpuIsa::Avx512 && !cpu_avx512_usable())
    throw std::invalid_argument("set_cpu_isa: AVX-512 kernels are not usable on this CPU/build");
  g_override = isa;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx2:
      return "avx2";
    case CpuIsa::Avx512:
      return "avx512";
    default:
      return "auto";
  }
}

}  // namespace nns::ops::cpu
