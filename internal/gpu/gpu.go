//go:build linux && cgo

// Package gpu is the tensor.Backend on an NVIDIA GPU: cuDNN for
// convolution, LRN and (with --fused-bn=false) batch norm, cuBLAS for
// Linear, and the project's own kernels (kernels.cu, through
// internal/kernels) for max-pool, ReLU,
// dropout, softmax cross-entropy, SGD, Linear's bias, the fused batch norm,
// the input pipeline (images.go) and everything of --precision bf16 that
// is not a convolution or a GEMM (half.go). Everything runs in order on
// one CUDA stream. Download and Synchronize wait for it to finish; an
// upload waits only until the copy three uploads back has left its
// page-locked staging buffer (memory.go, stageSlots), so a training loop
// queues its next step while the GPU runs the current one.
//
// Errors. The Backend interface returns no errors, so a failing CUDA,
// cuBLAS, cuDNN or kernel call panics with the *cuda.Error it returned
// (with a hint where one helps: how much memory there is when it runs
// out, to which the command adds what its flags can do). The training
// loop recovers at the step boundary:
//
//	defer func() {
//		if r := recover(); r != nil {
//			if e, ok := r.(*cuda.Error); ok { err = e; return }
//			panic(r)
//		}
//	}()
//
// Because work is asynchronous, an error inside a kernel (an illegal
// address, say) surfaces at the next call that waits: Download,
// Synchronize, or any call when Options.Sync is set.
//
// A Backend is not safe for concurrent use, like the CPU one. Each method
// locks its goroutine to its OS thread and makes the device's primary
// context current there, so callers need not care which thread they run
// on.
package gpu

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/kernels"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Options configure New.
type Options struct {
	// Device is the CUDA device ordinal.
	Device int
	// Precision is "tf32" (the default), "fp32" or "bf16". tf32 is
	// PyTorch's default: convolutions may use TF32 tensor cores (cuDNN's
	// CUDNN_DEFAULT_MATH on Ampere and later) while Linear stays strict
	// float32 (CUBLAS_DEFAULT_MATH). fp32 also keeps convolutions strict
	// (CUDNN_FMA_MATH). bf16 stores activations as bfloat16 (PyTorch's
	// autocast to bfloat16; see half.go); it needs compute capability 8.0.
	Precision string
	// Sync waits for the GPU after every operation so that an error is
	// reported by the operation that caused it (slow; tests and
	// debugging). VGG16_CUDA_SYNC=1 sets it too.
	Sync bool
	// Deterministic restricts cuDNN to algorithms that give the same
	// result every run.
	Deterministic bool
	// KernelCache is where compiled kernels are kept: "" for the user's
	// cache directory, "off" for none (see internal/kernels).
	KernelCache string
	// NoGraphs turns recorded steps (CUDA graphs, see BeginStep) off:
	// every step issues its operations one by one. VGG16_CUDA_GRAPHS=0
	// does the same.
	NoGraphs bool
	// FusedBN runs batch norm + ReLU as the project's fused kernels
	// instead of cuDNN's batch norm and a separate ReLU (see bnrelu.go).
	// VGG16_FUSED_BN=1 sets it too.
	FusedBN bool
	// TF32Matmul lets Linear use TF32 tensor cores too (with precision
	// tf32), as torch.backends.cuda.matmul.allow_tf32 = True does; the
	// torch.compile figures in ../shared/GPU.md were taken so.
	TF32Matmul bool
	// MaxWorkspaceMiB caps the workspace of one convolution algorithm
	// (0: 4 GiB, or half the free memory when less): a lower cap trades
	// speed for peak memory.
	MaxWorkspaceMiB int
	// ConvAPI chooses how convolutions reach cuDNN: "" or "graph" through
	// the backend (graph) API where it builds a plan for a geometry, the
	// legacy API otherwise (convgraph.go); "legacy" through the legacy API
	// (cudnnFindConvolution*Algorithm) only. Precision fp32 always takes
	// the legacy API, whose CUDNN_FMA_MATH keeps it strict.
	ConvAPI string
	// ChannelsLast stores float32 activation images channels-last (NHWC)
	// too, as precision bf16 always does (half.go): cuDNN's NHWC engines,
	// the project's NHWC batch-norm and pooling kernels, weights
	// transposed to KRSC for each convolution. Precision tf32 only (strict
	// fp32 keeps cuDNN's NCHW algorithms), and not with an LRN.
	ChannelsLast bool
	// UnfusedPool keeps the 2x2 max-pool after a batch norm + ReLU a
	// separate op (tensor.PooledBatchNorm, pool.go): for comparison. By
	// default channels-last images fuse it.
	UnfusedPool bool
}

// parseConvAPI checks Options.ConvAPI.
func parseConvAPI(api string) error {
	switch strings.ToLower(api) {
	case "", "graph", "legacy":
		return nil
	}
	return fmt.Errorf("cuDNN API %q: want graph (the default) or legacy", api)
}

// DeviceInfo describes the GPU a Backend runs on.
type DeviceInfo struct {
	Index        int
	Name         string
	Major, Minor int // compute capability
	SMs          int
	TotalMem     int64
	CUDA         string // the driver's CUDA version, e.g. "13.0"
	CuDNN        string // "9.14.0"
	CuBLAS       string // "13.1.0"
	Kernels      string // what kernels.cu was built as, e.g. "sm_90"
}

// Backend implements tensor.Backend on one GPU.
type Backend struct {
	opt    Options
	strict bool // fp32: no TF32 anywhere
	bf16   bool // bf16: activations stored as bfloat16 (half.go)
	nhwc   bool // activation images channels-last: bf16, or Options.ChannelsLast
	info   DeviceInfo
	name   string
	plans  planCache  // the convolution engines chosen in earlier runs (plancache.go)
	search searchCost // what choosing convolution algorithms has cost so far

	drv    *cuda.Driver
	blas   *cuda.BLAS
	dnn    *cuda.DNN
	dev    cuda.Device
	ctx    cuda.Context
	stream cuda.Stream
	blasH  cuda.BlasHandle
	dnnH   cuda.DNNHandle
	k      *kernels.Module
	closed bool

	mem  memory
	desc descriptors
	rec  recorder
	prof profiler
	// bnEps is the epsilon of the BatchNormTrain that filled each saved
	// inverse-std buffer, for the matching BatchNormBackward (cuDNN wants
	// the same value in both; the interface passes it only forward).
	bnEps map[cuda.DevicePtr]float64
}

var _ tensor.Backend = (*Backend)(nil)

// parsePrecision reads Options.Precision: strict is fp32, bf16 is bf16.
func parsePrecision(p string) (strict, bf16 bool, err error) {
	switch strings.ToLower(p) {
	case "", "tf32":
		return false, false, nil
	case "fp32":
		return true, false, nil
	case "bf16":
		return false, true, nil
	}
	return false, false, fmt.Errorf("precision %q: want tf32, fp32 or bf16", p)
}

// New opens device opt.Device: it loads the CUDA libraries, retains the
// device's primary context, creates the stream and the cuBLAS and cuDNN
// handles, and compiles (or loads from the cache) the kernels. The error
// says what is missing when the machine cannot run it.
func New(opt Options) (*Backend, error) {
	if _, _, err := checkOptions(opt); err != nil { // before loading anything
		return nil, err
	}
	if os.Getenv("VGG16_CUDA_SYNC") == "1" {
		opt.Sync = true
	}
	if os.Getenv("VGG16_FUSED_BN") == "1" {
		opt.FusedBN = true
	}
	libs, err := cuda.Load()
	if err != nil {
		return nil, err
	}
	return newWithLibs(libs, opt)
}

// checkOptions refuses an option out of range or options that do not go
// together, and reads the precision (parsePrecision).
func checkOptions(opt Options) (strict, bf16 bool, err error) {
	if strict, bf16, err = parsePrecision(opt.Precision); err != nil {
		return false, false, err
	}
	if err := parseConvAPI(opt.ConvAPI); err != nil {
		return false, false, err
	}
	if opt.MaxWorkspaceMiB < 0 {
		return false, false, fmt.Errorf("cuDNN workspace of %d MiB: want 0 (the default) or more", opt.MaxWorkspaceMiB)
	}
	if strict && opt.ChannelsLast {
		return false, false, fmt.Errorf("--channels-last with precision fp32: channels-last images are for tf32 (bf16 always has them)")
	}
	return strict, bf16, nil
}

// DeviceIndexError is New's refusal of an Options.Device that this machine
// does not have: a choice to correct, where other errors say the GPU is
// not usable.
type DeviceIndexError struct{ Index, Count int }

func (e *DeviceIndexError) Error() string {
	return fmt.Sprintf("GPU %d requested, but this machine has %d (numbered from 0)", e.Index, e.Count)
}

// newWithLibs is New on libraries already loaded.
func newWithLibs(libs *cuda.Libs, opt Options) (*Backend, error) {
	strict, bf16, err := checkOptions(opt)
	if err != nil {
		return nil, err
	}
	b := &Backend{opt: opt, strict: strict, bf16: bf16, nhwc: bf16 || opt.ChannelsLast, drv: libs.Driver, blas: libs.BLAS, dnn: libs.DNN, dev: -1,
		bnEps: map[cuda.DevicePtr]float64{}}
	b.mem.init()
	b.desc.init()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.open(libs); err != nil {
		b.closeAll()
		return nil, err
	}
	b.name = b.describe()
	return b, nil
}

// open does the steps of New that need cleaning up when a later one fails.
func (b *Backend) open(libs *cuda.Libs) error {
	n, err := b.drv.DeviceCount()
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("the CUDA driver found no GPU")
	}
	if b.opt.Device < 0 || b.opt.Device >= n {
		return &DeviceIndexError{Index: b.opt.Device, Count: n}
	}
	dev, err := b.drv.DeviceGet(b.opt.Device)
	if err != nil {
		return err
	}
	if b.ctx, err = b.drv.PrimaryCtxRetain(dev); err != nil {
		return err
	}
	b.dev = dev
	if err := b.drv.CtxSetCurrent(b.ctx); err != nil {
		return err
	}
	if err := b.readInfo(libs); err != nil {
		return err
	}
	if b.bf16 && b.info.Major < 8 {
		return fmt.Errorf("--precision bf16 needs a GPU of compute capability 8.0 or newer (Ampere); %s is %d.%d: use tf32 or fp32",
			b.info.Name, b.info.Major, b.info.Minor)
	}
	// Non-blocking: no implicit synchronisation with the legacy default
	// stream, which would invalidate the capture of a recorded step.
	if b.stream, err = b.drv.StreamCreate(cuda.StreamNonBlocking); err != nil {
		return err
	}
	if b.blasH, err = b.blas.Create(); err != nil {
		return err
	}
	if err := b.blas.SetStream(b.blasH, b.stream); err != nil {
		return err
	}
	// Linear is strict float32 in both precisions, as in PyTorch, unless
	// TF32Matmul asks for what torch.backends.cuda.matmul.allow_tf32 does.
	math := cuda.BlasDefaultMath
	if b.opt.TF32Matmul && !b.strict {
		math = cuda.BlasTF32TensorMath
	}
	if err := b.blas.SetMathMode(b.blasH, math); err != nil {
		return err
	}
	if v, err := b.blas.Version(b.blasH); err == nil {
		b.info.CuBLAS = fmt.Sprintf("%d.%d.%d", v/10000, v%10000/100, v%100)
	}
	if b.dnnH, err = b.dnn.Create(); err != nil {
		return err
	}
	if err := b.dnn.SetStream(b.dnnH, b.stream); err != nil {
		return err
	}
	if b.k, err = kernels.Load(libs, dev, kernels.Options{CacheDir: b.opt.KernelCache}); err != nil {
		return err
	}
	b.info.Kernels = b.k.Target
	if err := b.mem.open(b); err != nil {
		return err
	}
	// cuBLAS's own workspace, so that it never allocates one while a step
	// is being captured; 32 MiB is what it takes by default on Hopper.
	const what = "the cuBLAS workspace"
	b.mem.blasWS = devBuf{ptr: b.alloc(blasWorkspace, what, what), bytes: blasWorkspace, what: what}
	if _, err := b.blas.SetWorkspace(b.blasH, b.mem.blasWS.ptr, blasWorkspace); err != nil {
		return err
	}
	return b.openGraphs()
}

// blasWorkspace is the size of cuBLAS's workspace.
const blasWorkspace = 32 << 20

func (b *Backend) readInfo(libs *cuda.Libs) (err error) {
	i := &b.info
	i.Index = b.opt.Device
	if i.Name, err = b.drv.DeviceName(b.dev); err != nil {
		return err
	}
	if i.Major, err = b.drv.DeviceAttribute(b.dev, cuda.AttrComputeCapabilityMajor); err != nil {
		return err
	}
	if i.Minor, err = b.drv.DeviceAttribute(b.dev, cuda.AttrComputeCapabilityMinor); err != nil {
		return err
	}
	if i.SMs, err = b.drv.DeviceAttribute(b.dev, cuda.AttrMultiprocessorCount); err != nil {
		return err
	}
	if i.TotalMem, err = b.drv.DeviceTotalMem(b.dev); err != nil {
		return err
	}
	v, err := b.drv.Version()
	if err != nil {
		return err
	}
	i.CUDA = cuda.CUDAVersionString(v)
	i.CuDNN = cuda.DNNVersionString(libs.DNN.Version())
	return nil
}

func (b *Backend) describe() string {
	i := b.info
	prec := "tf32 (TF32 convolutions, fp32 GEMM)"
	switch {
	case b.bf16:
		prec = "bf16 (bf16 activations, convolutions and GEMM; float32 parameters)"
	case b.strict:
		prec = "fp32 (no TF32)"
	case b.opt.TF32Matmul:
		prec = "tf32 (TF32 convolutions and GEMM)"
	}
	if b.FusedBN() && !b.bf16 { // bf16 always runs the fused kernels
		prec += ", fused BN+ReLU"
	}
	if b.nhwc && !b.bf16 { // bf16's images are always channels-last
		prec += ", channels-last"
	}
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %d SMs, %.3g GiB), CUDA %s, cuDNN %s, cuBLAS %s, precision %s",
		i.Index, i.Name, i.Major, i.Minor, i.SMs, float64(i.TotalMem)/(1<<30), i.CUDA, i.CuDNN, i.CuBLAS, prec)
}

// Name says which device, libraries and precision the backend uses.
func (b *Backend) Name() string { return b.name }

// Info describes the device.
func (b *Backend) Info() DeviceInfo { return b.info }

// Close releases every tensor, buffer, descriptor and handle, and the
// device's primary context. The Backend is unusable afterwards; a second
// Close does nothing.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return b.closeAll()
}

// closeAll undoes whatever of open got done, keeping the first error.
func (b *Backend) closeAll() error {
	b.closed = true
	var errs []error
	keep := func(err error) { errs = append(errs, err) }
	if b.ctx != 0 {
		keep(b.drv.CtxSetCurrent(b.ctx))
	}
	if b.stream != 0 {
		keep(b.drv.StreamSynchronize(b.stream))
	}
	for _, e := range append(b.closeGraphs(), b.closeProfiler()...) {
		keep(e)
	}
	keep(b.mem.close(b))
	keep(b.closeConvGraphs()) // before the handle and the plans' descriptors go
	keep(b.desc.close(b.dnn))
	if b.k != nil {
		keep(b.k.Close())
	}
	if b.dnnH != 0 {
		keep(b.dnn.Destroy(b.dnnH))
	}
	if b.blasH != 0 {
		keep(b.blas.Destroy(b.blasH))
	}
	if b.stream != 0 {
		keep(b.drv.StreamDestroy(b.stream))
	}
	if b.ctx != 0 {
		keep(b.drv.PrimaryCtxRelease(b.dev))
	}
	b.k, b.dnnH, b.blasH, b.stream, b.ctx = nil, 0, 0, 0, 0
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// op prepares the calling goroutine for CUDA calls; its result, deferred,
// undoes that:
//
//	defer b.op()()
//
// With Options.Sync it also waits for the operation to finish, so that an
// asynchronous error is reported here.
func (b *Backend) op() func() {
	runtime.LockOSThread()
	if b.closed {
		runtime.UnlockOSThread()
		panic("gpu: backend used after Close")
	}
	if err := b.drv.CtxSetCurrent(b.ctx); err != nil {
		runtime.UnlockOSThread()
		panic(err)
	}
	prof := b.prof.on && b.rec.mode == eager
	if prof {
		b.profStart(2)
	}
	// recover must be called by the deferred function itself.
	return func() { b.leave(recover(), prof) }
}

// leave ends an op: r is what the op panicked with, if it did; prof says
// the profiler timed it.
func (b *Backend) leave(r any, prof bool) {
	if prof {
		b.profStop(r != nil || b.rec.mode == capturing) // BeginStep started a capture
	}
	if r != nil {
		if b.rec.mode != eager {
			b.abandonStep()
		}
		runtime.UnlockOSThread()
		panic(r)
	}
	defer runtime.UnlockOSThread()
	if b.opt.Sync && b.rec.mode == eager {
		b.must(b.drv.StreamSynchronize(b.stream), "")
	}
}

// must panics with err, a *cuda.Error when the failure came from CUDA.
// what, when given, names the operation and shapes in the error.
func (b *Backend) must(err error, what string) {
	if err == nil {
		return
	}
	var ce *cuda.Error
	if errors.As(err, &ce) {
		if what != "" {
			ce.Detail = strings.TrimSpace(ce.Detail + " [" + what + "]")
		}
		if cuda.IsOutOfMemory(ce) && ce.Hint == "" {
			ce.Hint = b.oomHint(0)
		}
		panic(ce)
	}
	if what != "" {
		err = fmt.Errorf("%s: %w", what, err)
	}
	panic(err)
}

// Synchronize waits for all queued work and returns its first error.
func (b *Backend) Synchronize() (err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.drv.CtxSetCurrent(b.ctx); err != nil {
		return err
	}
	return b.drv.StreamSynchronize(b.stream)
}
