//go:build cgo && !windows

package cpu

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

// cblas_sgemm's prototype, declared here so that no BLAS headers or
// libraries are needed to build: the library is found at run time.
typedef void (*sgemm_fn)(int order, int transa, int transb, int m, int n, int k,
                         float alpha, const float *a, int lda, const float *b, int ldb,
                         float beta, float *c, int ldc);
typedef char *(*config_fn)(void);

static sgemm_fn vgg_sgemm;
static config_fn vgg_config;
static config_fn vgg_core;
typedef void (*set_threads_fn)(int);
typedef int (*get_threads_fn)(void);
static set_threads_fn vgg_set_threads_fn;
static get_threads_fn vgg_get_threads_fn;

static const char *vgg_open_blas(const char *name, int *opened) {
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	*opened = h != 0;
	if (!h) return dlerror();
	void *f = dlsym(h, "cblas_sgemm");
	if (!f) {
		// dlclose may free dlerror's message: keep a copy.
		static char msg[512];
		const char *e = dlerror();
		snprintf(msg, sizeof msg, "%s", e ? e : "cblas_sgemm not found");
		dlclose(h);
		return msg;
	}
	vgg_sgemm = (sgemm_fn)f;
	vgg_config = (config_fn)dlsym(h, "openblas_get_config");
	vgg_core = (config_fn)dlsym(h, "openblas_get_corename");
	vgg_set_threads_fn = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
	vgg_get_threads_fn = (get_threads_fn)dlsym(h, "openblas_get_num_threads");
	return 0;
}

// vgg_blas_threads sets OpenBLAS's thread count to n and returns the one
// before, or returns 0 where the library cannot say.
static int vgg_blas_threads(int n) {
	if (!vgg_set_threads_fn || !vgg_get_threads_fn) return 0;
	int old = vgg_get_threads_fn();
	vgg_set_threads_fn(n);
	return old;
}

static int vgg_blas_thread_count(void) { return vgg_get_threads_fn ? vgg_get_threads_fn() : 0; }

static const char *vgg_blas_config(void) { return vgg_config ? vgg_config() : ""; }
static const char *vgg_blas_core(void) { return vgg_core ? vgg_core() : ""; }

static void vgg_call_sgemm(int ta, int tb, int m, int n, int k, float alpha,
                           const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
	// 101 = CblasRowMajor, 111 = CblasNoTrans, 112 = CblasTrans.
	vgg_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/vgg16/vgg16/internal/sgemm"
)

// The CBLAS library, found with dlopen at run time.

// blasCandidates are tried in order when BLASEnv is unset. Only optimised
// libraries: the reference BLAS is slower than gonum. On macOS, Apple's
// Accelerate (always there; it runs SGEMM on the matrix units of Apple
// silicon) before a Homebrew OpenBLAS.
func blasCandidates() []string {
	if runtime.GOOS == "darwin" {
		return []string{accelerate, "libopenblas.dylib", "/opt/homebrew/opt/openblas/lib/libopenblas.dylib", "/usr/local/opt/openblas/lib/libopenblas.dylib"}
	}
	return []string{"libopenblas.so.0", "libopenblas.so", "libblis.so.4", "libmkl_rt.so.2", "libmkl_rt.so"}
}

const accelerate = "/System/Library/Frameworks/Accelerate.framework/Accelerate"

// loadBLAS picks the SGEMM once per process: the one BLASEnv names;
// otherwise package sgemm where its assembly kernel runs (x86-64 with AVX2
// and FMA: as fast as OpenBLAS there, and nothing to install), a CBLAS
// library elsewhere (Apple's Accelerate, OpenBLAS on arm64), gonum where
// none is found.
func loadBLAS() {
	blasOnce.Do(func() {
		env := blasEnv()
		switch {
		case env == "go" || env == "gonum":
			var desc string
			blasKind, desc = pureGo(env)
			blasDesc = "SGEMM: " + desc + " (" + BLASEnv + "=" + env + ")"
			return
		case env == "" && sgemm.Available():
			var desc string
			blasKind, desc = pureGo("")
			blasDesc = "SGEMM: " + desc
			return
		}
		desc, err := openCBLAS()
		if err == nil {
			blasKind, blasDesc = gemmCBLAS, "SGEMM: "+desc
			return
		}
		blasKind, desc = pureGo("")
		blasDesc = fmt.Sprintf("SGEMM: %s (%v)", desc, err)
		if blasKind == gemmGonum {
			blasDesc = fmt.Sprintf("SGEMM: %s, several times slower (%v; install libopenblas0 for speed)", desc, err)
		}
	})
}

var (
	cblasOnce sync.Once
	cblasErr  error
)

// openCBLAS loads the CBLAS library BLASEnv names, or the first of
// blasCandidates that opens, once per process.
func openCBLAS() (string, error) {
	cblasOnce.Do(func() {
		names := blasCandidates()
		if v := blasEnv(); v != "" && v != "go" && v != "gonum" {
			names = []string{v}
		}
		core := chooseCore()
		var errs []string
		for _, name := range names {
			if _, err := openBLASFile(name); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			blasCgo = true
			// "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH …": name and version.
			version := strings.Fields(C.GoString(C.vgg_blas_config()))
			if len(version) > 2 {
				version = version[:2]
			}
			desc := strings.Join(version, " ")
			switch {
			case desc != "":
				desc += " (" + name + ")"
			case name == accelerate:
				desc = "Apple Accelerate"
			default:
				desc = name
			}
			if kernel := strings.TrimSpace(C.GoString(C.vgg_blas_core())); kernel != "" {
				desc += ", kernel " + kernel + core
			}
			cblasDesc = desc
			return
		}
		cblasErr = fmt.Errorf("no CBLAS found: %s", strings.Join(errs, "; "))
	})
	return cblasDesc, cblasErr
}

// openBLASFile loads the library name and its cblas_sgemm, the one
// openCBLAS then calls, or returns dlerror's message; opened says whether
// the library itself opened.
func openBLASFile(name string) (opened bool, err error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var o C.int
	if e := C.vgg_open_blas(cname, &o); e != nil {
		return o != 0, errors.New(C.GoString(e))
	}
	return true, nil
}

// NewCBLAS returns a CPU backend that calls the CBLAS library (OpenBLAS)
// whichever SGEMM New would pick, or the error that says why none loads.
func NewCBLAS() (*Backend, error) {
	if _, err := openCBLAS(); err != nil {
		return nil, err
	}
	b := New()
	b.gemm = gemmCBLAS
	return b, nil
}

// chooseCore sets OpenBLAS's thread timeout and picks its kernel from the CPU's features when the user
// has not: OpenBLAS 0.3.21 does not know recent Xeons and falls back to its
// Prescott (SSE3) kernel, 5-8x slower than its SkylakeX one on the same
// machine (28 against 210 GFLOP/s measured on the 2-core build machines).
// OpenBLAS reads the variable when it is loaded, so this runs before dlopen.
func chooseCore() string {
	// OpenBLAS's worker threads spin (sched_yield) for 2^28 cycles after
	// each call by default, starving the goroutines that run im2col, BN
	// and pooling between GEMMs: a training step took 2.06 s with the
	// default and 1.36 s with 2^4 cycles on the 2-core build machines.
	if os.Getenv("OPENBLAS_THREAD_TIMEOUT") == "" {
		os.Setenv("OPENBLAS_THREAD_TIMEOUT", "4")
	}
	if v := os.Getenv("OPENBLAS_CORETYPE"); v != "" {
		return " (OPENBLAS_CORETYPE)"
	}
	var core string
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL:
		core = "SkylakeX"
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		core = "Haswell"
	default:
		return ""
	}
	os.Setenv("OPENBLAS_CORETYPE", core)
	return " (chosen from the CPU's flags)"
}

// blasThreadCount is OpenBLAS's thread count, 0 for another library.
func blasThreadCount() int {
	if !blasCgo {
		return 0
	}
	return int(C.vgg_blas_thread_count())
}

// swapBLASThreads sets OpenBLAS's thread count to n and returns the one
// before, or returns 0 (and changes nothing) for another library.
func swapBLASThreads(n int) int { return int(C.vgg_blas_threads(C.int(n))) }

// cgemm calls cblas_sgemm on one block.
func cgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	C.vgg_call_sgemm(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda), (*C.float)(unsafe.Pointer(&b[0])), C.int(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

func cbool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}
