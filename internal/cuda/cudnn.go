//go:build linux && cgo

package cuda

// cuDNN 9 through its legacy (descriptor) API, which cuDNN 9 keeps,
// deprecated, in the cudnn_ops and cudnn_cnn sub-libraries; libcudnn.so.9
// is a shim exporting all of it. Prototypes follow cudnn_graph.h,
// cudnn_ops.h and cudnn_cnn.h of cuDNN 9.6. Descriptor handles, enums (int
// in the C ABI) and device pointers cross as integers; alpha and beta are
// host scalars of the tensors' type (float here), read before the call
// returns.

/*
#include <stdint.h>
#include <stddef.h>

typedef int cudnnStatus_t;
typedef unsigned long long dptr;
#define H(x) ((void*)(uintptr_t)(x))

static size_t vg_cudnnGetVersion(void* f) { return ((size_t(*)(void))f)(); }
static const char* vg_cudnnGetErrorString(void* f, cudnnStatus_t s) {
	return ((const char*(*)(cudnnStatus_t))f)(s);
}
static void vg_cudnnGetLastErrorString(void* f, char* buf, size_t n) {
	((void(*)(char*, size_t))f)(buf, n);
}
// cudnnCreate and every cudnnCreate*Descriptor: (T* out).
static cudnnStatus_t vg_create(void* f, uintptr_t* out) {
	return ((cudnnStatus_t(*)(void**))f)((void**)out);
}
// cudnnDestroy and every cudnnDestroy*Descriptor: (T h).
static cudnnStatus_t vg_destroy(void* f, uintptr_t h) {
	return ((cudnnStatus_t(*)(void*))f)(H(h));
}
static cudnnStatus_t vg_cudnnSetStream(void* f, uintptr_t h, uintptr_t s) {
	return ((cudnnStatus_t(*)(void*, void*))f)(H(h), H(s));
}
// cudnnSetTensor4dDescriptor(desc, format, dataType, n, c, h, w)
static cudnnStatus_t vg_setTensor4d(void* f, uintptr_t d, int format, int dtype, int n, int c, int h, int w) {
	return ((cudnnStatus_t(*)(void*, int, int, int, int, int, int))f)(H(d), format, dtype, n, c, h, w);
}
// cudnnSetFilter4dDescriptor(desc, dataType, format, k, c, h, w): note the
// order of dataType and format, the reverse of the tensor one.
static cudnnStatus_t vg_setFilter4d(void* f, uintptr_t d, int dtype, int format, int k, int c, int h, int w) {
	return ((cudnnStatus_t(*)(void*, int, int, int, int, int, int))f)(H(d), dtype, format, k, c, h, w);
}
// cudnnSetConvolution2dDescriptor(desc, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, computeType)
static cudnnStatus_t vg_setConv2d(void* f, uintptr_t d, int ph, int pw, int u, int v, int dh, int dw, int mode, int ctype) {
	return ((cudnnStatus_t(*)(void*, int, int, int, int, int, int, int, int))f)(H(d), ph, pw, u, v, dh, dw, mode, ctype);
}
static cudnnStatus_t vg_setConvMathType(void* f, uintptr_t d, int math) {
	return ((cudnnStatus_t(*)(void*, int))f)(H(d), math);
}
// cudnnSetLRNDescriptor(desc, unsigned lrnN, double alpha, double beta, double k)
static cudnnStatus_t vg_setLRN(void* f, uintptr_t d, unsigned n, double a, double b, double k) {
	return ((cudnnStatus_t(*)(void*, unsigned, double, double, double))f)(H(d), n, a, b, k);
}

// cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t: the three structs
// have this same layout (cudnn_cnn.h).
typedef struct {
	int algo;
	cudnnStatus_t status;
	float time;
	size_t memory;
	int determinism;
	int mathType;
	int reserved[3];
} vg_perf;

// cudnnFindConvolution{Forward,BackwardData,BackwardFilter}Algorithm all
// take (handle, desc, desc, convDesc, desc, requested, *returned, *perf):
//   forward:        xDesc, wDesc,  convDesc, yDesc
//   backward data:  wDesc, dyDesc, convDesc, dxDesc
//   backward filter: xDesc, dyDesc, convDesc, dwDesc
static cudnnStatus_t vg_findConv(void* f, uintptr_t h, uintptr_t a, uintptr_t b, uintptr_t conv, uintptr_t c,
		int requested, int* returned, vg_perf* perf) {
	return ((cudnnStatus_t(*)(void*, void*, void*, void*, void*, int, int*, vg_perf*))f)(
		H(h), H(a), H(b), H(conv), H(c), requested, returned, perf);
}
// cudnnGetConvolution{Forward,BackwardData,BackwardFilter}WorkspaceSize:
// (handle, desc, desc, convDesc, desc, algo, size_t*), descriptors in the
// same order as for Find.
static cudnnStatus_t vg_convWorkspace(void* f, uintptr_t h, uintptr_t a, uintptr_t b, uintptr_t conv, uintptr_t c,
		int algo, size_t* size) {
	return ((cudnnStatus_t(*)(void*, void*, void*, void*, void*, int, size_t*))f)(
		H(h), H(a), H(b), H(conv), H(c), algo, size);
}
// cudnnConvolutionForward / BackwardData / BackwardFilter:
// (handle, alpha, aDesc, a, bDesc, b, convDesc, algo, workSpace, wsSize, beta, outDesc, out)
//   forward:         xDesc, x,  wDesc,  w,  ..., yDesc,  y
//   backward data:   wDesc, w,  dyDesc, dy, ..., dxDesc, dx
//   backward filter: xDesc, x,  dyDesc, dy, ..., dwDesc, dw
static cudnnStatus_t vg_convRun(void* f, uintptr_t h, float alpha, uintptr_t ad, dptr a, uintptr_t bd, dptr b,
		uintptr_t conv, int algo, dptr ws, size_t wsSize, float beta, uintptr_t od, dptr o) {
	return ((cudnnStatus_t(*)(void*, const void*, void*, const void*, void*, const void*, void*, int,
		void*, size_t, const void*, void*, void*))f)(
		H(h), &alpha, H(ad), H(a), H(bd), H(b), H(conv), algo, H(ws), wsSize, &beta, H(od), H(o));
}
// cudnnAddTensor(handle, alpha, aDesc, A, beta, cDesc, C) and
// cudnnConvolutionBackwardBias(handle, alpha, dyDesc, dy, beta, dbDesc, db).
static cudnnStatus_t vg_alphaBeta(void* f, uintptr_t h, float alpha, uintptr_t ad, dptr a, float beta, uintptr_t cd, dptr c) {
	return ((cudnnStatus_t(*)(void*, const void*, void*, const void*, const void*, void*, void*))f)(
		H(h), &alpha, H(ad), H(a), &beta, H(cd), H(c));
}
// cudnnBatchNormalizationForwardTraining(handle, mode, alpha, beta, xDesc, x, yDesc, y,
//   bnScaleBiasMeanVarDesc, bnScale, bnBias, double exponentialAverageFactor,
//   resultRunningMean, resultRunningVariance, double epsilon, resultSaveMean, resultSaveInvVariance)
static cudnnStatus_t vg_bnTrain(void* f, uintptr_t h, int mode, float alpha, float beta,
		uintptr_t xd, dptr x, uintptr_t yd, dptr y, uintptr_t bnd, dptr scale, dptr bias,
		double factor, dptr runMean, dptr runVar, double eps, dptr saveMean, dptr saveInv) {
	return ((cudnnStatus_t(*)(void*, int, const void*, const void*, void*, const void*, void*, void*,
		void*, const void*, const void*, double, void*, void*, double, void*, void*))f)(
		H(h), mode, &alpha, &beta, H(xd), H(x), H(yd), H(y), H(bnd), H(scale), H(bias),
		factor, H(runMean), H(runVar), eps, H(saveMean), H(saveInv));
}
// cudnnBatchNormalizationForwardInference(handle, mode, alpha, beta, xDesc, x, yDesc, y,
//   bnScaleBiasMeanVarDesc, bnScale, bnBias, estimatedMean, estimatedVariance, double epsilon)
static cudnnStatus_t vg_bnInfer(void* f, uintptr_t h, int mode, float alpha, float beta,
		uintptr_t xd, dptr x, uintptr_t yd, dptr y, uintptr_t bnd, dptr scale, dptr bias,
		dptr mean, dptr var, double eps) {
	return ((cudnnStatus_t(*)(void*, int, const void*, const void*, void*, const void*, void*, void*,
		void*, const void*, const void*, const void*, const void*, double))f)(
		H(h), mode, &alpha, &beta, H(xd), H(x), H(yd), H(y), H(bnd), H(scale), H(bias), H(mean), H(var), eps);
}
// cudnnBatchNormalizationBackward(handle, mode, alphaDataDiff, betaDataDiff, alphaParamDiff,
//   betaParamDiff, xDesc, x, dyDesc, dy, dxDesc, dx, dBnScaleBiasDesc, bnScale,
//   dBnScaleResult, dBnBiasResult, double epsilon, savedMean, savedInvVariance)
static cudnnStatus_t vg_bnBackward(void* f, uintptr_t h, int mode, float ad, float bd, float ap, float bp,
		uintptr_t xd, dptr x, uintptr_t dyd, dptr dy, uintptr_t dxd, dptr dx, uintptr_t bnd, dptr scale,
		dptr dScale, dptr dBias, double eps, dptr saveMean, dptr saveInv) {
	return ((cudnnStatus_t(*)(void*, int, const void*, const void*, const void*, const void*,
		void*, const void*, void*, const void*, void*, void*, void*, const void*,
		void*, void*, double, const void*, const void*))f)(
		H(h), mode, &ad, &bd, &ap, &bp, H(xd), H(x), H(dyd), H(dy), H(dxd), H(dx), H(bnd), H(scale),
		H(dScale), H(dBias), eps, H(saveMean), H(saveInv));
}
// cudnnLRNCrossChannelForward(handle, normDesc, lrnMode, alpha, xDesc, x, beta, yDesc, y)
static cudnnStatus_t vg_lrnFwd(void* f, uintptr_t h, uintptr_t nd, int mode, float alpha, uintptr_t xd, dptr x,
		float beta, uintptr_t yd, dptr y) {
	return ((cudnnStatus_t(*)(void*, void*, int, const void*, void*, const void*, const void*, void*, void*))f)(
		H(h), H(nd), mode, &alpha, H(xd), H(x), &beta, H(yd), H(y));
}
// cudnnLRNCrossChannelBackward(handle, normDesc, lrnMode, alpha, yDesc, y, dyDesc, dy,
//   xDesc, x, beta, dxDesc, dx)
static cudnnStatus_t vg_lrnBwd(void* f, uintptr_t h, uintptr_t nd, int mode, float alpha, uintptr_t yd, dptr y,
		uintptr_t dyd, dptr dy, uintptr_t xd, dptr x, float beta, uintptr_t dxd, dptr dx) {
	return ((cudnnStatus_t(*)(void*, void*, int, const void*, void*, const void*, void*, const void*,
		void*, const void*, const void*, void*, void*))f)(
		H(h), H(nd), mode, &alpha, H(yd), H(y), H(dyd), H(dy), H(xd), H(x), &beta, H(dxd), H(dx));
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// cuDNN handles and descriptors.
type (
	DNNHandle  uintptr
	TensorDesc uintptr
	FilterDesc uintptr
	ConvDesc   uintptr
	LRNDesc    uintptr
)

// cuDNN enums (cudnn_graph.h, cudnn_ops.h, cudnn_cnn.h of cuDNN 9.6).
const (
	DNNTensorNCHW = 0 // CUDNN_TENSOR_NCHW
	DNNTensorNHWC = 1 // CUDNN_TENSOR_NHWC (filters: KRSC)
	DNNFloat      = 0 // CUDNN_DATA_FLOAT
	DNNBFloat16   = 9 // CUDNN_DATA_BFLOAT16

	DNNCrossCorrelation = 1 // CUDNN_CROSS_CORRELATION (PyTorch's convolution)

	DNNDefaultMath   = 0 // CUDNN_DEFAULT_MATH: float convolutions may use TF32 on Ampere and later
	DNNTensorOpMath  = 1 // CUDNN_TENSOR_OP_MATH
	DNNTensorOpAllow = 2 // CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
	DNNFMAMath       = 3 // CUDNN_FMA_MATH: strict float, no tensor cores

	DNNDeterministic = 1 // CUDNN_DETERMINISTIC

	DNNLRNCrossChannel = 0 // CUDNN_LRN_CROSS_CHANNEL_DIM1

	DNNBatchNormSpatial = 1 // CUDNN_BATCHNORM_SPATIAL

	// Limits of cudnnSetLRNDescriptor (cudnn_ops.h).
	LRNMinN    = 1
	LRNMaxN    = 16
	LRNMinK    = 1e-5
	LRNMinBeta = 0.01
)

// Convolution directions, for FindConv, ConvWorkspace and ConvRun.
type ConvDir int

const (
	ConvForward ConvDir = iota
	ConvBackwardData
	ConvBackwardFilter
)

func (d ConvDir) String() string {
	return [...]string{"Forward", "BackwardData", "BackwardFilter"}[d]
}

// ConvPerf is one result of a cudnnFindConvolution*Algorithm call.
type ConvPerf struct {
	Algo        int
	Status      int
	TimeMs      float32
	Memory      int64
	Determinism int
	MathType    int
}

// DNN is cuDNN 9 (libcudnn.so.9).
type DNN struct {
	lib *lib
	fn  struct {
		getVersion, getErrorString, getLastErrorString,
		create, destroy, setStream,
		createTensor, destroyTensor, setTensor4d,
		createFilter, destroyFilter, setFilter4d,
		createConv, destroyConv, setConv2d, setConvMathType,
		createLRN, destroyLRN, setLRN,
		addTensor, convBackwardBias,
		bnTrain, bnInfer, bnBackward,
		lrnFwd, lrnBwd unsafe.Pointer
		find, workspace, run [3]unsafe.Pointer // by ConvDir
	}
	bk backendFns // the backend (graph) API, cudnn_graph.go
}

func (d *DNN) table() []symbol {
	f := &d.fn
	return append(d.backendTable(), []symbol{
		{name: "cudnnGetVersion", p: &f.getVersion},
		{name: "cudnnGetErrorString", p: &f.getErrorString},
		{name: "cudnnGetLastErrorString", p: &f.getLastErrorString, optional: true},
		{name: "cudnnCreate", p: &f.create},
		{name: "cudnnDestroy", p: &f.destroy},
		{name: "cudnnSetStream", p: &f.setStream},
		{name: "cudnnCreateTensorDescriptor", p: &f.createTensor},
		{name: "cudnnDestroyTensorDescriptor", p: &f.destroyTensor},
		{name: "cudnnSetTensor4dDescriptor", p: &f.setTensor4d},
		{name: "cudnnCreateFilterDescriptor", p: &f.createFilter},
		{name: "cudnnDestroyFilterDescriptor", p: &f.destroyFilter},
		{name: "cudnnSetFilter4dDescriptor", p: &f.setFilter4d},
		{name: "cudnnCreateConvolutionDescriptor", p: &f.createConv},
		{name: "cudnnDestroyConvolutionDescriptor", p: &f.destroyConv},
		{name: "cudnnSetConvolution2dDescriptor", p: &f.setConv2d},
		{name: "cudnnSetConvolutionMathType", p: &f.setConvMathType},
		{name: "cudnnCreateLRNDescriptor", p: &f.createLRN},
		{name: "cudnnDestroyLRNDescriptor", p: &f.destroyLRN},
		{name: "cudnnSetLRNDescriptor", p: &f.setLRN},
		{name: "cudnnFindConvolutionForwardAlgorithm", p: &f.find[ConvForward]},
		{name: "cudnnFindConvolutionBackwardDataAlgorithm", p: &f.find[ConvBackwardData]},
		{name: "cudnnFindConvolutionBackwardFilterAlgorithm", p: &f.find[ConvBackwardFilter]},
		{name: "cudnnGetConvolutionForwardWorkspaceSize", p: &f.workspace[ConvForward]},
		{name: "cudnnGetConvolutionBackwardDataWorkspaceSize", p: &f.workspace[ConvBackwardData]},
		{name: "cudnnGetConvolutionBackwardFilterWorkspaceSize", p: &f.workspace[ConvBackwardFilter]},
		{name: "cudnnConvolutionForward", p: &f.run[ConvForward]},
		{name: "cudnnConvolutionBackwardData", p: &f.run[ConvBackwardData]},
		{name: "cudnnConvolutionBackwardFilter", p: &f.run[ConvBackwardFilter]},
		{name: "cudnnConvolutionBackwardBias", p: &f.convBackwardBias},
		{name: "cudnnAddTensor", p: &f.addTensor},
		{name: "cudnnBatchNormalizationForwardTraining", p: &f.bnTrain},
		{name: "cudnnBatchNormalizationForwardInference", p: &f.bnInfer},
		{name: "cudnnBatchNormalizationBackward", p: &f.bnBackward},
		{name: "cudnnLRNCrossChannelForward", p: &f.lrnFwd},
		{name: "cudnnLRNCrossChannelBackward", p: &f.lrnBwd},
	}...)
}

// Path is the file cuDNN was loaded from.
func (d *DNN) Path() string { return d.lib.path }

// check turns a cudnnStatus_t into an *Error with cuDNN's name for it and,
// where cuDNN 9 has one, its last error message.
func (d *DNN) check(call string, r C.cudnnStatus_t) error {
	if r == 0 {
		return nil
	}
	e := newError(LibDNN, call, int(r))
	if s := C.vg_cudnnGetErrorString(d.fn.getErrorString, r); s != nil {
		if n := C.GoString(s); n != "" {
			e.Name = n
		}
	}
	if d.fn.getLastErrorString != nil {
		buf := make([]byte, 1024)
		C.vg_cudnnGetLastErrorString(d.fn.getLastErrorString, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
		e.Detail = C.GoString((*C.char)(unsafe.Pointer(&buf[0])))
	}
	return e
}

// Version is cudnnGetVersion: major*10000 + minor*100 + patch for cuDNN 9
// (e.g. 91400), major*1000 + minor*100 + patch before.
func (d *DNN) Version() int { return int(C.vg_cudnnGetVersion(d.fn.getVersion)) }

// Create makes a handle on the current context.
func (d *DNN) Create() (DNNHandle, error) {
	var h C.uintptr_t
	err := d.check("cudnnCreate", C.vg_create(d.fn.create, &h))
	return DNNHandle(h), err
}

// Destroy releases h.
func (d *DNN) Destroy(h DNNHandle) error {
	return d.check("cudnnDestroy", C.vg_destroy(d.fn.destroy, C.uintptr_t(h)))
}

// SetStream makes h queue its work on s.
func (d *DNN) SetStream(h DNNHandle, s Stream) error {
	return d.check("cudnnSetStream", C.vg_cudnnSetStream(d.fn.setStream, C.uintptr_t(h), C.uintptr_t(s)))
}

func (d *DNN) create(call string, f unsafe.Pointer) (uintptr, error) {
	var h C.uintptr_t
	err := d.check(call, C.vg_create(f, &h))
	return uintptr(h), err
}

// NewTensor4d creates an NCHW float tensor descriptor.
func (d *DNN) NewTensor4d(n, c, h, w int) (TensorDesc, error) {
	return d.NewTensor4dOf(DNNTensorNCHW, DNNFloat, n, c, h, w)
}

// NewTensor4dOf creates a tensor descriptor of [n, c, h, w] in format
// (DNNTensorNCHW or DNNTensorNHWC) of data type dtype (DNNFloat or
// DNNBFloat16).
func (d *DNN) NewTensor4dOf(format, dtype, n, c, h, w int) (TensorDesc, error) {
	t, err := d.create("cudnnCreateTensorDescriptor", d.fn.createTensor)
	if err != nil {
		return 0, err
	}
	if err := d.check("cudnnSetTensor4dDescriptor", C.vg_setTensor4d(d.fn.setTensor4d, C.uintptr_t(t),
		C.int(format), C.int(dtype), C.int(n), C.int(c), C.int(h), C.int(w))); err != nil {
		d.DestroyTensor(TensorDesc(t))
		return 0, fmt.Errorf("tensor [%d %d %d %d]: %w", n, c, h, w, err)
	}
	return TensorDesc(t), nil
}

// DestroyTensor destroys a tensor descriptor.
func (d *DNN) DestroyTensor(t TensorDesc) error {
	return d.check("cudnnDestroyTensorDescriptor", C.vg_destroy(d.fn.destroyTensor, C.uintptr_t(t)))
}

// NewFilter4d creates a KCRS float filter descriptor.
func (d *DNN) NewFilter4d(k, c, h, w int) (FilterDesc, error) {
	return d.NewFilter4dOf(DNNTensorNCHW, DNNFloat, k, c, h, w)
}

// NewFilter4dOf creates a filter descriptor of [k, c, h, w] of data type
// dtype, KCRS for format DNNTensorNCHW, KRSC for DNNTensorNHWC.
func (d *DNN) NewFilter4dOf(format, dtype, k, c, h, w int) (FilterDesc, error) {
	f, err := d.create("cudnnCreateFilterDescriptor", d.fn.createFilter)
	if err != nil {
		return 0, err
	}
	if err := d.check("cudnnSetFilter4dDescriptor", C.vg_setFilter4d(d.fn.setFilter4d, C.uintptr_t(f),
		C.int(dtype), C.int(format), C.int(k), C.int(c), C.int(h), C.int(w))); err != nil {
		d.DestroyFilter(FilterDesc(f))
		return 0, fmt.Errorf("filter [%d %d %d %d]: %w", k, c, h, w, err)
	}
	return FilterDesc(f), nil
}

// DestroyFilter destroys a filter descriptor.
func (d *DNN) DestroyFilter(f FilterDesc) error {
	return d.check("cudnnDestroyFilterDescriptor", C.vg_destroy(d.fn.destroyFilter, C.uintptr_t(f)))
}

// NewConv2d creates a cross-correlation descriptor with float accumulation,
// stride 1, no dilation, padding pad, and the given math type.
func (d *DNN) NewConv2d(pad, mathType int) (ConvDesc, error) {
	c, err := d.create("cudnnCreateConvolutionDescriptor", d.fn.createConv)
	if err != nil {
		return 0, err
	}
	if err := d.check("cudnnSetConvolution2dDescriptor", C.vg_setConv2d(d.fn.setConv2d, C.uintptr_t(c),
		C.int(pad), C.int(pad), 1, 1, 1, 1, DNNCrossCorrelation, DNNFloat)); err != nil {
		d.DestroyConv(ConvDesc(c))
		return 0, err
	}
	if err := d.SetConvMathType(ConvDesc(c), mathType); err != nil {
		d.DestroyConv(ConvDesc(c))
		return 0, err
	}
	return ConvDesc(c), nil
}

// SetConvMathType is cudnnSetConvolutionMathType.
func (d *DNN) SetConvMathType(c ConvDesc, mathType int) error {
	return d.check("cudnnSetConvolutionMathType", C.vg_setConvMathType(d.fn.setConvMathType, C.uintptr_t(c), C.int(mathType)))
}

// DestroyConv destroys a convolution descriptor.
func (d *DNN) DestroyConv(c ConvDesc) error {
	return d.check("cudnnDestroyConvolutionDescriptor", C.vg_destroy(d.fn.destroyConv, C.uintptr_t(c)))
}

// NewLRN creates an LRN descriptor. cuDNN divides alpha by n inside, as
// PyTorch's LocalResponseNorm does, so alpha is passed unchanged.
func (d *DNN) NewLRN(n int, alpha, beta, k float64) (LRNDesc, error) {
	l, err := d.create("cudnnCreateLRNDescriptor", d.fn.createLRN)
	if err != nil {
		return 0, err
	}
	if err := d.check("cudnnSetLRNDescriptor", C.vg_setLRN(d.fn.setLRN, C.uintptr_t(l), C.uint(n), C.double(alpha), C.double(beta), C.double(k))); err != nil {
		d.DestroyLRN(LRNDesc(l))
		return 0, err
	}
	return LRNDesc(l), nil
}

// DestroyLRN destroys an LRN descriptor.
func (d *DNN) DestroyLRN(l LRNDesc) error {
	return d.check("cudnnDestroyLRNDescriptor", C.vg_destroy(d.fn.destroyLRN, C.uintptr_t(l)))
}

var findCalls = [3]string{"cudnnFindConvolutionForwardAlgorithm", "cudnnFindConvolutionBackwardDataAlgorithm", "cudnnFindConvolutionBackwardFilterAlgorithm"}
var workspaceCalls = [3]string{"cudnnGetConvolutionForwardWorkspaceSize", "cudnnGetConvolutionBackwardDataWorkspaceSize", "cudnnGetConvolutionBackwardFilterWorkspaceSize"}
var runCalls = [3]string{"cudnnConvolutionForward", "cudnnConvolutionBackwardData", "cudnnConvolutionBackwardFilter"}

// FindConv benchmarks the algorithms of one direction on buffers cuDNN
// allocates itself, fastest first. Descriptors a, b, out are, by direction:
// Forward (x, w, y), BackwardData (w, dy, dx), BackwardFilter (x, dy, dw).
func (d *DNN) FindConv(dir ConvDir, h DNNHandle, a, b uintptr, conv ConvDesc, out uintptr) ([]ConvPerf, error) {
	var perf [16]C.vg_perf
	var n C.int
	r := C.vg_findConv(d.fn.find[dir], C.uintptr_t(h), C.uintptr_t(a), C.uintptr_t(b), C.uintptr_t(conv), C.uintptr_t(out),
		C.int(len(perf)), &n, &perf[0])
	if err := d.check(findCalls[dir], r); err != nil {
		return nil, err
	}
	res := make([]ConvPerf, int(n))
	for i := range res {
		p := perf[i]
		res[i] = ConvPerf{Algo: int(p.algo), Status: int(p.status), TimeMs: float32(p.time), Memory: int64(p.memory),
			Determinism: int(p.determinism), MathType: int(p.mathType)}
	}
	return res, nil
}

// ConvWorkspace is the workspace algo needs, descriptors as for FindConv.
func (d *DNN) ConvWorkspace(dir ConvDir, h DNNHandle, a, b uintptr, conv ConvDesc, out uintptr, algo int) (int64, error) {
	var n C.size_t
	r := C.vg_convWorkspace(d.fn.workspace[dir], C.uintptr_t(h), C.uintptr_t(a), C.uintptr_t(b), C.uintptr_t(conv), C.uintptr_t(out), C.int(algo), &n)
	return int64(n), d.check(workspaceCalls[dir], r)
}

// ConvRun is out = alpha·op(a, b) + beta·out for one direction:
// Forward y = conv(x, w), BackwardData dx = conv(w, dy), BackwardFilter
// dw = conv(x, dy); the descriptors are ad/bd/od as for FindConv.
func (d *DNN) ConvRun(dir ConvDir, h DNNHandle, alpha float32, ad uintptr, a DevicePtr, bd uintptr, b DevicePtr,
	conv ConvDesc, algo int, ws DevicePtr, wsBytes int64, beta float32, od uintptr, o DevicePtr) error {
	r := C.vg_convRun(d.fn.run[dir], C.uintptr_t(h), C.float(alpha), C.uintptr_t(ad), C.dptr(a), C.uintptr_t(bd), C.dptr(b),
		C.uintptr_t(conv), C.int(algo), C.dptr(ws), C.size_t(wsBytes), C.float(beta), C.uintptr_t(od), C.dptr(o))
	return d.check(runCalls[dir], r)
}

// AddTensor is c = alpha·a + beta·c with a broadcast over c's dimensions
// of size 1 in a (the bias add).
func (d *DNN) AddTensor(h DNNHandle, alpha float32, ad TensorDesc, a DevicePtr, beta float32, cd TensorDesc, c DevicePtr) error {
	r := C.vg_alphaBeta(d.fn.addTensor, C.uintptr_t(h), C.float(alpha), C.uintptr_t(ad), C.dptr(a), C.float(beta), C.uintptr_t(cd), C.dptr(c))
	return d.check("cudnnAddTensor", r)
}

// ConvBackwardBias is db = alpha·Σ_{n,h,w} dy + beta·db.
func (d *DNN) ConvBackwardBias(h DNNHandle, alpha float32, dyd TensorDesc, dy DevicePtr, beta float32, dbd TensorDesc, db DevicePtr) error {
	r := C.vg_alphaBeta(d.fn.convBackwardBias, C.uintptr_t(h), C.float(alpha), C.uintptr_t(dyd), C.dptr(dy), C.float(beta), C.uintptr_t(dbd), C.dptr(db))
	return d.check("cudnnConvolutionBackwardBias", r)
}

// BNTrain is cudnnBatchNormalizationForwardTraining in spatial mode with
// y = BN(x) (alpha 1, beta 0). runMean and runVar move by factor towards
// the batch mean and the unbiased batch variance; saveMean and saveInvStd
// receive the batch mean and 1/sqrt(biased var + eps).
func (d *DNN) BNTrain(h DNNHandle, xd TensorDesc, x DevicePtr, yd TensorDesc, y DevicePtr, bnd TensorDesc,
	scale, bias DevicePtr, factor float64, runMean, runVar DevicePtr, eps float64, saveMean, saveInvStd DevicePtr) error {
	r := C.vg_bnTrain(d.fn.bnTrain, C.uintptr_t(h), DNNBatchNormSpatial, 1, 0, C.uintptr_t(xd), C.dptr(x), C.uintptr_t(yd), C.dptr(y),
		C.uintptr_t(bnd), C.dptr(scale), C.dptr(bias), C.double(factor), C.dptr(runMean), C.dptr(runVar), C.double(eps),
		C.dptr(saveMean), C.dptr(saveInvStd))
	return d.check("cudnnBatchNormalizationForwardTraining", r)
}

// BNInfer is cudnnBatchNormalizationForwardInference in spatial mode.
func (d *DNN) BNInfer(h DNNHandle, xd TensorDesc, x DevicePtr, yd TensorDesc, y DevicePtr, bnd TensorDesc,
	scale, bias, mean, variance DevicePtr, eps float64) error {
	r := C.vg_bnInfer(d.fn.bnInfer, C.uintptr_t(h), DNNBatchNormSpatial, 1, 0, C.uintptr_t(xd), C.dptr(x), C.uintptr_t(yd), C.dptr(y),
		C.uintptr_t(bnd), C.dptr(scale), C.dptr(bias), C.dptr(mean), C.dptr(variance), C.double(eps))
	return d.check("cudnnBatchNormalizationForwardInference", r)
}

// BNBackward is cudnnBatchNormalizationBackward in spatial mode, writing
// (not accumulating) dx, dScale and dBias.
func (d *DNN) BNBackward(h DNNHandle, xd TensorDesc, x DevicePtr, dyd TensorDesc, dy DevicePtr, dxd TensorDesc, dx DevicePtr,
	bnd TensorDesc, scale, dScale, dBias DevicePtr, eps float64, saveMean, saveInvStd DevicePtr) error {
	r := C.vg_bnBackward(d.fn.bnBackward, C.uintptr_t(h), DNNBatchNormSpatial, 1, 0, 1, 0,
		C.uintptr_t(xd), C.dptr(x), C.uintptr_t(dyd), C.dptr(dy), C.uintptr_t(dxd), C.dptr(dx),
		C.uintptr_t(bnd), C.dptr(scale), C.dptr(dScale), C.dptr(dBias), C.double(eps), C.dptr(saveMean), C.dptr(saveInvStd))
	return d.check("cudnnBatchNormalizationBackward", r)
}

// LRNForward is y = LRN(x) across channels.
func (d *DNN) LRNForward(h DNNHandle, l LRNDesc, xd TensorDesc, x DevicePtr, yd TensorDesc, y DevicePtr) error {
	r := C.vg_lrnFwd(d.fn.lrnFwd, C.uintptr_t(h), C.uintptr_t(l), DNNLRNCrossChannel, 1, C.uintptr_t(xd), C.dptr(x), 0, C.uintptr_t(yd), C.dptr(y))
	return d.check("cudnnLRNCrossChannelForward", r)
}

// LRNBackward is dx from y, dy and x.
func (d *DNN) LRNBackward(h DNNHandle, l LRNDesc, yd TensorDesc, y DevicePtr, dyd TensorDesc, dy DevicePtr,
	xd TensorDesc, x DevicePtr, dxd TensorDesc, dx DevicePtr) error {
	r := C.vg_lrnBwd(d.fn.lrnBwd, C.uintptr_t(h), C.uintptr_t(l), DNNLRNCrossChannel, 1, C.uintptr_t(yd), C.dptr(y),
		C.uintptr_t(dyd), C.dptr(dy), C.uintptr_t(xd), C.dptr(x), 0, C.uintptr_t(dxd), C.dptr(dx))
	return d.check("cudnnLRNCrossChannelBackward", r)
}
