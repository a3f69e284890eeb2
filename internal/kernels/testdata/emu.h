// emu.h: just enough of CUDA C++ to compile kernels.cu for the host, for
// tests on machines without a GPU (internal/kernels, and the stand-in CUDA
// libraries of internal/gpu). Each CUDA thread is a call of the kernel
// function with its own thread_local threadIdx/blockIdx; blocks run one
// after another, so a static array serves as a block's __shared__ memory.
//
// launch_seq runs a block's threads one after another on the calling
// thread: right for kernels without __syncthreads. launch_threads gives
// each CUDA thread a std::thread and __syncthreads a std::barrier.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

struct dim3 {
	unsigned x = 1, y = 1, z = 1;
};
thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier;
thread_local unsigned long emu_syncs; // the __syncthreads this thread reached in its launch

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

inline void __syncthreads() {
	if (!emu_barrier) {
		std::fprintf(stderr, "emu.h: __syncthreads in a kernel launched with launch_seq\n");
		std::abort();
	}
	emu_syncs++;
	emu_barrier->arrive_and_wait();
}
inline double __longlong_as_double(unsigned long long v) {
	double d;
	std::memcpy(&d, &v, 8);
	return d;
}
inline float __uint_as_float(unsigned v) {
	float f;
	std::memcpy(&f, &v, 4);
	return f;
}
inline unsigned __float_as_uint(float f) {
	unsigned v;
	std::memcpy(&v, &f, 4);
	return v;
}
using std::exp;
using std::log;

template <typename F>
void launch_seq(unsigned grid, unsigned block, F f) {
	gridDim.x = grid;
	blockDim.x = block;
	emu_barrier = nullptr;
	for (unsigned b = 0; b < grid; b++) {
		for (unsigned t = 0; t < block; t++) {
			blockIdx.x = b;
			threadIdx.x = t;
			f();
		}
	}
}

template <typename F>
void launch_threads(unsigned grid, unsigned block, F f) {
	// One std::thread per CUDA thread for the whole grid: each runs its
	// thread of every block in turn, the barrier between blocks keeping
	// them apart (a block's __shared__ arrays are static, shared by all).
	//
	// Every thread of a block must reach each __syncthreads: on a GPU, one
	// that skips a barrier the others reach is undefined (a hang, or a
	// barrier paired with the wrong one). Here the skipped barrier would
	// pair with the block's end and go unnoticed, so each thread counts
	// the barriers it reached, the counts must agree, and each thread
	// leaves the barrier after its last block (arrive_and_drop), so that
	// a thread short of barriers ends the launch instead of hanging it.
	gridDim.x = grid;
	blockDim.x = block;
	std::barrier<> bar(block);
	emu_barrier = &bar;
	std::vector<unsigned long> syncs(block);
	std::vector<std::thread> ts;
	for (unsigned t = 0; t < block; t++) {
		ts.emplace_back([=, &bar, &syncs] {
			threadIdx.x = t;
			emu_syncs = 0;
			for (unsigned b = 0; b < grid; b++) {
				blockIdx.x = b;
				f();
				if (b + 1 < grid) {
					bar.arrive_and_wait();
				} else {
					bar.arrive_and_drop();
				}
			}
			syncs[t] = emu_syncs;
		});
	}
	for (auto& th : ts) th.join();
	emu_barrier = nullptr;
	for (unsigned t = 1; t < block; t++) {
		if (syncs[t] != syncs[0]) {
			std::fprintf(stderr, "emu.h: thread %u reached __syncthreads %lu times, thread 0 %lu times, over %u blocks: a barrier not every thread of a block reaches\n",
					t, syncs[t], syncs[0], grid);
			std::abort();
		}
	}
}
