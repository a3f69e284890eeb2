//go:build linux && cgo

package cuda

// The CUDA driver API. Prototypes follow cuda.h of CUDA 12.6/13.0. The
// unversioned names in cuda.h are macros for versioned symbols (cuMemAlloc
// is cuMemAlloc_v2, cuStreamDestroy is cuStreamDestroy_v2, ...); dlsym sees
// only the real symbols, so the table below names those. cuEventElapsedTime
// is the original symbol, which every driver keeps for binaries built
// before CUDA 12.8 added cuEventElapsedTime_v2.

/*
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

typedef int CUresult;            // enum cudaError_enum
typedef int CUdevice;            // CUdevice_v1
typedef unsigned long long CUdeviceptr; // CUdeviceptr_v2 on 64-bit hosts

#define H(x) ((void*)(uintptr_t)(x))

static CUresult vg_cuInit(void* f, unsigned int flags) {
	return ((CUresult(*)(unsigned int))f)(flags);
}
static CUresult vg_cuDriverGetVersion(void* f, int* v) {
	return ((CUresult(*)(int*))f)(v);
}
static CUresult vg_cuDeviceGetCount(void* f, int* n) {
	return ((CUresult(*)(int*))f)(n);
}
static CUresult vg_cuDeviceGet(void* f, CUdevice* d, int ordinal) {
	return ((CUresult(*)(CUdevice*, int))f)(d, ordinal);
}
static CUresult vg_cuDeviceGetName(void* f, char* name, int len, CUdevice d) {
	return ((CUresult(*)(char*, int, CUdevice))f)(name, len, d);
}
static CUresult vg_cuDeviceGetAttribute(void* f, int* v, int attrib, CUdevice d) {
	return ((CUresult(*)(int*, int, CUdevice))f)(v, attrib, d);
}
static CUresult vg_cuDeviceTotalMem(void* f, size_t* bytes, CUdevice d) {
	return ((CUresult(*)(size_t*, CUdevice))f)(bytes, d);
}
static CUresult vg_cuDevicePrimaryCtxRetain(void* f, uintptr_t* ctx, CUdevice d) {
	return ((CUresult(*)(void**, CUdevice))f)((void**)ctx, d);
}
static CUresult vg_cuDevicePrimaryCtxRelease(void* f, CUdevice d) {
	return ((CUresult(*)(CUdevice))f)(d);
}
static CUresult vg_cuCtxSetCurrent(void* f, uintptr_t ctx) {
	return ((CUresult(*)(void*))f)(H(ctx));
}
static CUresult vg_cuCtxSynchronize(void* f) {
	return ((CUresult(*)(void))f)();
}
static CUresult vg_cuMemAlloc(void* f, CUdeviceptr* p, size_t n) {
	return ((CUresult(*)(CUdeviceptr*, size_t))f)(p, n);
}
static CUresult vg_cuMemFree(void* f, CUdeviceptr p) {
	return ((CUresult(*)(CUdeviceptr))f)(p);
}
static CUresult vg_cuMemAllocHost(void* f, void** p, size_t n) {
	return ((CUresult(*)(void**, size_t))f)(p, n);
}
static CUresult vg_cuMemFreeHost(void* f, void* p) {
	return ((CUresult(*)(void*))f)(p);
}
static CUresult vg_cuMemcpyHtoDAsync(void* f, CUdeviceptr dst, const void* src, size_t n, uintptr_t s) {
	return ((CUresult(*)(CUdeviceptr, const void*, size_t, void*))f)(dst, src, n, H(s));
}
static CUresult vg_cuMemcpyDtoHAsync(void* f, void* dst, CUdeviceptr src, size_t n, uintptr_t s) {
	return ((CUresult(*)(void*, CUdeviceptr, size_t, void*))f)(dst, src, n, H(s));
}
static CUresult vg_cuMemcpyDtoDAsync(void* f, CUdeviceptr dst, CUdeviceptr src, size_t n, uintptr_t s) {
	return ((CUresult(*)(CUdeviceptr, CUdeviceptr, size_t, void*))f)(dst, src, n, H(s));
}
static CUresult vg_cuMemsetD32Async(void* f, CUdeviceptr dst, unsigned int v, size_t n, uintptr_t s) {
	return ((CUresult(*)(CUdeviceptr, unsigned int, size_t, void*))f)(dst, v, n, H(s));
}
static CUresult vg_cuMemsetD16Async(void* f, CUdeviceptr dst, unsigned short v, size_t n, uintptr_t s) {
	return ((CUresult(*)(CUdeviceptr, unsigned short, size_t, void*))f)(dst, v, n, H(s));
}
static CUresult vg_cuMemGetInfo(void* f, size_t* free, size_t* total) {
	return ((CUresult(*)(size_t*, size_t*))f)(free, total);
}
static CUresult vg_cuStreamCreate(void* f, uintptr_t* s, unsigned int flags) {
	return ((CUresult(*)(void**, unsigned int))f)((void**)s, flags);
}
static CUresult vg_handle1(void* f, uintptr_t h) {
	return ((CUresult(*)(void*))f)(H(h));
}
static CUresult vg_cuEventCreate(void* f, uintptr_t* e, unsigned int flags) {
	return ((CUresult(*)(void**, unsigned int))f)((void**)e, flags);
}
static CUresult vg_cuEventRecord(void* f, uintptr_t e, uintptr_t s) {
	return ((CUresult(*)(void*, void*))f)(H(e), H(s));
}
static CUresult vg_cuEventElapsedTime(void* f, float* ms, uintptr_t a, uintptr_t b) {
	return ((CUresult(*)(float*, void*, void*))f)(ms, H(a), H(b));
}
static CUresult vg_cuModuleLoadData(void* f, uintptr_t* m, const void* image) {
	return ((CUresult(*)(void**, const void*))f)((void**)m, image);
}
static CUresult vg_cuModuleGetFunction(void* f, uintptr_t* fn, uintptr_t m, const char* name) {
	return ((CUresult(*)(void**, void*, const char*))f)((void**)fn, H(m), name);
}
// vg_cuLaunchKernel copies the arguments, each an 8-byte slot holding the
// value in its low bytes, into a parameter array on this stack frame:
// cuLaunchKernel reads kernelParams before it returns.
static CUresult vg_cuLaunchKernel(void* f, uintptr_t fn,
		unsigned int gx, unsigned int gy, unsigned int gz,
		unsigned int bx, unsigned int by, unsigned int bz,
		unsigned int shmem, uintptr_t s, const unsigned long long* args, int nargs) {
	unsigned long long vals[32];
	void* params[32];
	if (nargs < 0 || nargs > 32) return 1; // CUDA_ERROR_INVALID_VALUE
	for (int i = 0; i < nargs; i++) {
		vals[i] = args[i];
		params[i] = &vals[i];
	}
	return ((CUresult(*)(void*, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
		unsigned int, void*, void**, void**))f)(H(fn), gx, gy, gz, bx, by, bz, shmem, H(s), params, NULL);
}
static CUresult vg_cuStreamBeginCapture(void* f, uintptr_t s, int mode) {
	return ((CUresult(*)(void*, int))f)(H(s), mode);
}
static CUresult vg_cuStreamEndCapture(void* f, uintptr_t s, uintptr_t* g) {
	return ((CUresult(*)(void*, void**))f)(H(s), (void**)g);
}
static CUresult vg_cuGraphInstantiate(void* f, uintptr_t* e, uintptr_t g, unsigned long long flags) {
	return ((CUresult(*)(void**, void*, unsigned long long))f)((void**)e, H(g), flags);
}
static CUresult vg_cuGraphLaunch(void* f, uintptr_t e, uintptr_t s) {
	return ((CUresult(*)(void*, void*))f)(H(e), H(s));
}
static CUresult vg_cuGetErrorText(void* f, CUresult e, const char** s) {
	return ((CUresult(*)(CUresult, const char**))f)(e, s);
}
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// Opaque handles of the driver API, held as integers.
type (
	Device    int32
	Context   uintptr
	Stream    uintptr
	Event     uintptr
	Module    uintptr
	Function  uintptr
	DevicePtr uint64
	Graph     uintptr // CUgraph: captured work
	GraphExec uintptr // CUgraphExec: a graph ready to launch
)

// Device attributes (CUdevice_attribute, cuda.h).
const (
	AttrMultiprocessorCount    = 16
	AttrComputeCapabilityMajor = 75
	AttrComputeCapabilityMinor = 76
)

// Flags.
const (
	StreamDefault       = 0 // CU_STREAM_DEFAULT: synchronises with the legacy default stream
	StreamNonBlocking   = 1 // CU_STREAM_NON_BLOCKING: does not
	EventDefault        = 0 // CU_EVENT_DEFAULT
	EventDisableTiming  = 2 // CU_EVENT_DISABLE_TIMING
	maxDeviceNameLength = 256
	// CaptureModeRelaxed (CU_STREAM_CAPTURE_MODE_RELAXED) lets other
	// threads make calls that are unsafe during capture (cuBLAS and cuDNN
	// may, for their own bookkeeping); the backend itself never allocates
	// or waits inside a captured step.
	CaptureModeRelaxed = 2
)

// Driver is the CUDA driver API (libcuda.so.1).
type Driver struct {
	lib *lib
	fn  struct {
		cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName,
		cuDeviceGetAttribute, cuDeviceTotalMem, cuDevicePrimaryCtxRetain,
		cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuCtxSynchronize,
		cuMemAlloc, cuMemFree, cuMemAllocHost, cuMemFreeHost,
		cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync, cuMemsetD32Async, cuMemsetD16Async,
		cuMemGetInfo, cuStreamCreate, cuStreamSynchronize, cuStreamDestroy,
		cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime, cuEventDestroy,
		cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuLaunchKernel,
		cuGetErrorName, cuGetErrorString unsafe.Pointer
		// CUDA graphs: optional, so that a driver without them still
		// runs everything else.
		cuStreamBeginCapture, cuStreamEndCapture, cuGraphInstantiate, cuGraphLaunch,
		cuGraphExecDestroy, cuGraphDestroy unsafe.Pointer
	}
}

func (d *Driver) table() []symbol {
	f := &d.fn
	return []symbol{
		{name: "cuInit", p: &f.cuInit},
		{name: "cuDriverGetVersion", p: &f.cuDriverGetVersion},
		{name: "cuDeviceGetCount", p: &f.cuDeviceGetCount},
		{name: "cuDeviceGet", p: &f.cuDeviceGet},
		{name: "cuDeviceGetName", p: &f.cuDeviceGetName},
		{name: "cuDeviceGetAttribute", p: &f.cuDeviceGetAttribute},
		{name: "cuDeviceTotalMem_v2", p: &f.cuDeviceTotalMem},
		{name: "cuDevicePrimaryCtxRetain", p: &f.cuDevicePrimaryCtxRetain},
		{name: "cuDevicePrimaryCtxRelease_v2", p: &f.cuDevicePrimaryCtxRelease},
		{name: "cuCtxSetCurrent", p: &f.cuCtxSetCurrent},
		{name: "cuCtxSynchronize", p: &f.cuCtxSynchronize},
		{name: "cuMemAlloc_v2", p: &f.cuMemAlloc},
		{name: "cuMemFree_v2", p: &f.cuMemFree},
		{name: "cuMemAllocHost_v2", p: &f.cuMemAllocHost},
		{name: "cuMemFreeHost", p: &f.cuMemFreeHost},
		{name: "cuMemcpyHtoDAsync_v2", p: &f.cuMemcpyHtoDAsync},
		{name: "cuMemcpyDtoHAsync_v2", p: &f.cuMemcpyDtoHAsync},
		{name: "cuMemcpyDtoDAsync_v2", p: &f.cuMemcpyDtoDAsync},
		{name: "cuMemsetD32Async", p: &f.cuMemsetD32Async},
		{name: "cuMemsetD16Async", p: &f.cuMemsetD16Async},
		{name: "cuMemGetInfo_v2", p: &f.cuMemGetInfo},
		{name: "cuStreamCreate", p: &f.cuStreamCreate},
		{name: "cuStreamSynchronize", p: &f.cuStreamSynchronize},
		{name: "cuStreamDestroy_v2", p: &f.cuStreamDestroy},
		{name: "cuEventCreate", p: &f.cuEventCreate},
		{name: "cuEventRecord", p: &f.cuEventRecord},
		{name: "cuEventSynchronize", p: &f.cuEventSynchronize},
		{name: "cuEventElapsedTime", p: &f.cuEventElapsedTime},
		{name: "cuEventDestroy_v2", p: &f.cuEventDestroy},
		{name: "cuModuleLoadData", p: &f.cuModuleLoadData},
		{name: "cuModuleUnload", p: &f.cuModuleUnload},
		{name: "cuModuleGetFunction", p: &f.cuModuleGetFunction},
		{name: "cuLaunchKernel", p: &f.cuLaunchKernel},
		{name: "cuGetErrorName", p: &f.cuGetErrorName},
		{name: "cuGetErrorString", p: &f.cuGetErrorString},
		{name: "cuStreamBeginCapture_v2", p: &f.cuStreamBeginCapture, optional: true},
		{name: "cuStreamEndCapture", p: &f.cuStreamEndCapture, optional: true},
		{name: "cuGraphInstantiateWithFlags", p: &f.cuGraphInstantiate, optional: true},
		{name: "cuGraphLaunch", p: &f.cuGraphLaunch, optional: true},
		{name: "cuGraphExecDestroy", p: &f.cuGraphExecDestroy, optional: true},
		{name: "cuGraphDestroy", p: &f.cuGraphDestroy, optional: true},
	}
}

// Path is the file the driver library was loaded from.
func (d *Driver) Path() string { return d.lib.path }

// check turns a CUresult into an *Error named after call, asking the driver
// for the code's name and description.
func (d *Driver) check(call string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	e := newError(LibDriver, call, int(r))
	var s *C.char
	if d.fn.cuGetErrorName != nil && C.vg_cuGetErrorText(d.fn.cuGetErrorName, r, &s) == 0 && s != nil {
		e.Name = C.GoString(s)
	}
	s = nil
	if d.fn.cuGetErrorString != nil && C.vg_cuGetErrorText(d.fn.cuGetErrorString, r, &s) == 0 && s != nil {
		e.Detail = C.GoString(s)
	}
	return e
}

// Init is cuInit(0).
func (d *Driver) Init() error { return d.check("cuInit", C.vg_cuInit(d.fn.cuInit, 0)) }

// Version is the CUDA version the driver supports, e.g. 13000 for 13.0.
func (d *Driver) Version() (int, error) {
	var v C.int
	err := d.check("cuDriverGetVersion", C.vg_cuDriverGetVersion(d.fn.cuDriverGetVersion, &v))
	return int(v), err
}

// DeviceCount is the number of CUDA devices.
func (d *Driver) DeviceCount() (int, error) {
	var n C.int
	err := d.check("cuDeviceGetCount", C.vg_cuDeviceGetCount(d.fn.cuDeviceGetCount, &n))
	return int(n), err
}

// DeviceGet returns the device of an ordinal.
func (d *Driver) DeviceGet(ordinal int) (Device, error) {
	var dev C.CUdevice
	err := d.check("cuDeviceGet", C.vg_cuDeviceGet(d.fn.cuDeviceGet, &dev, C.int(ordinal)))
	return Device(dev), err
}

// DeviceName is the product name of dev.
func (d *Driver) DeviceName(dev Device) (string, error) {
	buf := make([]byte, maxDeviceNameLength)
	err := d.check("cuDeviceGetName", C.vg_cuDeviceGetName(d.fn.cuDeviceGetName, (*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf)), C.CUdevice(dev)))
	if err != nil {
		return "", err
	}
	return C.GoString((*C.char)(unsafe.Pointer(&buf[0]))), nil
}

// DeviceAttribute is cuDeviceGetAttribute.
func (d *Driver) DeviceAttribute(dev Device, attr int) (int, error) {
	var v C.int
	err := d.check("cuDeviceGetAttribute", C.vg_cuDeviceGetAttribute(d.fn.cuDeviceGetAttribute, &v, C.int(attr), C.CUdevice(dev)))
	return int(v), err
}

// DeviceTotalMem is the device's memory in bytes.
func (d *Driver) DeviceTotalMem(dev Device) (int64, error) {
	var n C.size_t
	err := d.check("cuDeviceTotalMem_v2", C.vg_cuDeviceTotalMem(d.fn.cuDeviceTotalMem, &n, C.CUdevice(dev)))
	return int64(n), err
}

// PrimaryCtxRetain retains dev's primary context, the one the CUDA runtime
// (and so cuBLAS and cuDNN) also uses.
func (d *Driver) PrimaryCtxRetain(dev Device) (Context, error) {
	var c C.uintptr_t
	err := d.check("cuDevicePrimaryCtxRetain", C.vg_cuDevicePrimaryCtxRetain(d.fn.cuDevicePrimaryCtxRetain, &c, C.CUdevice(dev)))
	return Context(c), err
}

// PrimaryCtxRelease releases what PrimaryCtxRetain retained.
func (d *Driver) PrimaryCtxRelease(dev Device) error {
	return d.check("cuDevicePrimaryCtxRelease_v2", C.vg_cuDevicePrimaryCtxRelease(d.fn.cuDevicePrimaryCtxRelease, C.CUdevice(dev)))
}

// CtxSetCurrent binds ctx to the calling OS thread.
func (d *Driver) CtxSetCurrent(ctx Context) error {
	return d.check("cuCtxSetCurrent", C.vg_cuCtxSetCurrent(d.fn.cuCtxSetCurrent, C.uintptr_t(ctx)))
}

// CtxSynchronize waits for all work of the current context.
func (d *Driver) CtxSynchronize() error {
	return d.check("cuCtxSynchronize", C.vg_cuCtxSynchronize(d.fn.cuCtxSynchronize))
}

// MemAlloc allocates bytes of device memory.
func (d *Driver) MemAlloc(bytes int64) (DevicePtr, error) {
	var p C.CUdeviceptr
	err := d.check("cuMemAlloc_v2", C.vg_cuMemAlloc(d.fn.cuMemAlloc, &p, C.size_t(bytes)))
	return DevicePtr(p), err
}

// MemFree frees device memory.
func (d *Driver) MemFree(p DevicePtr) error {
	return d.check("cuMemFree_v2", C.vg_cuMemFree(d.fn.cuMemFree, C.CUdeviceptr(p)))
}

// MemAllocHost allocates page-locked host memory, which asynchronous
// copies need to be truly asynchronous.
func (d *Driver) MemAllocHost(bytes int64) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	err := d.check("cuMemAllocHost_v2", C.vg_cuMemAllocHost(d.fn.cuMemAllocHost, &p, C.size_t(bytes)))
	return p, err
}

// MemFreeHost frees what MemAllocHost allocated.
func (d *Driver) MemFreeHost(p unsafe.Pointer) error {
	return d.check("cuMemFreeHost", C.vg_cuMemFreeHost(d.fn.cuMemFreeHost, p))
}

// MemcpyHtoDAsync queues a copy of bytes from host memory src, which must
// be page-locked (MemAllocHost) and stay untouched until the copy is done.
func (d *Driver) MemcpyHtoDAsync(dst DevicePtr, src unsafe.Pointer, bytes int64, s Stream) error {
	return d.check("cuMemcpyHtoDAsync_v2", C.vg_cuMemcpyHtoDAsync(d.fn.cuMemcpyHtoDAsync, C.CUdeviceptr(dst), src, C.size_t(bytes), C.uintptr_t(s)))
}

// MemcpyDtoHAsync queues a copy into page-locked host memory dst.
func (d *Driver) MemcpyDtoHAsync(dst unsafe.Pointer, src DevicePtr, bytes int64, s Stream) error {
	return d.check("cuMemcpyDtoHAsync_v2", C.vg_cuMemcpyDtoHAsync(d.fn.cuMemcpyDtoHAsync, dst, C.CUdeviceptr(src), C.size_t(bytes), C.uintptr_t(s)))
}

// MemcpyDtoDAsync queues a device-to-device copy.
func (d *Driver) MemcpyDtoDAsync(dst, src DevicePtr, bytes int64, s Stream) error {
	return d.check("cuMemcpyDtoDAsync_v2", C.vg_cuMemcpyDtoDAsync(d.fn.cuMemcpyDtoDAsync, C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(bytes), C.uintptr_t(s)))
}

// MemsetD32Async queues setting n 32-bit words at dst to v.
func (d *Driver) MemsetD32Async(dst DevicePtr, v uint32, n int64, s Stream) error {
	return d.check("cuMemsetD32Async", C.vg_cuMemsetD32Async(d.fn.cuMemsetD32Async, C.CUdeviceptr(dst), C.uint(v), C.size_t(n), C.uintptr_t(s)))
}

// MemsetD16Async queues setting n 16-bit words at dst (2-byte aligned) to v.
func (d *Driver) MemsetD16Async(dst DevicePtr, v uint16, n int64, s Stream) error {
	return d.check("cuMemsetD16Async", C.vg_cuMemsetD16Async(d.fn.cuMemsetD16Async, C.CUdeviceptr(dst), C.ushort(v), C.size_t(n), C.uintptr_t(s)))
}

// MemGetInfo returns the free and total memory of the current context's
// device.
func (d *Driver) MemGetInfo() (free, total int64, err error) {
	var f, t C.size_t
	err = d.check("cuMemGetInfo_v2", C.vg_cuMemGetInfo(d.fn.cuMemGetInfo, &f, &t))
	return int64(f), int64(t), err
}

// StreamCreate creates a stream.
func (d *Driver) StreamCreate(flags uint) (Stream, error) {
	var s C.uintptr_t
	err := d.check("cuStreamCreate", C.vg_cuStreamCreate(d.fn.cuStreamCreate, &s, C.uint(flags)))
	return Stream(s), err
}

// StreamSynchronize waits for everything queued on s.
func (d *Driver) StreamSynchronize(s Stream) error {
	return d.check("cuStreamSynchronize", C.vg_handle1(d.fn.cuStreamSynchronize, C.uintptr_t(s)))
}

// StreamDestroy destroys s.
func (d *Driver) StreamDestroy(s Stream) error {
	return d.check("cuStreamDestroy_v2", C.vg_handle1(d.fn.cuStreamDestroy, C.uintptr_t(s)))
}

// EventCreate creates an event.
func (d *Driver) EventCreate(flags uint) (Event, error) {
	var e C.uintptr_t
	err := d.check("cuEventCreate", C.vg_cuEventCreate(d.fn.cuEventCreate, &e, C.uint(flags)))
	return Event(e), err
}

// EventRecord queues e on s.
func (d *Driver) EventRecord(e Event, s Stream) error {
	return d.check("cuEventRecord", C.vg_cuEventRecord(d.fn.cuEventRecord, C.uintptr_t(e), C.uintptr_t(s)))
}

// EventSynchronize waits until e has happened.
func (d *Driver) EventSynchronize(e Event) error {
	return d.check("cuEventSynchronize", C.vg_handle1(d.fn.cuEventSynchronize, C.uintptr_t(e)))
}

// EventElapsedTime is the time in milliseconds between two recorded events.
func (d *Driver) EventElapsedTime(start, end Event) (float32, error) {
	var ms C.float
	err := d.check("cuEventElapsedTime", C.vg_cuEventElapsedTime(d.fn.cuEventElapsedTime, &ms, C.uintptr_t(start), C.uintptr_t(end)))
	return float32(ms), err
}

// EventDestroy destroys e.
func (d *Driver) EventDestroy(e Event) error {
	return d.check("cuEventDestroy_v2", C.vg_handle1(d.fn.cuEventDestroy, C.uintptr_t(e)))
}

// ModuleLoadData loads a CUBIN or PTX image into the current context.
func (d *Driver) ModuleLoadData(image []byte) (Module, error) {
	if len(image) == 0 {
		return 0, fmt.Errorf("cuModuleLoadData: empty image")
	}
	// PTX must be NUL-terminated; a CUBIN does not mind the extra byte.
	img := C.CBytes(append(append([]byte(nil), image...), 0))
	defer C.free(img)
	var m C.uintptr_t
	err := d.check("cuModuleLoadData", C.vg_cuModuleLoadData(d.fn.cuModuleLoadData, &m, img))
	return Module(m), err
}

// ModuleUnload unloads m.
func (d *Driver) ModuleUnload(m Module) error {
	return d.check("cuModuleUnload", C.vg_handle1(d.fn.cuModuleUnload, C.uintptr_t(m)))
}

// ModuleGetFunction looks up a kernel (extern "C" name) in m.
func (d *Driver) ModuleGetFunction(m Module, name string) (Function, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var f C.uintptr_t
	if err := d.check("cuModuleGetFunction", C.vg_cuModuleGetFunction(d.fn.cuModuleGetFunction, &f, C.uintptr_t(m), cs)); err != nil {
		err.(*Error).Detail += ": kernel " + name
		return 0, err
	}
	return Function(f), nil
}

// HasGraphs reports whether the driver offers stream capture and CUDA
// graphs (every driver since CUDA 11.4 does).
func (d *Driver) HasGraphs() bool {
	f := &d.fn
	return f.cuStreamBeginCapture != nil && f.cuStreamEndCapture != nil && f.cuGraphInstantiate != nil &&
		f.cuGraphLaunch != nil && f.cuGraphExecDestroy != nil && f.cuGraphDestroy != nil
}

// StreamBeginCapture starts recording the work queued on s into a graph
// instead of running it.
func (d *Driver) StreamBeginCapture(s Stream, mode int) error {
	return d.check("cuStreamBeginCapture_v2", C.vg_cuStreamBeginCapture(d.fn.cuStreamBeginCapture, C.uintptr_t(s), C.int(mode)))
}

// StreamEndCapture ends the capture on s and returns the recorded graph.
func (d *Driver) StreamEndCapture(s Stream) (Graph, error) {
	var g C.uintptr_t
	err := d.check("cuStreamEndCapture", C.vg_cuStreamEndCapture(d.fn.cuStreamEndCapture, C.uintptr_t(s), &g))
	return Graph(g), err
}

// GraphInstantiate makes g launchable.
func (d *Driver) GraphInstantiate(g Graph) (GraphExec, error) {
	var e C.uintptr_t
	err := d.check("cuGraphInstantiateWithFlags", C.vg_cuGraphInstantiate(d.fn.cuGraphInstantiate, &e, C.uintptr_t(g), 0))
	return GraphExec(e), err
}

// GraphLaunch queues all of e's work on s.
func (d *Driver) GraphLaunch(e GraphExec, s Stream) error {
	return d.check("cuGraphLaunch", C.vg_cuGraphLaunch(d.fn.cuGraphLaunch, C.uintptr_t(e), C.uintptr_t(s)))
}

// GraphExecDestroy destroys e.
func (d *Driver) GraphExecDestroy(e GraphExec) error {
	return d.check("cuGraphExecDestroy", C.vg_handle1(d.fn.cuGraphExecDestroy, C.uintptr_t(e)))
}

// GraphDestroy destroys g.
func (d *Driver) GraphDestroy(g Graph) error {
	return d.check("cuGraphDestroy", C.vg_handle1(d.fn.cuGraphDestroy, C.uintptr_t(g)))
}

// Dim3 is a grid or block size.
type Dim3 struct{ X, Y, Z uint32 }

// LaunchKernel queues f on s. Each argument is one kernel parameter in the
// low bytes of a uint64 (see the Arg helpers), in the kernel's order.
func (d *Driver) LaunchKernel(f Function, grid, block Dim3, sharedMem uint32, s Stream, args ...uint64) error {
	var p *C.ulonglong
	if len(args) > 0 {
		p = (*C.ulonglong)(unsafe.Pointer(&args[0]))
	}
	r := C.vg_cuLaunchKernel(d.fn.cuLaunchKernel, C.uintptr_t(f),
		C.uint(grid.X), C.uint(grid.Y), C.uint(grid.Z), C.uint(block.X), C.uint(block.Y), C.uint(block.Z),
		C.uint(sharedMem), C.uintptr_t(s), p, C.int(len(args)))
	return d.check("cuLaunchKernel", r)
}

// Kernel argument encoders for LaunchKernel: the value in the low bytes of
// an 8-byte slot, as the kernel reads a parameter of that C type.
func ArgPtr(p DevicePtr) uint64 { return uint64(p) }
func ArgU64(v uint64) uint64    { return v }
func ArgI32(v int32) uint64     { return uint64(uint32(v)) }
func ArgU32(v uint32) uint64    { return uint64(v) }
func ArgF32(v float32) uint64   { return uint64(math.Float32bits(v)) }
func ArgF64(v float64) uint64   { return math.Float64bits(v) }
