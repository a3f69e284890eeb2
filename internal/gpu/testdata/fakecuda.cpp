// fakecuda.cpp: stand-ins for libcuda.so.1, libcublas.so.12, libcudnn.so.9
// and libnvrtc.so.12 that compute on the host, so that the GPU backend can
// be tested end to end on a machine without a GPU (TestFakeCUDA). The test
// prepends internal/kernels/testdata/emu.h and kernels.cu, so that kernel
// launches run the real kernels.
//
// Every function has the prototype of the real header (cuda.h,
// cublas_api.h, cudnn_*.h of cuDNN 9, nvrtc.h) and checks what a real
// library would reject, and more: the thread's current context, that every
// buffer lies inside one allocation, descriptor kinds and shapes, 16-byte
// alignment of cuDNN operands, workspace sizes. Device memory is host
// memory; streams are synchronous.
//
// Stream capture (cuStreamBeginCapture_v2 .. cuStreamEndCapture) records
// each call's computation, after the call has checked its arguments, and
// cuGraphLaunch runs the recorded list again. The fake is stricter than
// CUDA about what may happen during a capture: no host<->device copy, no
// allocation, no synchronisation, no work on another stream; each such
// call fails and invalidates the capture, as a real prohibited call does.
#include <cstdarg>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

// arg reads kernel parameter i, which the caller passed as a pointer to
// a value of the kernel's parameter type.
template <typename T>
static T arg(void** params, int i) {
	T v;
	memcpy(&v, params[i], sizeof v);
	return v;
}

extern "C" {

// ---- state shared by the four libraries ------------------------------------

static std::mutex mu;
static std::map<uintptr_t, size_t> allocs;  // device "address" -> bytes
static const uintptr_t kCtx = 0xC0FFEE;
thread_local uintptr_t current_ctx;
static int retained;
static char last_error[512];

static void fail(const char* fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof last_error, fmt, ap);
	va_end(ap);
	fprintf(stderr, "fakecuda: %s\n", last_error);
}

// inside reports whether [p, p+bytes) lies in one allocation.
static bool inside(unsigned long long p, size_t bytes) {
	std::lock_guard<std::mutex> g(mu);
	auto it = allocs.upper_bound((uintptr_t)p);
	if (it == allocs.begin()) return false;
	--it;
	return (uintptr_t)p >= it->first && (uintptr_t)p + bytes <= it->first + it->second;
}

static bool has_ctx(const char* call) {
	if (current_ctx != kCtx) {
		fail("%s without the context current on this thread", call);
		return false;
	}
	return true;
}

// ---- stream capture ------------------------------------------------------------

// One capture at a time, on one stream; global, not thread_local, since
// the Go caller may move between OS threads from one call to the next.
typedef std::vector<std::function<void()>> Work;
static std::mutex cap_mu;  // guards the capture state and the graph sets
static struct {
	bool active, invalid;  // invalid: a prohibited call happened during it
	void* stream;
	Work work;
} cap;
struct Graph {
	Work work;
};
static std::set<Graph*> graphs, execs;  // live graphs and executable graphs

// enqueue runs f now or, while a capture is active, appends it to the
// capture's work list. Callers check their arguments first, so that errors
// surface at capture time, and hand over a lambda that holds copies of
// everything it uses (the caller's host memory is gone at replay). It
// reports false where work goes to a stream other than the capturing one:
// real CUDA would run that work now, outside the graph.
static bool enqueue(const char* call, void* stream, std::function<void()> f) {
	{
		std::lock_guard<std::mutex> g(cap_mu);
		if (cap.active) {
			if (stream != cap.stream) {
				cap.invalid = true;
				fail("%s on stream %p while stream %p is capturing", call, stream, cap.stream);
				return false;
			}
			cap.work.push_back(std::move(f));
			return true;
		}
	}
	f();
	return true;
}

// capturing reports whether a capture is active, and if so fails the call
// and invalidates the capture: call is not allowed during one.
static bool capturing(const char* call) {
	std::lock_guard<std::mutex> g(cap_mu);
	if (!cap.active) return false;
	cap.invalid = true;
	fail("%s during stream capture", call);
	return true;
}

// ---- driver -----------------------------------------------------------------

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
enum {
	OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, INVALID_CONTEXT = 201, INVALID_HANDLE = 400, ILLEGAL_STATE = 401,
	NOT_FOUND = 500, ILLEGAL_ADDRESS = 700, CAPTURE_UNSUPPORTED = 900, CAPTURE_INVALIDATED = 901
};
static const size_t kTotalMem = 8ull << 30;
static size_t used;

CUresult cuInit(unsigned int flags) { return flags == 0 ? OK : INVALID_VALUE; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return OK; }
CUresult cuDeviceGet(int* d, int ordinal) {
	if (ordinal != 0) return 101;  // CUDA_ERROR_INVALID_DEVICE
	*d = 0;
	return OK;
}
CUresult cuDeviceGetName(char* name, int len, int dev) {
	snprintf(name, len, "Fake GPU");
	return dev == 0 ? OK : 101;
}
CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
	switch (attr) {
	case 16: *v = 2; return OK;   // multiprocessors
	case 75: *v = 9; return OK;   // compute capability major
	case 76: *v = 0; return OK;   // minor
	}
	return INVALID_VALUE;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) { *bytes = kTotalMem; return OK; }
CUresult cuDevicePrimaryCtxRetain(void** ctx, int dev) {
	retained++;
	*ctx = (void*)kCtx;
	return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { return retained-- > 0 ? OK : INVALID_CONTEXT; }
CUresult cuCtxSetCurrent(void* ctx) {
	current_ctx = (uintptr_t)ctx;
	return OK;
}
CUresult cuCtxSynchronize(void) {
	if (capturing("cuCtxSynchronize")) return CAPTURE_UNSUPPORTED;
	return has_ctx("cuCtxSynchronize") ? OK : INVALID_CONTEXT;
}
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
	if (capturing("cuMemAlloc")) return CAPTURE_UNSUPPORTED;
	if (!has_ctx("cuMemAlloc")) return INVALID_CONTEXT;
	if (n == 0) return INVALID_VALUE;
	std::lock_guard<std::mutex> g(mu);
	if (used + n > kTotalMem) return OUT_OF_MEMORY;
	void* m = aligned_alloc(256, (n + 255) / 256 * 256);
	if (!m) return OUT_OF_MEMORY;
	memset(m, 0xA5, n);  // garbage, as real device memory has
	allocs[(uintptr_t)m] = n;
	used += n;
	*p = (CUdeviceptr)(uintptr_t)m;
	return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
	if (capturing("cuMemFree")) return CAPTURE_UNSUPPORTED;
	if (!has_ctx("cuMemFree")) return INVALID_CONTEXT;
	std::lock_guard<std::mutex> g(mu);
	auto it = allocs.find((uintptr_t)p);
	if (it == allocs.end()) {
		fail("cuMemFree of %#llx, not an allocation", p);
		return INVALID_VALUE;
	}
	used -= it->second;
	allocs.erase(it);
	free((void*)(uintptr_t)p);
	return OK;
}
CUresult cuMemAllocHost_v2(void** p, size_t n) {
	if (capturing("cuMemAllocHost")) return CAPTURE_UNSUPPORTED;
	*p = malloc(n);
	return *p ? OK : OUT_OF_MEMORY;
}
CUresult cuMemFreeHost(void* p) {
	if (capturing("cuMemFreeHost")) return CAPTURE_UNSUPPORTED;
	free(p);
	return OK;
}
// copy copies now or, during a capture, at replay. Host<->device copies
// are not allowed during a capture at all: the fake is stricter than CUDA,
// whose graph would copy from host memory that may be gone at replay.
static CUresult copy(const char* call, void* dst, const void* src, size_t n, void* s) {
	if (!has_ctx(call)) return INVALID_CONTEXT;
	if (!enqueue(call, s, [=] { memcpy(dst, src, n); })) return CAPTURE_UNSUPPORTED;
	return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* s) {
	if (capturing("cuMemcpyHtoDAsync")) return CAPTURE_UNSUPPORTED;
	if (!inside(dst, n)) return ILLEGAL_ADDRESS;
	return copy("cuMemcpyHtoDAsync", (void*)(uintptr_t)dst, src, n, s);
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* s) {
	if (capturing("cuMemcpyDtoHAsync")) return CAPTURE_UNSUPPORTED;
	if (!inside(src, n)) return ILLEGAL_ADDRESS;
	return copy("cuMemcpyDtoHAsync", dst, (void*)(uintptr_t)src, n, s);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* s) {
	if (!inside(dst, n) || !inside(src, n)) return ILLEGAL_ADDRESS;
	return copy("cuMemcpyDtoDAsync", (void*)(uintptr_t)dst, (void*)(uintptr_t)src, n, s);
}
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, void* s) {
	if (!has_ctx("cuMemsetD16Async")) return INVALID_CONTEXT;
	if (!inside(dst, 2 * n) || dst % 2) return ILLEGAL_ADDRESS;
	unsigned short* p = (unsigned short*)(uintptr_t)dst;
	if (!enqueue("cuMemsetD16Async", s, [=] { for (size_t i = 0; i < n; i++) p[i] = v; })) return CAPTURE_UNSUPPORTED;
	return OK;
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, void* s) {
	if (!has_ctx("cuMemsetD32Async")) return INVALID_CONTEXT;
	if (!inside(dst, 4 * n) || dst % 4) return ILLEGAL_ADDRESS;
	unsigned int* p = (unsigned int*)(uintptr_t)dst;
	if (!enqueue("cuMemsetD32Async", s, [=] { for (size_t i = 0; i < n; i++) p[i] = v; })) return CAPTURE_UNSUPPORTED;
	return OK;
}
CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
	*free = kTotalMem - used;
	*total = kTotalMem;
	return OK;
}
CUresult cuStreamCreate(void** s, unsigned int flags) {
	*s = malloc(1);
	return has_ctx("cuStreamCreate") ? OK : INVALID_CONTEXT;
}
CUresult cuStreamSynchronize(void* s) {
	if (capturing("cuStreamSynchronize")) return CAPTURE_UNSUPPORTED;
	return has_ctx("cuStreamSynchronize") ? OK : INVALID_CONTEXT;
}
CUresult cuStreamDestroy_v2(void* s) {
	{
		std::lock_guard<std::mutex> g(cap_mu);
		if (cap.active && cap.stream == s) {  // the capture ends with its stream
			cap.active = cap.invalid = false;
			cap.stream = nullptr;
			cap.work.clear();
		}
	}
	free(s);
	return OK;
}

// Stream capture and graphs. A graph and its executable each hold a copy
// of the recorded work list.
CUresult cuStreamBeginCapture_v2(void* s, int mode) {
	if (!has_ctx("cuStreamBeginCapture")) return INVALID_CONTEXT;
	if (mode < 0 || mode > 2) return INVALID_VALUE;  // global, thread local, relaxed
	if (!s) {
		fail("cuStreamBeginCapture of the legacy stream");
		return CAPTURE_UNSUPPORTED;
	}
	std::lock_guard<std::mutex> g(cap_mu);
	if (cap.active) {
		fail("cuStreamBeginCapture on stream %p while stream %p is capturing", s, cap.stream);
		return ILLEGAL_STATE;
	}
	cap.active = true;
	cap.invalid = false;
	cap.stream = s;
	cap.work.clear();
	return OK;
}
CUresult cuStreamEndCapture(void* s, void** graph) {
	if (!has_ctx("cuStreamEndCapture")) return INVALID_CONTEXT;
	if (!graph) return INVALID_VALUE;
	std::lock_guard<std::mutex> g(cap_mu);
	if (!cap.active || cap.stream != s) {
		fail("cuStreamEndCapture of stream %p, which is not capturing", s);
		return ILLEGAL_STATE;
	}
	bool invalid = cap.invalid;
	Work work;
	work.swap(cap.work);
	cap.active = cap.invalid = false;
	cap.stream = nullptr;
	*graph = nullptr;
	if (invalid) return CAPTURE_INVALIDATED;
	Graph* gr = new Graph{std::move(work)};
	graphs.insert(gr);
	*graph = gr;
	return OK;
}
CUresult cuStreamIsCapturing(void* s, int* status) {
	if (!status) return INVALID_VALUE;
	std::lock_guard<std::mutex> g(cap_mu);
	*status = cap.active && cap.stream == s ? (cap.invalid ? 2 : 1) : 0;  // none, active, invalidated
	return OK;
}
CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags) {
	if (!has_ctx("cuGraphInstantiate")) return INVALID_CONTEXT;
	if (!exec || (flags & ~15ull)) return INVALID_VALUE;
	std::lock_guard<std::mutex> g(cap_mu);
	if (!graphs.count((Graph*)graph)) {
		fail("cuGraphInstantiate of %p, not a graph", graph);
		return INVALID_VALUE;
	}
	Graph* e = new Graph{((Graph*)graph)->work};
	execs.insert(e);
	*exec = e;
	return OK;
}
CUresult cuGraphLaunch(void* exec, void* s) {
	if (!has_ctx("cuGraphLaunch")) return INVALID_CONTEXT;
	Graph* e = (Graph*)exec;
	{
		std::lock_guard<std::mutex> g(cap_mu);
		if (!execs.count(e)) {
			fail("cuGraphLaunch of %p, not an executable graph", exec);
			return INVALID_HANDLE;
		}
		if (cap.active) {
			fail("cuGraphLaunch on stream %p while stream %p is capturing", s, cap.stream);
			return ILLEGAL_STATE;
		}
	}
	for (auto& f : e->work) f();
	return OK;
}
CUresult cuGraphExecDestroy(void* exec) {
	std::lock_guard<std::mutex> g(cap_mu);
	if (!execs.erase((Graph*)exec)) {
		fail("cuGraphExecDestroy of %p, not an executable graph", exec);
		return INVALID_HANDLE;
	}
	delete (Graph*)exec;
	return OK;
}
CUresult cuGraphDestroy(void* graph) {
	std::lock_guard<std::mutex> g(cap_mu);
	if (!graphs.erase((Graph*)graph)) {
		fail("cuGraphDestroy of %p, not a graph", graph);
		return INVALID_VALUE;
	}
	delete (Graph*)graph;
	return OK;
}
CUresult cuEventCreate(void** e, unsigned int flags) {
	*e = malloc(1);
	return OK;
}
CUresult cuEventRecord(void* e, void* s) { return has_ctx("cuEventRecord") ? OK : INVALID_CONTEXT; }
CUresult cuEventSynchronize(void* e) { return capturing("cuEventSynchronize") ? CAPTURE_UNSUPPORTED : OK; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) {
	*ms = 0.5f;
	return OK;
}
CUresult cuEventDestroy_v2(void* e) {
	free(e);
	return OK;
}
CUresult cuGetErrorName(CUresult e, const char** s) {
	switch (e) {
	case ILLEGAL_STATE: *s = "CUDA_ERROR_ILLEGAL_STATE"; break;
	case ILLEGAL_ADDRESS: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
	case CAPTURE_UNSUPPORTED: *s = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; break;
	case CAPTURE_INVALIDATED: *s = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"; break;
	default: *s = nullptr;
	}
	return *s ? OK : INVALID_VALUE;
}
CUresult cuGetErrorString(CUresult e, const char** s) {
	*s = last_error[0] ? last_error : nullptr;
	return *s ? OK : INVALID_VALUE;
}

// Modules: the "image" must be what the fake NVRTC produced.
static const char* kKernels[] = {"relu_forward", "relu_backward", "dropout_apply", "sgd_step",
                                 "bias_add_rows", "col_sum", "softmax_xent_rows", "mean_rows",
                                 "bn_stats", "bn_finish", "bn_apply", "bn_infer_coef",
                                 "bn_affine", "bn_grad_stats", "bn_grad_finish", "bn_grad_apply",
                                 "crop_resize", "tally",
                                 "cast_f32_bf16", "cast_bf16_f32", "relu_forward_bf16", "relu_backward_bf16",
                                 "dropout_apply_bf16", "bias_add_rows_bf16", "col_sum_bf16", "bias_add_nchw_bf16",
                                 "bias_grad_finish", "softmax_xent_rows_bf16", "tally_bf16", "bn_stats_bf16",
                                 "bn_apply_bf16", "bn_affine_bf16", "bn_grad_stats_bf16", "bn_grad_apply_bf16",
                                 "max_pool_forward_bf16", "max_pool_backward_bf16", "crop_resize_bf16"};
static const int kNumKernels = sizeof kKernels / sizeof *kKernels;
CUresult cuModuleLoadData(void** m, const void* image) {
	if (!has_ctx("cuModuleLoadData")) return INVALID_CONTEXT;
	if (strncmp((const char*)image, "FAKE", 4) != 0) return 200;  // CUDA_ERROR_INVALID_IMAGE
	*m = (void*)0x40D;
	return OK;
}
CUresult cuModuleUnload(void* m) { return m == (void*)0x40D ? OK : 400; }
CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
	for (uintptr_t i = 0; i < sizeof kKernels / sizeof *kKernels; i++) {
		if (strcmp(name, kKernels[i]) == 0) {
			*f = (void*)(i + 1);
			return OK;
		}
	}
	return NOT_FOUND;
}

#define PTR(i, T) arg<T*>(params, i)
#define U64(i) arg<unsigned long long>(params, i)
#define F32(i) arg<float>(params, i)
#define F64(i) arg<double>(params, i)
#define I32(i) arg<int>(params, i)
#define U32(i) arg<unsigned int>(params, i)
#define IN(p, bytes) if (!inside((uintptr_t)(p), (bytes))) { fail("kernel %s: argument out of bounds", kKernels[k]); return ILLEGAL_ADDRESS; }

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void* stream, void** params, void** extra) {
	if (!has_ctx("cuLaunchKernel")) return INVALID_CONTEXT;
	int k = (int)(uintptr_t)f - 1;
	if (k < 0 || k >= kNumKernels || extra != nullptr || gy != 1 || gz != 1 || by != 1 || bz != 1 || gx == 0 || bx == 0 || bx > 1024) {
		fail("cuLaunchKernel: bad function or dimensions");
		return INVALID_VALUE;
	}
	// Each case reads and checks the parameters now and hands enqueue a
	// launch that holds their values: the caller's parameter buffer is gone
	// by the time a graph replays it.
	std::function<void()> run;
	switch (k) {
	case 0: {  // relu_forward(float* y, const float* x, u64 n)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto n = U64(2);
		IN(y, 4 * n); IN(x, 4 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_forward(y, x, n); }); };
		break;
	}
	case 1: {  // relu_backward(float* dx, const float* dy, const float* y, u64 n)
		auto dx = PTR(0, float); auto dy = PTR(1, const float); auto y = PTR(2, const float); auto n = U64(3);
		IN(dx, 4 * n); IN(dy, 4 * n); IN(y, 4 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_backward(dx, dy, y, n); }); };
		break;
	}
	case 2: {  // dropout_apply(float* y, const float* x, u64 n, u64 key, const u64* key_at, u32 threshold, float scale)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto n = U64(2);
		auto key = U64(3); auto key_at = PTR(4, const unsigned long long); auto thr = U32(5); auto scale = F32(6);
		IN(y, 4 * n); IN(x, 4 * n);
		if (key_at) { IN(key_at, 8); }
		// The kernel reads *key_at when it runs: a replay sees the key of then.
		run = [=] { launch_seq(gx, bx, [=] { dropout_apply(y, x, n, key, key_at, thr, scale); }); };
		break;
	}
	case 3: {  // sgd_step(float* p, const float* g, float* m, u64 n, float lr, const float* lr_at, float mom, float wd,
	           //          float damp, int nesterov, int first)
		auto p = PTR(0, float); auto g = PTR(1, const float); auto m = PTR(2, float); auto n = U64(3);
		IN(p, 4 * n); IN(g, 4 * n); IN(m, 4 * n);
		auto lr = F32(4); auto lr_at = PTR(5, const float);
		auto mom = F32(6), wd = F32(7), damp = F32(8);
		auto nest = I32(9), first = I32(10);
		if (lr_at) { IN(lr_at, 4); }
		// The kernel reads *lr_at when it runs: a replay sees the rate of then.
		run = [=] { launch_seq(gx, bx, [=] { sgd_step(p, g, m, n, lr, lr_at, mom, wd, damp, nest, first); }); };
		break;
	}
	case 4: {  // bias_add_rows(float* y, const float* b, u64 rows, u64 cols)
		auto y = PTR(0, float); auto b = PTR(1, const float); auto rows = U64(2), cols = U64(3);
		IN(y, 4 * rows * cols); IN(b, 4 * cols);
		run = [=] { launch_seq(gx, bx, [=] { bias_add_rows(y, b, rows, cols); }); };
		break;
	}
	case 5: {  // col_sum(float* out, const float* x, u64 rows, u64 cols)
		auto o = PTR(0, float); auto x = PTR(1, const float); auto rows = U64(2), cols = U64(3);
		IN(o, 4 * cols); IN(x, 4 * rows * cols);
		run = [=] { launch_seq(gx, bx, [=] { col_sum(o, x, rows, cols); }); };
		break;
	}
	case 6: {  // softmax_xent_rows(double* row_loss, float* dlogits, const float* logits, const float* labels, u64 n, u64 c, double smoothing)
		auto rl = PTR(0, double); auto dl = PTR(1, float); auto lg = PTR(2, const float); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5); auto sm = F64(6);
		if (bx != RED_THREADS) return INVALID_VALUE;
		IN(rl, 8 * n); IN(lg, 4 * n * c); IN(lb, 4 * n);
		if (dl) { IN(dl, 4 * n * c); }
		run = [=] { launch_threads(gx, bx, [=] { softmax_xent_rows(rl, dl, lg, lb, n, c, sm); }); };
		break;
	}
	case 7: {  // mean_rows(float* out, const double* rows, u64 n)
		auto o = PTR(0, float); auto r = PTR(1, const double); auto n = U64(2);
		if (bx != RED_THREADS || gx != 1) return INVALID_VALUE;
		IN(o, 4); IN(r, 8 * n);
		run = [=] { launch_threads(gx, bx, [=] { mean_rows(o, r, n); }); };
		break;
	}
	case 8: {  // bn_stats(double* part, const float* x, u64 n, u64 c, u64 hw, u32 splits)
		auto part = PTR(0, double); auto x = PTR(1, const float); auto n = U64(2), c = U64(3), hw = U64(4); auto sp = U32(5);
		if (bx != RED_THREADS || sp == 0 || gx != c * sp) { fail("bn_stats: grid %u for %llu channels x %u", gx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(x, 4 * n * c * hw);
		run = [=] { launch_threads(gx, bx, [=] { bn_stats(part, x, n, c, hw, sp); }); };
		break;
	}
	case 9: {  // bn_finish(float* save_mean, float* save_inv, float* run_mean, float* run_var, float* scale,
	           //           const float* gamma, const double* part, u64 c, u32 splits, u64 m, double eps, double momentum)
		auto sm = PTR(0, float); auto si = PTR(1, float); auto rm = PTR(2, float); auto rv = PTR(3, float);
		auto sc = PTR(4, float); auto g = PTR(5, const float); auto part = PTR(6, const double);
		auto c = U64(7); auto sp = U32(8); auto m = U64(9); auto eps = F64(10), mom = F64(11);
		IN(sm, 4 * c); IN(si, 4 * c); IN(rm, 4 * c); IN(rv, 4 * c); IN(sc, 4 * c); IN(g, 4 * c); IN(part, 16 * c * sp);
		run = [=] { launch_seq(gx, bx, [=] { bn_finish(sm, si, rm, rv, sc, g, part, c, sp, m, eps, mom); }); };
		break;
	}
	case 10: {  // bn_apply(float* y, const float* x, const float* mean, const float* scale, const float* beta,
	            //          u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto mean = PTR(2, const float);
		auto sc = PTR(3, const float); auto beta = PTR(4, const float);
		auto n = U64(5), c = U64(6), hw = U64(7); auto relu = I32(8);
		IN(y, 4 * n * c * hw); IN(x, 4 * n * c * hw); IN(mean, 4 * c); IN(sc, 4 * c); IN(beta, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_apply(y, x, mean, sc, beta, n, c, hw, relu); }); };
		break;
	}
	case 11: {  // bn_infer_coef(float* scale, float* shift, const float* gamma, const float* beta,
	            //               const float* run_mean, const float* run_var, u64 c, double eps)
		auto sc = PTR(0, float); auto sh = PTR(1, float); auto g = PTR(2, const float); auto b = PTR(3, const float);
		auto rm = PTR(4, const float); auto rv = PTR(5, const float); auto c = U64(6); auto eps = F64(7);
		IN(sc, 4 * c); IN(sh, 4 * c); IN(g, 4 * c); IN(b, 4 * c); IN(rm, 4 * c); IN(rv, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_infer_coef(sc, sh, g, b, rm, rv, c, eps); }); };
		break;
	}
	case 12: {  // bn_affine(float* y, const float* x, const float* scale, const float* shift, u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto sc = PTR(2, const float); auto sh = PTR(3, const float);
		auto n = U64(4), c = U64(5), hw = U64(6); auto relu = I32(7);
		IN(y, 4 * n * c * hw); IN(x, 4 * n * c * hw); IN(sc, 4 * c); IN(sh, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_affine(y, x, sc, sh, n, c, hw, relu); }); };
		break;
	}
	case 13: {  // bn_grad_stats(double* part, const float* dy, const float* y, const float* x, const float* mean,
	            //               const float* inv, u64 n, u64 c, u64 hw, u32 splits, int relu)
		auto part = PTR(0, double); auto dy = PTR(1, const float); auto y = PTR(2, const float); auto x = PTR(3, const float);
		auto mean = PTR(4, const float); auto inv = PTR(5, const float);
		auto n = U64(6), c = U64(7), hw = U64(8); auto sp = U32(9); auto relu = I32(10);
		if (bx != RED_THREADS || sp == 0 || gx != c * sp) { fail("bn_grad_stats: grid %u for %llu channels x %u", gx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(dy, 4 * n * c * hw); IN(x, 4 * n * c * hw); IN(mean, 4 * c); IN(inv, 4 * c);
		if (relu) { IN(y, 4 * n * c * hw); }
		run = [=] { launch_threads(gx, bx, [=] { bn_grad_stats(part, dy, y, x, mean, inv, n, c, hw, sp, relu); }); };
		break;
	}
	case 14: {  // bn_grad_finish(float* dgamma, float* dbeta, float* coef, const float* gamma, const float* inv,
	            //                const double* part, u64 c, u32 splits, u64 m)
		auto dg = PTR(0, float); auto db = PTR(1, float); auto coef = PTR(2, float); auto g = PTR(3, const float);
		auto inv = PTR(4, const float); auto part = PTR(5, const double); auto c = U64(6); auto sp = U32(7); auto m = U64(8);
		IN(dg, 4 * c); IN(db, 4 * c); IN(coef, 12 * c); IN(g, 4 * c); IN(inv, 4 * c); IN(part, 16 * c * sp);
		run = [=] { launch_seq(gx, bx, [=] { bn_grad_finish(dg, db, coef, g, inv, part, c, sp, m); }); };
		break;
	}
	case 15: {  // bn_grad_apply(float* dx, const float* dy, const float* y, const float* x, const float* mean,
	            //               const float* inv, const float* coef, u64 n, u64 c, u64 hw, int relu)
		auto dx = PTR(0, float); auto dy = PTR(1, const float); auto y = PTR(2, const float); auto x = PTR(3, const float);
		auto mean = PTR(4, const float); auto inv = PTR(5, const float); auto coef = PTR(6, const float);
		auto n = U64(7), c = U64(8), hw = U64(9); auto relu = I32(10);
		IN(dx, 4 * n * c * hw); IN(dy, 4 * n * c * hw); IN(x, 4 * n * c * hw); IN(mean, 4 * c); IN(inv, 4 * c); IN(coef, 12 * c);
		if (relu) { IN(y, 4 * n * c * hw); }
		run = [=] { launch_seq(gx, bx, [=] { bn_grad_apply(dx, dy, y, x, mean, inv, coef, n, c, hw, relu); }); };
		break;
	}
	case 16: {  // crop_resize(float* y, const u8* images, const int* crops, const float* table, u64 n, u32 s, u32 side)
		auto y = PTR(0, float); auto im = PTR(1, const unsigned char); auto cr = PTR(2, const int); auto tab = PTR(3, const float);
		auto n = U64(4); auto sz = U32(5), side = U32(6);
		IN(y, 4 * n * 3 * sz * sz); IN(cr, 24 * n); IN(tab, 4 * 3 * 256);
		// Streams are synchronous here, so the crops are in memory now: every
		// image they name must lie inside the image set's allocation, and
		// every window must be one the kernel handles.
		for (unsigned long long j = 0; j < n; j++) {
			const int* c = cr + 6 * j;
			if (c[0] < 0 || c[3] < 1 || c[4] < 1 || c[3] > (int)side || c[4] > (int)side || (c[5] != 0 && c[5] != 1)) {
				fail("crop_resize: crop %llu is {%d %d %d %d %d %d}", j, c[0], c[1], c[2], c[3], c[4], c[5]);
				return INVALID_VALUE;
			}
			IN(im + (size_t)c[0] * 3 * side * side, 3 * side * side);
		}
		run = [=] { launch_seq(gx, bx, [=] { crop_resize(y, im, cr, tab, n, sz, side); }); };
		break;
	}
	case 17: {  // tally(float* acc, const float* loss, const float* logits, const float* labels, u64 n, u64 c)
		auto acc = PTR(0, float); auto loss = PTR(1, const float); auto lg = PTR(2, const float); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5);
		if (bx != RED_THREADS || gx != 1) return INVALID_VALUE;
		IN(acc, 8); IN(loss, 4); IN(lg, 4 * n * c); IN(lb, 4 * n);
		run = [=] { launch_threads(gx, bx, [=] { tally(acc, loss, lg, lb, n, c); }); };
		break;
	}
	// The bfloat16 kernels: activations are 2 bytes an element.
	case 18: {  // cast_f32_bf16(bf16* y, const float* x, u64 n)
		auto y = PTR(0, bf16); auto x = PTR(1, const float); auto n = U64(2);
		IN(y, 2 * n); IN(x, 4 * n);
		run = [=] { launch_seq(gx, bx, [=] { cast_f32_bf16(y, x, n); }); };
		break;
	}
	case 19: {  // cast_bf16_f32(float* y, const bf16* x, u64 n)
		auto y = PTR(0, float); auto x = PTR(1, const bf16); auto n = U64(2);
		IN(y, 4 * n); IN(x, 2 * n);
		run = [=] { launch_seq(gx, bx, [=] { cast_bf16_f32(y, x, n); }); };
		break;
	}
	case 20: {  // relu_forward_bf16(bf16* y, const bf16* x, u64 n)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto n = U64(2);
		IN(y, 2 * n); IN(x, 2 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_forward_bf16(y, x, n); }); };
		break;
	}
	case 21: {  // relu_backward_bf16(bf16* dx, const bf16* dy, const bf16* y, u64 n)
		auto dx = PTR(0, bf16); auto dy = PTR(1, const bf16); auto y = PTR(2, const bf16); auto n = U64(3);
		IN(dx, 2 * n); IN(dy, 2 * n); IN(y, 2 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_backward_bf16(dx, dy, y, n); }); };
		break;
	}
	case 22: {  // dropout_apply_bf16(bf16* y, const bf16* x, u64 n, u64 key, const u64* key_at, u32 threshold, float scale)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto n = U64(2);
		auto key = U64(3); auto key_at = PTR(4, const unsigned long long); auto thr = U32(5); auto scale = F32(6);
		IN(y, 2 * n); IN(x, 2 * n);
		if (key_at) { IN(key_at, 8); }
		run = [=] { launch_seq(gx, bx, [=] { dropout_apply_bf16(y, x, n, key, key_at, thr, scale); }); };
		break;
	}
	case 23: {  // bias_add_rows_bf16(bf16* y, const float* b, u64 rows, u64 cols)
		auto y = PTR(0, bf16); auto b = PTR(1, const float); auto rows = U64(2), cols = U64(3);
		IN(y, 2 * rows * cols); IN(b, 4 * cols);
		run = [=] { launch_seq(gx, bx, [=] { bias_add_rows_bf16(y, b, rows, cols); }); };
		break;
	}
	case 24: {  // col_sum_bf16(float* out, const bf16* x, u64 rows, u64 cols)
		auto o = PTR(0, float); auto x = PTR(1, const bf16); auto rows = U64(2), cols = U64(3);
		IN(o, 4 * cols); IN(x, 2 * rows * cols);
		run = [=] { launch_seq(gx, bx, [=] { col_sum_bf16(o, x, rows, cols); }); };
		break;
	}
	case 25: {  // bias_add_nchw_bf16(bf16* y, const float* b, u64 n, u64 c, u64 hw)
		auto y = PTR(0, bf16); auto b = PTR(1, const float); auto n = U64(2), c = U64(3), hw = U64(4);
		IN(y, 2 * n * c * hw); IN(b, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bias_add_nchw_bf16(y, b, n, c, hw); }); };
		break;
	}
	case 26: {  // bias_grad_finish(float* db, const double* part, u64 c, u32 splits)
		auto db = PTR(0, float); auto part = PTR(1, const double); auto c = U64(2); auto sp = U32(3);
		if (sp == 0) return INVALID_VALUE;
		IN(db, 4 * c); IN(part, 16 * c * sp);
		run = [=] { launch_seq(gx, bx, [=] { bias_grad_finish(db, part, c, sp); }); };
		break;
	}
	case 27: {  // softmax_xent_rows_bf16(double* row_loss, bf16* dlogits, const bf16* logits, const float* labels, u64 n, u64 c,
	            //                        double smoothing)
		auto rl = PTR(0, double); auto dl = PTR(1, bf16); auto lg = PTR(2, const bf16); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5); auto sm = F64(6);
		if (bx != RED_THREADS) return INVALID_VALUE;
		IN(rl, 8 * n); IN(lg, 2 * n * c); IN(lb, 4 * n);
		if (dl) { IN(dl, 2 * n * c); }
		run = [=] { launch_threads(gx, bx, [=] { softmax_xent_rows_bf16(rl, dl, lg, lb, n, c, sm); }); };
		break;
	}
	case 28: {  // tally_bf16(float* acc, const float* loss, const bf16* logits, const float* labels, u64 n, u64 c)
		auto acc = PTR(0, float); auto loss = PTR(1, const float); auto lg = PTR(2, const bf16); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5);
		if (bx != RED_THREADS || gx != 1) return INVALID_VALUE;
		IN(acc, 8); IN(loss, 4); IN(lg, 2 * n * c); IN(lb, 4 * n);
		run = [=] { launch_threads(gx, bx, [=] { tally_bf16(acc, loss, lg, lb, n, c); }); };
		break;
	}
	case 29: {  // bn_stats_bf16(double* part, const bf16* x, u64 n, u64 c, u64 hw, u32 splits)
		auto part = PTR(0, double); auto x = PTR(1, const bf16); auto n = U64(2), c = U64(3), hw = U64(4); auto sp = U32(5);
		if (bx != RED_THREADS || sp == 0 || gx != c * sp) { fail("bn_stats_bf16: grid %u for %llu channels x %u", gx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(x, 2 * n * c * hw);
		run = [=] { launch_threads(gx, bx, [=] { bn_stats_bf16(part, x, n, c, hw, sp); }); };
		break;
	}
	case 30: {  // bn_apply_bf16(bf16* y, const bf16* x, const float* mean, const float* scale, const float* beta,
	            //               u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto mean = PTR(2, const float);
		auto sc = PTR(3, const float); auto beta = PTR(4, const float);
		auto n = U64(5), c = U64(6), hw = U64(7); auto relu = I32(8);
		IN(y, 2 * n * c * hw); IN(x, 2 * n * c * hw); IN(mean, 4 * c); IN(sc, 4 * c); IN(beta, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_apply_bf16(y, x, mean, sc, beta, n, c, hw, relu); }); };
		break;
	}
	case 31: {  // bn_affine_bf16(bf16* y, const bf16* x, const float* scale, const float* shift, u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto sc = PTR(2, const float); auto sh = PTR(3, const float);
		auto n = U64(4), c = U64(5), hw = U64(6); auto relu = I32(7);
		IN(y, 2 * n * c * hw); IN(x, 2 * n * c * hw); IN(sc, 4 * c); IN(sh, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_affine_bf16(y, x, sc, sh, n, c, hw, relu); }); };
		break;
	}
	case 32: {  // bn_grad_stats_bf16(double* part, const bf16* dy, const bf16* y, const bf16* x, const float* mean,
	            //                    const float* inv, u64 n, u64 c, u64 hw, u32 splits, int relu)
		auto part = PTR(0, double); auto dy = PTR(1, const bf16); auto y = PTR(2, const bf16); auto x = PTR(3, const bf16);
		auto mean = PTR(4, const float); auto inv = PTR(5, const float);
		auto n = U64(6), c = U64(7), hw = U64(8); auto sp = U32(9); auto relu = I32(10);
		if (bx != RED_THREADS || sp == 0 || gx != c * sp) { fail("bn_grad_stats_bf16: grid %u for %llu channels x %u", gx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(dy, 2 * n * c * hw); IN(x, 2 * n * c * hw); IN(mean, 4 * c); IN(inv, 4 * c);
		if (relu) { IN(y, 2 * n * c * hw); }
		run = [=] { launch_threads(gx, bx, [=] { bn_grad_stats_bf16(part, dy, y, x, mean, inv, n, c, hw, sp, relu); }); };
		break;
	}
	case 33: {  // bn_grad_apply_bf16(bf16* dx, const bf16* dy, const bf16* y, const bf16* x, const float* mean,
	            //                    const float* inv, const float* coef, u64 n, u64 c, u64 hw, int relu)
		auto dx = PTR(0, bf16); auto dy = PTR(1, const bf16); auto y = PTR(2, const bf16); auto x = PTR(3, const bf16);
		auto mean = PTR(4, const float); auto inv = PTR(5, const float); auto coef = PTR(6, const float);
		auto n = U64(7), c = U64(8), hw = U64(9); auto relu = I32(10);
		IN(dx, 2 * n * c * hw); IN(dy, 2 * n * c * hw); IN(x, 2 * n * c * hw); IN(mean, 4 * c); IN(inv, 4 * c); IN(coef, 12 * c);
		if (relu) { IN(y, 2 * n * c * hw); }
		run = [=] { launch_seq(gx, bx, [=] { bn_grad_apply_bf16(dx, dy, y, x, mean, inv, coef, n, c, hw, relu); }); };
		break;
	}
	case 34: {  // max_pool_forward_bf16(bf16* y, const bf16* x, u64 planes, u32 h, u32 w, u32 k, u32 s)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto planes = U64(2);
		auto h = U32(3), w = U32(4), kk = U32(5), s = U32(6);
		if (kk == 0 || s == 0) { fail("max_pool_forward_bf16: window %u stride %u", kk, s); return INVALID_VALUE; }
		unsigned long long oh = pool_out(h, kk, s), ow = pool_out(w, kk, s);
		IN(y, 2 * planes * oh * ow); IN(x, 2 * planes * h * w);
		run = [=] { launch_seq(gx, bx, [=] { max_pool_forward_bf16(y, x, planes, h, w, kk, s); }); };
		break;
	}
	case 35: {  // max_pool_backward_bf16(bf16* dx, const bf16* dy, const bf16* x, u64 planes, u32 h, u32 w, u32 k, u32 s)
		auto dx = PTR(0, bf16); auto dy = PTR(1, const bf16); auto x = PTR(2, const bf16); auto planes = U64(3);
		auto h = U32(4), w = U32(5), kk = U32(6), s = U32(7);
		if (kk == 0 || s == 0) { fail("max_pool_backward_bf16: window %u stride %u", kk, s); return INVALID_VALUE; }
		unsigned long long oh = pool_out(h, kk, s), ow = pool_out(w, kk, s);
		IN(dx, 2 * planes * h * w); IN(dy, 2 * planes * oh * ow); IN(x, 2 * planes * h * w);
		run = [=] { launch_seq(gx, bx, [=] { max_pool_backward_bf16(dx, dy, x, planes, h, w, kk, s); }); };
		break;
	}
	case 36: {  // crop_resize_bf16(bf16* y, const u8* images, const int* crops, const float* table, u64 n, u32 s, u32 side)
		auto y = PTR(0, bf16); auto im = PTR(1, const unsigned char); auto cr = PTR(2, const int); auto tab = PTR(3, const float);
		auto n = U64(4); auto sz = U32(5), side = U32(6);
		IN(y, 2 * n * 3 * sz * sz); IN(cr, 24 * n); IN(tab, 4 * 3 * 256);
		// The crops are checked now, as crop_resize's.
		for (unsigned long long j = 0; j < n; j++) {
			const int* c = cr + 6 * j;
			if (c[0] < 0 || c[3] < 1 || c[4] < 1 || c[3] > (int)side || c[4] > (int)side || (c[5] != 0 && c[5] != 1)) {
				fail("crop_resize_bf16: crop %llu is {%d %d %d %d %d %d}", j, c[0], c[1], c[2], c[3], c[4], c[5]);
				return INVALID_VALUE;
			}
			IN(im + (size_t)c[0] * 3 * side * side, 3 * side * side);
		}
		run = [=] { launch_seq(gx, bx, [=] { crop_resize_bf16(y, im, cr, tab, n, sz, side); }); };
		break;
	}
	}
	if (!enqueue("cuLaunchKernel", stream, std::move(run))) return CAPTURE_UNSUPPORTED;
	return OK;
}

// ---- NVRTC -------------------------------------------------------------------

struct Prog {
	std::string src, arch, out;
	bool compiled = false;
};
int nvrtcVersion(int* major, int* minor) {
	*major = 13;
	*minor = 0;
	return 0;
}
const char* nvrtcGetErrorString(int r) { return r == 0 ? "NVRTC_SUCCESS" : r == 6 ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR_INVALID_INPUT"; }
static const int kArchs[] = {75, 80, 86, 89, 90, 100, 120};
int nvrtcGetNumSupportedArchs(int* n) {
	*n = 7;
	return 0;
}
int nvrtcGetSupportedArchs(int* a) {
	memcpy(a, kArchs, sizeof kArchs);
	return 0;
}
int nvrtcCreateProgram(void** prog, const char* src, const char* name, int nh, const char* const* h, const char* const* in) {
	if (!src || nh != 0) return 3;
	Prog* p = new Prog;
	p->src = src;
	*prog = p;
	return 0;
}
int nvrtcCompileProgram(void* prog, int n, const char* const* opts) {
	Prog* p = (Prog*)prog;
	bool fmad = false;
	for (int i = 0; i < n; i++) {
		std::string o = opts[i];
		if (o.rfind("--gpu-architecture=", 0) == 0) p->arch = o.substr(19);
		if (o == "--fmad=false") fmad = true;
	}
	if (p->arch.empty() || !fmad || p->src.find("extern \"C\" __global__ void sgd_step(") == std::string::npos) return 5;
	p->out = "FAKE " + p->arch;
	p->compiled = true;
	return 0;
}
int nvrtcGetProgramLogSize(void* prog, size_t* n) {
	*n = 1;
	return 0;
}
int nvrtcGetProgramLog(void* prog, char* log) {
	log[0] = 0;
	return 0;
}
static int image(void* prog, bool cubin, size_t* n, char* out) {
	Prog* p = (Prog*)prog;
	if (!p->compiled || cubin != (p->arch.rfind("sm_", 0) == 0)) return 4;
	if (n) *n = p->out.size() + 1;
	if (out) memcpy(out, p->out.c_str(), p->out.size() + 1);
	return 0;
}
int nvrtcGetCUBINSize(void* prog, size_t* n) { return image(prog, true, n, nullptr); }
int nvrtcGetCUBIN(void* prog, char* out) { return image(prog, true, nullptr, out); }
int nvrtcGetPTXSize(void* prog, size_t* n) { return image(prog, false, n, nullptr); }
int nvrtcGetPTX(void* prog, char* out) { return image(prog, false, nullptr, out); }
int nvrtcDestroyProgram(void** prog) {
	delete (Prog*)*prog;
	*prog = nullptr;
	return 0;
}

// ---- cuBLAS ------------------------------------------------------------------

// A cuBLAS or cuDNN handle: the stream its work goes to (the legacy
// stream, null, until set), which a capture checks.
struct Handle {
	void* stream;
};
static void* stream_of(void* h) { return h ? ((Handle*)h)->stream : nullptr; }

int cublasCreate_v2(void** h) {
	if (!has_ctx("cublasCreate")) return 1;
	*h = new Handle();
	return 0;
}
int cublasDestroy_v2(void* h) {
	delete (Handle*)h;
	return 0;
}
int cublasSetStream_v2(void* h, void* s) {
	if (!h) return 1;  // CUBLAS_STATUS_NOT_INITIALIZED
	((Handle*)h)->stream = s;
	return 0;
}
// cublasSetWorkspace_v2: the buffer must lie in one allocation (or be none).
int cublasSetWorkspace_v2(void* h, void* workspace, size_t bytes) {
	if (!h) return 1;
	if (bytes == 0 || inside((uintptr_t)workspace, bytes)) return 0;
	fail("cublasSetWorkspace: %zu bytes at %p outside any allocation", bytes, workspace);
	return 7;
}
int cublasSetMathMode(void* h, int mode) { return (mode == 0 || mode == 2 || mode == 3) ? 0 : 7; }
int cublasGetVersion_v2(void* h, int* v) {
	*v = 130100;
	return 0;
}
int cublasGetProperty(int type, int* v) {
	static const int ver[] = {13, 1, 0};
	if (type < 0 || type > 2) return 7;
	*v = ver[type];
	return 0;
}
const char* cublasGetStatusName(int s) { return s == 7 ? "CUBLAS_STATUS_INVALID_VALUE" : "CUBLAS_STATUS_UNKNOWN"; }
const char* cublasGetStatusString(int s) { return "fake cuBLAS"; }

// cublasSgemm_v2: column-major C = alpha·op(A)·op(B) + beta·C, the BLAS
// reference loop.
int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
	if (!has_ctx("cublasSgemm")) return 13;
	if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || m < 0 || n < 0 || k < 0) return 7;
	int ar = ta == 0 ? m : k, ac = ta == 0 ? k : m;  // A as stored: ar × ac
	int br = tb == 0 ? k : n, bc = tb == 0 ? n : k;
	if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)) {
		fail("cublasSgemm: leading dimension too small (lda %d for %d rows, ldb %d for %d, ldc %d for %d)", lda, ar, ldb, br, ldc, m);
		return 7;
	}
	if ((m && k && !inside((uintptr_t)A, 4ull * ((ac - 1) * (size_t)lda + ar))) ||
	    (k && n && !inside((uintptr_t)B, 4ull * ((bc - 1) * (size_t)ldb + br))) ||
	    (m && n && !inside((uintptr_t)C, 4ull * ((n - 1) * (size_t)ldc + m)))) {
		fail("cublasSgemm: matrix outside its allocation");
		return 13;  // CUBLAS_STATUS_EXECUTION_FAILED
	}
	float al = *alpha, be = *beta;
	bool ok = enqueue("cublasSgemm", stream_of(h), [=] {
		for (int j = 0; j < n; j++) {
			for (int i = 0; i < m; i++) {
				double s = 0;
				for (int p = 0; p < k; p++) {
					float a = ta == 0 ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda];
					float b = tb == 0 ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb];
					s += (double)a * b;
				}
				float* c = &C[i + (size_t)j * ldc];
				*c = be == 0 ? (float)(al * s) : (float)(al * s + be * *c);
			}
		}
	});
	return ok ? 0 : 13;
}

// bfloat16 in the stand-ins: the top 16 bits of a float, rounded to
// nearest even (tensor.ToBF16).
static float fk_from_bf16(uint16_t h) {
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}
static uint16_t fk_to_bf16(float f) {
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}
// fk_elem is the size of a cudaDataType / cudnnDataType_t element the
// stand-ins handle: float (0 in both) and bfloat16 (CUDA_R_16BF = 14,
// CUDNN_DATA_BFLOAT16 = 9); 0 for anything else.
static size_t fk_elem(int t, bool dnn) { return t == 0 ? 4 : t == (dnn ? 9 : 14) ? 2 : 0; }
static float fk_load(const void* p, size_t i, size_t elem) {
	return elem == 4 ? ((const float*)p)[i] : fk_from_bf16(((const uint16_t*)p)[i]);
}
static void fk_store(void* p, size_t i, size_t elem, float v) {
	if (elem == 4) ((float*)p)[i] = v;
	else ((uint16_t*)p)[i] = fk_to_bf16(v);
}

// cublasGemmEx with float accumulation (CUBLAS_COMPUTE_32F): operands of
// type CUDA_R_32F or CUDA_R_16BF, the reference loop of cublasSgemm_v2.
int cublasGemmEx(void* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int atype, int lda,
                 const void* B, int btype, int ldb, const void* beta, void* C, int ctype, int ldc, int compute, int algo) {
	if (!has_ctx("cublasGemmEx")) return 13;
	size_t ea = fk_elem(atype, false), eb = fk_elem(btype, false), ec = fk_elem(ctype, false);
	if (!ea || !eb || !ec || compute != 68 || algo != -1 || atype != btype) {
		fail("cublasGemmEx: types A %d B %d C %d, compute %d, algo %d not supported", atype, btype, ctype, compute, algo);
		return 15;  // CUBLAS_STATUS_NOT_SUPPORTED
	}
	if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || m < 0 || n < 0 || k < 0) return 7;
	int ar = ta == 0 ? m : k, ac = ta == 0 ? k : m;
	int br = tb == 0 ? k : n, bc = tb == 0 ? n : k;
	if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)) {
		fail("cublasGemmEx: leading dimension too small (lda %d for %d rows, ldb %d for %d, ldc %d for %d)", lda, ar, ldb, br, ldc, m);
		return 7;
	}
	if ((m && k && !inside((uintptr_t)A, ea * ((ac - 1) * (size_t)lda + ar))) ||
	    (k && n && !inside((uintptr_t)B, eb * ((bc - 1) * (size_t)ldb + br))) ||
	    (m && n && !inside((uintptr_t)C, ec * ((n - 1) * (size_t)ldc + m)))) {
		fail("cublasGemmEx: matrix outside its allocation");
		return 13;
	}
	float al = *(const float*)alpha, be = *(const float*)beta;
	bool ok = enqueue("cublasGemmEx", stream_of(h), [=] {
		for (int j = 0; j < n; j++) {
			for (int i = 0; i < m; i++) {
				double s = 0;
				for (int p = 0; p < k; p++) {
					float a = fk_load(A, ta == 0 ? i + (size_t)p * lda : p + (size_t)i * lda, ea);
					float b = fk_load(B, tb == 0 ? p + (size_t)j * ldb : j + (size_t)p * ldb, eb);
					s += (double)a * b;
				}
				size_t at = i + (size_t)j * ldc;
				fk_store(C, at, ec, be == 0 ? (float)(al * s) : (float)(al * s + be * fk_load(C, at, ec)));
			}
		}
	});
	return ok ? 0 : 13;
}

// ---- cuDNN 9 -----------------------------------------------------------------

enum { DNN_OK = 0, BAD_PARAM = 2000, MISALIGNED = 2003, NOT_SUPPORTED = 3000, EXEC_FAILED = 5000 };
enum { TENSOR = 1, FILTER, CONV, POOL, LRN };
struct Desc {
	int kind;
	bool set;
	int n, c, h, w;        // tensor / filter (k, c, h, w)
	int pad, math;         // convolution
	int win, stride;       // pooling
	unsigned lrnN;         // LRN
	double alpha, beta, k;
	int dtype;             // tensor / filter: 0 float, 9 bfloat16
};

size_t cudnnGetVersion(void) { return 91400; }
const char* cudnnGetErrorString(int s) {
	switch (s) {
	case DNN_OK: return "CUDNN_STATUS_SUCCESS";
	case BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
	case MISALIGNED: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
	case NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
	}
	return "CUDNN_STATUS_EXECUTION_FAILED";
}
void cudnnGetLastErrorString(char* buf, size_t n) {
	snprintf(buf, n, "%s", last_error);
	last_error[0] = 0;
}
int cudnnCreate(void** h) {
	if (!has_ctx("cudnnCreate")) return EXEC_FAILED;
	*h = new Handle();
	return 0;
}
int cudnnDestroy(void* h) {
	delete (Handle*)h;
	return 0;
}
int cudnnSetStream(void* h, void* s) {
	if (!h) return BAD_PARAM;
	((Handle*)h)->stream = s;
	return 0;
}
// ENQUEUE(f) runs or records the computation f, a lambda, of a cuDNN call
// on h's stream, and returns the call's status (variadic: f has commas).
#define ENQUEUE(...) return enqueue(__func__, stream_of(h), __VA_ARGS__) ? 0 : EXEC_FAILED

static int create(void** d, int kind) {
	Desc* x = new Desc();
	x->kind = kind;
	*d = x;
	return 0;
}
static int destroy(void* d, int kind) {
	if (!d || ((Desc*)d)->kind != kind) return BAD_PARAM;
	delete (Desc*)d;
	return 0;
}
int cudnnCreateTensorDescriptor(void** d) { return create(d, TENSOR); }
int cudnnDestroyTensorDescriptor(void* d) { return destroy(d, TENSOR); }
int cudnnCreateFilterDescriptor(void** d) { return create(d, FILTER); }
int cudnnDestroyFilterDescriptor(void* d) { return destroy(d, FILTER); }
int cudnnCreateConvolutionDescriptor(void** d) { return create(d, CONV); }
int cudnnDestroyConvolutionDescriptor(void* d) { return destroy(d, CONV); }
int cudnnCreatePoolingDescriptor(void** d) { return create(d, POOL); }
int cudnnDestroyPoolingDescriptor(void* d) { return destroy(d, POOL); }
int cudnnCreateLRNDescriptor(void** d) { return create(d, LRN); }
int cudnnDestroyLRNDescriptor(void* d) { return destroy(d, LRN); }

int cudnnSetTensor4dDescriptor(void* d, int format, int dtype, int n, int c, int h, int w) {
	Desc* t = (Desc*)d;
	if (t->kind != TENSOR || format != 0 || !fk_elem(dtype, true) || n <= 0 || c <= 0 || h <= 0 || w <= 0) return BAD_PARAM;
	*t = Desc{TENSOR, true, n, c, h, w};
	t->dtype = dtype;
	return 0;
}
int cudnnSetFilter4dDescriptor(void* d, int dtype, int format, int k, int c, int h, int w) {
	Desc* t = (Desc*)d;
	if (t->kind != FILTER || format != 0 || !fk_elem(dtype, true) || k <= 0 || c <= 0 || h <= 0 || w <= 0) return BAD_PARAM;
	*t = Desc{FILTER, true, k, c, h, w};
	t->dtype = dtype;
	return 0;
}
int cudnnSetConvolution2dDescriptor(void* d, int ph, int pw, int u, int v, int dh, int dw, int mode, int ctype) {
	Desc* t = (Desc*)d;
	if (t->kind != CONV || ph != pw || ph < 0 || u != 1 || v != 1 || dh != 1 || dw != 1) return NOT_SUPPORTED;
	if (mode != 1 || ctype != 0) {  // cross-correlation, float accumulation
		fail("cudnnSetConvolution2dDescriptor: mode %d, compute type %d", mode, ctype);
		return BAD_PARAM;
	}
	t->set = true;
	t->pad = ph;
	return 0;
}
int cudnnSetConvolutionMathType(void* d, int math) {
	Desc* t = (Desc*)d;
	if (t->kind != CONV || math < 0 || math > 3) return BAD_PARAM;
	t->math = math;
	return 0;
}
int cudnnSetPooling2dDescriptor(void* d, int mode, int nan, int wh, int ww, int ph, int pw, int sh, int sw) {
	Desc* t = (Desc*)d;
	if (t->kind != POOL || mode != 0 || nan != 1 || wh != ww || sh != sw || ph != 0 || pw != 0 || wh <= 0 || sh <= 0) return BAD_PARAM;
	t->set = true;
	t->win = wh;
	t->stride = sh;
	return 0;
}
int cudnnSetLRNDescriptor(void* d, unsigned n, double a, double b, double k) {
	Desc* t = (Desc*)d;
	if (t->kind != LRN || n < 1 || n > 16 || k < 1e-5 || b < 0.01) return BAD_PARAM;
	t->set = true;
	t->lrnN = n;
	t->alpha = a;
	t->beta = b;
	t->k = k;
	return 0;
}

// Dany is descriptor d, which must be of kind and set; D also wants it
// float: only the convolutions take bfloat16 here (the backend runs batch
// norm, pooling and bias additions of bf16 data in its own kernels).
static Desc* Dany(void* d, int kind) {
	Desc* t = (Desc*)d;
	if (!t || t->kind != kind || !t->set) {
		fail("descriptor of kind %d expected, got kind %d", kind, t ? t->kind : -1);
		return nullptr;
	}
	return t;
}
static Desc* D(void* d, int kind) {
	Desc* t = Dany(d, kind);
	if (t && (kind == TENSOR || kind == FILTER) && t->dtype != 0) {
		fail("a data type %d descriptor where this stand-in call takes float only", t->dtype);
		return nullptr;
	}
	return t;
}
static size_t vol(const Desc* t) { return (size_t)t->n * t->c * t->h * t->w; }
// dev checks a tensor operand of elements of elem bytes: inside an
// allocation and 16-byte aligned.
static int dev(const void* p, size_t n, const char* what, size_t elem = 4) {
	if ((uintptr_t)p % 16) {
		fail("%s: pointer %p not 16-byte aligned", what, p);
		return MISALIGNED;
	}
	if (!inside((uintptr_t)p, elem * n)) {
		fail("%s: %zu elements of %zu bytes at %p outside any allocation", what, n, elem, p);
		return EXEC_FAILED;
	}
	return 0;
}
#define CHECK(x) do { int _r = (x); if (_r) return _r; } while (0)
#define NEED(c) do { if (!(c)) { fail("%s: %s", __func__, #c); return BAD_PARAM; } } while (0)

// Convolution geometry of x (tensor), w (filter), y (tensor).
static int geometry(Desc* x, Desc* w, Desc* conv, Desc* y) {
	NEED(x && w && conv && y);
	NEED(x->dtype == w->dtype && y->dtype == x->dtype);  // float, or bfloat16 with float accumulation
	NEED(w->c == x->c && y->n == x->n && y->c == w->n && w->h == w->w);
	NEED(y->h == x->h + 2 * conv->pad - w->h + 1 && y->w == x->w + 2 * conv->pad - w->w + 1);
	return 0;
}

// Descriptors of a direction, in the order of the Find call.
static int conv_descs(int dir, void* a, void* b, void* c, void* cv, Desc** x, Desc** w, Desc** y, Desc** conv) {
	*conv = Dany(cv, CONV);
	if (dir == 0) *x = Dany(a, TENSOR), *w = Dany(b, FILTER), *y = Dany(c, TENSOR);
	if (dir == 1) *w = Dany(a, FILTER), *y = Dany(b, TENSOR), *x = Dany(c, TENSOR);
	if (dir == 2) *x = Dany(a, TENSOR), *y = Dany(b, TENSOR), *w = Dany(c, FILTER);
	return geometry(*x, *w, *conv, *y);
}

struct Perf {
	int algo, status;
	float time;
	size_t memory;
	int determinism, mathType;
	int reserved[3];
};
static const size_t kWorkspace0 = 4096;  // algorithm 0 wants a workspace, 1 none

static int find(int dir, void* h, void* a, void* b, void* cv, void* c, int req, int* ret, Perf* perf) {
	if (capturing("cudnnFind*Algorithm")) return EXEC_FAILED;  // it would allocate and synchronise
	if (!has_ctx("cudnnFind")) return EXEC_FAILED;
	Desc *x, *w, *y, *conv;
	CHECK(conv_descs(dir, a, b, c, cv, &x, &w, &y, &conv));
	NEED(req >= 3);
	perf[0] = Perf{2, NOT_SUPPORTED, -1, 0, 1, conv->math};
	perf[1] = Perf{0, DNN_OK, 0.1f, kWorkspace0, 0, conv->math};
	perf[2] = Perf{1, DNN_OK, 0.2f, 0, 1, conv->math};
	*ret = 3;
	// FAKECUDA_BF16_MIN_C=N: like a cuDNN without bf16 algorithms for
	// fewer than N input channels (the backend must then go float32).
	const char* minc = getenv("FAKECUDA_BF16_MIN_C");
	if (minc && x->dtype == 9 && x->c < atoi(minc)) {
		perf[1].status = perf[2].status = NOT_SUPPORTED;
	}
	return 0;
}
int cudnnFindConvolutionForwardAlgorithm(void* h, void* x, void* w, void* cv, void* y, int req, int* ret, Perf* p) {
	return find(0, h, x, w, cv, y, req, ret, p);
}
int cudnnFindConvolutionBackwardDataAlgorithm(void* h, void* w, void* dy, void* cv, void* dx, int req, int* ret, Perf* p) {
	return find(1, h, w, dy, cv, dx, req, ret, p);
}
int cudnnFindConvolutionBackwardFilterAlgorithm(void* h, void* x, void* dy, void* cv, void* dw, int req, int* ret, Perf* p) {
	return find(2, h, x, dy, cv, dw, req, ret, p);
}
static int workspace(int dir, void* a, void* b, void* cv, void* c, int algo, size_t* size) {
	Desc *x, *w, *y, *conv;
	CHECK(conv_descs(dir, a, b, c, cv, &x, &w, &y, &conv));
	if (algo != 0 && algo != 1) return BAD_PARAM;
	*size = algo == 0 ? kWorkspace0 : 0;
	return 0;
}
int cudnnGetConvolutionForwardWorkspaceSize(void* h, void* x, void* w, void* cv, void* y, int algo, size_t* s) {
	return workspace(0, x, w, cv, y, algo, s);
}
int cudnnGetConvolutionBackwardDataWorkspaceSize(void* h, void* w, void* dy, void* cv, void* dx, int algo, size_t* s) {
	return workspace(1, w, dy, cv, dx, algo, s);
}
int cudnnGetConvolutionBackwardFilterWorkspaceSize(void* h, void* x, void* dy, void* cv, void* dw, int algo, size_t* s) {
	return workspace(2, x, dy, cv, dw, algo, s);
}

// conv_run: out = alpha·op + beta·out for one direction; x, w, y are the
// three operands' data whichever is the output.
static int conv_run(void* h, int dir, const float* alpha, void* ad, const void* a, void* bd, const void* b, void* cv, int algo,
                    void* ws, size_t wsSize, const float* beta, void* od, void* o) {
	if (!has_ctx("cudnnConvolution")) return EXEC_FAILED;
	Desc *x, *w, *y, *conv;
	CHECK(conv_descs(dir, ad, bd, od, cv, &x, &w, &y, &conv));
	// Real cuDNN runs bf16 under the default math type too, but on CUDA
	// cores only (3x slower than TF32 on an H200): refuse it here so a
	// test catches a bf16 convolution that did not ask for tensor cores.
	if (x->dtype == 9 && conv->math != 1) {
		fail("bf16 convolution under math type %d, not CUDNN_TENSOR_OP_MATH", conv->math);
		return NOT_SUPPORTED;
	}
	size_t need = algo == 0 ? kWorkspace0 : 0;
	if (algo != 0 && algo != 1) return BAD_PARAM;
	if (wsSize < need || (need && !inside((uintptr_t)ws, need))) {
		fail("workspace of %zu bytes at %p for algorithm %d", wsSize, ws, algo);
		return BAD_PARAM;
	}
	const void *X = nullptr, *W = nullptr, *Y = nullptr;
	size_t outN = dir == 0 ? vol(y) : dir == 1 ? vol(x) : vol(w);
	size_t E = fk_elem(x->dtype, true);  // all three operands have x's type
	if (dir == 0) X = a, W = b;
	if (dir == 1) W = a, Y = b;
	if (dir == 2) X = a, Y = b;
	CHECK(dev(a, dir == 1 ? vol(w) : vol(x), "conv a", E));
	CHECK(dev(b, dir == 0 ? vol(w) : vol(y), "conv b", E));
	CHECK(dev(o, outN, "conv out", E));
	// The computation holds copies of the descriptors and scalars.
	Desc xs = *x, ws_ = *w, ys = *y;
	int K = w->h, P = conv->pad;
	float al = *alpha, be = *beta;
	ENQUEUE([=] {
		const Desc *x = &xs, *w = &ws_, *y = &ys;
		std::vector<double> acc(outN, 0.0);
		for (int n = 0; n < x->n; n++)
			for (int co = 0; co < w->n; co++)
				for (int oy = 0; oy < y->h; oy++)
					for (int ox = 0; ox < y->w; ox++)
						for (int ci = 0; ci < x->c; ci++)
							for (int ky = 0; ky < K; ky++)
								for (int kx = 0; kx < K; kx++) {
									int iy = oy + ky - P, ix = ox + kx - P;
									if (iy < 0 || iy >= x->h || ix < 0 || ix >= x->w) continue;
									size_t xi = (((size_t)n * x->c + ci) * x->h + iy) * x->w + ix;
									size_t wi = (((size_t)co * w->c + ci) * K + ky) * K + kx;
									size_t yi = (((size_t)n * y->c + co) * y->h + oy) * y->w + ox;
									if (dir == 0) acc[yi] += (double)fk_load(X, xi, E) * fk_load(W, wi, E);
									if (dir == 1) acc[xi] += (double)fk_load(W, wi, E) * fk_load(Y, yi, E);
									if (dir == 2) acc[wi] += (double)fk_load(X, xi, E) * fk_load(Y, yi, E);
								}
		for (size_t i = 0; i < outN; i++) fk_store(o, i, E, (float)(al * acc[i] + (be == 0 ? 0.0 : be * fk_load(o, i, E))));
	});
}
int cudnnConvolutionForward(void* h, const float* alpha, void* xd, const void* x, void* wd, const void* w, void* cv, int algo,
                            void* ws, size_t wsSize, const float* beta, void* yd, void* y) {
	return conv_run(h, 0, alpha, xd, x, wd, w, cv, algo, ws, wsSize, beta, yd, y);
}
int cudnnConvolutionBackwardData(void* h, const float* alpha, void* wd, const void* w, void* dyd, const void* dy, void* cv,
                                 int algo, void* ws, size_t wsSize, const float* beta, void* dxd, void* dx) {
	return conv_run(h, 1, alpha, wd, w, dyd, dy, cv, algo, ws, wsSize, beta, dxd, dx);
}
int cudnnConvolutionBackwardFilter(void* h, const float* alpha, void* xd, const void* x, void* dyd, const void* dy, void* cv,
                                   int algo, void* ws, size_t wsSize, const float* beta, void* dwd, void* dw) {
	return conv_run(h, 2, alpha, xd, x, dyd, dy, cv, algo, ws, wsSize, beta, dwd, dw);
}

// A per-channel descriptor [1, C, 1, 1].
static Desc* channel(void* d, int c) {
	Desc* t = D(d, TENSOR);
	if (t && (t->n != 1 || t->c != c || t->h != 1 || t->w != 1)) {
		fail("per-channel descriptor [%d %d %d %d] for %d channels", t->n, t->c, t->h, t->w, c);
		return nullptr;
	}
	return t;
}

int cudnnConvolutionBackwardBias(void* h, const float* alpha, void* dyd, const void* dy, const float* beta, void* dbd, void* db) {
	Desc* y = D(dyd, TENSOR);
	NEED(y && channel(dbd, y->c));
	CHECK(dev(dy, vol(y), "bias gradient dy"));
	CHECK(dev(db, y->c, "bias gradient db"));
	const float* DY = (const float*)dy;
	float* DB = (float*)db;
	size_t hw = (size_t)y->h * y->w;
	int N = y->n, C = y->c;
	float al = *alpha, be = *beta;
	ENQUEUE([=] {
		for (int c = 0; c < C; c++) {
			double s = 0;
			for (int n = 0; n < N; n++)
				for (size_t i = 0; i < hw; i++) s += DY[((size_t)n * C + c) * hw + i];
			DB[c] = (float)(al * s + (be == 0 ? 0.0 : be * DB[c]));
		}
	});
}

int cudnnAddTensor(void* h, const float* alpha, void* ad, const void* a, const float* beta, void* cd, void* c) {
	Desc* C = D(cd, TENSOR);
	NEED(C && channel(ad, C->c));
	CHECK(dev(a, C->c, "add tensor a"));
	CHECK(dev(c, vol(C), "add tensor c"));
	const float* A = (const float*)a;
	float* Y = (float*)c;
	size_t hw = (size_t)C->h * C->w;
	int N = C->n, CC = C->c;
	float al = *alpha, be = *beta;
	ENQUEUE([=] {
		for (int n = 0; n < N; n++)
			for (int ch = 0; ch < CC; ch++)
				for (size_t i = 0; i < hw; i++) {
					float* y = &Y[((size_t)n * CC + ch) * hw + i];
					*y = al * A[ch] + be * *y;
				}
	});
}

// Batch norm, spatial mode: statistics per channel over N, H, W.
static int bn_shapes(int mode, void* xd, void* yd, void* bnd, Desc** x) {
	NEED(mode == 1);
	*x = D(xd, TENSOR);
	Desc* y = D(yd, TENSOR);
	NEED(*x && y && vol(*x) == vol(y) && y->c == (*x)->c && channel(bnd, (*x)->c));
	return 0;
}
int cudnnBatchNormalizationForwardTraining(void* h, int mode, const float* alpha, const float* beta, void* xd, const void* x,
                                           void* yd, void* y, void* bnd, const void* scale, const void* bias, double factor,
                                           void* runMean, void* runVar, double eps, void* saveMean, void* saveInv) {
	Desc* X;
	CHECK(bn_shapes(mode, xd, yd, bnd, &X));
	NEED(*alpha == 1 && *beta == 0 && eps >= 0 && saveMean && saveInv);
	int C = X->c;
	CHECK(dev(x, vol(X), "bn x")); CHECK(dev(y, vol(X), "bn y"));
	for (const void* p : {scale, bias, (const void*)runMean, (const void*)runVar, (const void*)saveMean, (const void*)saveInv})
		CHECK(dev(p, C, "bn per-channel"));
	const float *XP = (const float*)x, *G = (const float*)scale, *B = (const float*)bias;
	float *YP = (float*)y, *RM = (float*)runMean, *RV = (float*)runVar, *SM = (float*)saveMean, *SI = (float*)saveInv;
	size_t hw = (size_t)X->h * X->w, cnt = (size_t)X->n * hw;
	int N = X->n;
	ENQUEUE([=] {
		for (int c = 0; c < C; c++) {
			double s = 0, ss = 0;
			for (int n = 0; n < N; n++)
				for (size_t i = 0; i < hw; i++) s += XP[((size_t)n * C + c) * hw + i];
			double mean = s / cnt;
			for (int n = 0; n < N; n++)
				for (size_t i = 0; i < hw; i++) {
					double d = XP[((size_t)n * C + c) * hw + i] - mean;
					ss += d * d;
				}
			double inv = 1 / sqrt(ss / cnt + eps);
			for (int n = 0; n < N; n++)
				for (size_t i = 0; i < hw; i++) {
					size_t j = ((size_t)n * C + c) * hw + i;
					YP[j] = (float)(G[c] * (XP[j] - mean) * inv + B[c]);
				}
			RM[c] = (float)((1 - factor) * RM[c] + factor * mean);
			RV[c] = (float)((1 - factor) * RV[c] + factor * ss / (cnt > 1 ? cnt - 1 : 1));
			SM[c] = (float)mean;
			SI[c] = (float)inv;
		}
	});
}
int cudnnBatchNormalizationForwardInference(void* h, int mode, const float* alpha, const float* beta, void* xd, const void* x,
                                            void* yd, void* y, void* bnd, const void* scale, const void* bias,
                                            const void* mean, const void* var, double eps) {
	Desc* X;
	CHECK(bn_shapes(mode, xd, yd, bnd, &X));
	NEED(*alpha == 1 && *beta == 0);
	int C = X->c;
	CHECK(dev(x, vol(X), "bn x")); CHECK(dev(y, vol(X), "bn y"));
	for (const void* p : {scale, bias, mean, var}) CHECK(dev(p, C, "bn per-channel"));
	const float *XP = (const float*)x, *G = (const float*)scale, *B = (const float*)bias, *M = (const float*)mean,
	            *V = (const float*)var;
	float* YP = (float*)y;
	size_t hw = (size_t)X->h * X->w;
	int N = X->n;
	ENQUEUE([=] {
		for (int n = 0; n < N; n++)
			for (int c = 0; c < C; c++)
				for (size_t i = 0; i < hw; i++) {
					size_t j = ((size_t)n * C + c) * hw + i;
					YP[j] = (float)(G[c] * (XP[j] - M[c]) / sqrt(V[c] + eps) + B[c]);
				}
	});
}
int cudnnBatchNormalizationBackward(void* h, int mode, const float* ad, const float* bd, const float* ap, const float* bp,
                                    void* xd, const void* x, void* dyd, const void* dy, void* dxd, void* dx, void* bnd,
                                    const void* scale, void* dScale, void* dBias, double eps, const void* saveMean,
                                    const void* saveInv) {
	Desc* X;
	CHECK(bn_shapes(mode, xd, dyd, bnd, &X));
	Desc* DX = D(dxd, TENSOR);
	NEED(DX && vol(DX) == vol(X));
	NEED(*ad == 1 && *bd == 0 && *ap == 1 && *bp == 0 && saveMean && saveInv);
	int C = X->c;
	CHECK(dev(x, vol(X), "bn x")); CHECK(dev(dy, vol(X), "bn dy")); CHECK(dev(dx, vol(X), "bn dx"));
	for (const void* p : {scale, (const void*)dScale, (const void*)dBias, saveMean, saveInv}) CHECK(dev(p, C, "bn per-channel"));
	const float *XP = (const float*)x, *DY = (const float*)dy, *G = (const float*)scale, *SM = (const float*)saveMean,
	            *SI = (const float*)saveInv;
	float *DXP = (float*)dx, *DG = (float*)dScale, *DB = (float*)dBias;
	size_t hw = (size_t)X->h * X->w, cnt = (size_t)X->n * hw;
	int N = X->n;
	ENQUEUE([=] {
		for (int c = 0; c < C; c++) {
			double sdy = 0, sdyx = 0;
			for (int n = 0; n < N; n++)
				for (size_t i = 0; i < hw; i++) {
					size_t j = ((size_t)n * C + c) * hw + i;
					sdy += DY[j];
					sdyx += DY[j] * (XP[j] - SM[c]) * SI[c];
				}
			DG[c] = (float)sdyx;
			DB[c] = (float)sdy;
			for (int n = 0; n < N; n++)
				for (size_t i = 0; i < hw; i++) {
					size_t j = ((size_t)n * C + c) * hw + i;
					double xhat = (XP[j] - SM[c]) * SI[c];
					DXP[j] = (float)(G[c] * SI[c] * (DY[j] - sdy / cnt - xhat * sdyx / cnt));
				}
		}
	});
}

// Max pooling; backward routes each gradient to the first maximum.
static int pool_shapes(void* pd, void* xd, void* yd, Desc** p, Desc** x, Desc** y) {
	*p = D(pd, POOL), *x = D(xd, TENSOR), *y = D(yd, TENSOR);
	NEED(*p && *x && *y && (*y)->n == (*x)->n && (*y)->c == (*x)->c);
	NEED((*y)->h == ((*x)->h - (*p)->win) / (*p)->stride + 1 && (*y)->w == ((*x)->w - (*p)->win) / (*p)->stride + 1);
	return 0;
}
static size_t argmax(const Desc* p, const Desc* x, const float* X, size_t plane, int oy, int ox) {
	size_t best = 0;
	float m = 0;
	bool first = true;
	for (int ky = 0; ky < p->win; ky++)
		for (int kx = 0; kx < p->win; kx++) {
			size_t j = plane + (size_t)(oy * p->stride + ky) * x->w + ox * p->stride + kx;
			if (first || X[j] > m || X[j] != X[j]) {
				if (!first && m != m) continue;
				best = j, m = X[j], first = false;
			}
		}
	return best;
}
int cudnnPoolingForward(void* h, void* pd, const float* alpha, void* xd, const void* x, const float* beta, void* yd, void* y) {
	Desc *p, *X, *Y;
	CHECK(pool_shapes(pd, xd, yd, &p, &X, &Y));
	NEED(*alpha == 1 && *beta == 0);
	CHECK(dev(x, vol(X), "pool x")); CHECK(dev(y, vol(Y), "pool y"));
	const float* XP = (const float*)x;
	float* YP = (float*)y;
	Desc ps = *p, xs = *X, ys = *Y;
	ENQUEUE([=] {
		const Desc *p = &ps, *X = &xs, *Y = &ys;
		for (size_t nc = 0; nc < (size_t)X->n * X->c; nc++)
			for (int oy = 0; oy < Y->h; oy++)
				for (int ox = 0; ox < Y->w; ox++)
					YP[(nc * Y->h + oy) * Y->w + ox] = XP[argmax(p, X, XP, nc * X->h * X->w, oy, ox)];
	});
}
int cudnnPoolingBackward(void* h, void* pd, const float* alpha, void* yd, const void* y, void* dyd, const void* dy, void* xd,
                         const void* x, const float* beta, void* dxd, void* dx) {
	Desc *p, *X, *Y;
	CHECK(pool_shapes(pd, xd, yd, &p, &X, &Y));
	Desc *DY = D(dyd, TENSOR), *DX = D(dxd, TENSOR);
	NEED(DY && DX && vol(DY) == vol(Y) && vol(DX) == vol(X));
	NEED(*alpha == 1 && *beta == 0);
	CHECK(dev(x, vol(X), "pool x")); CHECK(dev(y, vol(Y), "pool y"));
	CHECK(dev(dx, vol(X), "pool dx")); CHECK(dev(dy, vol(Y), "pool dy"));
	const float *XP = (const float*)x, *DYP = (const float*)dy;
	float* DXP = (float*)dx;
	Desc ps = *p, xs = *X, ys = *Y;
	ENQUEUE([=] {
		const Desc *p = &ps, *X = &xs, *Y = &ys;
		memset(DXP, 0, 4 * vol(X));
		for (size_t nc = 0; nc < (size_t)X->n * X->c; nc++)
			for (int oy = 0; oy < Y->h; oy++)
				for (int ox = 0; ox < Y->w; ox++)
					DXP[argmax(p, X, XP, nc * X->h * X->w, oy, ox)] += DYP[(nc * Y->h + oy) * Y->w + ox];
	});
}

// LRN across channels: scale_c = k + alpha/n·Σ x² over the window
// [c - (n-1)/2, c + n - 1 - (n-1)/2], y = x·scale^-beta (cudnn_ops.h).
static double lrn_scale(const Desc* l, const float* X, size_t base, size_t hw, int C, int c) {
	int behind = (l->lrnN - 1) / 2, ahead = l->lrnN - 1 - behind;
	double s = 0;
	for (int j = c - behind; j <= c + ahead; j++)
		if (j >= 0 && j < C) s += (double)X[base + j * hw] * X[base + j * hw];
	return l->k + l->alpha / l->lrnN * s;
}
int cudnnLRNCrossChannelForward(void* h, void* ld, int mode, const float* alpha, void* xd, const void* x, const float* beta,
                                void* yd, void* y) {
	Desc *l = D(ld, LRN), *X = D(xd, TENSOR), *Y = D(yd, TENSOR);
	NEED(l && X && Y && mode == 0 && vol(X) == vol(Y) && *alpha == 1 && *beta == 0);
	CHECK(dev(x, vol(X), "lrn x")); CHECK(dev(y, vol(X), "lrn y"));
	const float* XP = (const float*)x;
	float* YP = (float*)y;
	Desc ls = *l, xs = *X;
	ENQUEUE([=] {
		const Desc *l = &ls, *X = &xs;
		size_t hw = (size_t)X->h * X->w;
		for (int n = 0; n < X->n; n++)
			for (size_t i = 0; i < hw; i++) {
				size_t base = (size_t)n * X->c * hw + i;
				for (int c = 0; c < X->c; c++)
					YP[base + c * hw] = (float)(XP[base + c * hw] * pow(lrn_scale(l, XP, base, hw, X->c, c), -l->beta));
			}
	});
}
int cudnnLRNCrossChannelBackward(void* h, void* ld, int mode, const float* alpha, void* yd, const void* y, void* dyd,
                                 const void* dy, void* xd, const void* x, const float* beta, void* dxd, void* dx) {
	Desc *l = D(ld, LRN), *X = D(xd, TENSOR), *Y = D(yd, TENSOR), *DY = D(dyd, TENSOR), *DX = D(dxd, TENSOR);
	NEED(l && X && Y && DY && DX && mode == 0 && *alpha == 1 && *beta == 0);
	NEED(vol(X) == vol(Y) && vol(X) == vol(DY) && vol(X) == vol(DX));
	for (const void* p : {y, dy, x, (const void*)dx}) CHECK(dev(p, vol(X), "lrn gradient"));
	const float *XP = (const float*)x, *YP = (const float*)y, *DYP = (const float*)dy;
	float* DXP = (float*)dx;
	Desc ls = *l, xs = *X;
	ENQUEUE([=] {
		const Desc *l = &ls, *X = &xs;
		size_t hw = (size_t)X->h * X->w;
		int C = X->c, behind = (l->lrnN - 1) / 2, ahead = l->lrnN - 1 - behind;
		std::vector<double> t(C), sc(C);
		for (int n = 0; n < X->n; n++)
			for (size_t i = 0; i < hw; i++) {
				size_t base = (size_t)n * C * hw + i;
				for (int c = 0; c < C; c++) {
					sc[c] = lrn_scale(l, XP, base, hw, C, c);
					t[c] = (double)DYP[base + c * hw] * YP[base + c * hw] / sc[c];
				}
				for (int c = 0; c < C; c++) {
					double s = 0;  // Σ over the windows that contain c
					for (int j = c - ahead; j <= c + behind; j++)
						if (j >= 0 && j < C) s += t[j];
					DXP[base + c * hw] = (float)(DYP[base + c * hw] * pow(sc[c], -l->beta) -
					                             2 * l->alpha * l->beta / l->lrnN * XP[base + c * hw] * s);
				}
			}
	});
}

}  // extern "C"
