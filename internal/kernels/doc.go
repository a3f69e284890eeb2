//go:build linux && cgo

// Package kernels compiles the project's own CUDA kernels (kernels.cu at
// the repository root, embedded as vgg16.KernelsSource) with NVRTC for the
// GPU present, caches the result on disk, loads it into the current CUDA
// context and gives each kernel a typed launcher.
//
// Compilation targets the device's own architecture as a CUBIN
// (--gpu-architecture=sm_XY) when NVRTC knows it, and falls back to PTX for
// the newest architecture NVRTC knows (compute_XY), which the driver
// JIT-compiles, when the GPU is newer than NVRTC. Options always include
// --fmad=false: no multiply-add is fused, so the element-wise kernels give
// the CPU backend's float32 results bit for bit (SGD, dropout, ReLU); and
// --std=c++17.
//
// The cache lives in os.UserCacheDir()/vgg16/kernels, one file per
// sha256(source, options), target architecture, NVRTC version and driver
// version; a stale or unreadable entry is recompiled.
//
// Checking the source without a GPU or NVRTC: the tests compile kernels.cu
// for the host with an emulation header and compare every kernel with the
// CPU backend (TestEmulated*, needs g++), and compile it with NVRTC when
// one is installed (TestCompile*). With the CUDA toolkit,
//
//	nvcc -arch=sm_90 -std=c++17 -cubin -o /dev/null kernels.cu
//
// is the same check as the one NVRTC makes at run time; the lead's
// Makefile runs it as a target.
package kernels
