// What the CPU backend's C files (winograd.c, bn.c) share.

// Each operation rounds on its own, as Go's do, in every version that
// target_clones builds and on every architecture: no fused multiply-adds
// (which clang, unlike GCC, makes by default on arm64).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

// VGG_CLONES builds a function for AVX-512, AVX2 and plain x86-64, and the
// loader picks the one the CPU runs (GCC on x86-64 Linux, whose loader
// resolves the ifunc that target_clones makes; elsewhere one version).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define VGG_HAVE_CLONES 1
#define VGG_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VGG_CLONES
#endif
