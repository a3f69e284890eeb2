//go:build linux && cgo

package cuda

// cuDNN 9's backend (graph) API: descriptors built attribute by attribute,
// engine heuristics, execution plans and variant packs. cuDNN 9 serves the
// legacy convolution calls (cudnn.go) from a small set of engines; the
// backend API reaches every engine, Hopper's implicit-GEMM kernels
// included. Prototypes and enums follow cudnn_graph.h of cuDNN 9.6
// (cudnn_backend.h in cuDNN 8, whose values are the same for what is used
// here). The six functions are optional: a cuDNN without them still loads,
// and HasGraph says so.

/*
#include <stdint.h>
#include <stddef.h>

typedef int cudnnStatus_t;
#define H(x) ((void*)(uintptr_t)(x))

// cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t, cudnnBackendDescriptor_t*)
static cudnnStatus_t vg_bkCreate(void* f, int type, uintptr_t* out) {
	return ((cudnnStatus_t(*)(int, void**))f)(type, (void**)out);
}
// cudnnBackendDestroyDescriptor and cudnnBackendFinalize: (cudnnBackendDescriptor_t).
static cudnnStatus_t vg_bkOne(void* f, uintptr_t d) {
	return ((cudnnStatus_t(*)(void*))f)(H(d));
}
// cudnnBackendSetAttribute(desc, attributeName, attributeType, int64_t elementCount, const void* arrayOfElements)
static cudnnStatus_t vg_bkSet(void* f, uintptr_t d, int name, int type, int64_t n, const void* elems) {
	return ((cudnnStatus_t(*)(void*, int, int, int64_t, const void*))f)(H(d), name, type, n, elems);
}
// cudnnBackendGetAttribute(desc, attributeName, attributeType, int64_t requestedElementCount,
//   int64_t* elementCount, void* arrayOfElements)
static cudnnStatus_t vg_bkGet(void* f, uintptr_t d, int name, int type, int64_t req, int64_t* n, void* elems) {
	return ((cudnnStatus_t(*)(void*, int, int, int64_t, int64_t*, void*))f)(H(d), name, type, req, n, elems);
}
// cudnnBackendExecute(cudnnHandle_t, executionPlan, variantPack)
static cudnnStatus_t vg_bkExecute(void* f, uintptr_t h, uintptr_t plan, uintptr_t pack) {
	return ((cudnnStatus_t(*)(void*, void*, void*))f)(H(h), H(plan), H(pack));
}
*/
import "C"

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"
)

// BackendDesc is a cudnnBackendDescriptor_t.
type BackendDesc uintptr

// cudnnBackendDescriptorType_t (cudnn_graph.h, cuDNN 9.6): the order of
// the enum, which starts at CUDNN_BACKEND_POINTWISE_DESCRIPTOR = 0. Note
// that BACKWARD_FILTER comes before BACKWARD_DATA.
const (
	bkConvolutionDesc     = 1  // CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR
	bkEngineDesc          = 2  // CUDNN_BACKEND_ENGINE_DESCRIPTOR
	bkEngineCfgDesc       = 3  // CUDNN_BACKEND_ENGINECFG_DESCRIPTOR
	bkEngineHeurDesc      = 4  // CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR
	bkExecutionPlanDesc   = 5  // CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR
	bkOpConvForwardDesc   = 10 // CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR
	bkOpConvBwdFilterDesc = 11 // CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR
	bkOpConvBwdDataDesc   = 12 // CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR
	bkOpGraphDesc         = 15 // CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR
	bkVariantPackDesc     = 16 // CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR
	bkTensorDesc          = 17 // CUDNN_BACKEND_TENSOR_DESCRIPTOR
)

// cudnnBackendAttributeType_t (cudnn_graph.h, cuDNN 9.6): the order of the
// enum from CUDNN_TYPE_HANDLE = 0.
const (
	tyHandle        = 0  // CUDNN_TYPE_HANDLE: cudnnHandle_t
	tyDataType      = 1  // CUDNN_TYPE_DATA_TYPE: cudnnDataType_t (a C enum, 4 bytes)
	tyInt64         = 3  // CUDNN_TYPE_INT64
	tyFloat         = 4  // CUDNN_TYPE_FLOAT
	tyVoidPtr       = 6  // CUDNN_TYPE_VOID_PTR
	tyConvMode      = 7  // CUDNN_TYPE_CONVOLUTION_MODE: cudnnConvolutionMode_t
	tyHeurMode      = 8  // CUDNN_TYPE_HEUR_MODE: cudnnBackendHeurMode_t
	tyNumericalNote = 11 // CUDNN_TYPE_NUMERICAL_NOTE: cudnnBackendNumericalNote_t
	tyDescriptor    = 15 // CUDNN_TYPE_BACKEND_DESCRIPTOR: cudnnBackendDescriptor_t
	tyBehaviorNote  = 19 // CUDNN_TYPE_BEHAVIOR_NOTE: cudnnBackendBehaviorNote_t
)

// cudnnBackendAttributeName_t (cudnn_graph.h, cuDNN 9.6: explicit values).
const (
	atConvCompType      = 100 // CUDNN_ATTR_CONVOLUTION_COMP_TYPE
	atConvMode          = 101 // CUDNN_ATTR_CONVOLUTION_CONV_MODE
	atConvDilations     = 102 // CUDNN_ATTR_CONVOLUTION_DILATIONS
	atConvFilterStrides = 103 // CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES
	atConvPostPaddings  = 104 // CUDNN_ATTR_CONVOLUTION_POST_PADDINGS
	atConvPrePaddings   = 105 // CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS
	atConvSpatialDims   = 106 // CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS

	atHeurMode    = 200 // CUDNN_ATTR_ENGINEHEUR_MODE
	atHeurGraph   = 201 // CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH
	atHeurResults = 202 // CUDNN_ATTR_ENGINEHEUR_RESULTS

	atCfgEngine = 300 // CUDNN_ATTR_ENGINECFG_ENGINE

	atPlanHandle    = 400 // CUDNN_ATTR_EXECUTION_PLAN_HANDLE
	atPlanEngineCfg = 401 // CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG
	atPlanWorkspace = 402 // CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE

	atFwdAlpha = 700 // CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA
	atFwdBeta  = 701 // CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA
	atFwdConv  = 702 // CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC
	atFwdW     = 703 // CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W
	atFwdX     = 704 // CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X
	atFwdY     = 705 // CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y

	atBwdDataAlpha = 706 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA
	atBwdDataBeta  = 707 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA
	atBwdDataConv  = 708 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC
	atBwdDataW     = 709 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W
	atBwdDataDX    = 710 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX
	atBwdDataDY    = 711 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY

	atBwdFilterAlpha = 712 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA
	atBwdFilterBeta  = 713 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA
	atBwdFilterConv  = 714 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC
	atBwdFilterDW    = 715 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW
	atBwdFilterX     = 716 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X
	atBwdFilterDY    = 717 // CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY

	atGraphHandle = 800 // CUDNN_ATTR_OPERATIONGRAPH_HANDLE
	atGraphOps    = 801 // CUDNN_ATTR_OPERATIONGRAPH_OPS

	atTensorAlignment = 900 // CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT
	atTensorDataType  = 901 // CUDNN_ATTR_TENSOR_DATA_TYPE
	atTensorDims      = 902 // CUDNN_ATTR_TENSOR_DIMENSIONS
	atTensorStrides   = 903 // CUDNN_ATTR_TENSOR_STRIDES
	atTensorUID       = 906 // CUDNN_ATTR_TENSOR_UNIQUE_ID

	atPackUIDs      = 1000 // CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS
	atPackPointers  = 1001 // CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS
	atPackWorkspace = 1003 // CUDNN_ATTR_VARIANT_PACK_WORKSPACE

	atEngineGlobalIndex   = 1301 // CUDNN_ATTR_ENGINE_GLOBAL_INDEX
	atEngineNumericalNote = 1303 // CUDNN_ATTR_ENGINE_NUMERICAL_NOTE
	atEngineBehaviorNote  = 1305 // CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE
)

// cudnnBackendHeurMode_t (cudnn_graph.h, cuDNN 9.6).
const (
	HeurModeInstant  = 0 // CUDNN_HEUR_MODE_INSTANT
	HeurModeB        = 1 // CUDNN_HEUR_MODE_B
	HeurModeFallback = 2 // CUDNN_HEUR_MODE_FALLBACK
	HeurModeA        = 3 // CUDNN_HEUR_MODE_A
)

// cudnnBackendNumericalNote_t (cudnn_graph.h, cuDNN 9.6: the order of the
// enum from CUDNN_NUMERICAL_NOTE_TENSOR_CORE = 0).
const (
	NoteTensorCore         = 0  // CUDNN_NUMERICAL_NOTE_TENSOR_CORE
	NoteDownConvertInputs  = 1  // CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS
	NoteReducedPrecision   = 2  // CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION
	NoteFFT                = 3  // CUDNN_NUMERICAL_NOTE_FFT
	NoteNondeterministic   = 4  // CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC
	NoteWinograd           = 5  // CUDNN_NUMERICAL_NOTE_WINOGRAD
	numericalNoteTypeCount = 10 // CUDNN_NUMERICAL_NOTE_TYPE_COUNT in 9.6 (6 in 8.x): an upper bound to ask for
)

// cudnnBackendBehaviorNote_t (cudnn_graph.h, cuDNN 9.6).
const (
	NoteRuntimeCompilation = 0 // CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION
	behaviorNoteTypeCount  = 4 // CUDNN_BEHAVIOR_NOTE_TYPE_COUNT in 9.6
)

// backendFns are the backend API's entry points.
type backendFns struct {
	create, destroy, set, get, finalize, execute unsafe.Pointer
}

func (d *DNN) backendTable() []symbol {
	f := &d.bk
	return []symbol{
		{name: "cudnnBackendCreateDescriptor", p: &f.create, optional: true},
		{name: "cudnnBackendDestroyDescriptor", p: &f.destroy, optional: true},
		{name: "cudnnBackendSetAttribute", p: &f.set, optional: true},
		{name: "cudnnBackendGetAttribute", p: &f.get, optional: true},
		{name: "cudnnBackendFinalize", p: &f.finalize, optional: true},
		{name: "cudnnBackendExecute", p: &f.execute, optional: true},
	}
}

// HasGraph reports whether the loaded cuDNN exports the backend API.
func (d *DNN) HasGraph() bool {
	f := &d.bk
	return f.create != nil && f.destroy != nil && f.set != nil && f.get != nil && f.finalize != nil && f.execute != nil
}

var errNoGraph = errors.New("this cuDNN does not export the backend API (cudnnBackendCreateDescriptor and others)")

// attrNames name attributes in errors.
var attrNames = map[int]string{
	atConvCompType: "CONVOLUTION_COMP_TYPE", atConvMode: "CONVOLUTION_CONV_MODE", atConvDilations: "CONVOLUTION_DILATIONS",
	atConvFilterStrides: "CONVOLUTION_FILTER_STRIDES", atConvPostPaddings: "CONVOLUTION_POST_PADDINGS",
	atConvPrePaddings: "CONVOLUTION_PRE_PADDINGS", atConvSpatialDims: "CONVOLUTION_SPATIAL_DIMS",
	atHeurMode: "ENGINEHEUR_MODE", atHeurGraph: "ENGINEHEUR_OPERATION_GRAPH", atHeurResults: "ENGINEHEUR_RESULTS",
	atCfgEngine: "ENGINECFG_ENGINE", atPlanHandle: "EXECUTION_PLAN_HANDLE", atPlanEngineCfg: "EXECUTION_PLAN_ENGINE_CONFIG",
	atPlanWorkspace: "EXECUTION_PLAN_WORKSPACE_SIZE", atGraphHandle: "OPERATIONGRAPH_HANDLE", atGraphOps: "OPERATIONGRAPH_OPS",
	atTensorAlignment: "TENSOR_BYTE_ALIGNMENT", atTensorDataType: "TENSOR_DATA_TYPE", atTensorDims: "TENSOR_DIMENSIONS",
	atTensorStrides: "TENSOR_STRIDES", atTensorUID: "TENSOR_UNIQUE_ID", atPackUIDs: "VARIANT_PACK_UNIQUE_IDS",
	atPackPointers: "VARIANT_PACK_DATA_POINTERS", atPackWorkspace: "VARIANT_PACK_WORKSPACE",
	atEngineGlobalIndex: "ENGINE_GLOBAL_INDEX", atEngineNumericalNote: "ENGINE_NUMERICAL_NOTE", atEngineBehaviorNote: "ENGINE_BEHAVIOR_NOTE",
}

func attrName(a int) string {
	if s, ok := attrNames[a]; ok {
		return "CUDNN_ATTR_" + s
	}
	if a >= atFwdAlpha && a <= atBwdFilterDY {
		return fmt.Sprintf("CUDNN_ATTR_OPERATION_CONVOLUTION_* (%d)", a)
	}
	return fmt.Sprint(a)
}

// NewBackend is cudnnBackendCreateDescriptor.
func (d *DNN) newBackend(typ int) (BackendDesc, error) {
	if !d.HasGraph() {
		return 0, errNoGraph
	}
	var h C.uintptr_t
	err := d.check(fmt.Sprintf("cudnnBackendCreateDescriptor(type %d)", typ), C.vg_bkCreate(d.bk.create, C.int(typ), &h))
	return BackendDesc(h), err
}

// DestroyBackend is cudnnBackendDestroyDescriptor; 0 is ignored.
func (d *DNN) DestroyBackend(b BackendDesc) error {
	if b == 0 {
		return nil
	}
	return d.check("cudnnBackendDestroyDescriptor", C.vg_bkOne(d.bk.destroy, C.uintptr_t(b)))
}

func (d *DNN) finalize(b BackendDesc, what string) error {
	return d.check("cudnnBackendFinalize("+what+")", C.vg_bkOne(d.bk.finalize, C.uintptr_t(b)))
}

// set is cudnnBackendSetAttribute of n elements at p (Go memory holding
// no Go pointers: integers, floats, descriptor handles, device addresses).
func (d *DNN) set(b BackendDesc, name, typ int, n int, p unsafe.Pointer) error {
	r := C.vg_bkSet(d.bk.set, C.uintptr_t(b), C.int(name), C.int(typ), C.int64_t(n), p)
	return d.check("cudnnBackendSetAttribute("+attrName(name)+")", r)
}

func (d *DNN) setInt64s(b BackendDesc, name int, v ...int64) error {
	return d.set(b, name, tyInt64, len(v), unsafe.Pointer(&v[0]))
}

// setEnum sets a C-enum-typed attribute (4 bytes) of type typ.
func (d *DNN) setEnum(b BackendDesc, name, typ int, v int32) error {
	return d.set(b, name, typ, 1, unsafe.Pointer(&v))
}

func (d *DNN) setDescs(b BackendDesc, name int, v ...BackendDesc) error {
	return d.set(b, name, tyDescriptor, len(v), unsafe.Pointer(&v[0]))
}

func (d *DNN) setHandle(b BackendDesc, name int, h DNNHandle) error {
	v := uintptr(h)
	return d.set(b, name, tyHandle, 1, unsafe.Pointer(&v))
}

// get is cudnnBackendGetAttribute of up to req elements into p; it
// returns how many there are.
func (d *DNN) get(b BackendDesc, name, typ int, req int, p unsafe.Pointer) (int, error) {
	var n C.int64_t
	r := C.vg_bkGet(d.bk.get, C.uintptr_t(b), C.int(name), C.int(typ), C.int64_t(req), &n, p)
	return int(n), d.check("cudnnBackendGetAttribute("+attrName(name)+")", r)
}

// build creates a descriptor of type typ, lets fill set its attributes,
// and finalizes it; on any error the descriptor is destroyed.
func (d *DNN) build(typ int, what string, fill func(b BackendDesc) error) (BackendDesc, error) {
	b, err := d.newBackend(typ)
	if err != nil {
		return 0, err
	}
	if err := fill(b); err != nil {
		d.DestroyBackend(b)
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if err := d.finalize(b, what); err != nil {
		d.DestroyBackend(b)
		return 0, err
	}
	return b, nil
}

// NewGraphTensor is a finalized tensor descriptor: unique id uid, data
// type dtype (DNNFloat or DNNBFloat16), dimensions dims packed in their
// order (NCHW for [n, c, h, w], KCRS for weights), or with channelsLast
// (4 dimensions) packed with the second dimension last (NHWC, KRSC);
// 16-byte aligned as every operand of the backend is.
func (d *DNN) NewGraphTensor(uid int64, dtype int, channelsLast bool, dims ...int64) (BackendDesc, error) {
	order := make([]int, len(dims)) // dimensions from the outermost
	for i := range order {
		order[i] = i
	}
	if channelsLast && len(dims) == 4 {
		order = []int{0, 2, 3, 1}
	}
	strides := make([]int64, len(dims))
	s := int64(1)
	for i := len(order) - 1; i >= 0; i-- {
		strides[order[i]] = s
		s *= dims[order[i]]
	}
	return d.build(bkTensorDesc, fmt.Sprintf("tensor %d %v", uid, dims), func(b BackendDesc) error {
		return errors.Join(
			d.setEnum(b, atTensorDataType, tyDataType, int32(dtype)),
			d.setInt64s(b, atTensorDims, dims...),
			d.setInt64s(b, atTensorStrides, strides...),
			d.setInt64s(b, atTensorUID, uid),
			d.setInt64s(b, atTensorAlignment, 16),
		)
	})
}

// NewGraphConv is a finalized 2-d cross-correlation descriptor with float
// accumulation, padding pad on every side, stride 1 and no dilation.
func (d *DNN) NewGraphConv(pad int) (BackendDesc, error) {
	p := int64(pad)
	return d.build(bkConvolutionDesc, fmt.Sprintf("convolution pad %d", pad), func(b BackendDesc) error {
		return errors.Join(
			d.setInt64s(b, atConvSpatialDims, 2),
			d.setEnum(b, atConvCompType, tyDataType, DNNFloat),
			d.setEnum(b, atConvMode, tyConvMode, DNNCrossCorrelation),
			d.setInt64s(b, atConvPrePaddings, p, p),
			d.setInt64s(b, atConvPostPaddings, p, p),
			d.setInt64s(b, atConvFilterStrides, 1, 1),
			d.setInt64s(b, atConvDilations, 1, 1),
		)
	})
}

// convOpAttrs are, by ConvDir: the operation's descriptor type and its
// attributes alpha, beta, convolution, and the operands in the order
// x, w, y (forward), dx, w, dy (backward data), x, dw, dy (backward filter).
var convOpAttrs = [3]struct{ typ, alpha, beta, conv, x, w, y int }{
	ConvForward:        {bkOpConvForwardDesc, atFwdAlpha, atFwdBeta, atFwdConv, atFwdX, atFwdW, atFwdY},
	ConvBackwardData:   {bkOpConvBwdDataDesc, atBwdDataAlpha, atBwdDataBeta, atBwdDataConv, atBwdDataDX, atBwdDataW, atBwdDataDY},
	ConvBackwardFilter: {bkOpConvBwdFilterDesc, atBwdFilterAlpha, atBwdFilterBeta, atBwdFilterConv, atBwdFilterX, atBwdFilterDW, atBwdFilterDY},
}

// NewConvOp is a finalized convolution operation of direction dir over the
// tensors x [N,Ci,H,W], w [Co,Ci,K,K] and y [N,Co,OH,OW] (whichever of
// them is the output) and convolution conv: out = alpha·op + beta·out.
// alpha and beta are CUDNN_TYPE_FLOAT: the compute type is FLOAT, and the
// API takes DOUBLE only with a double compute type.
func (d *DNN) NewConvOp(dir ConvDir, x, w, y, conv BackendDesc, alpha, beta float32) (BackendDesc, error) {
	a := convOpAttrs[dir]
	return d.build(a.typ, "convolution "+dir.String(), func(b BackendDesc) error {
		return errors.Join(
			d.setDescs(b, a.x, x),
			d.setDescs(b, a.w, w),
			d.setDescs(b, a.y, y),
			d.setDescs(b, a.conv, conv),
			d.set(b, a.alpha, tyFloat, 1, unsafe.Pointer(&alpha)),
			d.set(b, a.beta, tyFloat, 1, unsafe.Pointer(&beta)),
		)
	})
}

// NewOpGraph is a finalized operation graph of ops on handle h.
func (d *DNN) NewOpGraph(h DNNHandle, ops ...BackendDesc) (BackendDesc, error) {
	return d.build(bkOpGraphDesc, "operation graph", func(b BackendDesc) error {
		return errors.Join(d.setHandle(b, atGraphHandle, h), d.setDescs(b, atGraphOps, ops...))
	})
}

// EngineConfigs asks the heuristics of mode (HeurModeA, HeurModeFallback…)
// for up to max engine configurations of graph, best first. The caller
// destroys them (DestroyBackend).
func (d *DNN) EngineConfigs(graph BackendDesc, mode, max int) ([]BackendDesc, error) {
	heur, err := d.build(bkEngineHeurDesc, fmt.Sprintf("engine heuristics mode %d", mode), func(b BackendDesc) error {
		return errors.Join(d.setDescs(b, atHeurGraph, graph), d.setEnum(b, atHeurMode, tyHeurMode, int32(mode)))
	})
	if err != nil {
		return nil, err
	}
	defer d.DestroyBackend(heur)
	// The count first (nothing requested), then that many configurations
	// into descriptors made for them: cuDNN copies into the caller's.
	n, err := d.get(heur, atHeurResults, tyDescriptor, 0, nil)
	if err != nil || n == 0 {
		return nil, err
	}
	n = min(n, max)
	cfgs := make([]BackendDesc, 0, n)
	for range n {
		c, err := d.newBackend(bkEngineCfgDesc)
		if err != nil {
			d.destroyAll(cfgs)
			return nil, err
		}
		cfgs = append(cfgs, c)
	}
	got, err := d.get(heur, atHeurResults, tyDescriptor, n, unsafe.Pointer(&cfgs[0]))
	if err != nil {
		d.destroyAll(cfgs)
		return nil, err
	}
	if got < n {
		d.destroyAll(cfgs[got:])
		cfgs = cfgs[:got]
	}
	return cfgs, nil
}

func (d *DNN) destroyAll(ds []BackendDesc) {
	for _, b := range ds {
		d.DestroyBackend(b)
	}
}

// EngineInfo is what an engine configuration says of its engine.
type EngineInfo struct {
	Index     int64 // CUDNN_ATTR_ENGINE_GLOBAL_INDEX
	Numerical []int // CUDNN_NUMERICAL_NOTE_*
	Behavior  []int // CUDNN_BEHAVIOR_NOTE_*
}

// Has reports whether the engine carries numerical note n.
func (e EngineInfo) Has(n int) bool { return slices.Contains(e.Numerical, n) }

// Compiles reports whether the engine compiles its kernel at run time
// (slow to finalize).
func (e EngineInfo) Compiles() bool { return slices.Contains(e.Behavior, NoteRuntimeCompilation) }

// Engine reads the engine of configuration cfg: its index and notes.
func (d *DNN) Engine(cfg BackendDesc) (EngineInfo, error) {
	var info EngineInfo
	eng, err := d.newBackend(bkEngineDesc)
	if err != nil {
		return info, err
	}
	defer d.DestroyBackend(eng)
	if _, err := d.get(cfg, atCfgEngine, tyDescriptor, 1, unsafe.Pointer(&eng)); err != nil {
		return info, err
	}
	if _, err := d.get(eng, atEngineGlobalIndex, tyInt64, 1, unsafe.Pointer(&info.Index)); err != nil {
		return info, err
	}
	var notes [16]int32 // C enums
	n, err := d.get(eng, atEngineNumericalNote, tyNumericalNote, numericalNoteTypeCount, unsafe.Pointer(&notes[0]))
	if err != nil {
		return info, err
	}
	for _, v := range notes[:min(n, numericalNoteTypeCount)] {
		info.Numerical = append(info.Numerical, int(v))
	}
	n, err = d.get(eng, atEngineBehaviorNote, tyBehaviorNote, behaviorNoteTypeCount, unsafe.Pointer(&notes[0]))
	if err != nil {
		return info, err
	}
	for _, v := range notes[:min(n, behaviorNoteTypeCount)] {
		info.Behavior = append(info.Behavior, int(v))
	}
	return info, nil
}

// NewExecPlan finalizes the execution plan of engine configuration cfg on
// handle h and returns it with the workspace it needs, in bytes.
func (d *DNN) NewExecPlan(h DNNHandle, cfg BackendDesc) (BackendDesc, int64, error) {
	plan, err := d.build(bkExecutionPlanDesc, "execution plan", func(b BackendDesc) error {
		return errors.Join(d.setHandle(b, atPlanHandle, h), d.setDescs(b, atPlanEngineCfg, cfg))
	})
	if err != nil {
		return 0, 0, err
	}
	var ws int64
	if _, err := d.get(plan, atPlanWorkspace, tyInt64, 1, unsafe.Pointer(&ws)); err != nil {
		d.DestroyBackend(plan)
		return 0, 0, err
	}
	return plan, ws, nil
}

// Execute runs plan on h's stream with the tensors of unique ids uids at
// ptrs and workspace ws (0 when the plan needs none). The variant pack is
// made for this call and destroyed after it: cuDNN reads it while
// queueing the work.
func (d *DNN) Execute(h DNNHandle, plan BackendDesc, uids []int64, ptrs []DevicePtr, ws DevicePtr) error {
	if len(uids) != len(ptrs) || len(uids) == 0 {
		return fmt.Errorf("cudnnBackendExecute: %d unique ids for %d pointers", len(uids), len(ptrs))
	}
	// VOID_PTR elements are void*: device addresses as pointer-sized words.
	p := make([]uintptr, len(ptrs))
	for i, v := range ptrs {
		p[i] = uintptr(v)
	}
	w := uintptr(ws)
	pack, err := d.build(bkVariantPackDesc, "variant pack", func(b BackendDesc) error {
		return errors.Join(
			d.set(b, atPackPointers, tyVoidPtr, len(p), unsafe.Pointer(&p[0])),
			d.setInt64s(b, atPackUIDs, uids...),
			d.set(b, atPackWorkspace, tyVoidPtr, 1, unsafe.Pointer(&w)),
		)
	})
	if err != nil {
		return err
	}
	defer d.DestroyBackend(pack)
	return d.check("cudnnBackendExecute", C.vg_bkExecute(d.bk.execute, C.uintptr_t(h), C.uintptr_t(plan), C.uintptr_t(pack)))
}
