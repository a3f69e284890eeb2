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
	NOT_FOUND = 500, ILLEGAL_ADDRESS = 700, CAPTURE_UNSUPPORTED = 900, CAPTURE_INVALIDATED = 901,
	CAPTURED_EVENT = 907
};
// totalMem is the device's memory: 8 GiB, or FAKECUDA_TOTAL_MEM bytes.
static size_t totalMem() {
	const char* v = getenv("FAKECUDA_TOTAL_MEM");
	return v ? (size_t)atoll(v) : 8ull << 30;
}
static size_t used;

CUresult cuInit(unsigned int flags) { return flags == 0 ? OK : INVALID_VALUE; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return OK; }
// FAKECUDA_DEVICES=0 is a driver that sees no GPU (one otherwise).
CUresult cuDeviceGetCount(int* n) {
	const char* v = getenv("FAKECUDA_DEVICES");
	*n = v && strcmp(v, "0") == 0 ? 0 : 1;
	return OK;
}
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
	case 75: case 76: {           // compute capability 9.0, or FAKECUDA_SM's (75: Turing, no bf16)
		const char* sm = getenv("FAKECUDA_SM");
		int cc = sm ? atoi(sm) : 90;
		*v = attr == 75 ? cc / 10 : cc % 10;
		return OK;
	}
	}
	return INVALID_VALUE;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) { *bytes = totalMem(); return OK; }
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
	if (used + n > totalMem()) return OUT_OF_MEMORY;
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
	*free = used < totalMem() ? totalMem() - used : 0;
	*total = totalMem();
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
// g_clock_ms is the stand-in's simulated GPU time: only what models a
// cost advances it (cudnnBackendExecute by its engine's cost), at the
// call; an event records it, so timing the stand-in's engines ranks them.
static double g_clock_ms = 0;
// An event is the clock at its last record, and whether that record was
// made in a capture: then it only became a node of the graph, and CUDA
// refuses to time the event (CUDA_ERROR_CAPTURED_EVENT).
struct Event {
	double ms;
	bool captured;
};
CUresult cuEventCreate(void** e, unsigned int flags) {
	*e = calloc(1, sizeof(Event));
	return OK;
}
CUresult cuEventRecord(void* e, void* s) {
	if (!has_ctx("cuEventRecord")) return INVALID_CONTEXT;
	std::lock_guard<std::mutex> g(cap_mu);
	bool captured = cap.active && cap.stream == s;  // recorded on another stream, it is recorded now
	((Event*)e)->captured = captured;
	if (!captured) ((Event*)e)->ms = g_clock_ms;
	return OK;
}
CUresult cuEventSynchronize(void* e) { return capturing("cuEventSynchronize") ? CAPTURE_UNSUPPORTED : OK; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) {
	if (((Event*)a)->captured || ((Event*)b)->captured) {
		fail("cuEventElapsedTime of an event last recorded in a stream capture");
		return CAPTURED_EVENT;
	}
	double d = ((Event*)b)->ms - ((Event*)a)->ms;
	*ms = d > 0 ? (float)d : 0.5f;  // 0.5 where nothing modelled ran between
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
	case CAPTURED_EVENT: *s = "CUDA_ERROR_CAPTURED_EVENT"; break;
	default: *s = nullptr;
	}
	return *s ? OK : INVALID_VALUE;
}
CUresult cuGetErrorString(CUresult e, const char** s) {
	*s = last_error[0] ? last_error : nullptr;
	return *s ? OK : INVALID_VALUE;
}

// Modules: the "image" must be what the fake NVRTC produced.
// The kernels the stand-in runs, in one list: K_<name> numbers them
// (cuModuleGetFunction hands out K_<name> + 1), kKernels names them.
#define FAKE_KERNELS(X) \
	X(relu_forward) X(relu_backward) X(dropout_apply) X(sgd_step) X(bias_add_rows) X(col_sum) \
	X(softmax_xent_rows) X(mean_rows) X(bn_stats) X(bn_finish) X(bn_apply) X(bn_infer_coef) X(bn_affine) \
	X(bn_grad_stats) X(bn_grad_finish) X(bn_grad_apply) X(crop_resize) X(tally) X(cast_f32_bf16) \
	X(cast_bf16_f32) X(relu_forward_bf16) X(relu_backward_bf16) X(dropout_apply_bf16) X(bias_add_rows_bf16) \
	X(col_sum_bf16) X(bias_grad_finish) X(softmax_xent_rows_bf16) X(tally_bf16) \
	X(bn_stats_bf16) X(bn_apply_bf16) X(bn_affine_bf16) X(bn_grad_stats_bf16) X(bn_grad_apply_bf16) \
	X(crop_resize_bf16) X(max_pool_forward) \
	X(max_pool_backward) X(bn_stats_nhwc) X(bn_apply_nhwc) X(bn_affine_nhwc) X(bn_grad_stats_nhwc) \
	X(bn_grad_apply_nhwc) X(bias_add_nhwc) X(max_pool_forward_nhwc) X(max_pool_backward_nhwc) \
	X(transpose_f32_bf16) X(transpose_bf16_f32) X(transpose_bf16) X(fold_parts) X(bn_stats_nhwc_f32) \
	X(bn_apply_nhwc_f32) X(bn_affine_nhwc_f32) X(bn_grad_stats_nhwc_f32) X(bn_grad_apply_nhwc_f32) \
	X(bias_add_nhwc_f32) X(max_pool_forward_nhwc_f32) X(max_pool_backward_nhwc_f32) X(transpose_f32) \
	X(crop_resize_nhwc) X(bn_scales) X(bn_apply_pool_nhwc) X(bn_apply_pool_nhwc_f32) X(bn_affine_pool_nhwc) \
	X(bn_affine_pool_nhwc_f32) X(bn_grad_stats_pool_nhwc) X(bn_grad_stats_pool_nhwc_f32) X(bn_grad_apply_pool_nhwc) \
	X(bn_grad_apply_pool_nhwc_f32) X(bn_fold_finish) X(bn_grad_fold_finish)
enum Kernel {
#define X(name) K_##name,
	FAKE_KERNELS(X)
#undef X
	kNumKernels
};
static const char* kKernels[] = {
#define X(name) #name,
	FAKE_KERNELS(X)
#undef X
};
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

// nhwc_ok checks a channels-last launch: c a multiple of 8 whose c/8
// divides the block, and activations aligned for 16-byte packs.
extern "C++" {  // a template, inside the extern "C" block
template <typename... P>
static bool nhwc_ok(const char* name, unsigned bx, unsigned long long c, P... ps) {
	bool aligned = ((((uintptr_t)ps % 16) == 0) && ...);
	if (c == 0 || c % 8 != 0 || bx % (c / 8) != 0 || !aligned) {
		fail("%s: %llu channels in blocks of %u, or activations not 16-byte aligned", name, c, bx);
		return false;
	}
	return true;
}
}

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
	case K_relu_forward: {  // relu_forward(float* y, const float* x, u64 n)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto n = U64(2);
		IN(y, 4 * n); IN(x, 4 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_forward(y, x, n); }); };
		break;
	}
	case K_relu_backward: {  // relu_backward(float* dx, const float* dy, const float* y, u64 n)
		auto dx = PTR(0, float); auto dy = PTR(1, const float); auto y = PTR(2, const float); auto n = U64(3);
		IN(dx, 4 * n); IN(dy, 4 * n); IN(y, 4 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_backward(dx, dy, y, n); }); };
		break;
	}
	case K_dropout_apply: {  // dropout_apply(float* y, const float* x, u64 n, u64 key, const u64* key_at, u32 threshold, float scale)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto n = U64(2);
		auto key = U64(3); auto key_at = PTR(4, const unsigned long long); auto thr = U32(5); auto scale = F32(6);
		IN(y, 4 * n); IN(x, 4 * n);
		if (key_at) { IN(key_at, 8); }
		// The kernel reads *key_at when it runs: a replay sees the key of then.
		run = [=] { launch_seq(gx, bx, [=] { dropout_apply(y, x, n, key, key_at, thr, scale); }); };
		break;
	}
	case K_sgd_step: {  // sgd_step(float* p, const float* g, float* m, u64 n, float lr, const float* lr_at, float mom, float wd,
	           //          float damp, int nesterov, int first)
		auto p = PTR(0, float); auto g = PTR(1, const float); auto m = PTR(2, float); auto n = U64(3);
		auto lr = F32(4); auto lr_at = PTR(5, const float);
		auto mom = F32(6), wd = F32(7), damp = F32(8);
		IN(p, 4 * n); IN(g, 4 * n);
		if (mom != 0.0f) IN(m, 4 * n);  // read only with momentum
		auto nest = I32(9), first = I32(10);
		if (lr_at) { IN(lr_at, 4); }
		// The kernel reads *lr_at when it runs: a replay sees the rate of then.
		run = [=] { launch_seq(gx, bx, [=] { sgd_step(p, g, m, n, lr, lr_at, mom, wd, damp, nest, first); }); };
		break;
	}
	case K_bias_add_rows: {  // bias_add_rows(float* y, const float* b, u64 rows, u64 cols)
		auto y = PTR(0, float); auto b = PTR(1, const float); auto rows = U64(2), cols = U64(3);
		IN(y, 4 * rows * cols); IN(b, 4 * cols);
		run = [=] { launch_seq(gx, bx, [=] { bias_add_rows(y, b, rows, cols); }); };
		break;
	}
	case K_col_sum: {  // col_sum(float* out, const float* x, u64 rows, u64 cols)
		auto o = PTR(0, float); auto x = PTR(1, const float); auto rows = U64(2), cols = U64(3);
		IN(o, 4 * cols); IN(x, 4 * rows * cols);
		run = [=] { launch_seq(gx, bx, [=] { col_sum(o, x, rows, cols); }); };
		break;
	}
	case K_softmax_xent_rows: {  // softmax_xent_rows(double* row_loss, float* dlogits, const float* logits, const float* labels, u64 n, u64 c, double smoothing)
		auto rl = PTR(0, double); auto dl = PTR(1, float); auto lg = PTR(2, const float); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5); auto sm = F64(6);
		if (bx != RED_THREADS) return INVALID_VALUE;
		IN(rl, 8 * n); IN(lg, 4 * n * c); IN(lb, 4 * n);
		if (dl) { IN(dl, 4 * n * c); }
		run = [=] { launch_threads(gx, bx, [=] { softmax_xent_rows(rl, dl, lg, lb, n, c, sm); }); };
		break;
	}
	case K_mean_rows: {  // mean_rows(float* out, const double* rows, u64 n)
		auto o = PTR(0, float); auto r = PTR(1, const double); auto n = U64(2);
		if (bx != RED_THREADS || gx != 1) return INVALID_VALUE;
		IN(o, 4); IN(r, 8 * n);
		run = [=] { launch_threads(gx, bx, [=] { mean_rows(o, r, n); }); };
		break;
	}
	case K_bn_stats: {  // bn_stats(double* part, const float* x, u64 n, u64 c, u64 hw, u32 splits)
		auto part = PTR(0, double); auto x = PTR(1, const float); auto n = U64(2), c = U64(3), hw = U64(4); auto sp = U32(5);
		if (bx != RED_THREADS || sp == 0 || gx != c * sp) { fail("bn_stats: grid %u for %llu channels x %u", gx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(x, 4 * n * c * hw);
		run = [=] { launch_threads(gx, bx, [=] { bn_stats(part, x, n, c, hw, sp); }); };
		break;
	}
	case K_bn_finish: {  // bn_finish(float* save_mean, float* save_inv, float* run_mean, float* run_var, float* scale,
	           //           const float* gamma, const float* shift, const double* part, u64 c, u32 splits, u64 m,
	           //           double eps, double momentum)
		auto sm = PTR(0, float); auto si = PTR(1, float); auto rm = PTR(2, float); auto rv = PTR(3, float);
		auto sc = PTR(4, float); auto g = PTR(5, const float); auto sh = PTR(6, const float); auto part = PTR(7, const double);
		auto c = U64(8); auto sp = U32(9); auto m = U64(10); auto eps = F64(11), mom = F64(12);
		IN(sm, 4 * c); IN(si, 4 * c); IN(rm, 4 * c); IN(rv, 4 * c); IN(sc, 4 * c); IN(g, 4 * c); IN(part, 16 * c * sp);
		if (sh) IN(sh, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_finish(sm, si, rm, rv, sc, g, sh, part, c, sp, m, eps, mom); }); };
		break;
	}
	case K_bn_apply: {  // bn_apply(float* y, const float* x, const float* mean, const float* scale, const float* beta,
	            //          u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto mean = PTR(2, const float);
		auto sc = PTR(3, const float); auto beta = PTR(4, const float);
		auto n = U64(5), c = U64(6), hw = U64(7); auto relu = I32(8);
		IN(y, 4 * n * c * hw); IN(x, 4 * n * c * hw); IN(mean, 4 * c); IN(sc, 4 * c); IN(beta, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_apply(y, x, mean, sc, beta, n, c, hw, relu); }); };
		break;
	}
	case K_bn_infer_coef: {  // bn_infer_coef(float* scale, float* shift, const float* gamma, const float* beta,
	            //               const float* run_mean, const float* run_var, u64 c, double eps)
		auto sc = PTR(0, float); auto sh = PTR(1, float); auto g = PTR(2, const float); auto b = PTR(3, const float);
		auto rm = PTR(4, const float); auto rv = PTR(5, const float); auto c = U64(6); auto eps = F64(7);
		IN(sc, 4 * c); IN(sh, 4 * c); IN(g, 4 * c); IN(b, 4 * c); IN(rm, 4 * c); IN(rv, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_infer_coef(sc, sh, g, b, rm, rv, c, eps); }); };
		break;
	}
	case K_bn_affine: {  // bn_affine(float* y, const float* x, const float* scale, const float* shift, u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto sc = PTR(2, const float); auto sh = PTR(3, const float);
		auto n = U64(4), c = U64(5), hw = U64(6); auto relu = I32(7);
		IN(y, 4 * n * c * hw); IN(x, 4 * n * c * hw); IN(sc, 4 * c); IN(sh, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_affine(y, x, sc, sh, n, c, hw, relu); }); };
		break;
	}
	// The batch-norm gradients, float32 NCHW, bf16 NCHW, bf16 and float32
	// channels-last: the ReLU's mask comes from x, gamma and beta (read only
	// with relu).
	case K_bn_grad_stats: case K_bn_grad_stats_bf16: case K_bn_grad_stats_nhwc: case K_bn_grad_stats_nhwc_f32: {  // bn_grad_stats(double* part, const T* dy, const T* x, const float* mean,
	    // const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u64 hw, u32 splits, int relu)
		bool half = k == K_bn_grad_stats_bf16 || k == K_bn_grad_stats_nhwc, nhwc = k == K_bn_grad_stats_nhwc || k == K_bn_grad_stats_nhwc_f32;
		unsigned long long e = half ? 2 : 4;
		auto part = PTR(0, double); auto dy = PTR(1, const void); auto x = PTR(2, const void);
		auto mean = PTR(3, const float); auto inv = PTR(4, const float); auto gamma = PTR(5, const float); auto beta = PTR(6, const float);
		auto n = U64(7), c = U64(8), hw = U64(9); auto sp = U32(10); auto relu = I32(11);
		bool grid = nhwc ? nhwc_ok(kKernels[k], bx, c, dy, x) && bx == NHWC_THREADS && gx == sp : bx == RED_THREADS && gx == c * sp;
		if (!grid || sp == 0) { fail("%s: grid %u of %u for %llu channels x %u", kKernels[k], gx, bx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(dy, e * n * c * hw); IN(x, e * n * c * hw); IN(mean, 4 * c); IN(inv, 4 * c);
		if (relu) { IN(gamma, 4 * c); IN(beta, 4 * c); }
		run = [=] {
			launch_threads(gx, bx, [=] {
				if (k == K_bn_grad_stats) bn_grad_stats(part, (const float*)dy, (const float*)x, mean, inv, gamma, beta, n, c, hw, sp, relu);
				if (k == K_bn_grad_stats_bf16) bn_grad_stats_bf16(part, (const bf16*)dy, (const bf16*)x, mean, inv, gamma, beta, n, c, hw, sp, relu);
				if (k == K_bn_grad_stats_nhwc) bn_grad_stats_nhwc(part, (const bf16*)dy, (const bf16*)x, mean, inv, gamma, beta, n, c, hw, sp, relu);
				if (k == K_bn_grad_stats_nhwc_f32) bn_grad_stats_nhwc_f32(part, (const float*)dy, (const float*)x, mean, inv, gamma, beta, n, c, hw, sp, relu);
			});
		};
		break;
	}
	case K_bn_grad_apply: case K_bn_grad_apply_bf16: case K_bn_grad_apply_nhwc: case K_bn_grad_apply_nhwc_f32: {  // bn_grad_apply(T* dx, const T* dy, const T* x, const float* mean,
	    // const float* inv, const float* coef, const float* beta, u64 n, u64 c, u64 hw, int relu)
		bool half = k == K_bn_grad_apply_bf16 || k == K_bn_grad_apply_nhwc, nhwc = k == K_bn_grad_apply_nhwc || k == K_bn_grad_apply_nhwc_f32;
		unsigned long long e = half ? 2 : 4;
		auto dx = PTR(0, void); auto dy = PTR(1, const void); auto x = PTR(2, const void);
		auto mean = PTR(3, const float); auto inv = PTR(4, const float); auto coef = PTR(5, const float); auto beta = PTR(6, const float);
		auto n = U64(7), c = U64(8), hw = U64(9); auto relu = I32(10);
		if (nhwc && !nhwc_ok(kKernels[k], bx, c, dx, dy, x)) return INVALID_VALUE;
		IN(dx, e * n * c * hw); IN(dy, e * n * c * hw); IN(x, e * n * c * hw); IN(mean, 4 * c); IN(inv, 4 * c); IN(coef, 12 * c);
		if (relu) { IN(beta, 4 * c); }
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (k == K_bn_grad_apply) bn_grad_apply((float*)dx, (const float*)dy, (const float*)x, mean, inv, coef, beta, n, c, hw, relu);
				if (k == K_bn_grad_apply_bf16) bn_grad_apply_bf16((bf16*)dx, (const bf16*)dy, (const bf16*)x, mean, inv, coef, beta, n, c, hw, relu);
				if (k == K_bn_grad_apply_nhwc) bn_grad_apply_nhwc((bf16*)dx, (const bf16*)dy, (const bf16*)x, mean, inv, coef, beta, n, c, hw, relu);
				if (k == K_bn_grad_apply_nhwc_f32) bn_grad_apply_nhwc_f32((float*)dx, (const float*)dy, (const float*)x, mean, inv, coef, beta, n, c, hw, relu);
			});
		};
		break;
	}
	case K_bn_grad_finish: {  // bn_grad_finish(float* dgamma, float* dbeta, float* coef, const float* gamma, const float* inv,
	            //                const double* part, u64 c, u32 splits, u64 m)
		auto dg = PTR(0, float); auto db = PTR(1, float); auto coef = PTR(2, float); auto g = PTR(3, const float);
		auto inv = PTR(4, const float); auto part = PTR(5, const double); auto c = U64(6); auto sp = U32(7); auto m = U64(8);
		IN(dg, 4 * c); IN(db, 4 * c); IN(coef, 12 * c); IN(g, 4 * c); IN(inv, 4 * c); IN(part, 16 * c * sp);
		run = [=] { launch_seq(gx, bx, [=] { bn_grad_finish(dg, db, coef, g, inv, part, c, sp, m); }); };
		break;
	}
	case K_crop_resize:    // crop_resize(float* y, const u8* images, const int* crops, const float* table, u64 n, u32 s, u32 side)
	case K_crop_resize_bf16:    // crop_resize_bf16(bf16* y, ...): the same arguments, y bf16 [n, s, s, 3]
	case K_crop_resize_nhwc: {  // crop_resize_nhwc(float* y, ...): y float32 [n, s, s, 3]
		auto y = PTR(0, void); auto im = PTR(1, const unsigned char); auto cr = PTR(2, const int); auto tab = PTR(3, const float);
		auto n = U64(4); auto sz = U32(5), side = U32(6);
		IN(y, (k == K_crop_resize_bf16 ? 2 : 4) * n * 3 * sz * sz); IN(cr, 24 * n); IN(tab, 4 * 3 * 256);
		// Streams are synchronous here, so the crops are in memory now: every
		// image they name must lie inside the image set's allocation, and
		// every window must be one the kernel handles.
		for (unsigned long long j = 0; j < n; j++) {
			const int* c = cr + 6 * j;
			if (c[0] < 0 || c[3] < 1 || c[4] < 1 || c[3] > (int)side || c[4] > (int)side || (c[5] != 0 && c[5] != 1)) {
				fail("%s: crop %llu is {%d %d %d %d %d %d}", kKernels[k], j, c[0], c[1], c[2], c[3], c[4], c[5]);
				return INVALID_VALUE;
			}
			IN(im + (size_t)c[0] * 3 * side * side, 3 * side * side);
		}
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (k == K_crop_resize) crop_resize((float*)y, im, cr, tab, n, sz, side);
				else if (k == K_crop_resize_bf16) crop_resize_bf16((bf16*)y, im, cr, tab, n, sz, side);
				else crop_resize_nhwc((float*)y, im, cr, tab, n, sz, side);
			});
		};
		break;
	}
	case K_tally: {  // tally(float* acc, const float* loss, const float* logits, const float* labels, u64 n, u64 c)
		auto acc = PTR(0, float); auto loss = PTR(1, const float); auto lg = PTR(2, const float); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5);
		if (bx != RED_THREADS || gx != 1) return INVALID_VALUE;
		IN(acc, 8); IN(loss, 4); IN(lg, 4 * n * c); IN(lb, 4 * n);
		run = [=] { launch_threads(gx, bx, [=] { tally(acc, loss, lg, lb, n, c); }); };
		break;
	}
	// The bfloat16 kernels: activations are 2 bytes an element.
	case K_cast_f32_bf16: {  // cast_f32_bf16(bf16* y, const float* x, u64 n)
		auto y = PTR(0, bf16); auto x = PTR(1, const float); auto n = U64(2);
		IN(y, 2 * n); IN(x, 4 * n);
		run = [=] { launch_seq(gx, bx, [=] { cast_f32_bf16(y, x, n); }); };
		break;
	}
	case K_cast_bf16_f32: {  // cast_bf16_f32(float* y, const bf16* x, u64 n)
		auto y = PTR(0, float); auto x = PTR(1, const bf16); auto n = U64(2);
		IN(y, 4 * n); IN(x, 2 * n);
		run = [=] { launch_seq(gx, bx, [=] { cast_bf16_f32(y, x, n); }); };
		break;
	}
	case K_relu_forward_bf16: {  // relu_forward_bf16(bf16* y, const bf16* x, u64 n)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto n = U64(2);
		IN(y, 2 * n); IN(x, 2 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_forward_bf16(y, x, n); }); };
		break;
	}
	case K_relu_backward_bf16: {  // relu_backward_bf16(bf16* dx, const bf16* dy, const bf16* y, u64 n)
		auto dx = PTR(0, bf16); auto dy = PTR(1, const bf16); auto y = PTR(2, const bf16); auto n = U64(3);
		IN(dx, 2 * n); IN(dy, 2 * n); IN(y, 2 * n);
		run = [=] { launch_seq(gx, bx, [=] { relu_backward_bf16(dx, dy, y, n); }); };
		break;
	}
	case K_dropout_apply_bf16: {  // dropout_apply_bf16(bf16* y, const bf16* x, u64 n, u64 key, const u64* key_at, u32 threshold, float scale)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto n = U64(2);
		auto key = U64(3); auto key_at = PTR(4, const unsigned long long); auto thr = U32(5); auto scale = F32(6);
		IN(y, 2 * n); IN(x, 2 * n);
		if (key_at) { IN(key_at, 8); }
		run = [=] { launch_seq(gx, bx, [=] { dropout_apply_bf16(y, x, n, key, key_at, thr, scale); }); };
		break;
	}
	case K_bias_add_rows_bf16: {  // bias_add_rows_bf16(bf16* y, const float* b, u64 rows, u64 cols)
		auto y = PTR(0, bf16); auto b = PTR(1, const float); auto rows = U64(2), cols = U64(3);
		IN(y, 2 * rows * cols); IN(b, 4 * cols);
		run = [=] { launch_seq(gx, bx, [=] { bias_add_rows_bf16(y, b, rows, cols); }); };
		break;
	}
	case K_col_sum_bf16: {  // col_sum_bf16(float* out, const bf16* x, u64 rows, u64 cols)
		auto o = PTR(0, float); auto x = PTR(1, const bf16); auto rows = U64(2), cols = U64(3);
		IN(o, 4 * cols); IN(x, 2 * rows * cols);
		run = [=] { launch_seq(gx, bx, [=] { col_sum_bf16(o, x, rows, cols); }); };
		break;
	}
	case K_bias_grad_finish: {  // bias_grad_finish(float* db, const double* part, u64 c, u32 splits)
		auto db = PTR(0, float); auto part = PTR(1, const double); auto c = U64(2); auto sp = U32(3);
		if (sp == 0) return INVALID_VALUE;
		IN(db, 4 * c); IN(part, 16 * c * sp);
		run = [=] { launch_seq(gx, bx, [=] { bias_grad_finish(db, part, c, sp); }); };
		break;
	}
	case K_softmax_xent_rows_bf16: {  // softmax_xent_rows_bf16(double* row_loss, bf16* dlogits, const bf16* logits, const float* labels, u64 n, u64 c,
	            //                        double smoothing)
		auto rl = PTR(0, double); auto dl = PTR(1, bf16); auto lg = PTR(2, const bf16); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5); auto sm = F64(6);
		if (bx != RED_THREADS) return INVALID_VALUE;
		IN(rl, 8 * n); IN(lg, 2 * n * c); IN(lb, 4 * n);
		if (dl) { IN(dl, 2 * n * c); }
		run = [=] { launch_threads(gx, bx, [=] { softmax_xent_rows_bf16(rl, dl, lg, lb, n, c, sm); }); };
		break;
	}
	case K_tally_bf16: {  // tally_bf16(float* acc, const float* loss, const bf16* logits, const float* labels, u64 n, u64 c)
		auto acc = PTR(0, float); auto loss = PTR(1, const float); auto lg = PTR(2, const bf16); auto lb = PTR(3, const float);
		auto n = U64(4), c = U64(5);
		if (bx != RED_THREADS || gx != 1) return INVALID_VALUE;
		IN(acc, 8); IN(loss, 4); IN(lg, 2 * n * c); IN(lb, 4 * n);
		run = [=] { launch_threads(gx, bx, [=] { tally_bf16(acc, loss, lg, lb, n, c); }); };
		break;
	}
	case K_bn_stats_bf16: {  // bn_stats_bf16(double* part, const bf16* x, u64 n, u64 c, u64 hw, u32 splits)
		auto part = PTR(0, double); auto x = PTR(1, const bf16); auto n = U64(2), c = U64(3), hw = U64(4); auto sp = U32(5);
		if (bx != RED_THREADS || sp == 0 || gx != c * sp) { fail("bn_stats_bf16: grid %u for %llu channels x %u", gx, c, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(x, 2 * n * c * hw);
		run = [=] { launch_threads(gx, bx, [=] { bn_stats_bf16(part, x, n, c, hw, sp); }); };
		break;
	}
	case K_bn_apply_bf16: {  // bn_apply_bf16(bf16* y, const bf16* x, const float* mean, const float* scale, const float* beta,
	            //               u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto mean = PTR(2, const float);
		auto sc = PTR(3, const float); auto beta = PTR(4, const float);
		auto n = U64(5), c = U64(6), hw = U64(7); auto relu = I32(8);
		IN(y, 2 * n * c * hw); IN(x, 2 * n * c * hw); IN(mean, 4 * c); IN(sc, 4 * c); IN(beta, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_apply_bf16(y, x, mean, sc, beta, n, c, hw, relu); }); };
		break;
	}
	case K_bn_affine_bf16: {  // bn_affine_bf16(bf16* y, const bf16* x, const float* scale, const float* shift, u64 n, u64 c, u64 hw, int relu)
		auto y = PTR(0, bf16); auto x = PTR(1, const bf16); auto sc = PTR(2, const float); auto sh = PTR(3, const float);
		auto n = U64(4), c = U64(5), hw = U64(6); auto relu = I32(7);
		IN(y, 2 * n * c * hw); IN(x, 2 * n * c * hw); IN(sc, 4 * c); IN(sh, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_affine_bf16(y, x, sc, sh, n, c, hw, relu); }); };
		break;
	}
	case K_max_pool_forward: {  // max_pool_forward(float* y, const float* x, u64 planes, u32 h, u32 w, u32 k, u32 s)
		auto y = PTR(0, float); auto x = PTR(1, const float); auto planes = U64(2);
		auto h = U32(3), w = U32(4), kk = U32(5), s = U32(6);
		if (kk == 0 || s == 0) { fail("%s: window %u stride %u", kKernels[k], kk, s); return INVALID_VALUE; }
		unsigned long long oh = pool_out(h, kk, s), ow = pool_out(w, kk, s);
		IN(y, 4 * planes * oh * ow); IN(x, 4 * planes * h * w);
		run = [=] { launch_seq(gx, bx, [=] { max_pool_forward(y, x, planes, h, w, kk, s); }); };
		break;
	}
	case K_max_pool_backward: {  // max_pool_backward(float* dx, const float* dy, const float* x, u64 planes, u32 h, u32 w, u32 k, u32 s)
		auto dx = PTR(0, float); auto dy = PTR(1, const float); auto x = PTR(2, const float); auto planes = U64(3);
		auto h = U32(4), w = U32(5), kk = U32(6), s = U32(7);
		if (kk == 0 || s == 0) { fail("%s: window %u stride %u", kKernels[k], kk, s); return INVALID_VALUE; }
		unsigned long long oh = pool_out(h, kk, s), ow = pool_out(w, kk, s);
		IN(dx, 4 * planes * h * w); IN(dy, 4 * planes * oh * ow); IN(x, 4 * planes * h * w);
		run = [=] { launch_seq(gx, bx, [=] { max_pool_backward(dx, dy, x, planes, h, w, kk, s); }); };
		break;
	}
	// Channels-last activations [rows, c] (rows = n·hw), bf16
	// or float32 (the _f32 kernels): the packs of 8
	// channels need c a multiple of 8 dividing the block, and 16-byte
	// aligned activations.
	case K_bn_stats_nhwc: case K_bn_stats_nhwc_f32: {  // bn_stats_nhwc(double* part, const T* x, u64 n, u64 c, u64 hw, u32 splits)
		bool half = k == K_bn_stats_nhwc; unsigned long long e = half ? 2 : 4;
		auto part = PTR(0, double); auto x = PTR(1, const void); auto n = U64(2), c = U64(3), hw = U64(4); auto sp = U32(5);
		if (!nhwc_ok(kKernels[k], bx, c, x) || bx != NHWC_THREADS || sp == 0 || gx != sp) { fail("%s: grid %u for %u splits", kKernels[k], gx, sp); return INVALID_VALUE; }
		IN(part, 16 * c * sp); IN(x, e * n * c * hw);
		run = [=] {
			launch_threads(gx, bx, [=] {
				if (half) bn_stats_nhwc(part, (const bf16*)x, n, c, hw, sp);
				else bn_stats_nhwc_f32(part, (const float*)x, n, c, hw, sp);
			});
		};
		break;
	}
	case K_bn_apply_nhwc: case K_bn_apply_nhwc_f32: {  // bn_apply_nhwc(T* y, const T* x, const float* mean, const float* scale, const float* beta, u64 n, u64 c, u64 hw, int relu)
		bool half = k == K_bn_apply_nhwc; unsigned long long e = half ? 2 : 4;
		auto y = PTR(0, void); auto x = PTR(1, const void); auto mean = PTR(2, const float);
		auto sc = PTR(3, const float); auto beta = PTR(4, const float);
		auto n = U64(5), c = U64(6), hw = U64(7); auto relu = I32(8);
		if (!nhwc_ok(kKernels[k], bx, c, y, x)) return INVALID_VALUE;
		IN(y, e * n * c * hw); IN(x, e * n * c * hw); IN(mean, 4 * c); IN(sc, 4 * c); IN(beta, 4 * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (half) bn_apply_nhwc((bf16*)y, (const bf16*)x, mean, sc, beta, n, c, hw, relu);
				else bn_apply_nhwc_f32((float*)y, (const float*)x, mean, sc, beta, n, c, hw, relu);
			});
		};
		break;
	}
	case K_bn_affine_nhwc: case K_bn_affine_nhwc_f32: {  // bn_affine_nhwc(T* y, const T* x, const float* scale, const float* shift, u64 n, u64 c, u64 hw, int relu)
		bool half = k == K_bn_affine_nhwc; unsigned long long e = half ? 2 : 4;
		auto y = PTR(0, void); auto x = PTR(1, const void); auto sc = PTR(2, const float); auto sh = PTR(3, const float);
		auto n = U64(4), c = U64(5), hw = U64(6); auto relu = I32(7);
		if (!nhwc_ok(kKernels[k], bx, c, y, x)) return INVALID_VALUE;
		IN(y, e * n * c * hw); IN(x, e * n * c * hw); IN(sc, 4 * c); IN(sh, 4 * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (half) bn_affine_nhwc((bf16*)y, (const bf16*)x, sc, sh, n, c, hw, relu);
				else bn_affine_nhwc_f32((float*)y, (const float*)x, sc, sh, n, c, hw, relu);
			});
		};
		break;
	}
	// Batch norm + ReLU fused with a 2x2 max-pool: x and dx [n, h, w, c],
	// y and dy [n, h/2, w/2, c], channels-last, h and w even.
	case K_bn_apply_pool_nhwc: case K_bn_apply_pool_nhwc_f32: {  // bn_apply_pool_nhwc(T* y, const T* x, const float* mean, const float* scale, const float* beta, u64 n, u64 c, u32 h, u32 w)
		bool half = k == K_bn_apply_pool_nhwc; unsigned long long e = half ? 2 : 4;
		auto y = PTR(0, void); auto x = PTR(1, const void); auto mean = PTR(2, const float);
		auto sc = PTR(3, const float); auto beta = PTR(4, const float);
		auto n = U64(5), c = U64(6); auto h = U32(7), w = U32(8);
		if (!nhwc_ok(kKernels[k], bx, c, y, x) || h % 2 || w % 2) return INVALID_VALUE;
		IN(y, e * n * c * h * w / 4); IN(x, e * n * c * h * w); IN(mean, 4 * c); IN(sc, 4 * c); IN(beta, 4 * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (half) bn_apply_pool_nhwc((bf16*)y, (const bf16*)x, mean, sc, beta, n, c, h, w);
				else bn_apply_pool_nhwc_f32((float*)y, (const float*)x, mean, sc, beta, n, c, h, w);
			});
		};
		break;
	}
	case K_bn_affine_pool_nhwc: case K_bn_affine_pool_nhwc_f32: {  // bn_affine_pool_nhwc(T* y, const T* x, const float* scale, const float* shift, u64 n, u64 c, u32 h, u32 w)
		bool half = k == K_bn_affine_pool_nhwc; unsigned long long e = half ? 2 : 4;
		auto y = PTR(0, void); auto x = PTR(1, const void); auto sc = PTR(2, const float); auto sh = PTR(3, const float);
		auto n = U64(4), c = U64(5); auto h = U32(6), w = U32(7);
		if (!nhwc_ok(kKernels[k], bx, c, y, x) || h % 2 || w % 2) return INVALID_VALUE;
		IN(y, e * n * c * h * w / 4); IN(x, e * n * c * h * w); IN(sc, 4 * c); IN(sh, 4 * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (half) bn_affine_pool_nhwc((bf16*)y, (const bf16*)x, sc, sh, n, c, h, w);
				else bn_affine_pool_nhwc_f32((float*)y, (const float*)x, sc, sh, n, c, h, w);
			});
		};
		break;
	}
	case K_bn_grad_stats_pool_nhwc: case K_bn_grad_stats_pool_nhwc_f32: {  // bn_grad_stats_pool_nhwc(double* part, const T* dy, const T* x, const float* mean,
	    // const float* inv, const float* gamma, const float* beta, u64 n, u64 c, u32 h, u32 w, u32 splits)
		bool half = k == K_bn_grad_stats_pool_nhwc; unsigned long long e = half ? 2 : 4;
		auto part = PTR(0, double); auto dy = PTR(1, const void); auto x = PTR(2, const void);
		auto mean = PTR(3, const float); auto inv = PTR(4, const float); auto gamma = PTR(5, const float); auto beta = PTR(6, const float);
		auto n = U64(7), c = U64(8); auto h = U32(9), w = U32(10), sp = U32(11);
		if (!nhwc_ok(kKernels[k], bx, c, dy, x) || bx != NHWC_THREADS || sp == 0 || gx != sp || h % 2 || w % 2) {
			fail("%s: grid %u of %u for %u splits, %ux%u images", kKernels[k], gx, bx, sp, h, w);
			return INVALID_VALUE;
		}
		IN(part, 16 * c * sp); IN(dy, e * n * c * h * w / 4); IN(x, e * n * c * h * w); IN(mean, 4 * c); IN(inv, 4 * c);
		IN(gamma, 4 * c); IN(beta, 4 * c);
		run = [=] {
			launch_threads(gx, bx, [=] {
				if (half) bn_grad_stats_pool_nhwc(part, (const bf16*)dy, (const bf16*)x, mean, inv, gamma, beta, n, c, h, w, sp);
				else bn_grad_stats_pool_nhwc_f32(part, (const float*)dy, (const float*)x, mean, inv, gamma, beta, n, c, h, w, sp);
			});
		};
		break;
	}
	case K_bn_grad_apply_pool_nhwc: case K_bn_grad_apply_pool_nhwc_f32: {  // bn_grad_apply_pool_nhwc(T* dx, const T* dy, const T* x, const float* mean,
	    // const float* inv, const float* coef, const float* beta, u64 n, u64 c, u32 h, u32 w)
		bool half = k == K_bn_grad_apply_pool_nhwc; unsigned long long e = half ? 2 : 4;
		auto dx = PTR(0, void); auto dy = PTR(1, const void); auto x = PTR(2, const void);
		auto mean = PTR(3, const float); auto inv = PTR(4, const float); auto coef = PTR(5, const float); auto beta = PTR(6, const float);
		auto n = U64(7), c = U64(8); auto h = U32(9), w = U32(10);
		if (!nhwc_ok(kKernels[k], bx, c, dx, dy, x) || h % 2 || w % 2) return INVALID_VALUE;
		IN(dx, e * n * c * h * w); IN(dy, e * n * c * h * w / 4); IN(x, e * n * c * h * w); IN(mean, 4 * c); IN(inv, 4 * c);
		IN(coef, 12 * c); IN(beta, 4 * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (half) bn_grad_apply_pool_nhwc((bf16*)dx, (const bf16*)dy, (const bf16*)x, mean, inv, coef, beta, n, c, h, w);
				else bn_grad_apply_pool_nhwc_f32((float*)dx, (const float*)dy, (const float*)x, mean, inv, coef, beta, n, c, h, w);
			});
		};
		break;
	}
	case K_bias_add_nhwc: case K_bias_add_nhwc_f32: {  // bias_add_nhwc(T* y, const float* b, u64 n, u64 c, u64 hw)
		bool half = k == K_bias_add_nhwc; unsigned long long e = half ? 2 : 4;
		auto y = PTR(0, void); auto b = PTR(1, const float); auto n = U64(2), c = U64(3), hw = U64(4);
		if (!nhwc_ok(kKernels[k], bx, c, y)) return INVALID_VALUE;
		IN(y, e * n * c * hw); IN(b, 4 * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (half) bias_add_nhwc((bf16*)y, b, n, c, hw);
				else bias_add_nhwc_f32((float*)y, b, n, c, hw);
			});
		};
		break;
	}
	case K_max_pool_forward_nhwc: case K_max_pool_forward_nhwc_f32:    // max_pool_forward_nhwc(T* y, const T* x, u64 n, u64 c, u32 h, u32 w, u32 k, u32 s)
	case K_max_pool_backward_nhwc: case K_max_pool_backward_nhwc_f32: {  // max_pool_backward_nhwc(T* dx, const T* dy, const T* x, u64 n, u64 c, u32 h, u32 w, u32 k, u32 s)
		bool fwd = k == K_max_pool_forward_nhwc || k == K_max_pool_forward_nhwc_f32, half = k == K_max_pool_forward_nhwc || k == K_max_pool_backward_nhwc;
		unsigned long long e = half ? 2 : 4;
		int a = fwd ? 2 : 3;  // the first size argument
		auto o = PTR(0, void); auto i1 = PTR(1, const void); auto x = fwd ? i1 : PTR(2, const void);
		auto n = U64(a), c = U64(a + 1); auto h = U32(a + 2), w = U32(a + 3), kk = U32(a + 4), s = U32(a + 5);
		if (kk == 0 || s == 0) { fail("%s: window %u stride %u", kKernels[k], kk, s); return INVALID_VALUE; }
		unsigned long long oh = pool_out(h, kk, s), ow = pool_out(w, kk, s);
		IN(x, e * n * c * h * w);
		if (fwd) { IN(o, e * n * c * oh * ow); } else { IN(o, e * n * c * h * w); IN(i1, e * n * c * oh * ow); }
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (fwd && half) max_pool_forward_nhwc((bf16*)o, (const bf16*)x, n, c, h, w, kk, s);
				else if (fwd) max_pool_forward_nhwc_f32((float*)o, (const float*)x, n, c, h, w, kk, s);
				else if (half) max_pool_backward_nhwc((bf16*)o, (const bf16*)i1, (const bf16*)x, n, c, h, w, kk, s);
				else max_pool_backward_nhwc_f32((float*)o, (const float*)i1, (const float*)x, n, c, h, w, kk, s);
			});
		};
		break;
	}
	case K_transpose_f32_bf16:    // transpose_f32_bf16(bf16* y, const float* x, u64 batch, u64 rows, u64 cols)
	case K_transpose_bf16_f32:    // transpose_bf16_f32(float* y, const bf16* x, ...)
	case K_transpose_bf16:    // transpose_bf16(bf16* y, const bf16* x, ...)
	case K_transpose_f32: {  // transpose_f32(float* y, const float* x, ...)
		auto y = PTR(0, void); auto x = PTR(1, const void); auto b = U64(2), r = U64(3), c = U64(4);
		unsigned long long ey = k == K_transpose_bf16_f32 || k == K_transpose_f32 ? 4 : 2, ex = k == K_transpose_f32_bf16 || k == K_transpose_f32 ? 4 : 2;
		IN(y, ey * b * r * c); IN(x, ex * b * r * c);
		run = [=] {
			launch_seq(gx, bx, [=] {
				if (k == K_transpose_f32_bf16) transpose_f32_bf16((bf16*)y, (const float*)x, b, r, c);
				else if (k == K_transpose_bf16_f32) transpose_bf16_f32((float*)y, (const bf16*)x, b, r, c);
				else if (k == K_transpose_f32) transpose_f32((float*)y, (const float*)x, b, r, c);
				else transpose_bf16((bf16*)y, (const bf16*)x, b, r, c);
			});
		};
		break;
	}
	case K_bn_scales: {  // bn_scales(float* scale, const float* gamma, const float* save_inv, u64 c)
		auto sc = PTR(0, float); auto g = PTR(1, const float); auto si = PTR(2, const float); auto c = U64(3);
		IN(sc, 4 * c); IN(g, 4 * c); IN(si, 4 * c);
		run = [=] { launch_seq(gx, bx, [=] { bn_scales(sc, g, si, c); }); };
		break;
	}
	case K_bn_fold_finish: {  // bn_fold_finish: bn_finish's arguments, one block of RED_THREADS a channel
		auto sm = PTR(0, float); auto si = PTR(1, float); auto rm = PTR(2, float); auto rv = PTR(3, float);
		auto sc = PTR(4, float); auto g = PTR(5, const float); auto sh = PTR(6, const float); auto part = PTR(7, const double);
		auto c = U64(8); auto sp = U32(9); auto m = U64(10); auto eps = F64(11), mom = F64(12);
		if (bx != RED_THREADS || sp == 0 || gx != c) { fail("bn_fold_finish: grid %u of %u for %llu channels", gx, bx, c); return INVALID_VALUE; }
		IN(sm, 4 * c); IN(si, 4 * c); IN(rm, 4 * c); IN(rv, 4 * c); IN(sc, 4 * c); IN(g, 4 * c); IN(part, 16 * c * sp);
		if (sh) IN(sh, 4 * c);
		run = [=] { launch_threads(gx, bx, [=] { bn_fold_finish(sm, si, rm, rv, sc, g, sh, part, c, sp, m, eps, mom); }); };
		break;
	}
	case K_bn_grad_fold_finish: {  // bn_grad_fold_finish: bn_grad_finish's arguments, one block of RED_THREADS a channel
		auto dg = PTR(0, float); auto db = PTR(1, float); auto coef = PTR(2, float); auto g = PTR(3, const float);
		auto inv = PTR(4, const float); auto part = PTR(5, const double); auto c = U64(6); auto sp = U32(7); auto m = U64(8);
		if (bx != RED_THREADS || sp == 0 || gx != c) { fail("bn_grad_fold_finish: grid %u of %u for %llu channels", gx, bx, c); return INVALID_VALUE; }
		IN(dg, 4 * c); IN(db, 4 * c); IN(coef, 12 * c); IN(g, 4 * c); IN(inv, 4 * c); IN(part, 16 * c * sp);
		run = [=] { launch_threads(gx, bx, [=] { bn_grad_fold_finish(dg, db, coef, g, inv, part, c, sp, m); }); };
		break;
	}
	case K_fold_parts: {  // fold_parts(double* out, const double* part, u64 c, u32 splits)
		auto o = PTR(0, double); auto part = PTR(1, const double); auto c = U64(2); auto sp = U32(3);
		if (bx != RED_THREADS || sp == 0 || gx != c) { fail("fold_parts: grid %u for %llu channels", gx, c); return INVALID_VALUE; }
		IN(o, 16 * c); IN(part, 16 * c * sp);
		run = [=] { launch_threads(gx, bx, [=] { fold_parts(o, part, c, sp); }); };
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
	bool nhwc;             // tensor / filter: channels-last (NHWC, KRSC), else NCHW (KCRS)
};

size_t cudnnGetVersion(void) { return 91400; }
const char* cudnnGetErrorString(int s) {
	switch (s) {
	case DNN_OK: return "CUDNN_STATUS_SUCCESS";
	case BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
	case MISALIGNED: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
	case NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
	case 2002: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
	case 2004: return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
	case 2009: return "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES";
	case 2010: return "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE";
	case 3002: return "CUDNN_STATUS_NOT_SUPPORTED_SHAPE";
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
	// format 0 CUDNN_TENSOR_NCHW, 1 CUDNN_TENSOR_NHWC
	if (t->kind != TENSOR || (format != 0 && format != 1) || !fk_elem(dtype, true) || n <= 0 || c <= 0 || h <= 0 || w <= 0) return BAD_PARAM;
	*t = Desc{TENSOR, true, n, c, h, w};
	t->dtype = dtype;
	t->nhwc = format == 1;
	return 0;
}
int cudnnSetFilter4dDescriptor(void* d, int dtype, int format, int k, int c, int h, int w) {
	Desc* t = (Desc*)d;
	if (t->kind != FILTER || (format != 0 && format != 1) || !fk_elem(dtype, true) || k <= 0 || c <= 0 || h <= 0 || w <= 0) return BAD_PARAM;
	*t = Desc{FILTER, true, k, c, h, w};
	t->dtype = dtype;
	t->nhwc = format == 1;
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
	if (t && (kind == TENSOR || kind == FILTER) && (t->dtype != 0 || t->nhwc)) {
		fail("a data type %d (NHWC %d) descriptor where this stand-in call takes float NCHW only", t->dtype, t->nhwc);
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

// conv_compute is the reference convolution of both APIs: out = alpha·op
// + beta·out for direction dir (0 forward, 1 backward data, 2 backward
// filter) over packed NCHW x, KCRS w and NCHW y (or NHWC and KRSC, as the
// descriptors say) of elements of E bytes; X, W, Y are the inputs of the
// direction (the output's is unused).
// at4 is the index of element (n, c, y, x) of a packed tensor or filter.
static size_t at4(const Desc* t, size_t n, size_t c, size_t y, size_t x) {
	return t->nhwc ? ((n * t->h + y) * t->w + x) * t->c + c : ((n * t->c + c) * t->h + y) * t->w + x;
}
static void conv_compute(int dir, const Desc* x, const Desc* w, const Desc* y, int P, const void* X, const void* W,
                         const void* Y, void* o, size_t E, float al, float be) {
	int K = w->h;
	size_t outN = dir == 0 ? vol(y) : dir == 1 ? vol(x) : vol(w);
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
								size_t xi = at4(x, n, ci, iy, ix), wi = at4(w, co, ci, ky, kx), yi = at4(y, n, co, oy, ox);
								if (dir == 0) acc[yi] += (double)fk_load(X, xi, E) * fk_load(W, wi, E);
								if (dir == 1) acc[xi] += (double)fk_load(W, wi, E) * fk_load(Y, yi, E);
								if (dir == 2) acc[wi] += (double)fk_load(X, xi, E) * fk_load(Y, yi, E);
							}
	for (size_t i = 0; i < outN; i++) fk_store(o, i, E, (float)(al * acc[i] + (be == 0 ? 0.0 : be * fk_load(o, i, E))));
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
	int P = conv->pad;
	float al = *alpha, be = *beta;
	ENQUEUE([=] { conv_compute(dir, &xs, &ws_, &ys, P, X, W, Y, o, E, al, be); });
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

// ---- cuDNN 9 backend (graph) API ---------------------------------------------
//
// The subset the backend uses for convolutions, values from cudnn_graph.h
// of cuDNN 9.6: descriptors are tagged structs; SetAttribute checks the
// attribute against the descriptor's type, the attribute type and the
// element count the cuDNN documentation gives, and refuses a finalized
// descriptor; Finalize checks that the required attributes were set and
// that they make a convolution this stand-in computes (2-d, packed NCHW,
// cross-correlation, float accumulation, stride and dilation 1). The
// heuristics offer three engines (below); Execute computes through
// conv_compute, as the legacy calls do. Outside the extern "C" block
// above, for its templates: the entry points say extern "C" each.

enum {
	BK_CONVOLUTION = 1, BK_ENGINE = 2, BK_ENGINECFG = 3, BK_ENGINEHEUR = 4, BK_PLAN = 5,
	BK_OP_CONV_FWD = 10, BK_OP_CONV_BWD_FILTER = 11, BK_OP_CONV_BWD_DATA = 12,
	BK_OPGRAPH = 15, BK_PACK = 16, BK_TENSOR = 17,
};
enum {
	TY_HANDLE = 0, TY_DATA_TYPE = 1, TY_INT64 = 3, TY_FLOAT = 4, TY_DOUBLE = 5, TY_VOID_PTR = 6,
	TY_CONV_MODE = 7, TY_HEUR_MODE = 8, TY_NUMERICAL_NOTE = 11, TY_DESC = 15, TY_BEHAVIOR_NOTE = 19,
};
static size_t ty_size(int t) {
	switch (t) {
	case TY_HANDLE: case TY_INT64: case TY_DOUBLE: case TY_VOID_PTR: case TY_DESC: return 8;
	case TY_DATA_TYPE: case TY_FLOAT: case TY_CONV_MODE: case TY_HEUR_MODE: case TY_NUMERICAL_NOTE: case TY_BEHAVIOR_NOTE: return 4;
	}
	return 0;
}

// What the documentation says of each settable attribute: the descriptor
// type it belongs to, its attribute type (alt: a second one it may take),
// the element counts allowed, whether Finalize needs it, and for
// descriptor-valued ones the kind of descriptor (-1: a convolution
// operation).
struct AttrSpec {
	int desc, name, type, alt, minN, maxN;
	bool required;
	int kind;
};
static const AttrSpec kSpecs[] = {
	{BK_TENSOR, 900, TY_INT64, -1, 1, 1, true, 0},        // BYTE_ALIGNMENT
	{BK_TENSOR, 901, TY_DATA_TYPE, -1, 1, 1, true, 0},    // DATA_TYPE
	{BK_TENSOR, 902, TY_INT64, -1, 1, 8, true, 0},        // DIMENSIONS
	{BK_TENSOR, 903, TY_INT64, -1, 1, 8, true, 0},        // STRIDES
	{BK_TENSOR, 906, TY_INT64, -1, 1, 1, true, 0},        // UNIQUE_ID
	{BK_CONVOLUTION, 100, TY_DATA_TYPE, -1, 1, 1, true, 0},  // COMP_TYPE
	{BK_CONVOLUTION, 101, TY_CONV_MODE, -1, 1, 1, true, 0},  // CONV_MODE
	{BK_CONVOLUTION, 102, TY_INT64, -1, 1, 8, true, 0},      // DILATIONS
	{BK_CONVOLUTION, 103, TY_INT64, -1, 1, 8, true, 0},      // FILTER_STRIDES
	{BK_CONVOLUTION, 104, TY_INT64, -1, 1, 8, true, 0},      // POST_PADDINGS
	{BK_CONVOLUTION, 105, TY_INT64, -1, 1, 8, true, 0},      // PRE_PADDINGS
	{BK_CONVOLUTION, 106, TY_INT64, -1, 1, 1, true, 0},      // SPATIAL_DIMS
	// Operations: alpha, beta (FLOAT or DOUBLE), convolution, then x, w, y
	// in the order forward X W Y, backward data DX W DY, backward filter X DW DY.
	{BK_OP_CONV_FWD, 700, TY_FLOAT, TY_DOUBLE, 1, 1, true, 0},
	{BK_OP_CONV_FWD, 701, TY_FLOAT, TY_DOUBLE, 1, 1, true, 0},
	{BK_OP_CONV_FWD, 702, TY_DESC, -1, 1, 1, true, BK_CONVOLUTION},
	{BK_OP_CONV_FWD, 703, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // W
	{BK_OP_CONV_FWD, 704, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // X
	{BK_OP_CONV_FWD, 705, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // Y
	{BK_OP_CONV_BWD_DATA, 706, TY_FLOAT, TY_DOUBLE, 1, 1, true, 0},
	{BK_OP_CONV_BWD_DATA, 707, TY_FLOAT, TY_DOUBLE, 1, 1, true, 0},
	{BK_OP_CONV_BWD_DATA, 708, TY_DESC, -1, 1, 1, true, BK_CONVOLUTION},
	{BK_OP_CONV_BWD_DATA, 709, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // W
	{BK_OP_CONV_BWD_DATA, 710, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // DX
	{BK_OP_CONV_BWD_DATA, 711, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // DY
	{BK_OP_CONV_BWD_FILTER, 712, TY_FLOAT, TY_DOUBLE, 1, 1, true, 0},
	{BK_OP_CONV_BWD_FILTER, 713, TY_FLOAT, TY_DOUBLE, 1, 1, true, 0},
	{BK_OP_CONV_BWD_FILTER, 714, TY_DESC, -1, 1, 1, true, BK_CONVOLUTION},
	{BK_OP_CONV_BWD_FILTER, 715, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // DW
	{BK_OP_CONV_BWD_FILTER, 716, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // X
	{BK_OP_CONV_BWD_FILTER, 717, TY_DESC, -1, 1, 1, true, BK_TENSOR},  // DY
	{BK_OPGRAPH, 800, TY_HANDLE, -1, 1, 1, true, 0},
	{BK_OPGRAPH, 801, TY_DESC, -1, 1, 64, true, -1},
	{BK_ENGINEHEUR, 200, TY_HEUR_MODE, -1, 1, 1, true, 0},
	{BK_ENGINEHEUR, 201, TY_DESC, -1, 1, 1, true, BK_OPGRAPH},
	{BK_PLAN, 400, TY_HANDLE, -1, 1, 1, true, 0},
	{BK_PLAN, 401, TY_DESC, -1, 1, 1, true, BK_ENGINECFG},
	{BK_PACK, 1000, TY_INT64, -1, 1, 64, true, 0},     // UNIQUE_IDS
	{BK_PACK, 1001, TY_VOID_PTR, -1, 1, 64, true, 0},  // DATA_POINTERS
	{BK_PACK, 1003, TY_VOID_PTR, -1, 1, 1, true, 0},   // WORKSPACE
};

// The stand-in's engines: index (CUDNN_ATTR_ENGINE_GLOBAL_INDEX),
// workspace, numerical notes (0 TENSOR_CORE, 4 NONDETERMINISTIC),
// behaviour notes (0 RUNTIME_COMPILATION) and the simulated ms a run
// costs (g_clock_ms).
struct FakeEngine {
	int64_t index;
	size_t ws;
	std::vector<int> notes, behavior;
	double ms;
};
static const FakeEngine kEngines[] = {
	{0, kWorkspace0, {0}, {}, 1.0},  // wants a workspace
	{1, 0, {0, 4}, {}, 0.5},         // nondeterministic
	{2, 0, {}, {0}, 2.0},            // compiles its kernel at run time
	{3, 0, {0, 4}, {}, 0.25},        // nondeterministic, the fastest: offered by FALLBACK only
};

struct Attr {
	int type;
	int64_t n;
	std::vector<uint8_t> bytes;
	template <typename T> T at(int64_t i) const {
		T v;
		memcpy(&v, bytes.data() + i * sizeof(T), sizeof(T));
		return v;
	}
};
// The convolution an operation, graph, engine configuration or plan
// carries once finalized.
struct GConv {
	int dir;              // 0 forward, 1 backward data, 2 backward filter
	Desc x, w, y;         // as the legacy descriptors hold them (w: FILTER, n = K)
	int64_t uid[3];       // of x, w, y
	int pad;
	float alpha, beta;
};
struct Bk {
	int type;
	bool final;
	std::map<int, Attr> attrs;
	GConv conv;            // operation, graph, engine configuration, plan
	void* handle;          // graph, plan
	int engine;            // engine, engine configuration, plan: index into kEngines
	bool refuse;           // engine configuration, plan: the plan will not finalize
	std::vector<Bk> results;  // heuristics
	size_t ws;             // plan
};
static std::mutex bk_mu;
static std::set<Bk*> bks;  // live descriptors

// bk is descriptor d if it is live, of type type, and finalized when
// final is set.
static Bk* bk(void* d, int type, bool final, const char* what) {
	std::lock_guard<std::mutex> g(bk_mu);
	Bk* b = (Bk*)d;
	if (!bks.count(b)) {
		fail("%s: %p is not a live backend descriptor", what, d);
		return nullptr;
	}
	if (type >= 0 && b->type != type) {
		fail("%s: descriptor of type %d, want %d", what, b->type, type);
		return nullptr;
	}
	if (final && !b->final) {
		fail("%s: descriptor of type %d not finalized", what, b->type);
		return nullptr;
	}
	return b;
}

extern "C" int cudnnBackendCreateDescriptor(int type, void** d) {
	switch (type) {
	case BK_CONVOLUTION: case BK_ENGINE: case BK_ENGINECFG: case BK_ENGINEHEUR: case BK_PLAN: case BK_OP_CONV_FWD:
	case BK_OP_CONV_BWD_FILTER: case BK_OP_CONV_BWD_DATA: case BK_OPGRAPH: case BK_PACK: case BK_TENSOR: break;
	default:
		fail("cudnnBackendCreateDescriptor: type %d not in this stand-in", type);
		return NOT_SUPPORTED;
	}
	if (!d) return 2002;  // CUDNN_STATUS_BAD_PARAM_NULL_POINTER
	Bk* b = new Bk();
	b->type = type;
	std::lock_guard<std::mutex> g(bk_mu);
	bks.insert(b);
	*d = b;
	return 0;
}
extern "C" int cudnnBackendDestroyDescriptor(void* d) {
	std::lock_guard<std::mutex> g(bk_mu);
	if (!bks.erase((Bk*)d)) {
		fail("cudnnBackendDestroyDescriptor: %p is not a live backend descriptor", d);
		return BAD_PARAM;
	}
	delete (Bk*)d;
	return 0;
}

extern "C" int cudnnBackendSetAttribute(void* d, int name, int type, int64_t n, const void* elems) {
	Bk* b = bk(d, -1, false, "cudnnBackendSetAttribute");
	if (!b) return BAD_PARAM;
	if (b->final) {
		fail("cudnnBackendSetAttribute(%d) on a finalized descriptor", name);
		return 2004;  // CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED: the status cuDNN gives for the wrong finalization state
	}
	const AttrSpec* sp = nullptr;
	for (const AttrSpec& s : kSpecs)
		if (s.desc == b->type && s.name == name) sp = &s;
	if (!sp) {
		fail("cudnnBackendSetAttribute: attribute %d does not belong to descriptor type %d", name, b->type);
		return BAD_PARAM;
	}
	if (type != sp->type && type != sp->alt) {
		fail("cudnnBackendSetAttribute(%d): attribute type %d, want %d", name, type, sp->type);
		return 2010;  // CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE
	}
	if (n < sp->minN || n > sp->maxN || !elems) {
		fail("cudnnBackendSetAttribute(%d): %lld elements, want %d to %d", name, (long long)n, sp->minN, sp->maxN);
		return BAD_PARAM;
	}
	Attr a{type, n, std::vector<uint8_t>((const uint8_t*)elems, (const uint8_t*)elems + n * ty_size(type))};
	if (type == TY_DESC) {
		for (int64_t i = 0; i < n; i++) {
			Bk* e = bk(a.at<void*>(i), sp->kind >= 0 ? sp->kind : -1, true, "cudnnBackendSetAttribute element");
			if (!e) return BAD_PARAM;
			if (sp->kind < 0 && e->type != BK_OP_CONV_FWD && e->type != BK_OP_CONV_BWD_DATA && e->type != BK_OP_CONV_BWD_FILTER) {
				fail("cudnnBackendSetAttribute(%d): descriptor of type %d is not an operation", name, e->type);
				return BAD_PARAM;
			}
		}
	}
	b->attrs[name] = a;
	return 0;
}

// need is attribute name of b, which Finalize requires.
static const Attr* need(Bk* b, int name) {
	auto it = b->attrs.find(name);
	if (it == b->attrs.end()) {
		fail("cudnnBackendFinalize: descriptor type %d lacks required attribute %d", b->type, name);
		return nullptr;
	}
	return &it->second;
}
#define NEEDA(v, name) const Attr* v = need(b, name); if (!v) return BAD_PARAM

// tensor_of reads a finalized tensor descriptor as a legacy one (4-d,
// packed NCHW) of kind TENSOR or FILTER, and its unique id.
static int tensor_of(void* d, int kind, Desc* t, int64_t* uid) {
	Bk* b = bk(d, BK_TENSOR, true, "convolution operand");
	if (!b) return BAD_PARAM;
	const Attr &dims = b->attrs[902], &str = b->attrs[903];
	if (dims.n != 4) {
		fail("convolution operand of %lld dimensions: this stand-in takes 4", (long long)dims.n);
		return NOT_SUPPORTED;
	}
	// Packed NCHW (strides C·H·W, H·W, W, 1) or packed NHWC (H·W·C, 1, W·C, C).
	int64_t n = dims.at<int64_t>(0), c = dims.at<int64_t>(1), h = dims.at<int64_t>(2), w = dims.at<int64_t>(3);
	int64_t nchw[4] = {c * h * w, h * w, w, 1}, nhwc[4] = {h * w * c, 1, w * c, c};
	bool isNCHW = true, isNHWC = true;
	for (int i = 0; i < 4; i++) {
		isNCHW = isNCHW && str.at<int64_t>(i) == nchw[i];
		isNHWC = isNHWC && str.at<int64_t>(i) == nhwc[i];
	}
	if (!isNCHW && !isNHWC) {
		fail("convolution operand strides {%lld %lld %lld %lld}: neither packed NCHW nor packed NHWC", (long long)str.at<int64_t>(0),
		     (long long)str.at<int64_t>(1), (long long)str.at<int64_t>(2), (long long)str.at<int64_t>(3));
		return NOT_SUPPORTED;
	}
	*t = Desc{kind, true, (int)n, (int)c, (int)h, (int)w};
	t->dtype = b->attrs[901].at<int32_t>(0);
	t->nhwc = !isNCHW;  // where both fit, the two orders are the same
	*uid = b->attrs[906].at<int64_t>(0);
	return 0;
}

static int finalize_op(Bk* b) {
	int dir = b->type == BK_OP_CONV_FWD ? 0 : b->type == BK_OP_CONV_BWD_DATA ? 1 : 2;
	static const int base[3] = {700, 706, 712};
	// The attribute names of x, w and y, by direction.
	static const int xwy[3][3] = {{704, 703, 705}, {710, 709, 711}, {716, 715, 717}};
	NEEDA(al, base[dir]);
	NEEDA(be, base[dir] + 1);
	NEEDA(cv, base[dir] + 2);
	GConv& g = b->conv;
	g.dir = dir;
	for (int i = 0; i < 3; i++) {
		NEEDA(t, xwy[dir][i]);
		CHECK(tensor_of(t->at<void*>(0), i == 1 ? FILTER : TENSOR, i == 0 ? &g.x : i == 1 ? &g.w : &g.y, &g.uid[i]));
	}
	if (g.uid[0] == g.uid[1] || g.uid[0] == g.uid[2] || g.uid[1] == g.uid[2]) {
		fail("convolution operation: tensors share a unique id");
		return 2009;  // CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES
	}
	Bk* c = bk(cv->at<void*>(0), BK_CONVOLUTION, true, "convolution descriptor");
	if (!c) return BAD_PARAM;
	g.pad = (int)c->attrs[105].at<int64_t>(0);
	// alpha and beta: CUDNN_TYPE_FLOAT for a float compute type (DOUBLE is
	// for a double one), as the legacy API's scaling parameters.
	int ctype = c->attrs[100].at<int32_t>(0);
	int want = ctype == 1 ? TY_DOUBLE : TY_FLOAT;
	if (al->type != want || be->type != want) {
		fail("convolution operation: alpha/beta of attribute types %d/%d for compute type %d, want %d", al->type, be->type, ctype, want);
		return 2010;  // CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE
	}
	g.alpha = want == TY_FLOAT ? al->at<float>(0) : (float)al->at<double>(0);
	g.beta = want == TY_FLOAT ? be->at<float>(0) : (float)be->at<double>(0);
	Desc conv{CONV, true};
	conv.pad = g.pad;
	if (g.x.dtype != g.w.dtype || g.y.dtype != g.x.dtype || !fk_elem(g.x.dtype, true)) {
		fail("convolution operation: data types x %d, w %d, y %d (float or bfloat16, all the same, here)", g.x.dtype, g.w.dtype, g.y.dtype);
		return NOT_SUPPORTED;
	}
	return geometry(&g.x, &g.w, &conv, &g.y);
}

extern "C" int cudnnBackendFinalize(void* d) {
	Bk* b = bk(d, -1, false, "cudnnBackendFinalize");
	if (!b) return BAD_PARAM;
	if (b->final) {
		fail("cudnnBackendFinalize: descriptor of type %d finalized twice", b->type);
		return BAD_PARAM;
	}
	switch (b->type) {
	case BK_TENSOR: {
		NEEDA(al, 900);
		NEEDA(dt, 901);
		NEEDA(dims, 902);
		NEEDA(str, 903);
		NEEDA(uid, 906);
		(void)uid;
		if (dims->n != str->n || al->at<int64_t>(0) <= 0) {
			fail("tensor descriptor: %lld dimensions, %lld strides, alignment %lld", (long long)dims->n, (long long)str->n,
			     (long long)al->at<int64_t>(0));
			return BAD_PARAM;
		}
		for (int64_t i = 0; i < dims->n; i++)
			if (dims->at<int64_t>(i) <= 0 || str->at<int64_t>(i) <= 0) return BAD_PARAM;
		if (!fk_elem(dt->at<int32_t>(0), true)) return NOT_SUPPORTED;
		break;
	}
	case BK_CONVOLUTION: {
		NEEDA(ct, 100);
		NEEDA(mode, 101);
		NEEDA(dil, 102);
		NEEDA(str, 103);
		NEEDA(post, 104);
		NEEDA(pre, 105);
		NEEDA(sd, 106);
		int64_t n = sd->at<int64_t>(0);
		if (dil->n != n || str->n != n || post->n != n || pre->n != n) {
			fail("convolution descriptor: %lld spatial dimensions but %lld/%lld/%lld/%lld dilations/strides/paddings", (long long)n,
			     (long long)dil->n, (long long)str->n, (long long)post->n, (long long)pre->n);
			return BAD_PARAM;
		}
		if (n != 2 || ct->at<int32_t>(0) != 0 || mode->at<int32_t>(0) != 1) {
			fail("convolution descriptor: %lld spatial dimensions, compute type %d, mode %d (want 2, FLOAT, CROSS_CORRELATION here)",
			     (long long)n, ct->at<int32_t>(0), mode->at<int32_t>(0));
			return NOT_SUPPORTED;
		}
		for (int i = 0; i < 2; i++)
			if (dil->at<int64_t>(i) != 1 || str->at<int64_t>(i) != 1 || pre->at<int64_t>(i) != pre->at<int64_t>(0) ||
			    post->at<int64_t>(i) != pre->at<int64_t>(0) || pre->at<int64_t>(0) < 0) {
				fail("convolution descriptor: strides, dilations or paddings this stand-in does not compute");
				return NOT_SUPPORTED;
			}
		break;
	}
	case BK_OP_CONV_FWD: case BK_OP_CONV_BWD_DATA: case BK_OP_CONV_BWD_FILTER:
		CHECK(finalize_op(b));
		break;
	case BK_OPGRAPH: {
		NEEDA(h, 800);
		NEEDA(ops, 801);
		if (ops->n != 1) {
			fail("operation graph of %lld operations: this stand-in computes one convolution", (long long)ops->n);
			return NOT_SUPPORTED;
		}
		Bk* op = bk(ops->at<void*>(0), -1, true, "operation");
		if (!op) return BAD_PARAM;
		b->handle = h->at<void*>(0);
		b->conv = op->conv;
		break;
	}
	case BK_ENGINEHEUR: {
		// Heuristics look at the device's properties: not while capturing.
		if (capturing("cudnnBackendFinalize(ENGINEHEUR)")) return EXEC_FAILED;
		NEEDA(mode, 200);
		NEEDA(gr, 201);
		int m = mode->at<int32_t>(0);
		if (m < 0 || m > 3) return BAD_PARAM;
		Bk* gb = bk(gr->at<void*>(0), BK_OPGRAPH, true, "operation graph");
		if (!gb) return BAD_PARAM;
		const GConv& g = gb->conv;
		// FAKECUDA_GRAPH_MIN_C=N: like a cuDNN whose engines all refuse
		// fewer than N input channels at plan time (mode A) and whose
		// fallback list is empty; FAKECUDA_BF16_MIN_C=N does the same for
		// bfloat16 only, as the legacy search does.
		const char* gmin = getenv("FAKECUDA_GRAPH_MIN_C");
		const char* bmin = getenv("FAKECUDA_BF16_MIN_C");
		bool refuse = (gmin && g.x.c < atoi(gmin)) || (bmin && g.x.dtype == 9 && g.x.c < atoi(bmin));
		std::vector<int> list = m == 2 ? std::vector<int>{0, 3} : std::vector<int>{1, 0, 2};
		if (refuse && m == 2) list.clear();
		for (int e : list) {
			Bk cfg{};
			cfg.type = BK_ENGINECFG;
			cfg.final = true;
			cfg.conv = g;
			cfg.engine = e;
			cfg.refuse = refuse;
			b->results.push_back(cfg);
		}
		break;
	}
	case BK_PLAN: {
		if (capturing("cudnnBackendFinalize(EXECUTION_PLAN)")) return EXEC_FAILED;
		if (!has_ctx("cudnnBackendFinalize(EXECUTION_PLAN)")) return EXEC_FAILED;
		NEEDA(h, 400);
		NEEDA(cf, 401);
		Bk* c = bk(cf->at<void*>(0), BK_ENGINECFG, true, "engine configuration");
		if (!c) return BAD_PARAM;
		if (c->refuse) {
			fail("engine %lld: this geometry is not supported (FAKECUDA_*_MIN_C)", (long long)kEngines[c->engine].index);
			return 3002;  // CUDNN_STATUS_NOT_SUPPORTED_SHAPE
		}
		b->handle = h->at<void*>(0);
		b->conv = c->conv;
		b->engine = c->engine;
		b->ws = kEngines[c->engine].ws;
		// FAKECUDA_ENGINE<i>_WORKSPACE=N: engine i wants N bytes instead.
		char name[64];
		snprintf(name, sizeof name, "FAKECUDA_ENGINE%lld_WORKSPACE", (long long)kEngines[c->engine].index);
		if (const char* ws = getenv(name)) b->ws = (size_t)atoll(ws);
		break;
	}
	case BK_PACK: {
		NEEDA(uids, 1000);
		NEEDA(ptrs, 1001);
		NEEDA(ws, 1003);
		(void)ws;
		if (uids->n != ptrs->n) {
			fail("variant pack: %lld unique ids for %lld pointers", (long long)uids->n, (long long)ptrs->n);
			return BAD_PARAM;
		}
		break;
	}
	default:
		fail("cudnnBackendFinalize: descriptor type %d is only read", b->type);
		return BAD_PARAM;
	}
	b->final = true;
	return 0;
}

// get_out copies n elements of type type into elems, as far as req allows.
template <typename T>
static void get_out(const std::vector<T>& v, int64_t req, int64_t* n, void* elems) {
	*n = (int64_t)v.size();
	for (int64_t i = 0; i < req && i < (int64_t)v.size(); i++) memcpy((char*)elems + i * sizeof(T), &v[i], sizeof(T));
}

extern "C" int cudnnBackendGetAttribute(void* d, int name, int type, int64_t req, int64_t* n, void* elems) {
	Bk* b = bk(d, -1, true, "cudnnBackendGetAttribute");
	if (!b) return 2004;  // CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED
	if (!n || req < 0 || (req > 0 && !elems)) return 2002;  // CUDNN_STATUS_BAD_PARAM_NULL_POINTER
	auto want = [&](int t, int desc) {
		if (b->type != desc) {
			fail("cudnnBackendGetAttribute(%d) of a descriptor of type %d", name, b->type);
			return false;
		}
		if (type != t) {
			fail("cudnnBackendGetAttribute(%d): attribute type %d, want %d", name, type, t);
			return false;
		}
		return true;
	};
	switch (name) {
	case 202: {  // ENGINEHEUR_RESULTS into engine configurations the caller made
		if (!want(TY_DESC, BK_ENGINEHEUR)) return BAD_PARAM;
		*n = (int64_t)b->results.size();
		for (int64_t i = 0; i < req && i < *n; i++) {
			Bk* c = bk(((void**)elems)[i], BK_ENGINECFG, false, "ENGINEHEUR_RESULTS element");
			if (!c) return BAD_PARAM;
			std::lock_guard<std::mutex> g(bk_mu);
			*c = b->results[i];
		}
		return 0;
	}
	case 300: {  // ENGINECFG_ENGINE into an engine descriptor the caller made
		if (!want(TY_DESC, BK_ENGINECFG) || req != 1) return BAD_PARAM;
		Bk* e = bk(((void**)elems)[0], BK_ENGINE, false, "ENGINECFG_ENGINE element");
		if (!e) return BAD_PARAM;
		e->engine = b->engine;
		e->final = true;
		*n = 1;
		return 0;
	}
	case 1301:  // ENGINE_GLOBAL_INDEX
		if (!want(TY_INT64, BK_ENGINE)) return BAD_PARAM;
		get_out(std::vector<int64_t>{kEngines[b->engine].index}, req, n, elems);
		return 0;
	case 1303: {  // ENGINE_NUMERICAL_NOTE
		if (!want(TY_NUMERICAL_NOTE, BK_ENGINE)) return BAD_PARAM;
		get_out(kEngines[b->engine].notes, req, n, elems);
		return 0;
	}
	case 1305:  // ENGINE_BEHAVIOR_NOTE
		if (!want(TY_BEHAVIOR_NOTE, BK_ENGINE)) return BAD_PARAM;
		get_out(kEngines[b->engine].behavior, req, n, elems);
		return 0;
	case 402:  // EXECUTION_PLAN_WORKSPACE_SIZE
		if (!want(TY_INT64, BK_PLAN)) return BAD_PARAM;
		get_out(std::vector<int64_t>{(int64_t)b->ws}, req, n, elems);
		return 0;
	}
	fail("cudnnBackendGetAttribute: attribute %d not readable in this stand-in", name);
	return NOT_SUPPORTED;
}

extern "C" int cudnnBackendExecute(void* h, void* plan, void* pack) {
	if (!has_ctx("cudnnBackendExecute")) return EXEC_FAILED;
	Bk* p = bk(plan, BK_PLAN, true, "cudnnBackendExecute plan");
	Bk* v = bk(pack, BK_PACK, true, "cudnnBackendExecute variant pack");
	if (!p || !v || !h) return BAD_PARAM;
	if (p->handle != h) {
		fail("cudnnBackendExecute on handle %p of a plan made for handle %p", h, p->handle);
		return BAD_PARAM;
	}
	// FAKECUDA_ENGINE_FAILS=N: engine N builds but fails to run, as an
	// engine broken by a new driver would.
	if (const char* bad = getenv("FAKECUDA_ENGINE_FAILS"); bad && atoll(bad) == kEngines[p->engine].index) {
		fail("engine %lld fails to run (FAKECUDA_ENGINE_FAILS)", (long long)kEngines[p->engine].index);
		return EXEC_FAILED;
	}
	const Attr &uids = v->attrs[1000], &ptrs = v->attrs[1001];
	void* ws = v->attrs[1003].at<void*>(0);
	const GConv& g = p->conv;
	void* at[3] = {nullptr, nullptr, nullptr};
	for (int i = 0; i < 3; i++) {
		for (int64_t j = 0; j < uids.n; j++)
			if (uids.at<int64_t>(j) == g.uid[i]) at[i] = ptrs.at<void*>(j);
		if (!at[i]) {
			fail("cudnnBackendExecute: no pointer for tensor %lld", (long long)g.uid[i]);
			return BAD_PARAM;
		}
	}
	if (p->ws && !inside((uintptr_t)ws, p->ws)) {
		fail("cudnnBackendExecute: workspace of %zu bytes at %p for engine %lld", p->ws, ws, (long long)kEngines[p->engine].index);
		return BAD_PARAM;
	}
	size_t E = fk_elem(g.x.dtype, true);
	CHECK(dev(at[0], vol(&g.x), "graph x", E));
	CHECK(dev(at[1], vol(&g.w), "graph w", E));
	CHECK(dev(at[2], vol(&g.y), "graph y", E));
	Desc xs = g.x, ws_ = g.w, ys = g.y;
	int dir = g.dir, P = g.pad;
	float al = g.alpha, be = g.beta;
	void* o = at[dir == 0 ? 2 : dir == 1 ? 0 : 1];
	const void *X = at[0], *W = at[1], *Y = at[2];
	g_clock_ms += kEngines[p->engine].ms;
	ENQUEUE([=] { conv_compute(dir, &xs, &ws_, &ys, P, X, W, Y, o, E, al, be); });
}
