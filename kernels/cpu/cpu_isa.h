// Which x86 vector instruction set the CPU kernels with several builds run (chosen at run time).
//
// The library is compiled for x86-64-v3 (AVX2 + FMA); kernels that pay for AVX-512 (the direct
// convolution's micro-kernels) are also compiled, in their own translation units, for
// x86-64-v4, and selected when the CPU and OS support AVX-512 (cpuid + XCR0). The environment
// variable NNS_CPU_ISA=avx2|avx512 forces one (avx512 on a CPU without it is an error);
// set_cpu_isa overrides both, so that tests run every path in one process.
#pragma once

namespace nns::ops::cpu {

enum class CpuIsa { Auto, Avx2, Avx512 };

// Whether this build holds the AVX-512 kernels and this CPU (and OS) can run them.
bool cpu_avx512_usable();

// The instruction set the kernels use now: never Auto. Throws std::runtime_error when
// NNS_CPU_ISA holds an unknown value or asks for AVX-512 where it is not usable.
CpuIsa cpu_isa();

// Forces an instruction set for this process (Auto: back to NNS_CPU_ISA / detection). Throws
// std::invalid_argument for Avx512 where cpu_avx512_usable() is false. Not thread-safe: call
// between ops, not during them.
void set_cpu_isa(CpuIsa isa);

const char* cpu_isa_name(CpuIsa isa);

}  // namespace nns::ops::cpu
