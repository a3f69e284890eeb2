//go:build linux && cgo

package cuda

// NVRTC, the runtime CUDA C++ compiler (nvrtc.h, CUDA 12.6/13.0).

/*
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

typedef int nvrtcResult;
#define H(x) ((void*)(uintptr_t)(x))

static nvrtcResult vg_nvrtcVersion(void* f, int* major, int* minor) {
	return ((nvrtcResult(*)(int*, int*))f)(major, minor);
}
static const char* vg_nvrtcGetErrorString(void* f, nvrtcResult r) {
	return ((const char*(*)(nvrtcResult))f)(r);
}
static nvrtcResult vg_nvrtcGetNumSupportedArchs(void* f, int* n) {
	return ((nvrtcResult(*)(int*))f)(n);
}
static nvrtcResult vg_nvrtcGetSupportedArchs(void* f, int* archs) {
	return ((nvrtcResult(*)(int*))f)(archs);
}
// nvrtcCreateProgram(prog, src, name, numHeaders, headers, includeNames):
// the project's kernels include nothing.
static nvrtcResult vg_nvrtcCreateProgram(void* f, uintptr_t* prog, const char* src, const char* name) {
	return ((nvrtcResult(*)(void**, const char*, const char*, int, const char* const*, const char* const*))f)(
		(void**)prog, src, name, 0, NULL, NULL);
}
static nvrtcResult vg_nvrtcCompileProgram(void* f, uintptr_t prog, int n, char** opts) {
	return ((nvrtcResult(*)(void*, int, const char* const*))f)(H(prog), n, (const char* const*)opts);
}
// nvrtcGetProgramLogSize, nvrtcGetCUBINSize, nvrtcGetPTXSize: (prog, size_t*).
static nvrtcResult vg_size(void* f, uintptr_t prog, size_t* n) {
	return ((nvrtcResult(*)(void*, size_t*))f)(H(prog), n);
}
// nvrtcGetProgramLog, nvrtcGetCUBIN, nvrtcGetPTX: (prog, char*).
static nvrtcResult vg_get(void* f, uintptr_t prog, char* out) {
	return ((nvrtcResult(*)(void*, char*))f)(H(prog), out);
}
static nvrtcResult vg_nvrtcDestroyProgram(void* f, uintptr_t* prog) {
	return ((nvrtcResult(*)(void**))f)((void**)prog);
}
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// RTC is NVRTC (libnvrtc.so.13 or .12).
type RTC struct {
	lib *lib
	fn  struct {
		version, errorString, numArchs, archs, create, compile,
		logSize, log, cubinSize, cubin, ptxSize, ptx, destroy unsafe.Pointer
	}
}

func (r *RTC) table() []symbol {
	f := &r.fn
	return []symbol{
		{name: "nvrtcVersion", p: &f.version},
		{name: "nvrtcGetErrorString", p: &f.errorString},
		{name: "nvrtcGetNumSupportedArchs", p: &f.numArchs},
		{name: "nvrtcGetSupportedArchs", p: &f.archs},
		{name: "nvrtcCreateProgram", p: &f.create},
		{name: "nvrtcCompileProgram", p: &f.compile},
		{name: "nvrtcGetProgramLogSize", p: &f.logSize},
		{name: "nvrtcGetProgramLog", p: &f.log},
		{name: "nvrtcGetCUBINSize", p: &f.cubinSize},
		{name: "nvrtcGetCUBIN", p: &f.cubin},
		{name: "nvrtcGetPTXSize", p: &f.ptxSize},
		{name: "nvrtcGetPTX", p: &f.ptx},
		{name: "nvrtcDestroyProgram", p: &f.destroy},
	}
}

// Path is the file NVRTC was loaded from.
func (r *RTC) Path() string { return r.lib.path }

func (r *RTC) check(call string, res C.nvrtcResult) error {
	if res == 0 {
		return nil
	}
	e := newError(LibRTC, call, int(res))
	if s := C.vg_nvrtcGetErrorString(r.fn.errorString, res); s != nil {
		e.Name = C.GoString(s)
	}
	return e
}

// Version is NVRTC's CUDA version, e.g. 13, 0.
func (r *RTC) Version() (major, minor int, err error) {
	var ma, mi C.int
	err = r.check("nvrtcVersion", C.vg_nvrtcVersion(r.fn.version, &ma, &mi))
	return int(ma), int(mi), err
}

// SupportedArchs lists the sm_XY NVRTC can generate CUBIN for, as 10*X+Y.
func (r *RTC) SupportedArchs() ([]int, error) {
	var n C.int
	if err := r.check("nvrtcGetNumSupportedArchs", C.vg_nvrtcGetNumSupportedArchs(r.fn.numArchs, &n)); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	archs := make([]C.int, int(n))
	if err := r.check("nvrtcGetSupportedArchs", C.vg_nvrtcGetSupportedArchs(r.fn.archs, &archs[0])); err != nil {
		return nil, err
	}
	out := make([]int, len(archs))
	for i, a := range archs {
		out[i] = int(a)
	}
	return out, nil
}

// Output selects what Compile returns.
type Output int

const (
	CUBIN Output = iota // machine code for the one architecture of --gpu-architecture=sm_XY
	PTX                 // portable assembly, JIT-compiled by the driver
)

// Compile compiles CUDA C++ source (name is used in messages) with the
// given options and returns the CUBIN or PTX and the compiler's log. A
// compilation error carries the log in its Detail.
func (r *RTC) Compile(src, name string, opts []string, out Output) (image []byte, log string, err error) {
	csrc, cname := C.CString(src), C.CString(name)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cname))
	var prog C.uintptr_t
	if err := r.check("nvrtcCreateProgram", C.vg_nvrtcCreateProgram(r.fn.create, &prog, csrc, cname)); err != nil {
		return nil, "", err
	}
	defer C.vg_nvrtcDestroyProgram(r.fn.destroy, &prog)

	copts := make([]*C.char, len(opts)+1) // +1 keeps &copts[0] valid when opts is empty
	for i, o := range opts {
		copts[i] = C.CString(o)
	}
	defer func() {
		for _, p := range copts {
			C.free(unsafe.Pointer(p))
		}
	}()
	// copts lives in Go memory and holds C pointers only: allowed by cgo.
	cerr := r.check("nvrtcCompileProgram", C.vg_nvrtcCompileProgram(r.fn.compile, prog, C.int(len(opts)), &copts[0]))
	log, lerr := r.get(prog, "nvrtcGetProgramLog", r.fn.logSize, r.fn.log)
	log = strings.TrimRight(log, "\x00\n ")
	if cerr != nil {
		e := cerr.(*Error)
		e.Detail = fmt.Sprintf("%s with %s:\n%s", name, strings.Join(opts, " "), log)
		return nil, log, e
	}
	if lerr != nil {
		return nil, "", lerr
	}
	var img string
	if out == CUBIN {
		img, err = r.get(prog, "nvrtcGetCUBIN", r.fn.cubinSize, r.fn.cubin)
	} else {
		img, err = r.get(prog, "nvrtcGetPTX", r.fn.ptxSize, r.fn.ptx)
	}
	return []byte(img), log, err
}

// get reads one of the program's outputs through its size and data calls.
func (r *RTC) get(prog C.uintptr_t, call string, sizeFn, getFn unsafe.Pointer) (string, error) {
	var n C.size_t
	if err := r.check(call+"Size", C.vg_size(sizeFn, prog, &n)); err != nil {
		return "", err
	}
	if n == 0 {
		return "", nil
	}
	buf := make([]byte, int(n))
	if err := r.check(call, C.vg_get(getFn, prog, (*C.char)(unsafe.Pointer(&buf[0])))); err != nil {
		return "", err
	}
	return string(buf), nil
}
