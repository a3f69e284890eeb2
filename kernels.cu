// kernels.cu: the project's own CUDA kernels, for the operations cuDNN and
// cuBLAS do not cover. internal/kernels compiles this file at run time with
// NVRTC for the GPU present, so it is plain CUDA C++ with no #include:
// NVRTC compiles it without the CUDA headers. Every kernel is extern "C" so
// its name is the symbol internal/kernels looks up.
//
// Conventions: element counts are 64-bit; element-wise kernels use
// grid-stride loops so any grid size is correct; nothing uses float atomics,
// so every result is the same from run to run. The tests also compile this
// file for the host with a small emulation header (internal/kernels), so it
// keeps to what that header provides: blockIdx/blockDim/threadIdx/gridDim
// .x, __syncthreads, __shared__ arrays, exp/log/sqrt/rintf,
// __longlong_as_double, __uint_as_float and __float_as_uint.

typedef unsigned long long u64;
typedef unsigned int u32;

#define GRID_STRIDE(i, n) \
	for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

// Block size of the reduction kernels (softmax_xent_rows, mean_rows): a
// power of two, and the launchers in internal/kernels use exactly this.
#define RED_THREADS 128

// mix64 is the splitmix64 finaliser, tensor.mix64 in Go: unsigned 64-bit
// arithmetic wraps the same way in both languages.
__device__ __forceinline__ u64 mix64(u64 z) {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

// dropout_hash is tensor.DropoutHash: the high 32 bits of the mixed
// counter.
__device__ __forceinline__ u32 dropout_hash(u64 key, u64 i) {
	return (u32)(mix64(key + i * 0x9e3779b97f4a7c15ULL) >> 32);
}

// Activations are float32, or bfloat16 with --precision bf16 (the kernels
// ending in _bf16, at the end of the file); parameters, their gradients,
// statistics, losses and labels are always float32. A bf16 is the top 16
// bits of a float32, stored as an unsigned short; kernels compute in float
// (double for sums) and only load and store activations as bf16. It is
// defined here, before the templates that serve both types.
typedef unsigned short bf16;

// bf16_to_f32 is tensor.FromBF16: the float whose top bits h are (exact).
__device__ __forceinline__ float bf16_to_f32(bf16 h) {
	return __uint_as_float((u32)h << 16);
}

// f32_to_bf16 is tensor.ToBF16 bit for bit: f rounded to the nearest
// bfloat16, ties to even; a NaN stays a quiet NaN of the same sign.
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
	u32 u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (bf16)(u >> 16);
}

// ldf and stf read and write element i of activations stored as float or
// bf16, as a float: the templates below take either type.
__device__ __forceinline__ float ldf(const float* p, u64 i) { return p[i]; }
__device__ __forceinline__ float ldf(const bf16* p, u64 i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void stf(float* p, u64 i, float v) { p[i] = v; }
__device__ __forceinline__ void stf(bf16* p, u64 i, float v) { p[i] = f32_to_bf16(v); }

// The batch-norm kernels' loop bodies take n consecutive elements of one
// plane at once: 4 where the planes and pointers allow (one 16-byte access
// of floats, 8 of bf16s), else 1. n is a constant once the loops inline.
struct alignas(16) F4 {
	float v[4];
};
struct alignas(8) H4 {
	bf16 v[4];
};

// ldn and stn read and write elements i..i+n-1 (n is 1 or 4) as floats;
// with n = 4, p + i must be aligned to 4 elements (packs4 checks).
__device__ __forceinline__ void ldn(const float* p, u64 i, float* v, int n) {
	if (n == 4) {
		F4 q = *(const F4*)(p + i);
		for (int j = 0; j < 4; j++) v[j] = q.v[j];
	} else {
		v[0] = p[i];
	}
}
__device__ __forceinline__ void ldn(const bf16* p, u64 i, float* v, int n) {
	if (n == 4) {
		H4 q = *(const H4*)(p + i);
		for (int j = 0; j < 4; j++) v[j] = bf16_to_f32(q.v[j]);
	} else {
		v[0] = bf16_to_f32(p[i]);
	}
}
__device__ __forceinline__ void stn(float* p, u64 i, const float* v, int n) {
	if (n == 4) {
		F4 q;
		for (int j = 0; j < 4; j++) q.v[j] = v[j];
		*(F4*)(p + i) = q;
	} else {
		p[i] = v[0];
	}
}
__device__ __forceinline__ void stn(bf16* p, u64 i, const float* v, int n) {
	if (n == 4) {
		H4 q;
		for (int j = 0; j < 4; j++) q.v[j] = f32_to_bf16(v[j]);
		*(H4*)(p + i) = q;
	} else {
		p[i] = f32_to_bf16(v[0]);
	}
}

// aligned4 says whether p is aligned for ldn/stn<4> at multiples of 4.
template <typename T> __device__ __forceinline__ bool aligned4(const T* p) {
	return ((unsigned long long)p) % (4 * sizeof(T)) == 0;
}

// relu_forward: y = max(x, 0), NaN kept (Go's max propagates NaN); y may
// be x.
extern "C" __global__ void relu_forward(float* y, const float* x, u64 n) {
	GRID_STRIDE(i, n) {
		float v = x[i];
		y[i] = (v > 0.0f || v != v) ? v : 0.0f;
	}
}

// relu_backward: dx = dy where y > 0, else 0; dx may be dy.
extern "C" __global__ void relu_backward(float* dx, const float* dy, const float* y, u64 n) {
	GRID_STRIDE(i, n) {
		dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
	}
}

// dropout_apply: y = x·scale where DropoutHash(key, i) >= threshold, else
// 0. The same kernel serves forward (x) and backward (dy); scale is
// float32(1/(1-p)) computed on the host as the CPU backend computes it.
// key_at, when not null, holds the key instead: a recorded step (CUDA
// graph) reads each replay's key from there.
extern "C" __global__ void dropout_apply(float* y, const float* x, u64 n, u64 key, const u64* key_at, u32 threshold,
		float scale) {
	if (key_at) key = *key_at;
	GRID_STRIDE(i, n) {
		y[i] = dropout_hash(key, i) >= threshold ? x[i] * scale : 0.0f;
	}
}

// sgd_step is torch.optim.SGD's update, in the CPU backend's float32
// operation order (compile with --fmad=false so that no multiply-add is
// fused and the results match the CPU bit for bit):
//   d = g + wd·p; m = first ? d : mom·m + damp·d (when mom != 0);
//   d = nesterov ? d + mom·m : m; p -= lr·d.
// damp is 1 - dampening. lr_at, when not null, holds the learning rate
// instead (a recorded step reads each replay's rate from there).
extern "C" __global__ void sgd_step(float* p, const float* g, float* m, u64 n, float lr, const float* lr_at, float mom,
		float wd, float damp, int nesterov, int first) {
	if (lr_at) lr = *lr_at;
	GRID_STRIDE(i, n) {
		float pi = p[i];
		float d = g[i] + wd * pi;
		if (mom != 0.0f) {
			float mi = first ? d : mom * m[i] + damp * d;
			m[i] = mi;
			d = nesterov ? d + mom * mi : mi;
		}
		p[i] = pi - lr * d;
	}
}

// bias_add_rows: y[r, c] += b[c] for a row-major [rows, cols] y (Linear's
// bias after the GEMM).
extern "C" __global__ void bias_add_rows(float* y, const float* b, u64 rows, u64 cols) {
	GRID_STRIDE(i, rows * cols) {
		y[i] += b[i % cols];
	}
}

// col_sum: out[c] = Σ_r x[r, c] for a row-major [rows, cols] x (Linear's
// bias gradient), summed in double in row order.
extern "C" __global__ void col_sum(float* out, const float* x, u64 rows, u64 cols) {
	GRID_STRIDE(c, cols) {
		double s = 0.0;
		for (u64 r = 0; r < rows; r++) {
			s += (double)x[r * cols + c];
		}
		out[c] = (float)s;
	}
}

// block_max and block_sum reduce one value per thread of a RED_THREADS
// block into every thread's return value, through shared memory and in a
// fixed order. NaN wins in block_max, as in the CPU backend's max.
__device__ __forceinline__ double nan_max(double a, double b) {
	if (a != a) return a;
	if (b != b) return b;
	return b > a ? b : a;
}

__device__ double block_max(double v, double* red) {
	red[threadIdx.x] = v;
	__syncthreads();
	for (u32 s = RED_THREADS / 2; s > 0; s >>= 1) {
		if (threadIdx.x < s) {
			red[threadIdx.x] = nan_max(red[threadIdx.x], red[threadIdx.x + s]);
		}
		__syncthreads();
	}
	double r = red[0];
	__syncthreads();
	return r;
}

__device__ double block_sum(double v, double* red) {
	red[threadIdx.x] = v;
	__syncthreads();
	for (u32 s = RED_THREADS / 2; s > 0; s >>= 1) {
		if (threadIdx.x < s) {
			red[threadIdx.x] += red[threadIdx.x + s];
		}
		__syncthreads();
	}
	double r = red[0];
	__syncthreads();
	return r;
}

// softmax_xent is softmax_xent_rows (below) for logits and dlogits stored
// as T (float, or bf16 for softmax_xent_rows_bf16); red is the block's
// shared scratch. dlogits is the float g rounded to T.
template <typename T>
__device__ __forceinline__ void softmax_xent(double* row_loss, T* dlogits, const T* logits, const float* labels,
		u64 n, u64 c, double smoothing, double* red) {
	const double nan = __longlong_as_double(0x7ff8000000000000ULL);
	const double neg_inf = __longlong_as_double(0xfff0000000000000ULL);
	for (u64 i = blockIdx.x; i < n; i += gridDim.x) {
		const T* row = logits + i * c;
		float lf = labels[i];
		bool bad = !(lf >= 0.0f && lf < (float)c);
		long long label = bad ? -1 : (long long)lf;

		double m = neg_inf;
		for (u64 j = threadIdx.x; j < c; j += RED_THREADS) {
			m = nan_max(m, (double)ldf(row, j));
		}
		m = block_max(m, red);

		double z = 0.0;
		for (u64 j = threadIdx.x; j < c; j += RED_THREADS) {
			z += exp((double)ldf(row, j) - m);
		}
		z = block_sum(z, red);
		double logz = log(z); // log softmax = (x-m) - log z, not x - (m + log z): see the CPU's

		double part = 0.0;
		double base = smoothing / (double)c;
		for (u64 j = threadIdx.x; j < c; j += RED_THREADS) {
			double t = base + ((long long)j == label ? 1.0 - smoothing : 0.0);
			double lp = ((double)ldf(row, j) - m) - logz;
			part -= t * lp;
			if (dlogits) {
				double g = (exp(lp) - t) / (double)n;
				stf(dlogits, i * c + j, bad ? (float)nan : (float)g);
			}
		}
		part = block_sum(part, red);
		if (threadIdx.x == 0) {
			row_loss[i] = bad ? nan : part;
		}
	}
}

// softmax_xent_rows: one block of RED_THREADS per row of logits [n, c]
// (grid-stride over rows). For row i with label y = labels[i] (a class
// index stored as float) and smoothing eps, the target is
// t_j = eps/c + (1-eps)·[j == y]; it writes
//   row_loss[i] = -Σ_j t_j·log softmax_j      (double, summed by mean_rows)
//   dlogits[i, j] = (softmax_j - t_j) / n     (unless dlogits is null)
// in double, as the CPU backend computes them. A label outside [0, c)
// makes the row's loss and gradient NaN (the CPU backend panics instead).
extern "C" __global__ void softmax_xent_rows(double* row_loss, float* dlogits, const float* logits,
		const float* labels, u64 n, u64 c, double smoothing) {
	__shared__ double red[RED_THREADS];
	softmax_xent(row_loss, dlogits, logits, labels, n, c, smoothing, red);
}

// mean_rows: out[0] = (float)(Σ_i rows[i] / n), one block of RED_THREADS.
extern "C" __global__ void mean_rows(float* out, const double* rows, u64 n) {
	__shared__ double red[RED_THREADS];
	double s = 0.0;
	for (u64 i = threadIdx.x; i < n; i += RED_THREADS) {
		s += rows[i];
	}
	s = block_sum(s, red);
	if (threadIdx.x == 0) {
		out[0] = (float)(s / (double)n);
	}
}

// ---- Batch norm fused with ReLU (NCHW, float32 data) -----------------------
//
// The training forward is two launches over the data: bn_stats (per-channel
// sums in double, each block one share of one channel) and bn_apply (the
// normalisation and the ReLU in one pass), with bn_finish in between, one
// thread per channel. The backward is the same shape: bn_grad_stats,
// bn_grad_finish, bn_grad_apply. Partial sums go to part[] and are added in
// a fixed order, so results are the same from run to run. Element j of
// channel ch's m = n·hw elements is x[(j/hw·c + ch)·hw + j%hw].

// chan_of is the channel of element i of an [n, c, hw] tensor; small says
// that every index fits in 32 bits, where division is cheaper.
__device__ __forceinline__ u64 chan_of(u64 i, u64 c, u64 hw, bool small) {
	return small ? (u64)(((u32)i / (u32)hw) % (u32)c) : (i / hw) % c;
}

// at is the index of element j of channel ch.
__device__ __forceinline__ u64 at(u64 j, u64 ch, u64 c, u64 hw, bool small) {
	u64 i = small ? (u64)((u32)j / (u32)hw) : j / hw;
	return (i * c + ch) * hw + (j - i * hw);
}

// each_channel_packs calls f(i, ch, W) for every pack of W consecutive
// elements i..i+W-1 of one plane of an [n, c, hw] tensor (hw a multiple of
// W), ch its channel, spread over the grid. Where a plane (one image's
// channel, hw contiguous elements) fills a block, blocks take whole planes
// and threads walk along them: one modulo a plane instead of a division an
// element, which would cost the memory-bound kernels that use this a large
// share of their time. Unrolled so that each thread has several loads in
// flight.
template <int W, typename F>
__device__ __forceinline__ void each_channel_packs(u64 n, u64 c, u64 hw, F f) {
	u64 q = hw / W;  // packs a plane
	if (q >= blockDim.x) {
		for (u64 plane = blockIdx.x; plane < n * c; plane += gridDim.x) {
			u64 ch = plane % c, base = plane * hw;
#pragma unroll(W == 1 ? 4 : 2)
			for (u64 p = threadIdx.x; p < q; p += blockDim.x) {
				f(base + W * p, ch, W);
			}
		}
		return;
	}
	u64 total = n * c * hw;
	bool small = total < 0xffffffffULL;
	GRID_STRIDE(k, total / W) {
		f(W * k, chan_of(W * k, c, hw, small), W);
	}
}

// each_channel_pack is each_channel_packs with packs of n = 4 when wide
// (hw a multiple of 4 and the pointers aligned: packs4), else single
// elements: f(i, ch, n) for elements i..i+n-1 of one plane.
template <typename F>
__device__ __forceinline__ void each_channel_pack(u64 n, u64 c, u64 hw, bool wide, F f) {
	if (wide) {
		each_channel_packs<4>(n, c, hw, f);
	} else {
		each_channel_packs<1>(n, c, hw, f);
	}
}

// each_in_share_packs calls f(k, W) for the index k of every pack of W
// consecutive elements (hw a multiple of W) of share s of channel ch (the
// block's part of bn_stats and its like): whole images [s·⌈n/splits⌉, …)
// when a plane fills the block, walked along each plane without division;
// otherwise packs [s·⌈n·hw/W/splits⌉, …) of the channel's n·hw/W.
template <int W, typename F>
__device__ __forceinline__ void each_in_share_packs(u64 n, u64 c, u64 hw, u64 ch, u64 s, u32 splits, F f) {
	u64 q = hw / W;  // packs a plane
	if (hw >= RED_THREADS) {
		u64 per = (n + splits - 1) / splits, lo = s * per, hi = lo + per < n ? lo + per : n;
		for (u64 i = lo; i < hi; i++) {
			u64 base = (i * c + ch) * hw;
#pragma unroll(W == 1 ? 4 : 2)
			for (u64 p = threadIdx.x; p < q; p += RED_THREADS) {
				f(base + W * p, W);
			}
		}
		return;
	}
	u64 m = n * q, per = (m + splits - 1) / splits;  // the channel's packs
	u64 lo = s * per, hi = lo + per < m ? lo + per : m;
	bool small = n * c * hw < 0xffffffffULL;
#pragma unroll(W == 1 ? 4 : 2)
	for (u64 j = lo + threadIdx.x; j < hi; j += RED_THREADS) {
		f(at(W * j, ch, c, hw, small), W);
	}
}

// each_in_share_pack is each_in_share_packs with packs of n = 4 when wide,
// else single elements: f(k, n) for elements k..k+n-1 of one plane.
template <typename F>
__device__ __forceinline__ void each_in_share_pack(u64 n, u64 c, u64 hw, u64 ch, u64 s, u32 splits, bool wide, F f) {
	if (wide) {
		each_in_share_packs<4>(n, c, hw, ch, s, splits, f);
	} else {
		each_in_share_packs<1>(n, c, hw, ch, s, splits, f);
	}
}

// packs4 says whether the batch-norm kernels may take packs of 4: planes of
// whole packs and every pointer aligned.
template <typename T>
__device__ __forceinline__ bool packs4(u64 hw, const T* a, const T* b = nullptr, const T* c = nullptr, const T* d = nullptr) {
	return hw % 4 == 0 && aligned4(a) && aligned4(b) && aligned4(c) && aligned4(d);
}

// bn_scale is gamma·inv as bn_apply multiplies by it and bn_grad_finish
// saves it: from the saved (float) 1/std, so that the backward, which has
// only that, gets the same float. relu_cut says whether the fused ReLU
// zeroed an element x of the forward, recomputed from x as bn_apply
// computes its output (same operations, no fused multiply-add): the
// backward reads x, dy and the statistics, and not the forward's output.
__device__ __forceinline__ float bn_scale(const float* gamma, const float* inv, u64 ch) {
	return (float)((double)gamma[ch] * (double)inv[ch]);
}
__device__ __forceinline__ bool relu_cut(float x, float mu, float sc, float be) {
	return !((x - mu) * sc + be > 0.0f);
}

// bn_out is an element x of batch norm's output from the batch statistics
// (mean mu, scale sc = bn_scale) and beta, and affine_out one from the
// running statistics folded into a scale and shift; each then max(·, 0)
// when relu, NaN kept. Every kernel that writes or recomputes the output
// (the pooled ones included) computes it here, so that they agree bit for
// bit.
__device__ __forceinline__ float relu_out(float v, int relu) { return relu && !(v > 0.0f) && v == v ? 0.0f : v; }
__device__ __forceinline__ float bn_out(float x, float mu, float sc, float be, int relu) {
	return relu_out((x - mu) * sc + be, relu);
}
__device__ __forceinline__ float affine_out(float x, float sc, float sh, int relu) { return relu_out(x * sc + sh, relu); }

// bn_stats: block b sums share b % splits of channel b / splits (the grid
// is exactly c·splits blocks of RED_THREADS): part[2b] = Σx, part[2b+1] =
// Σx². bn_stats_t is its body for x stored as T (float or bf16).
template <typename T>
__device__ __forceinline__ void bn_stats_t(double* part, const T* x, u64 n, u64 c, u64 hw, u32 splits, double* red) {
	u64 ch = blockIdx.x / splits, s = blockIdx.x % splits;
	double sum = 0.0, sq = 0.0;
	each_in_share_pack(n, c, hw, ch, s, splits, packs4(hw, x), [&](u64 k, int N) {
		float v[4];
		ldn(x, k, v, N);
		for (int j = 0; j < N; j++) {
			double d = (double)v[j];
			sum += d;
			sq += d * d;
		}
	});
	sum = block_sum(sum, red);
	sq = block_sum(sq, red);
	if (threadIdx.x == 0) {
		part[2 * blockIdx.x] = sum;
		part[2 * blockIdx.x + 1] = sq;
	}
}

extern "C" __global__ void bn_stats(double* part, const float* x, u64 n, u64 c, u64 hw, u32 splits) {
	__shared__ double red[RED_THREADS];
	bn_stats_t(part, x, n, c, hw, splits, red);
}

// bn_finish, one thread per channel: the batch mean and 1/sqrt(var + eps)
// (saved for the backward), the running statistics moved towards the batch
// mean and unbiased variance (PyTorch's BatchNorm2d), and
// scale = gamma·inv for bn_apply. shift, when not null, is the bias of the
// convolution before, left out of x: the running mean moves towards the
// mean of x + shift.
// bn_finish_channel is bn_finish of channel ch, given its sums s = Σx and
// q = Σx² over the m elements.
__device__ __forceinline__ void bn_finish_channel(u64 ch, double s, double q, float* save_mean, float* save_inv,
		float* run_mean, float* run_var, float* scale, const float* gamma, const float* shift, u64 m, double eps,
		double momentum) {
	double mean = s / (double)m;
	double var = q / (double)m - mean * mean;
	if (var < 0.0) var = 0.0;
	double inv = 1.0 / sqrt(var + eps);
	double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
	save_mean[ch] = (float)mean;
	save_inv[ch] = (float)inv;
	double shifted = shift ? mean + (double)shift[ch] : mean;
	run_mean[ch] = (float)((1.0 - momentum) * (double)run_mean[ch] + momentum * shifted);
	run_var[ch] = (float)((1.0 - momentum) * (double)run_var[ch] + momentum * unbiased);
	scale[ch] = bn_scale(gamma, save_inv, ch);
}

extern "C" __global__ void bn_finish(float* save_mean, float* save_inv, float* run_mean, float* run_var,
		float* scale, const float* gamma, const float* shift, const double* part, u64 c, u32 splits, u64 m, double eps,
		double momentum) {
	GRID_STRIDE(ch, c) {
		double s = 0.0, q = 0.0;
		for (u32 k = 0; k < splits; k++) {
			s += part[2 * (ch * splits + k)];
			q += part[2 * (ch * splits + k) + 1];
		}
		bn_finish_channel(ch, s, q, save_mean, save_inv, run_mean, run_var, scale, gamma, shift, m, eps, momentum);
	}
}

// bn_scales, one thread per channel: scale = gamma·inv from the saved
// 1/std, as bn_finish gave it to bn_apply: bn_apply after it recomputes a
// forward's output bit for bit (a model that keeps no batch-norm outputs
// recomputes them in the backward).
extern "C" __global__ void bn_scales(float* scale, const float* gamma, const float* save_inv, u64 c) {
	GRID_STRIDE(ch, c) {
		scale[ch] = bn_scale(gamma, save_inv, ch);
	}
}

// bn_apply: y = (x - mean[ch])·scale[ch] + beta[ch], then max(·, 0) when
// relu (NaN kept); y may be x. bn_apply_t is its body for x and y stored
// as T.
template <typename T>
__device__ __forceinline__ void bn_apply_t(T* y, const T* x, const float* mean, const float* scale, const float* beta,
		u64 n, u64 c, u64 hw, int relu) {
	each_channel_pack(n, c, hw, packs4(hw, y, (T*)x), [&](u64 i, u64 ch, int N) {
		float v[4];
		ldn(x, i, v, N);
		float mu = mean[ch], sc = scale[ch], be = beta[ch];
		for (int j = 0; j < N; j++) {
			v[j] = bn_out(v[j], mu, sc, be, relu);
		}
		stn(y, i, v, N);
	});
}

extern "C" __global__ void bn_apply(float* y, const float* x, const float* mean, const float* scale, const float* beta,
		u64 n, u64 c, u64 hw, int relu) {
	bn_apply_t(y, x, mean, scale, beta, n, c, hw, relu);
}

// bn_infer_coef, one thread per channel: scale = gamma/sqrt(run_var + eps)
// and shift = beta - run_mean·scale, in double and then rounded, as the CPU
// backend's BatchNormInfer does.
extern "C" __global__ void bn_infer_coef(float* scale, float* shift, const float* gamma, const float* beta,
		const float* run_mean, const float* run_var, u64 c, double eps) {
	GRID_STRIDE(ch, c) {
		double s = (double)gamma[ch] / sqrt((double)run_var[ch] + eps);
		scale[ch] = (float)s;
		shift[ch] = (float)((double)beta[ch] - (double)run_mean[ch] * s);
	}
}

// bn_affine: y = x·scale[ch] + shift[ch], then max(·, 0) when relu.
// bn_affine_t is its body for x and y stored as T.
template <typename T>
__device__ __forceinline__ void bn_affine_t(T* y, const T* x, const float* scale, const float* shift,
		u64 n, u64 c, u64 hw, int relu) {
	each_channel_pack(n, c, hw, packs4(hw, y, (T*)x), [&](u64 i, u64 ch, int N) {
		float v[4];
		ldn(x, i, v, N);
		float sc = scale[ch], sh = shift[ch];
		for (int j = 0; j < N; j++) {
			v[j] = affine_out(v[j], sc, sh, relu);
		}
		stn(y, i, v, N);
	});
}

extern "C" __global__ void bn_affine(float* y, const float* x, const float* scale, const float* shift,
		u64 n, u64 c, u64 hw, int relu) {
	bn_affine_t(y, x, scale, shift, n, c, hw, relu);
}

// bn_grad_stats: blocks as bn_stats. g is dy, or with relu dy where the
// forward's ReLU passed the element (relu_cut, from x, gamma and beta);
// xhat = (x - mean)·inv. part[2b] = Σg, part[2b+1] = Σg·xhat.
// bn_grad_stats_t is its body for dy and x stored as T.
template <typename T>
__device__ __forceinline__ void bn_grad_stats_t(double* part, const T* dy, const T* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu,
		double* red) {
	u64 ch = blockIdx.x / splits, s = blockIdx.x % splits;
	double mu = (double)mean[ch], iv = (double)inv[ch];
	float muf = mean[ch], sc = relu ? bn_scale(gamma, inv, ch) : 0.0f, be = relu ? beta[ch] : 0.0f;
	double sg = 0.0, sgx = 0.0;
	each_in_share_pack(n, c, hw, ch, s, splits, packs4(hw, dy, x), [&](u64 k, int N) {
		float gv[4], xv[4];
		ldn(dy, k, gv, N);
		ldn(x, k, xv, N);
		for (int j = 0; j < N; j++) {
			double g = (relu && relu_cut(xv[j], muf, sc, be)) ? 0.0 : (double)gv[j];
			sg += g;
			sgx += g * (((double)xv[j] - mu) * iv);
		}
	});
	sg = block_sum(sg, red);
	sgx = block_sum(sgx, red);
	if (threadIdx.x == 0) {
		part[2 * blockIdx.x] = sg;
		part[2 * blockIdx.x + 1] = sgx;
	}
}

extern "C" __global__ void bn_grad_stats(double* part, const float* dy, const float* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu) {
	__shared__ double red[RED_THREADS];
	bn_grad_stats_t(part, dy, x, mean, inv, gamma, beta, n, c, hw, splits, relu, red);
}

// bn_grad_finish, one thread per channel: dgamma = Σg·xhat, dbeta = Σg,
// and for bn_grad_apply coef[3ch..] = (gamma·inv, Σg/m, Σg·xhat/m).
__device__ __forceinline__ void bn_grad_finish_channel(u64 ch, double sg, double sgx, float* dgamma, float* dbeta,
		float* coef, const float* gamma, const float* inv, u64 m) {
	dgamma[ch] = (float)sgx;
	dbeta[ch] = (float)sg;
	coef[3 * ch] = bn_scale(gamma, inv, ch);
	coef[3 * ch + 1] = (float)(sg / (double)m);
	coef[3 * ch + 2] = (float)(sgx / (double)m);
}
extern "C" __global__ void bn_grad_finish(float* dgamma, float* dbeta, float* coef, const float* gamma,
		const float* inv, const double* part, u64 c, u32 splits, u64 m) {
	GRID_STRIDE(ch, c) {
		double sg = 0.0, sgx = 0.0;
		for (u32 k = 0; k < splits; k++) {
			sg += part[2 * (ch * splits + k)];
			sgx += part[2 * (ch * splits + k) + 1];
		}
		bn_grad_finish_channel(ch, sg, sgx, dgamma, dbeta, coef, gamma, inv, m);
	}
}

// bn_grad_apply: dx = gamma·inv·(g - Σg/m - xhat·Σ(g·xhat)/m), with g and
// xhat as in bn_grad_stats (coef[3ch] is bn_scale); dx may be dy.
// bn_grad_apply_t is its body for dx, dy and x stored as T.
template <typename T>
__device__ __forceinline__ void bn_grad_apply_t(T* dx, const T* dy, const T* x, const float* mean, const float* inv,
		const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu) {
	each_channel_pack(n, c, hw, packs4(hw, (const T*)dx, dy, x), [&](u64 i, u64 ch, int N) {
		float gv[4], xv[4];
		ldn(dy, i, gv, N);
		ldn(x, i, xv, N);
		float mu = mean[ch], iv = inv[ch], k0 = coef[3 * ch], k1 = coef[3 * ch + 1], k2 = coef[3 * ch + 2];
		float be = relu ? beta[ch] : 0.0f;
		for (int j = 0; j < N; j++) {
			float g = (relu && relu_cut(xv[j], mu, k0, be)) ? 0.0f : gv[j];
			float xhat = (xv[j] - mu) * iv;
			gv[j] = k0 * (g - k1 - xhat * k2);
		}
		stn(dx, i, gv, N);
	});
}

extern "C" __global__ void bn_grad_apply(float* dx, const float* dy, const float* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_grad_apply_t(dx, dy, x, mean, inv, coef, beta, n, c, hw, relu);
}

// tally, one block of RED_THREADS: acc[0] += loss[0]·n and acc[1] += the
// rows of logits [n, c] whose first maximum is at class labels[i], as the
// CPU backend's Tally (a float32 sum of products rounded one by one). The
// count is exact: it is summed as a double and is far below 2^24. tally_t
// is its body for logits stored as T.
template <typename T>
__device__ __forceinline__ void tally_t(float* acc, const float* loss, const T* logits, const float* labels, u64 n, u64 c,
		double* red) {
	double hits = 0.0;
	for (u64 i = threadIdx.x; i < n; i += RED_THREADS) {
		const T* row = logits + i * c;
		u64 best = 0;
		for (u64 j = 1; j < c; j++) {
			if (ldf(row, j) > ldf(row, best)) best = j;
		}
		if ((float)best == labels[i]) hits += 1.0;
	}
	hits = block_sum(hits, red);
	if (threadIdx.x == 0) {
		acc[0] = acc[0] + loss[0] * (float)n;
		acc[1] = acc[1] + (float)hits;
	}
}

extern "C" __global__ void tally(float* acc, const float* loss, const float* logits, const float* labels, u64 n, u64 c) {
	__shared__ double red[RED_THREADS];
	tally_t(acc, loss, logits, labels, n, c, red);
}

// ---- the input pipeline -----------------------------------------------------

// linear_tap is one output coordinate d (of m) of a bilinear resize from n
// inputs, as linearTaps in internal/cifar (PyTorch's upsample_bilinear2d,
// align_corners=False): src = (d + 0.5)·n/m − 0.5 clamped at 0, its floor
// i0 and the next input i1 (clamped to the last), and the weight of i1.
__device__ __forceinline__ void linear_tap(int n, int m, int d, int* i0, int* i1, float* l1) {
	float scale = (float)n / (float)m;
	float src = scale * ((float)d + 0.5f) - 0.5f;
	if (src < 0.0f) src = 0.0f;
	*i0 = (int)src;
	*l1 = src - (float)*i0;
	*i1 = *i0 < n - 1 ? *i0 + 1 : *i0;
}

// crop_pixel is channel plane p (side×side bytes) at (y, x), zero outside.
__device__ __forceinline__ float crop_pixel(const unsigned char* p, int side, int y, int x) {
	return (y < 0 || y >= side || x < 0 || x >= side) ? 0.0f : (float)p[y * side + x];
}

// crop_value is element i of crop_resize's output y [n, 3, s, s]: the
// pixel of the crop's window, resized and normalised (see crop_resize).
__device__ __forceinline__ float crop_value(u64 i, const unsigned char* images, const int* crops, const float* table,
		u32 s, u32 side) {
	u64 plane = (u64)s * s;
	int x = (int)(i % s), r = (int)((i / s) % s), c = (int)((i / plane) % 3);
	const int* cr = crops + 6 * (i / (3 * plane));
	const unsigned char* p = images + ((u64)cr[0] * 3 + c) * side * side;
	int top = cr[1], left = cr[2], h = cr[3], w = cr[4];
	int xd = cr[5] ? (int)s - 1 - x : x;
	float v;
	if (h == (int)s && w == (int)s) {
		v = crop_pixel(p, side, top + r, left + xd);
	} else {
		int y0, y1, x0, x1;
		float ly, lx;
		linear_tap(h, s, r, &y0, &y1, &ly);
		linear_tap(w, s, xd, &x0, &x1, &lx);
		float r0 = (1.0f - lx) * crop_pixel(p, side, top + y0, left + x0) + lx * crop_pixel(p, side, top + y0, left + x1);
		float r1 = (1.0f - lx) * crop_pixel(p, side, top + y1, left + x0) + lx * crop_pixel(p, side, top + y1, left + x1);
		v = rintf((1.0f - ly) * r0 + ly * r1);
	}
	return table[c * 256 + (int)v];
}

// crop_resize makes a batch of model inputs from uint8 images: y [n, 3, s,
// s] from images [N, 3, side, side] and crops [n, 6] (image index, top,
// left, height, width, flip), as cifar.ApplyCrop does on the CPU: the
// window (pixels outside the image read 0) resized bilinearly to s×s,
// rounded half to even to a byte (torchvision resizes uint8 images), then
// mirrored when flip and mapped through table [3, 256] (the normalisation).
// With --fmad=false every product and sum rounds as the Go code's does, so
// the floats are the CPU's bit for bit.
extern "C" __global__ void crop_resize(float* y, const unsigned char* images, const int* crops, const float* table,
		u64 n, u32 s, u32 side) {
	u64 plane = (u64)s * s;
	GRID_STRIDE(i, n * 3 * plane) {
		y[i] = crop_value(i, images, crops, table, s, side);
	}
}

// ---- bfloat16 activations ---------------------------------------------------
//
// The kernels of --precision bf16, which stores activations (and their
// gradients) as bf16 and everything else as float32: bf16, bf16_to_f32,
// f32_to_bf16 and the ldf/stf helpers are at the top of the file. Each
// kernel is its float32 namesake with bf16 loads and stores: the arithmetic
// is in float (double for sums) and each result is rounded once to bf16, so
// that an element-wise kernel gives the CPU backend's float32 result on the
// same (bf16) inputs, rounded to bf16, bit for bit. bn_finish,
// bn_infer_coef, bn_grad_finish and mean_rows work on float32 per-channel
// or per-row values and serve both precisions.

// cast_f32_bf16: y = x rounded to bf16 (tensor.ToBF16), n elements.
extern "C" __global__ void cast_f32_bf16(bf16* y, const float* x, u64 n) {
	GRID_STRIDE(i, n) {
		y[i] = f32_to_bf16(x[i]);
	}
}

// cast_bf16_f32: y = x as float32 (exact), n elements.
extern "C" __global__ void cast_bf16_f32(float* y, const bf16* x, u64 n) {
	GRID_STRIDE(i, n) {
		y[i] = bf16_to_f32(x[i]);
	}
}

// relu_forward_bf16: relu_forward on bf16 (NaN kept); y may be x.
extern "C" __global__ void relu_forward_bf16(bf16* y, const bf16* x, u64 n) {
	GRID_STRIDE(i, n) {
		float v = bf16_to_f32(x[i]);
		y[i] = (v > 0.0f || v != v) ? x[i] : (bf16)0;
	}
}

// relu_backward_bf16: dx = dy where y > 0, else 0, all bf16; dx may be dy.
extern "C" __global__ void relu_backward_bf16(bf16* dx, const bf16* dy, const bf16* y, u64 n) {
	GRID_STRIDE(i, n) {
		dx[i] = bf16_to_f32(y[i]) > 0.0f ? dy[i] : (bf16)0;
	}
}

// dropout_apply_bf16: dropout_apply on bf16 x and y: y = bf16(x·scale)
// where DropoutHash(key, i) >= threshold, else 0; key from *key_at when
// key_at is not null.
extern "C" __global__ void dropout_apply_bf16(bf16* y, const bf16* x, u64 n, u64 key, const u64* key_at, u32 threshold,
		float scale) {
	if (key_at) key = *key_at;
	GRID_STRIDE(i, n) {
		y[i] = dropout_hash(key, i) >= threshold ? f32_to_bf16(bf16_to_f32(x[i]) * scale) : (bf16)0;
	}
}

// bias_add_rows_bf16: y[r, c] = bf16(y[r, c] + b[c]) for a row-major bf16
// y [rows, cols] and float32 b [cols].
extern "C" __global__ void bias_add_rows_bf16(bf16* y, const float* b, u64 rows, u64 cols) {
	GRID_STRIDE(i, rows * cols) {
		y[i] = f32_to_bf16(bf16_to_f32(y[i]) + b[i % cols]);
	}
}

// col_sum_bf16: out[c] = Σ_r x[r, c] for a row-major bf16 x [rows, cols],
// summed in double in row order as col_sum does.
extern "C" __global__ void col_sum_bf16(float* out, const bf16* x, u64 rows, u64 cols) {
	GRID_STRIDE(c, cols) {
		double s = 0.0;
		for (u64 r = 0; r < rows; r++) {
			s += (double)bf16_to_f32(x[r * cols + c]);
		}
		out[c] = (float)s;
	}
}

// bias_grad_finish: a convolution's bias gradient db[ch] = Σ dy over
// channel ch, from the per-block sums that bn_stats (or bn_stats_bf16) left
// in part (sum and sum of squares of each of the splits blocks of a
// channel): one thread per channel adds its splits in order and rounds
// once to float. Splitting each channel over many blocks keeps the GPU
// busy where one block a channel (64 channels at 224x224) would not.
extern "C" __global__ void bias_grad_finish(float* db, const double* part, u64 c, u32 splits) {
	GRID_STRIDE(ch, c) {
		double s = 0.0;
		for (u32 k = 0; k < splits; k++) {
			s += part[2 * (ch * splits + k)];
		}
		db[ch] = (float)s;
	}
}

// softmax_xent_rows_bf16: softmax_xent_rows with bf16 logits and dlogits
// (row_loss and labels as there); mean_rows finishes the loss.
extern "C" __global__ void softmax_xent_rows_bf16(double* row_loss, bf16* dlogits, const bf16* logits,
		const float* labels, u64 n, u64 c, double smoothing) {
	__shared__ double red[RED_THREADS];
	softmax_xent(row_loss, dlogits, logits, labels, n, c, smoothing, red);
}

// tally_bf16: tally with bf16 logits.
extern "C" __global__ void tally_bf16(float* acc, const float* loss, const bf16* logits, const float* labels, u64 n,
		u64 c) {
	__shared__ double red[RED_THREADS];
	tally_t(acc, loss, logits, labels, n, c, red);
}

// The fused batch norm and ReLU with bf16 x, y, dy and dx; the statistics,
// parameters, part and coef are as in the float32 kernels.

// bn_stats_bf16: bn_stats of a bf16 x.
extern "C" __global__ void bn_stats_bf16(double* part, const bf16* x, u64 n, u64 c, u64 hw, u32 splits) {
	__shared__ double red[RED_THREADS];
	bn_stats_t(part, x, n, c, hw, splits, red);
}

// bn_apply_bf16: bn_apply from a bf16 x to a bf16 y; y may be x.
extern "C" __global__ void bn_apply_bf16(bf16* y, const bf16* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_apply_t(y, x, mean, scale, beta, n, c, hw, relu);
}

// bn_affine_bf16: bn_affine from a bf16 x to a bf16 y.
extern "C" __global__ void bn_affine_bf16(bf16* y, const bf16* x, const float* scale, const float* shift,
		u64 n, u64 c, u64 hw, int relu) {
	bn_affine_t(y, x, scale, shift, n, c, hw, relu);
}

// bn_grad_stats_bf16: bn_grad_stats of bf16 dy and x.
extern "C" __global__ void bn_grad_stats_bf16(double* part, const bf16* dy, const bf16* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu) {
	__shared__ double red[RED_THREADS];
	bn_grad_stats_t(part, dy, x, mean, inv, gamma, beta, n, c, hw, splits, relu, red);
}

// bn_grad_apply_bf16: bn_grad_apply with bf16 dx, dy and x; dx may be dy.
extern "C" __global__ void bn_grad_apply_bf16(bf16* dx, const bf16* dy, const bf16* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_grad_apply_t(dx, dy, x, mean, inv, coef, beta, n, c, hw, relu);
}

// pool_out is the output size of a max-pool window k with stride s over n
// inputs (no padding, floor); 0 when the window does not fit.
__device__ __forceinline__ u32 pool_out(u32 n, u32 k, u32 s) {
	return n >= k ? (n - k) / s + 1 : 0;
}

// pool2_fits says whether a pool takes the 2x2, stride-2 path: windows
// that tile x exactly (even h and w), indices that fit 32 bits, and x (and
// dx, where given) aligned for the pair accesses.
template <typename T>
__device__ __forceinline__ bool pool2_fits(u64 planes, u32 h, u32 w, u32 k, u32 s, const T* x, const T* dx = nullptr) {
	return k == 2 && s == 2 && h % 2 == 0 && w % 2 == 0 && planes * h * w < 0xffffffffULL &&
	       ((unsigned long long)x | (unsigned long long)dx) % (2 * sizeof(T)) == 0;
}

// pool2_window reads window i (of [planes, oh, ow]) of x [planes, h, w] into
// v in row-major order, as two pairs of one access each (aligned: w is
// even), and returns the index of its first element.
struct alignas(8) F2 {
	float v[2];
};
struct alignas(4) H2 {
	bf16 v[2];
};
template <typename T> struct pair_of;
template <> struct pair_of<float> { typedef F2 type; };
template <> struct pair_of<bf16> { typedef H2 type; };

template <typename T>
__device__ __forceinline__ u64 pool2_window(float* v, const T* x, u32 i, u32 h, u32 w, u32 oh, u32 ow) {
	typedef typename pair_of<T>::type P;
	u32 ox = i % ow, t = i / ow, oy = t % oh, plane = t / oh;
	u64 at = (u64)plane * h * w + (u64)(2 * oy) * w + 2 * ox;
	P top = *(const P*)(x + at), bottom = *(const P*)(x + at + w);
	v[0] = ldf(top.v, 0);
	v[1] = ldf(top.v, 1);
	v[2] = ldf(bottom.v, 0);
	v[3] = ldf(bottom.v, 1);
	return at;
}

// store_pair writes a and b to p[0] and p[1] as one access (p even).
template <typename T> __device__ __forceinline__ void store_pair(T* p, float a, float b) {
	typename pair_of<T>::type q;
	stf(q.v, 0, a);
	stf(q.v, 1, b);
	*(typename pair_of<T>::type*)p = q;
}

// max_pool_forward: y [planes, oh, ow] = the maximum of each k×k window,
// stride s, of x [planes, h, w], as the CPU backend's MaxPoolForward: a
// NaN in the window makes the output NaN (PyTorch's rule). Float32 NCHW
// images (bf16 ones are channels-last: max_pool_forward_nhwc).
extern "C" __global__ void max_pool_forward(float* y, const float* x, u64 planes, u32 h, u32 w, u32 k, u32 s) {
	u32 oh = pool_out(h, k, s), ow = pool_out(w, k, s);
	const float neg_inf = __uint_as_float(0xff800000u);
	if (pool2_fits(planes, h, w, k, s, x)) {
		// VGG's pool: each thread one window, read as two pairs.
		GRID_STRIDE(i, planes * oh * ow) {
			float v[4];
			pool2_window(v, x, (u32)i, h, w, oh, ow);
			float m = neg_inf;
			for (int j = 0; j < 4; j++) {
				if (v[j] > m || v[j] != v[j]) m = v[j];
			}
			stf(y, i, m);
		}
		return;
	}
	GRID_STRIDE(i, planes * oh * ow) {
		u32 ox = (u32)(i % ow), oy = (u32)((i / ow) % oh);
		const float* win = x + (i / ((u64)oh * ow)) * h * w + (u64)oy * s * w + (u64)ox * s;
		float m = neg_inf;
		for (u32 ki = 0; ki < k; ki++) {
			for (u32 kj = 0; kj < k; kj++) {
				float v = ldf(win, ki * w + kj);
				if (v > m || v != v) m = v;
			}
		}
		stf(y, i, m);
	}
}

// max_pool_backward: dx [planes, h, w] from dy [planes, oh, ow] and the
// forward's x, as the CPU backend's MaxPoolBackward: each window's
// gradient goes to the first maximum of the window in row-major order (a
// NaN wins only as the window's first element), and the gradients of
// overlapping windows add, in window order. One thread per element of dx,
// which visits the windows that contain it (no atomics), and writes every
// element (0 where no gradient lands). Float32 NCHW images.
extern "C" __global__ void max_pool_backward(float* dx, const float* dy, const float* x, u64 planes, u32 h, u32 w,
		u32 k, u32 s) {
	u32 oh = pool_out(h, k, s), ow = pool_out(w, k, s);
	if (pool2_fits(planes, h, w, k, s, x, (const float*)dx)) {
		// VGG's pool: the windows tile x, so each thread takes one window
		// and writes its four gradients (the generic loop below finds
		// each element's windows with a division and rereads x four times).
		GRID_STRIDE(i, planes * oh * ow) {
			float v[4];
			u64 at = pool2_window(v, x, (u32)i, h, w, oh, ow);
			// The running maximum, not v[best]: an index known only at run
			// time would put v in local memory.
			int best = 0;
			float m = v[0];
#pragma unroll
			for (int j = 1; j < 4; j++) {
				if (v[j] > m) best = j, m = v[j];
			}
			// 0 + g as the generic loop sums (a -0 gradient lands as +0).
			float g = 0.0f + ldf(dy, i);
			store_pair(dx + at, best == 0 ? g : 0.0f, best == 1 ? g : 0.0f);
			store_pair(dx + at + w, best == 2 ? g : 0.0f, best == 3 ? g : 0.0f);
		}
		return;
	}
	GRID_STRIDE(i, planes * h * w) {
		u32 xx = (u32)(i % w), yy = (u32)((i / w) % h);
		u64 plane = i / ((u64)h * w);
		const float* src = x + plane * h * w;
		const float* g = dy + plane * oh * ow;
		float sum = 0.0f;
		// The windows oy with oy·s <= yy < oy·s + k, and ox alike.
		for (u32 oy = yy >= k ? (yy - k) / s + 1 : 0; oy <= yy / s && oy < oh; oy++) {
			for (u32 ox = xx >= k ? (xx - k) / s + 1 : 0; ox <= xx / s && ox < ow; ox++) {
				const float* win = src + (u64)oy * s * w + (u64)ox * s;
				u32 best = 0;
				float m = ldf(win, 0);
				for (u32 ki = 0; ki < k; ki++) {
					for (u32 kj = 0; kj < k; kj++) {
						float v = ldf(win, ki * w + kj);
						if (v > m) {
							best = ki * k + kj;
							m = v;
						}
					}
				}
				if (oy * s + best / k == yy && ox * s + best % k == xx) {
					sum += ldf(g, (u64)oy * ow + ox);
				}
			}
		}
		stf(dx, i, sum);
	}
}

// crop_resize_bf16: crop_resize with y stored as bf16 (each crop_resize
// value rounded) and channels-last, y [n, s, s, 3] (see "Channels-last
// bfloat16 activations" below): element i is crop_resize's element of the
// same image, row, column and channel.
extern "C" __global__ void crop_resize_bf16(bf16* y, const unsigned char* images, const int* crops, const float* table,
		u64 n, u32 s, u32 side) {
	u64 plane = (u64)s * s;
	GRID_STRIDE(i, n * 3 * plane) {
		u64 c = i % 3, pix = i / 3, img = pix / plane;
		y[i] = f32_to_bf16(crop_value((img * 3 + c) * plane + pix % plane, images, crops, table, s, side));
	}
}

// ---- Channels-last activations ----------------------------------------------
//
// With --precision bf16 (and with --channels-last in tf32) the backend
// stores 4-d activations channels-last (NHWC): element (n, c, y, x) of a
// logical [N, C, H, W] tensor lies at ((n·H + y)·W + x)·C + c, the layout
// in which cuDNN's tensor-core convolutions read and write without
// transposing. Such a tensor is an NCHW one of n·h·w images of c channels
// and hw = 1, so the batch-norm kernels above are correct on it, if slow
// (one block a channel, strided reads), and bias_add_rows adds its bias. The kernels here are the fast path for c a multiple of 8 whose
// c/8 divides NHWC_THREADS (the launchers check): each thread owns one pack
// of 8 channels (one 16-byte access of bf16s, two of floats) and walks
// rows, and the reductions leave part[] as bn_stats does, so bn_finish,
// bn_grad_finish and bias_grad_finish serve both layouts. The arithmetic is
// the NCHW kernels' element for element (only the order of the sums
// differs). Each kernel is a template body over the activations' type T and
// two entry points: NAME for bf16, NAME_f32 for float32.

#define NHWC_THREADS 256

struct alignas(16) H8 {
	bf16 v[8];
};

__device__ __forceinline__ void ld8(const bf16* p, u64 i, float* v) {
	H8 q = *(const H8*)(p + i);
	for (int j = 0; j < 8; j++) v[j] = bf16_to_f32(q.v[j]);
}
__device__ __forceinline__ void st8(bf16* p, u64 i, const float* v) {
	H8 q;
	for (int j = 0; j < 8; j++) q.v[j] = f32_to_bf16(v[j]);
	*(H8*)(p + i) = q;
}
__device__ __forceinline__ void ld8(const float* p, u64 i, float* v) {
	ldn(p, i, v, 4);
	ldn(p, i + 4, v + 4, 4);
}
__device__ __forceinline__ void st8(float* p, u64 i, const float* v) {
	stn(p, i, v, 4);
	stn(p, i + 4, v + 4, 4);
}

// pack_channel is the first of the 8 channels that the calling thread
// owns in each_row_pack and each_share_row_pack; the kernels load their
// per-channel values for it once, before the loop.
__device__ __forceinline__ u64 pack_channel(u64 c) { return 8 * (threadIdx.x % (u32)(c / 8)); }

// each_row_pack calls f(i) for the elements i..i+7 of the thread's pack of
// channels (pack_channel) in every row of x [rows, c] the thread takes: the
// grid's threads keep one pack each (blockDim.x is a multiple of c/8) and
// stride over the rows.
template <typename F>
__device__ __forceinline__ void each_row_pack(u64 rows, u64 c, F f) {
	u32 P = (u32)(c / 8);
	u64 ch = pack_channel(c), step = (u64)gridDim.x * blockDim.x / P;
#pragma unroll 4
	for (u64 r = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / P; r < rows; r += step) {
		f(r * c + ch);
	}
}

// load8 copies p[ch..ch+7] into v (per-channel values of a pack).
__device__ __forceinline__ void load8(float* v, const float* p, u64 ch) {
	for (int j = 0; j < 8; j++) v[j] = p[ch + j];
}

// each_share_row_pack calls f(i) for the thread's pack of 8 channels in
// every row of the block's share of rows, [b·⌈rows/splits⌉, …).
template <typename F>
__device__ __forceinline__ void each_share_row_pack(u64 rows, u64 c, u32 splits, F f) {
	u32 P = (u32)(c / 8), R = blockDim.x / P, p = threadIdx.x % P;
	u64 per = (rows + splits - 1) / splits, lo = (u64)blockIdx.x * per, hi = lo + per < rows ? lo + per : rows;
#pragma unroll 4
	for (u64 r = lo + threadIdx.x / P; r < hi; r += R) {
		f(r * c + 8 * p);
	}
}

// pack_sum adds v[j] over the threads of the block that hold the same
// pack (a tree, in a fixed order) and stores the block's sum of channel
// ch = 8·pack + j as bn_stats does: part[2·(ch·splits + block) + q]. red
// holds NHWC_THREADS·8 doubles. Inlined and unrolled, so that v stays in
// registers: an array indexed at run time, or reached through a pointer
// the compiler cannot resolve, lives in local memory for the whole
// kernel, and the kernels' loops read and write it there element by
// element (ptxas showed 128- and 352-byte stack frames).
__device__ __forceinline__ void pack_sum(double* part, const double (&v)[8], int q, u64 c, u32 splits, double* red) {
	u32 P = (u32)(c / 8), R = blockDim.x / P, p = threadIdx.x % P, r = threadIdx.x / P;
#pragma unroll
	for (int j = 0; j < 8; j++) red[threadIdx.x * 8 + j] = v[j];
	__syncthreads();
	for (u32 half = R / 2; half > 0; half /= 2) {
		if (r < half) {
#pragma unroll
			for (int j = 0; j < 8; j++) red[threadIdx.x * 8 + j] += red[(threadIdx.x + half * P) * 8 + j];
		}
		__syncthreads();
	}
	if (r == 0) {
#pragma unroll
		for (int j = 0; j < 8; j++) part[2 * ((8 * p + j) * splits + blockIdx.x) + q] = red[threadIdx.x * 8 + j];
	}
	__syncthreads();
}

// pack_sums is pack_sum of a into the first double of each pair and of b
// into the second.
__device__ __forceinline__ void pack_sums(double* part, const double (&a)[8], const double (&b)[8], u64 c, u32 splits, double* red) {
	pack_sum(part, a, 0, c, splits, red);
	pack_sum(part, b, 1, c, splits, red);
}

// fold_sums is fold_parts' sums of channel blockIdx.x, in thread 0.
__device__ __forceinline__ void fold_sums(const double* part, u32 splits, double* red, double* a, double* b) {
	u64 ch = blockIdx.x;
	double x = 0.0, y = 0.0;
	for (u32 k = threadIdx.x; k < splits; k += RED_THREADS) {
		x += part[2 * (ch * splits + k)];
		y += part[2 * (ch * splits + k) + 1];
	}
	*a = block_sum(x, red);
	*b = block_sum(y, red);
}

// fold_parts adds the splits per-block sums of each channel that the
// channels-last reductions leave in part, one block of RED_THREADS a
// channel (grid c), into out[2·ch] and out[2·ch + 1]: bn_finish, bn_grad_finish
// and bias_grad_finish then read one split a channel, where looping over
// hundreds in one thread a channel took longer than the reduction.
extern "C" __global__ void fold_parts(double* out, const double* part, u64 c, u32 splits) {
	__shared__ double red[RED_THREADS];
	double a, b;
	fold_sums(part, splits, red, &a, &b);
	if (threadIdx.x == 0) {
		out[2 * blockIdx.x] = a;
		out[2 * blockIdx.x + 1] = b;
	}
}

// bn_fold_finish and bn_grad_fold_finish are fold_parts followed by
// bn_finish and bn_grad_finish, one block a channel (grid c): the same
// sums in the same order, one launch instead of two per batch norm and
// direction (26 a VGG16 step; at 32x32 the small kernels' launches are a
// visible part of a 2.7 ms step).
extern "C" __global__ void bn_fold_finish(float* save_mean, float* save_inv, float* run_mean, float* run_var,
		float* scale, const float* gamma, const float* shift, const double* part, u64 c, u32 splits, u64 m, double eps,
		double momentum) {
	__shared__ double red[RED_THREADS];
	double s, q;
	fold_sums(part, splits, red, &s, &q);
	if (threadIdx.x == 0) {
		bn_finish_channel(blockIdx.x, s, q, save_mean, save_inv, run_mean, run_var, scale, gamma, shift, m, eps, momentum);
	}
}
extern "C" __global__ void bn_grad_fold_finish(float* dgamma, float* dbeta, float* coef, const float* gamma,
		const float* inv, const double* part, u64 c, u32 splits, u64 m) {
	__shared__ double red[RED_THREADS];
	double sg, sgx;
	fold_sums(part, splits, red, &sg, &sgx);
	if (threadIdx.x == 0) {
		bn_grad_finish_channel(blockIdx.x, sg, sgx, dgamma, dbeta, coef, gamma, inv, m);
	}
}

// bn_stats_nhwc: bn_stats_bf16 of a channels-last x [n·hw, c] (hw is 1 from
// the launchers), on a grid of splits blocks of NHWC_THREADS, each all
// channels of one share of the rows.
template <typename T>
__device__ __forceinline__ void bn_stats_nhwc_t(double* part, const T* x, u64 n, u64 c, u64 hw, u32 splits, double* red) {
	double sum[8], sq[8];
	for (int j = 0; j < 8; j++) sum[j] = sq[j] = 0.0;
	each_share_row_pack(n * hw, c, splits, [&](u64 i) {
		float v[8];
		ld8(x, i, v);
		for (int j = 0; j < 8; j++) {
			double d = (double)v[j];
			sum[j] += d;
			sq[j] += d * d;
		}
	});
	pack_sums(part, sum, sq, c, splits, red);
}
extern "C" __global__ void bn_stats_nhwc(double* part, const bf16* x, u64 n, u64 c, u64 hw, u32 splits) {
	__shared__ double red[NHWC_THREADS * 8];
	bn_stats_nhwc_t(part, x, n, c, hw, splits, red);
}
extern "C" __global__ void bn_stats_nhwc_f32(double* part, const float* x, u64 n, u64 c, u64 hw, u32 splits) {
	__shared__ double red[NHWC_THREADS * 8];
	bn_stats_nhwc_t(part, x, n, c, hw, splits, red);
}

// bn_apply_nhwc: bn_apply_bf16 of a channels-last x [n·hw, c]; y may be x.
template <typename T>
__device__ __forceinline__ void bn_apply_nhwc_t(T* y, const T* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u64 hw, int relu) {
	float mu[8], sc[8], be[8];
	u64 ch = pack_channel(c);
	load8(mu, mean, ch);
	load8(sc, scale, ch);
	load8(be, beta, ch);
	each_row_pack(n * hw, c, [&](u64 i) {
		float v[8];
		ld8(x, i, v);
		for (int j = 0; j < 8; j++) {
			v[j] = bn_out(v[j], mu[j], sc[j], be[j], relu);
		}
		st8(y, i, v);
	});
}

extern "C" __global__ void bn_apply_nhwc(bf16* y, const bf16* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_apply_nhwc_t(y, x, mean, scale, beta, n, c, hw, relu);
}
extern "C" __global__ void bn_apply_nhwc_f32(float* y, const float* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_apply_nhwc_t(y, x, mean, scale, beta, n, c, hw, relu);
}

// bn_affine_nhwc: bn_affine_bf16 of a channels-last x [n·hw, c].
template <typename T>
__device__ __forceinline__ void bn_affine_nhwc_t(T* y, const T* x, const float* scale, const float* shift,
		u64 n, u64 c, u64 hw, int relu) {
	float sc[8], sh[8];
	u64 ch = pack_channel(c);
	load8(sc, scale, ch);
	load8(sh, shift, ch);
	each_row_pack(n * hw, c, [&](u64 i) {
		float v[8];
		ld8(x, i, v);
		for (int j = 0; j < 8; j++) {
			v[j] = affine_out(v[j], sc[j], sh[j], relu);
		}
		st8(y, i, v);
	});
}

extern "C" __global__ void bn_affine_nhwc(bf16* y, const bf16* x, const float* scale, const float* shift,
		u64 n, u64 c, u64 hw, int relu) {
	bn_affine_nhwc_t(y, x, scale, shift, n, c, hw, relu);
}
extern "C" __global__ void bn_affine_nhwc_f32(float* y, const float* x, const float* scale, const float* shift,
		u64 n, u64 c, u64 hw, int relu) {
	bn_affine_nhwc_t(y, x, scale, shift, n, c, hw, relu);
}

// GradSums8 is what a thread of the channels-last gradient reductions
// keeps for its pack of 8 channels (pack_channel): the sums of g and
// g·xhat, and the statistics that take x to xhat and tell where the ReLU
// cut (relu_cut; sc and be are 0 without the ReLU).
struct GradSums8 {
	double sg[8], sgx[8], mu[8], iv[8];
	float muf[8], sc[8], be[8];

	__device__ __forceinline__ GradSums8(const float* mean, const float* inv, const float* gamma, const float* beta,
			u64 ch, int relu) {
		for (int j = 0; j < 8; j++) {
			sg[j] = sgx[j] = 0.0;
			mu[j] = (double)mean[ch + j];
			iv[j] = (double)inv[ch + j];
			muf[j] = mean[ch + j];
			sc[j] = relu ? bn_scale(gamma, inv, ch + j) : 0.0f;
			be[j] = relu ? beta[ch + j] : 0.0f;
		}
	}
	// add takes element x of channel j with incoming gradient g, after the ReLU's.
	__device__ __forceinline__ void add(int j, double g, float x) {
		sg[j] += g;
		sgx[j] += g * (((double)x - mu[j]) * iv[j]);
	}
};

// bn_grad_stats_nhwc: bn_grad_stats_bf16 of channels-last dy and x,
// blocks as bn_stats_nhwc.
template <typename T>
__device__ __forceinline__ void bn_grad_stats_nhwc_t(double* part, const T* dy, const T* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu,
		double* red) {
	GradSums8 s(mean, inv, gamma, beta, pack_channel(c), relu);
	each_share_row_pack(n * hw, c, splits, [&](u64 i) {
		float gv[8], xv[8];
		ld8(dy, i, gv);
		ld8(x, i, xv);
		for (int j = 0; j < 8; j++) {
			s.add(j, (relu && relu_cut(xv[j], s.muf[j], s.sc[j], s.be[j])) ? 0.0 : (double)gv[j], xv[j]);
		}
	});
	pack_sums(part, s.sg, s.sgx, c, splits, red);
}
extern "C" __global__ void bn_grad_stats_nhwc(double* part, const bf16* dy, const bf16* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu) {
	__shared__ double red[NHWC_THREADS * 8];
	bn_grad_stats_nhwc_t(part, dy, x, mean, inv, gamma, beta, n, c, hw, splits, relu, red);
}
extern "C" __global__ void bn_grad_stats_nhwc_f32(double* part, const float* dy, const float* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu) {
	__shared__ double red[NHWC_THREADS * 8];
	bn_grad_stats_nhwc_t(part, dy, x, mean, inv, gamma, beta, n, c, hw, splits, relu, red);
}

// GradCoef8 is what a thread of the channels-last gradient-apply kernels
// keeps for its pack of 8 channels: the statistics and bn_grad_finish's
// coefficients (k0 is bn_scale), and beta for the ReLU's cut (0 without).
struct GradCoef8 {
	float mu[8], iv[8], k0[8], k1[8], k2[8], be[8];

	__device__ __forceinline__ GradCoef8(const float* mean, const float* inv, const float* coef, const float* beta,
			u64 ch, int relu) {
		for (int j = 0; j < 8; j++) {
			mu[j] = mean[ch + j];
			iv[j] = inv[ch + j];
			k0[j] = coef[3 * (ch + j)];
			k1[j] = coef[3 * (ch + j) + 1];
			k2[j] = coef[3 * (ch + j) + 2];
			be[j] = relu ? beta[ch + j] : 0.0f;
		}
	}
	// dx of element x of channel j with incoming gradient g, after the ReLU's.
	__device__ __forceinline__ float dx(int j, float g, float x) const {
		float xhat = (x - mu[j]) * iv[j];
		return k0[j] * (g - k1[j] - xhat * k2[j]);
	}
};

// bn_grad_apply_nhwc: bn_grad_apply_bf16 of channels-last dx, dy and x;
// dx may be dy.
template <typename T>
__device__ __forceinline__ void bn_grad_apply_nhwc_t(T* dx, const T* dy, const T* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu) {
	GradCoef8 k(mean, inv, coef, beta, pack_channel(c), relu);
	each_row_pack(n * hw, c, [&](u64 i) {
		float gv[8], xv[8];
		ld8(dy, i, gv);
		ld8(x, i, xv);
		for (int j = 0; j < 8; j++) {
			gv[j] = k.dx(j, (relu && relu_cut(xv[j], k.mu[j], k.k0[j], k.be[j])) ? 0.0f : gv[j], xv[j]);
		}
		st8(dx, i, gv);
	});
}

extern "C" __global__ void bn_grad_apply_nhwc(bf16* dx, const bf16* dy, const bf16* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_grad_apply_nhwc_t(dx, dy, x, mean, inv, coef, beta, n, c, hw, relu);
}
extern "C" __global__ void bn_grad_apply_nhwc_f32(float* dx, const float* dy, const float* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu) {
	bn_grad_apply_nhwc_t(dx, dy, x, mean, inv, coef, beta, n, c, hw, relu);
}

// ---- Batch norm + ReLU fused with the 2x2 max-pool after it ------------------
//
// Five of VGG's batch norms (the last of each block) feed a 2x2/2 max-pool.
// Unfused, the batch norm writes its whole output, the pool reads it and
// writes a quarter, and backward the pool writes a whole gradient that the
// batch norm reads twice. These kernels take each 2x2 window of a
// channels-last x [n, h, w, c] (h and w even; packs of 8 channels a thread,
// as the kernels above) and recompute the batch norm + ReLU of its four
// elements in registers: forward they write only the pooled output,
// backward they read the pooled gradient and route it to the window's
// maximum themselves. The batch norm's output is never stored (a quarter
// less activation memory at 224x224) and 4.75 of ~10 passes over those
// activations go. Each recomputed element is rounded to T as the unfused
// kernels store it, and the window rules are max_pool_forward_nhwc's and
// max_pool_backward_tiled's, so forward the results are the unfused ones
// bit for bit and backward only the order of the sums differs.

// round_as is v as stored in T and read back.
__device__ __forceinline__ float round_as(const float*, float v) { return v; }
__device__ __forceinline__ float round_as(const bf16*, float v) { return bf16_to_f32(f32_to_bf16(v)); }

// window_at is the offset of element e (row-major) of a 2x2 window in a
// channels-last image of width w and c channels.
__device__ __forceinline__ u64 window_at(int e, u32 w, u64 c) { return ((u64)(e >> 1) * w + (e & 1)) * c; }

// window_pos calls f(t, at) for window t of x [n, h, w, c]: at is the
// index of its first element in the thread's pack (channel ch). With h =
// 2·oh, image row img·h + 2·oy is 2·(img·oh + oy), so one division splits t.
template <typename F>
__device__ __forceinline__ void window_pos(u64 t, u64 c, u32 w, u64 ch, bool small, F f) {
	u32 ow = w / 2;
	u64 q, x;
	if (small) {
		q = (u32)t / ow;
		x = (u32)t % ow;
	} else {
		q = t / ow;
		x = t % ow;
	}
	f(t, (2 * q * w + 2 * x) * c + ch);
}

// each_window_pack calls f(t, at) for the thread's pack of channels in
// every window t the thread takes (threads as each_row_pack, over windows).
template <typename F>
__device__ __forceinline__ void each_window_pack(u64 n, u64 c, u32 h, u32 w, F f) {
	u32 P = (u32)(c / 8);
	u64 ch = pack_channel(c), step = (u64)gridDim.x * blockDim.x / P, windows = n * (h / 2) * (w / 2);
	bool small = windows < 0xffffffffULL;
	for (u64 t = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / P; t < windows; t += step) {
		window_pos(t, c, w, ch, small, f);
	}
}

// each_share_window_pack: each_window_pack over the block's share of the
// windows, [b·⌈windows/splits⌉, …) (threads as each_share_row_pack).
template <typename F>
__device__ __forceinline__ void each_share_window_pack(u64 n, u64 c, u32 h, u32 w, u32 splits, F f) {
	u32 P = (u32)(c / 8), R = blockDim.x / P;
	u64 windows = n * (h / 2) * (w / 2), per = (windows + splits - 1) / splits, lo = (u64)blockIdx.x * per;
	u64 hi = lo + per < windows ? lo + per : windows, ch = pack_channel(c);
	bool small = windows < 0xffffffffULL;
	for (u64 t = lo + threadIdx.x / P; t < hi; t += R) {
		window_pos(t, c, w, ch, small, f);
	}
}

// pool_norm writes to y [n, h/2, w/2, c] the 2x2 maxima of norm(x): norm
// turns 8 loaded values into the batch norm + ReLU's outputs, which are
// rounded to T before the comparison, as the pool reads them stored.
template <typename T, typename F>
__device__ __forceinline__ void pool_norm(T* y, const T* x, u64 n, u64 c, u32 h, u32 w, F norm) {
	const float neg_inf = __uint_as_float(0xff800000u);
	u64 ch = pack_channel(c);
	each_window_pack(n, c, h, w, [&](u64 t, u64 at) {
		float m[8], v[8];
		for (int j = 0; j < 8; j++) m[j] = neg_inf;
		for (int e = 0; e < 4; e++) {
			ld8(x, at + window_at(e, w, c), v);
			norm(v);
			for (int j = 0; j < 8; j++) {
				v[j] = round_as(x, v[j]);
				if (v[j] > m[j] || v[j] != v[j]) m[j] = v[j];
			}
		}
		st8(y, t * c + ch, m);
	});
}

// bn_apply_pool_nhwc: bn_apply_nhwc with the ReLU, then the 2x2 max-pool,
// into y [n, h/2, w/2, c] (n images of h×w).
template <typename T>
__device__ __forceinline__ void bn_apply_pool_nhwc_t(T* y, const T* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u32 h, u32 w) {
	float mu[8], sc[8], be[8];
	u64 ch = pack_channel(c);
	load8(mu, mean, ch);
	load8(sc, scale, ch);
	load8(be, beta, ch);
	pool_norm(y, x, n, c, h, w, [&](float* v) {
		for (int j = 0; j < 8; j++) {
			v[j] = bn_out(v[j], mu[j], sc[j], be[j], 1);
		}
	});
}
extern "C" __global__ void bn_apply_pool_nhwc(bf16* y, const bf16* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u32 h, u32 w) {
	bn_apply_pool_nhwc_t(y, x, mean, scale, beta, n, c, h, w);
}
extern "C" __global__ void bn_apply_pool_nhwc_f32(float* y, const float* x, const float* mean, const float* scale,
		const float* beta, u64 n, u64 c, u32 h, u32 w) {
	bn_apply_pool_nhwc_t(y, x, mean, scale, beta, n, c, h, w);
}

// bn_affine_pool_nhwc: bn_affine_nhwc with the ReLU, then the 2x2
// max-pool (inference).
template <typename T>
__device__ __forceinline__ void bn_affine_pool_nhwc_t(T* y, const T* x, const float* scale, const float* shift, u64 n,
		u64 c, u32 h, u32 w) {
	float sc[8], sh[8];
	u64 ch = pack_channel(c);
	load8(sc, scale, ch);
	load8(sh, shift, ch);
	pool_norm(y, x, n, c, h, w, [&](float* v) {
		for (int j = 0; j < 8; j++) {
			v[j] = affine_out(v[j], sc[j], sh[j], 1);
		}
	});
}
extern "C" __global__ void bn_affine_pool_nhwc(bf16* y, const bf16* x, const float* scale, const float* shift, u64 n,
		u64 c, u32 h, u32 w) {
	bn_affine_pool_nhwc_t(y, x, scale, shift, n, c, h, w);
}
extern "C" __global__ void bn_affine_pool_nhwc_f32(float* y, const float* x, const float* scale, const float* shift,
		u64 n, u64 c, u32 h, u32 w) {
	bn_affine_pool_nhwc_t(y, x, scale, shift, n, c, h, w);
}

// window_best is, for each of the pack's 8 channels (2 bits each), which
// element of the 2x2 window at `at` takes the pool's gradient: the first
// maximum in row-major order of the batch norm + ReLU output recomputed
// from x (max_pool_backward_tiled's rule; sc is bn_scale, the forward's
// scale). The callers load the window's x again for each element, from
// the cache, rather than keep 32 values live (registers are what bound
// these memory-bound kernels' occupancy).
template <typename T>
__device__ __forceinline__ u32 window_best(const T* x, u64 at, u64 c, u32 w, const float* mu, const float* sc,
		const float* be) {
	float m[8], v[8];
	u32 best = 0;
	for (int e = 0; e < 4; e++) {
		ld8(x, at + window_at(e, w, c), v);
		for (int j = 0; j < 8; j++) {
			v[j] = bn_out(v[j], mu[j], sc[j], be[j], 1);
			v[j] = round_as(x, v[j]);
			if (e == 0 || v[j] > m[j]) {
				m[j] = v[j];
				best = (best & ~(3u << (2 * j))) | ((u32)e << (2 * j));
			}
		}
	}
	return best;
}

// window_grad is the gradient element e of a window gets (xv its x, gp
// the pool's output gradient): gp at the window's maximum (best), 0
// elsewhere, and 0 where the ReLU cut (relu_cut), as the separate
// max_pool_backward_tiled and bn_grad_stats_nhwc compute it.
__device__ __forceinline__ float window_grad(u32 best, int e, int j, float xv, float gp, float mu, float sc, float be) {
	return ((best >> (2 * j)) & 3u) == (u32)e && !relu_cut(xv, mu, sc, be) ? 0.0f + gp : 0.0f;
}

// bn_grad_stats_pool_nhwc: bn_grad_stats_nhwc with the ReLU of the
// gradient that max_pool_backward_nhwc would make from dy [n, h/2, w/2, c]
// (window_best, window_grad), blocks as bn_stats_nhwc over windows.
template <typename T>
__device__ __forceinline__ void bn_grad_stats_pool_nhwc_t(double* part, const T* dy, const T* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u32 h, u32 w, u32 splits, double* red) {
	u64 ch = pack_channel(c);
	GradSums8 s(mean, inv, gamma, beta, ch, 1);
	each_share_window_pack(n, c, h, w, splits, [&](u64 t, u64 at) {
		float xv[8], gp[8];
		u32 best = window_best(x, at, c, w, s.muf, s.sc, s.be);
		ld8(dy, t * c + ch, gp);
		for (int e = 0; e < 4; e++) {
			ld8(x, at + window_at(e, w, c), xv);
			for (int j = 0; j < 8; j++) {
				s.add(j, (double)window_grad(best, e, j, xv[j], gp[j], s.muf[j], s.sc[j], s.be[j]), xv[j]);
			}
		}
	});
	pack_sums(part, s.sg, s.sgx, c, splits, red);
}
// Two blocks a multiprocessor's registers (ptxas 11.8 on sm_90: 126 for
// bf16 and 128 for float, no spills; unbounded 158 and 174, which left one
// block of 256 threads a multiprocessor). The float kernel spills on sm_80
// when bounded so, and is bounded from sm_90 on only.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define POOL_GRAD_F32_BOUNDS __launch_bounds__(NHWC_THREADS, 2)
#else
#define POOL_GRAD_F32_BOUNDS
#endif
extern "C" __global__ void __launch_bounds__(NHWC_THREADS, 2) bn_grad_stats_pool_nhwc(double* part, const bf16* dy, const bf16* x, const float* mean,
		const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u32 h, u32 w, u32 splits) {
	__shared__ double red[NHWC_THREADS * 8];
	bn_grad_stats_pool_nhwc_t(part, dy, x, mean, inv, gamma, beta, n, c, h, w, splits, red);
}
extern "C" __global__ void POOL_GRAD_F32_BOUNDS bn_grad_stats_pool_nhwc_f32(double* part, const float* dy, const float* x,
		const float* mean, const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u32 h, u32 w,
		u32 splits) {
	__shared__ double red[NHWC_THREADS * 8];
	bn_grad_stats_pool_nhwc_t(part, dy, x, mean, inv, gamma, beta, n, c, h, w, splits, red);
}

// bn_grad_apply_pool_nhwc: bn_grad_apply_nhwc with the ReLU of window_grad's
// gradient, into dx [n, h, w, c] (dx may not be x: x is read again).
template <typename T>
__device__ __forceinline__ void bn_grad_apply_pool_nhwc_t(T* dx, const T* dy, const T* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u32 h, u32 w) {
	u64 ch = pack_channel(c);
	GradCoef8 k(mean, inv, coef, beta, ch, 1);
	each_window_pack(n, c, h, w, [&](u64 t, u64 at) {
		float xv[8], gp[8];
		u32 best = window_best(x, at, c, w, k.mu, k.k0, k.be);
		ld8(dy, t * c + ch, gp);
		for (int e = 0; e < 4; e++) {
			ld8(x, at + window_at(e, w, c), xv);
			for (int j = 0; j < 8; j++) {
				xv[j] = k.dx(j, window_grad(best, e, j, xv[j], gp[j], k.mu[j], k.k0[j], k.be[j]), xv[j]);
			}
			st8(dx, at + window_at(e, w, c), xv);
		}
	});
}
extern "C" __global__ void bn_grad_apply_pool_nhwc(bf16* dx, const bf16* dy, const bf16* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u32 h, u32 w) {
	bn_grad_apply_pool_nhwc_t(dx, dy, x, mean, inv, coef, beta, n, c, h, w);
}
extern "C" __global__ void bn_grad_apply_pool_nhwc_f32(float* dx, const float* dy, const float* x, const float* mean,
		const float* inv, const float* coef, const float* beta, u64 n, u64 c, u32 h, u32 w) {
	bn_grad_apply_pool_nhwc_t(dx, dy, x, mean, inv, coef, beta, n, c, h, w);
}

// bias_add_nhwc: y[i] = bf16(y[i] + b[ch]) for a channels-last bf16 y
// [n·hw, c] and float32 b [c], ch the channel of element i (a
// convolution's bias; bias_add_nhwc_f32: a float32 y, in tf32).
template <typename T>
__device__ __forceinline__ void bias_add_nhwc_t(T* y, const float* b, u64 n, u64 c, u64 hw) {
	float bv[8];
	load8(bv, b, pack_channel(c));
	each_row_pack(n * hw, c, [&](u64 i) {
		float v[8];
		ld8(y, i, v);
		for (int j = 0; j < 8; j++) v[j] += bv[j];
		st8(y, i, v);
	});
}
extern "C" __global__ void bias_add_nhwc(bf16* y, const float* b, u64 n, u64 c, u64 hw) {
	bias_add_nhwc_t(y, b, n, c, hw);
}
extern "C" __global__ void bias_add_nhwc_f32(float* y, const float* b, u64 n, u64 c, u64 hw) {
	bias_add_nhwc_t(y, b, n, c, hw);
}

// Max-pooling of channels-last bf16 x [n, h, w, c] into y [n, oh, ow, c],
// with the rules of max_pool_forward and max_pool_backward. Threads take W
// neighbouring channels of one output position: 8 (one 16-byte access)
// when c is a multiple of 8 and the pointers allow, else 1.

// ldw and stw read and write W consecutive elements as floats.
template <int W, typename T> __device__ __forceinline__ void ldw(const T* p, u64 i, float* v) {
	if (W == 8) {
		ld8(p, i, v);
	} else {
		for (int j = 0; j < W; j++) v[j] = ldf(p, i + j);
	}
}
template <int W, typename T> __device__ __forceinline__ void stw(T* p, u64 i, const float* v) {
	if (W == 8) {
		st8(p, i, v);
	} else {
		for (int j = 0; j < W; j++) stf(p, i + j, v[j]);
	}
}

// nhwc_pos splits pack index t (of [n, oh, ow, c/W]) into the first
// element's channel and the output position, in 32-bit arithmetic when
// every pack index fits (64-bit division costs these memory-bound kernels
// more than their loads).
template <int W>
__device__ __forceinline__ void nhwc_pos(u64 t, u64 c, u32 oh, u32 ow, bool small, u64* ch, u32* oy, u32* ox, u64* img) {
	if (small) {
		u32 q = (u32)(c / W), u = (u32)t;
		*ch = W * (u % q);
		u /= q;
		*ox = u % ow;
		u /= ow;
		*oy = u % oh;
		*img = u / oh;
		return;
	}
	u64 q = c / W;
	*ch = W * (t % q);
	t /= q;
	*ox = (u32)(t % ow);
	t /= ow;
	*oy = (u32)(t % oh);
	*img = t / oh;
}

template <int W, typename T>
__device__ __forceinline__ void max_pool_forward_nhwc_w(T* y, const T* x, u64 n, u64 c, u32 h, u32 w, u32 k,
		u32 s) {
	u32 oh = pool_out(h, k, s), ow = pool_out(w, k, s);
	const float neg_inf = __uint_as_float(0xff800000u);
	bool small = n * oh * ow * (c / W) < 0xffffffffULL;
	GRID_STRIDE(t, n * oh * ow * (c / W)) {
		u64 ch, img;
		u32 oy, ox;
		nhwc_pos<W>(t, c, oh, ow, small, &ch, &oy, &ox, &img);
		float m[W], v[W];
		for (int j = 0; j < W; j++) m[j] = neg_inf;
		for (u32 ki = 0; ki < k; ki++) {
			for (u32 kj = 0; kj < k; kj++) {
				ldw<W>(x, ((img * h + oy * s + ki) * w + ox * s + kj) * c + ch, v);
				for (int j = 0; j < W; j++) {
					if (v[j] > m[j] || v[j] != v[j]) m[j] = v[j];
				}
			}
		}
		stw<W>(y, W * t, m);
	}
}

// max_pool_forward_nhwc: max_pool_forward of channels-last bf16 x and y.
template <typename T>
__device__ __forceinline__ void max_pool_forward_nhwc_t(T* y, const T* x, u64 n, u64 c, u32 h, u32 w, u32 k, u32 s) {
	if (c % 8 == 0 && ((unsigned long long)y | (unsigned long long)x) % 16 == 0) {
		max_pool_forward_nhwc_w<8>(y, x, n, c, h, w, k, s);
	} else {
		max_pool_forward_nhwc_w<1>(y, x, n, c, h, w, k, s);
	}
}
extern "C" __global__ void max_pool_forward_nhwc(bf16* y, const bf16* x, u64 n, u64 c, u32 h, u32 w, u32 k, u32 s) {
	max_pool_forward_nhwc_t(y, x, n, c, h, w, k, s);
}
extern "C" __global__ void max_pool_forward_nhwc_f32(float* y, const float* x, u64 n, u64 c, u32 h, u32 w, u32 k,
		u32 s) {
	max_pool_forward_nhwc_t(y, x, n, c, h, w, k, s);
}

// max_pool_backward_tiled: where the windows tile x (k = s, h and w
// multiples of k), each thread takes W channels of one window and writes
// the window's gradients: dy to the first maximum in row-major order (a
// NaN wins only as the first element), 0 elsewhere.
template <int W, typename T>
__device__ __forceinline__ void max_pool_backward_tiled(T* dx, const T* dy, const T* x, u64 n, u64 c, u32 h,
		u32 w, u32 k) {
	u32 oh = h / k, ow = w / k;
	bool small = n * oh * ow * (c / W) < 0xffffffffULL;
	GRID_STRIDE(t, n * oh * ow * (c / W)) {
		u64 ch, img;
		u32 oy, ox;
		nhwc_pos<W>(t, c, oh, ow, small, &ch, &oy, &ox, &img);
		float m[W], v[W], g[W];
		u32 best[W];
		u64 at = ((img * h + oy * k) * w + ox * k) * c + ch;
		ldw<W>(x, at, m);
		for (int j = 0; j < W; j++) best[j] = 0;
		for (u32 e = 1; e < k * k; e++) {
			ldw<W>(x, at + ((u64)(e / k) * w + e % k) * c, v);
			for (int j = 0; j < W; j++) {
				if (v[j] > m[j]) {
					m[j] = v[j];
					best[j] = e;
				}
			}
		}
		ldw<W>(dy, W * t, g);
		for (u32 e = 0; e < k * k; e++) {
			for (int j = 0; j < W; j++) v[j] = best[j] == e ? 0.0f + g[j] : 0.0f;
			stw<W>(dx, at + ((u64)(e / k) * w + e % k) * c, v);
		}
	}
}

// max_pool_backward_nhwc: max_pool_backward of channels-last bf16 dx, dy
// and x. Tiling windows take max_pool_backward_tiled; otherwise one thread
// an element of dx visits the windows that hold it, as the NCHW kernel.
template <typename T>
__device__ __forceinline__ void max_pool_backward_nhwc_t(T* dx, const T* dy, const T* x, u64 n, u64 c, u32 h, u32 w,
		u32 k, u32 s) {
	if (k == s && h % k == 0 && w % k == 0) {
		if (c % 8 == 0 && ((unsigned long long)dx | (unsigned long long)dy | (unsigned long long)x) % 16 == 0) {
			max_pool_backward_tiled<8>(dx, dy, x, n, c, h, w, k);
		} else {
			max_pool_backward_tiled<1>(dx, dy, x, n, c, h, w, k);
		}
		return;
	}
	u32 oh = pool_out(h, k, s), ow = pool_out(w, k, s);
	GRID_STRIDE(i, n * h * w * c) {
		u64 ch = i % c, pos = i / c;
		u32 xx = (u32)(pos % w), yy = (u32)((pos / w) % h);
		u64 img = pos / ((u64)h * w);
		float sum = 0.0f;
		for (u32 oy = yy >= k ? (yy - k) / s + 1 : 0; oy <= yy / s && oy < oh; oy++) {
			for (u32 ox = xx >= k ? (xx - k) / s + 1 : 0; ox <= xx / s && ox < ow; ox++) {
				const T* win = x + ((img * h + oy * s) * w + ox * s) * c + ch;
				u32 best = 0;
				float m = ldf(win, 0);
				for (u32 ki = 0; ki < k; ki++) {
					for (u32 kj = 0; kj < k; kj++) {
						float v = ldf(win, ((u64)ki * w + kj) * c);
						if (v > m) {
							best = ki * k + kj;
							m = v;
						}
					}
				}
				if (oy * s + best / k == yy && ox * s + best % k == xx) {
					sum += ldf(dy, ((img * oh + oy) * ow + ox) * c + ch);
				}
			}
		}
		stf(dx, i, sum);
	}
}
extern "C" __global__ void max_pool_backward_nhwc(bf16* dx, const bf16* dy, const bf16* x, u64 n, u64 c, u32 h, u32 w,
		u32 k, u32 s) {
	max_pool_backward_nhwc_t(dx, dy, x, n, c, h, w, k, s);
}
extern "C" __global__ void max_pool_backward_nhwc_f32(float* dx, const float* dy, const float* x, u64 n, u64 c, u32 h,
		u32 w, u32 k, u32 s) {
	max_pool_backward_nhwc_t(dx, dy, x, n, c, h, w, k, s);
}

// transpose_t: y [batch, cols, rows] = x [batch, rows, cols] transposed,
// element by element through float (one thread an element of y, so the
// writes are coalesced). It moves the bf16 weights to and from cuDNN's
// KRSC order, and activations between NHWC and NCHW where a row-major
// view needs them (flatten, copies to and from float32).
template <typename A, typename B>
__device__ __forceinline__ void transpose_t(B* y, const A* x, u64 batch, u64 rows, u64 cols) {
	u64 total = batch * rows * cols;
	if (total < 0xffffffffULL) {
		u32 r = (u32)rows, cl = (u32)cols;
		GRID_STRIDE(o, total) {
			u32 i = (u32)o % r, t = (u32)o / r, j = t % cl, b = t / cl;
			stf(y, o, ldf(x, ((u64)b * r + i) * cl + j));
		}
		return;
	}
	GRID_STRIDE(o, total) {
		u64 i = o % rows, t = o / rows, j = t % cols, b = t / cols;
		stf(y, o, ldf(x, (b * rows + i) * cols + j));
	}
}

extern "C" __global__ void transpose_f32_bf16(bf16* y, const float* x, u64 batch, u64 rows, u64 cols) {
	transpose_t(y, x, batch, rows, cols);
}
extern "C" __global__ void transpose_bf16_f32(float* y, const bf16* x, u64 batch, u64 rows, u64 cols) {
	transpose_t(y, x, batch, rows, cols);
}
extern "C" __global__ void transpose_bf16(bf16* y, const bf16* x, u64 batch, u64 rows, u64 cols) {
	transpose_t(y, x, batch, rows, cols);
}
extern "C" __global__ void transpose_f32(float* y, const float* x, u64 batch, u64 rows, u64 cols) {
	transpose_t(y, x, batch, rows, cols);
}

// crop_resize_nhwc: crop_resize into a channels-last float32 y [n, s, s, 3].
extern "C" __global__ void crop_resize_nhwc(float* y, const unsigned char* images, const int* crops, const float* table,
		u64 n, u32 s, u32 side) {
	u64 plane = (u64)s * s;
	GRID_STRIDE(i, n * 3 * plane) {
		u64 c = i % 3, pix = i / 3, img = pix / plane;
		y[i] = crop_value((img * 3 + c) * plane + pix % plane, images, crops, table, s, side);
	}
}
