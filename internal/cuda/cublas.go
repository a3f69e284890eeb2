//go:build linux && cgo

package cuda

// cuBLAS, through its v2 API (cublas_api.h, CUDA 12.6; the same symbols in
// cuBLAS 13). cublas_v2.h maps cublasCreate to cublasCreate_v2 and so on;
// dlsym needs the _v2 names.

/*
#include <stdint.h>
#include <stddef.h>

typedef int cublasStatus_t;
#define H(x) ((void*)(uintptr_t)(x))

static cublasStatus_t vg_cublasCreate(void* f, uintptr_t* h) {
	return ((cublasStatus_t(*)(void**))f)((void**)h);
}
static cublasStatus_t vg_cublasDestroy(void* f, uintptr_t h) {
	return ((cublasStatus_t(*)(void*))f)(H(h));
}
static cublasStatus_t vg_cublasSetStream(void* f, uintptr_t h, uintptr_t s) {
	return ((cublasStatus_t(*)(void*, void*))f)(H(h), H(s));
}
// cublasMath_t and libraryPropertyType are C enums: int-sized.
static cublasStatus_t vg_cublasSetMathMode(void* f, uintptr_t h, int mode) {
	return ((cublasStatus_t(*)(void*, int))f)(H(h), mode);
}
static cublasStatus_t vg_cublasGetVersion(void* f, uintptr_t h, int* v) {
	return ((cublasStatus_t(*)(void*, int*))f)(H(h), v);
}
static cublasStatus_t vg_cublasGetProperty(void* f, int type, int* v) {
	return ((cublasStatus_t(*)(int, int*))f)(type, v);
}
// Host pointer mode (the default): cuBLAS reads alpha and beta before it
// returns, so pointers to these locals are enough.
static cublasStatus_t vg_cublasSgemm(void* f, uintptr_t h, int ta, int tb, int m, int n, int k,
		float alpha, unsigned long long a, int lda, unsigned long long b, int ldb,
		float beta, unsigned long long c, int ldc) {
	return ((cublasStatus_t(*)(void*, int, int, int, int, int, const float*, const float*, int,
		const float*, int, const float*, float*, int))f)(H(h), ta, tb, m, n, k,
		&alpha, (const float*)H(a), lda, (const float*)H(b), ldb, &beta, (float*)H(c), ldc);
}
// cublasGemmEx(handle, ta, tb, m, n, k, alpha, A, Atype, lda, B, Btype,
// ldb, beta, C, Ctype, ldc, computeType, algo): alpha and beta are floats
// for CUBLAS_COMPUTE_32F.
static cublasStatus_t vg_cublasGemmEx(void* f, uintptr_t h, int ta, int tb, int m, int n, int k,
		float alpha, unsigned long long a, int atype, int lda, unsigned long long b, int btype, int ldb,
		float beta, unsigned long long c, int ctype, int ldc, int compute, int algo) {
	return ((cublasStatus_t(*)(void*, int, int, int, int, int, const void*, const void*, int, int,
		const void*, int, int, const void*, void*, int, int, int, int))f)(H(h), ta, tb, m, n, k,
		&alpha, H(a), atype, lda, H(b), btype, ldb, &beta, H(c), ctype, ldc, compute, algo);
}
static cublasStatus_t vg_cublasSetWorkspace(void* f, uintptr_t h, unsigned long long ws, size_t bytes) {
	return ((cublasStatus_t(*)(void*, void*, size_t))f)(H(h), H(ws), bytes);
}
static const char* vg_cublasStatusText(void* f, cublasStatus_t s) {
	return ((const char*(*)(cublasStatus_t))f)(s);
}
*/
import "C"

import "unsafe"

// BlasHandle is a cublasHandle_t.
type BlasHandle uintptr

// cuBLAS enums (cublas_api.h, library_types.h).
const (
	OpN = 0 // CUBLAS_OP_N
	OpT = 1 // CUBLAS_OP_T

	BlasDefaultMath    = 0 // CUBLAS_DEFAULT_MATH: no TF32 for SGEMM
	BlasPedanticMath   = 2 // CUBLAS_PEDANTIC_MATH
	BlasTF32TensorMath = 3 // CUBLAS_TF32_TENSOR_OP_MATH

	// Data and compute types of GemmEx (library_types.h, cublas_api.h).
	R32F        = 0  // CUDA_R_32F
	R16BF       = 14 // CUDA_R_16BF
	Compute32F  = 68 // CUBLAS_COMPUTE_32F
	GemmDefault = -1 // CUBLAS_GEMM_DEFAULT

	propMajor = 0 // MAJOR_VERSION (libraryPropertyType)
	propMinor = 1 // MINOR_VERSION
	propPatch = 2 // PATCH_LEVEL
)

// BLAS is cuBLAS (libcublas.so.13 or .12).
type BLAS struct {
	lib *lib
	fn  struct {
		create, destroy, setStream, setMathMode, getVersion, getProperty, sgemm, gemmEx,
		statusName, statusString, setWorkspace unsafe.Pointer
	}
}

func (b *BLAS) table() []symbol {
	f := &b.fn
	return []symbol{
		{name: "cublasCreate_v2", p: &f.create},
		{name: "cublasDestroy_v2", p: &f.destroy},
		{name: "cublasSetStream_v2", p: &f.setStream},
		{name: "cublasSetMathMode", p: &f.setMathMode},
		{name: "cublasGetVersion_v2", p: &f.getVersion},
		{name: "cublasGetProperty", p: &f.getProperty},
		{name: "cublasSgemm_v2", p: &f.sgemm},
		{name: "cublasGemmEx", p: &f.gemmEx},
		{name: "cublasGetStatusName", p: &f.statusName, optional: true},
		{name: "cublasGetStatusString", p: &f.statusString, optional: true},
		{name: "cublasSetWorkspace_v2", p: &f.setWorkspace, optional: true},
	}
}

// Path is the file cuBLAS was loaded from.
func (b *BLAS) Path() string { return b.lib.path }

func (b *BLAS) check(call string, r C.cublasStatus_t) error {
	if r == 0 {
		return nil
	}
	e := newError(LibBLAS, call, int(r))
	if b.fn.statusName != nil {
		if s := C.vg_cublasStatusText(b.fn.statusName, r); s != nil {
			e.Name = C.GoString(s)
		}
	}
	if b.fn.statusString != nil {
		if s := C.vg_cublasStatusText(b.fn.statusString, r); s != nil {
			e.Detail = C.GoString(s)
		}
	}
	return e
}

// Create makes a handle on the current context.
func (b *BLAS) Create() (BlasHandle, error) {
	var h C.uintptr_t
	err := b.check("cublasCreate_v2", C.vg_cublasCreate(b.fn.create, &h))
	return BlasHandle(h), err
}

// Destroy releases h.
func (b *BLAS) Destroy(h BlasHandle) error {
	return b.check("cublasDestroy_v2", C.vg_cublasDestroy(b.fn.destroy, C.uintptr_t(h)))
}

// SetStream makes h queue its work on s.
func (b *BLAS) SetStream(h BlasHandle, s Stream) error {
	return b.check("cublasSetStream_v2", C.vg_cublasSetStream(b.fn.setStream, C.uintptr_t(h), C.uintptr_t(s)))
}

// SetWorkspace gives h a workspace of its own, so that cuBLAS never
// allocates one while a stream is being captured into a graph. It reports
// false when this cuBLAS lacks cublasSetWorkspace_v2 (older than 11.0).
func (b *BLAS) SetWorkspace(h BlasHandle, ws DevicePtr, bytes int64) (bool, error) {
	if b.fn.setWorkspace == nil {
		return false, nil
	}
	return true, b.check("cublasSetWorkspace_v2", C.vg_cublasSetWorkspace(b.fn.setWorkspace, C.uintptr_t(h), C.ulonglong(ws), C.size_t(bytes)))
}

// SetMathMode is cublasSetMathMode (BlasDefaultMath, BlasTF32TensorMath, ...).
func (b *BLAS) SetMathMode(h BlasHandle, mode int) error {
	return b.check("cublasSetMathMode", C.vg_cublasSetMathMode(b.fn.setMathMode, C.uintptr_t(h), C.int(mode)))
}

// Version is cublasGetVersion_v2: major*10000 + minor*100 + patch for
// cuBLAS 12 and 13 (e.g. 130100).
func (b *BLAS) Version(h BlasHandle) (int, error) {
	var v C.int
	err := b.check("cublasGetVersion_v2", C.vg_cublasGetVersion(b.fn.getVersion, C.uintptr_t(h), &v))
	return int(v), err
}

// Property returns cuBLAS's major, minor and patch version without a
// handle (and so without a GPU).
func (b *BLAS) Property() (major, minor, patch int, err error) {
	var v [3]C.int
	for i, p := range []int{propMajor, propMinor, propPatch} {
		if err = b.check("cublasGetProperty", C.vg_cublasGetProperty(b.fn.getProperty, C.int(p), &v[i])); err != nil {
			return
		}
	}
	return int(v[0]), int(v[1]), int(v[2]), nil
}

// Sgemm is column-major C[m,n] = alpha·op(A)·op(B) + beta·C with op(A)
// m×k and op(B) k×n, ta and tb OpN or OpT.
func (b *BLAS) Sgemm(h BlasHandle, ta, tb, m, n, k int, alpha float32, a DevicePtr, lda int, bm DevicePtr, ldb int, beta float32, c DevicePtr, ldc int) error {
	r := C.vg_cublasSgemm(b.fn.sgemm, C.uintptr_t(h), C.int(ta), C.int(tb), C.int(m), C.int(n), C.int(k),
		C.float(alpha), C.ulonglong(a), C.int(lda), C.ulonglong(bm), C.int(ldb), C.float(beta), C.ulonglong(c), C.int(ldc))
	return b.check("cublasSgemm_v2", r)
}

// GemmEx is Sgemm over operands of the given types (R32F or R16BF) with
// float accumulation: column-major C[m,n] = alpha·op(A)·op(B) + beta·C.
func (b *BLAS) GemmEx(h BlasHandle, ta, tb, m, n, k int, alpha float32, a DevicePtr, atype, lda int, bm DevicePtr, btype, ldb int,
	beta float32, c DevicePtr, ctype, ldc int) error {
	r := C.vg_cublasGemmEx(b.fn.gemmEx, C.uintptr_t(h), C.int(ta), C.int(tb), C.int(m), C.int(n), C.int(k),
		C.float(alpha), C.ulonglong(a), C.int(atype), C.int(lda), C.ulonglong(bm), C.int(btype), C.int(ldb),
		C.float(beta), C.ulonglong(c), C.int(ctype), C.int(ldc), Compute32F, GemmDefault)
	return b.check("cublasGemmEx", r)
}
