//go:build linux && cgo

package gpu

import (
	"github.com/vgg16/vgg16/internal/tensor"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/gpu/gputest"
)

// TestFakeCUDA runs the whole GPU test suite, the model step and the
// PyTorch fixtures on stand-in CUDA libraries that compute on the host
// (testdata/fakecuda.cpp) and run the real kernels.cu through the host
// emulation. It checks the backend's own logic where no GPU is: every
// call's arguments against the headers' prototypes as the stand-ins read
// them, every buffer against its allocation, the row-major GEMM
// transposes against the reference BLAS loop, descriptor kinds and shapes,
// cuDNN operand alignment, workspace sizes, the current context on every
// thread, kernel argument packing, and the numbers against the CPU
// backend. What it cannot check is the real libraries' behaviour.
func TestFakeCUDA(t *testing.T) {
	dir := gputest.BuildFakeCUDA(t)
	libs, err := cuda.LoadDirs([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for _, p := range []struct {
		name string
		tol  float64
	}{{"fp32", 1e-4}, {"tf32", 5e-3}, {"tf32 channels-last", 5e-3}} {
		t.Run(p.name, func(t *testing.T) {
			prec, layout, _ := strings.Cut(p.name, " ")
			be, err := newWithLibs(libs, Options{Precision: prec, Sync: true, KernelCache: cache, ChannelsLast: layout == "channels-last"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := be.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if be.CurrentBytes() != 0 {
					t.Errorf("Close left %d bytes counted", be.CurrentBytes())
				}
			}()
			t.Logf("%s (kernels %s, from cache %v)", be.Name(), be.Info().Kernels, be.k.FromCache)
			if !strings.Contains(be.Name(), "Fake GPU (sm_90, 2 SMs, 8 GiB), CUDA 13.0, cuDNN 9.14.0, cuBLAS 13.1.0") {
				t.Errorf("Name() = %q", be.Name())
			}
			if be.Info().Kernels != "sm_90" {
				t.Errorf("kernels built for %q, want sm_90", be.Info().Kernels)
			}
			for _, c := range []struct {
				name string
				f    func(t *testing.T, be *Backend, tol float64)
			}{
				{"UploadDownloadFillCopy", testUploadDownloadFillCopy},
				{"ImageCopies", testImageCopies},
				{"MemoryAccounting", testMemoryAccounting},
				{"OutOfMemory", testOutOfMemoryNamesSizeAndMemory},
				{"Convolution", testConvolution},
				{"BatchNorm", testBatchNorm},
				{"MaxPool", testMaxPool},
				{"LRN", testLRN},
				{"Linear", testLinear},
				{"ReLU", testReLU},
				{"Dropout", testDropoutMaskIsTheCPUs},
				{"SoftmaxCrossEntropy", testSoftmaxCrossEntropy},
				{"SGDStep", testSGDStep},
				{"Tally", testTally},
				{"ModelStep", modelStep},
				{"ModelStepOddChannels", modelStepOddChannels},
				{"RecordedSteps", testRecordedSteps},
				{"Profile", testProfile},
				{"BatchNormReLU", testBatchNormReLU},
				{"ModelStepFusedBN", withFusedBN(modelStep)},
				{"RecomputeBN", testRecomputeBN},
				{"RecomputeBNFused", withFusedBN(testRecomputeBN)},
				{"SGDInBackward", testSGDInBackward},
				{"ManySGDCalls", testManySGDCalls},
				{"SGDRatesInAStep", testSGDRatesInAStep},
				{"PooledBatchNorm", testPooledBatchNorm},
				{"CropResize", testCropResize},
				{"CropResizeErrors", testCropResizeErrors},
				{"Parity", func(t *testing.T, be *Backend, tol float64) { runParity(t, be, tol) }},
			} {
				t.Run(c.name, func(t *testing.T) { c.f(t, be, p.tol) })
			}
		})
	}
}

// fakeBackend opens a backend with opt on the stand-in libraries, its
// kernels cached in a directory of the test's, closed when the test ends.
func fakeBackend(t *testing.T, opt Options) *Backend {
	t.Helper()
	libs, err := cuda.LoadDirs([]string{gputest.BuildFakeCUDA(t)})
	if err != nil {
		t.Fatal(err)
	}
	opt.KernelCache = t.TempDir()
	be, err := newWithLibs(libs, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// TestFakeCUDABF16 runs the bf16 ops, a model step, recorded steps and
// the PyTorch fixtures on a bf16 backend over the stand-in libraries.
func TestFakeCUDABF16(t *testing.T) {
	be := fakeBackend(t, Options{Precision: "bf16", Sync: true})
	if want := "precision bf16 (bf16 activations, convolutions and GEMM; float32 parameters)"; !strings.HasSuffix(be.Name(), want) {
		t.Errorf("Name() = %q, want it to end with %q", be.Name(), want)
	}
	t.Run("Ops", func(t *testing.T) { testHalfOps(t, be, bf16Tol) })
	t.Run("ModelStep", func(t *testing.T) { modelStepWithin(t, newBF16CPU(), be, bf16StepTol, bf16LaterTol) })
	t.Run("ModelStepOddChannels", func(t *testing.T) {
		modelStepOf(t, configOf(t, "12,M,20,M"), newBF16CPU(), be, bf16StepTol, bf16LaterTol)
	})
	t.Run("RecordedSteps", func(t *testing.T) { testRecordedSteps(t, be, bf16StepTol) })
	t.Run("RecomputeBN", func(t *testing.T) { testRecomputeBN(t, be, bf16StepTol) })
	t.Run("SGDInBackward", func(t *testing.T) { testSGDInBackward(t, be, bf16StepTol) })
	t.Run("PooledBatchNorm", func(t *testing.T) { testPooledBatchNorm(t, be, 0) })
	t.Run("Parity", func(t *testing.T) { runParityBF16(t, be) })
}

// TestFakeCUDABF16Fallback: where cuDNN has no bf16 algorithm for a
// geometry (here: the stand-in refuses fewer than 8 input channels, so the
// first convolution of every model), that convolution runs in float32 and
// the results stay those of bf16 elsewhere.
func TestFakeCUDABF16Fallback(t *testing.T) {
	t.Setenv("FAKECUDA_BF16_MIN_C", "8")
	be := fakeBackend(t, Options{Precision: "bf16", Sync: true})
	t.Run("Ops", func(t *testing.T) { testHalfOps(t, be, bf16Tol) })
	t.Run("ModelStep", func(t *testing.T) { modelStepWithin(t, newBF16CPU(), be, bf16StepTol, bf16LaterTol) })
	fell := 0
	for k, p := range be.desc.convs {
		if k.half && k.ci < 8 {
			for dir := range p.none {
				if p.found[dir] {
					t.Errorf("%s: direction %d found a bf16 algorithm the stand-in refuses", k, dir)
				}
				if p.none[dir] {
					fell++
				}
			}
		}
	}
	if fell == 0 {
		t.Error("no bf16 convolution with fewer than 8 input channels ran: the fallback went untested")
	}
}

// TestFakeCUDAKernelCache: a second backend finds the kernels in the cache.
func TestFakeCUDAKernelCache(t *testing.T) {
	libs, err := cuda.LoadDirs([]string{gputest.BuildFakeCUDA(t)})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for i, want := range []bool{false, true} {
		be, err := newWithLibs(libs, Options{KernelCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		if be.k.FromCache != want {
			t.Errorf("backend %d: kernels from cache %v, want %v (%s)", i, be.k.FromCache, want, be.k.CachePath)
		}
		be.Close()
	}
}

// TestFakeCUDAOptions: a backend opened with TF32 Linear layers and the
// fused batch norm says so in its name and still matches the CPU.
func TestFakeCUDAOptions(t *testing.T) {
	be := fakeBackend(t, Options{TF32Matmul: true, FusedBN: true, Sync: true})
	if want := "precision tf32 (TF32 convolutions and GEMM), fused BN+ReLU"; !strings.HasSuffix(be.Name(), want) {
		t.Errorf("Name() = %q, want it to end with %q", be.Name(), want)
	}
	testLinear(t, be, 5e-3)
	testBatchNormReLU(t, be, 5e-3)
	if _, err := New(Options{MaxWorkspaceMiB: -1}); err == nil || !strings.Contains(err.Error(), "cuDNN workspace of -1 MiB") {
		t.Errorf("a negative workspace: %v", err)
	}
	if _, err := New(Options{Precision: "fp32", ChannelsLast: true}); err == nil || !strings.Contains(err.Error(), "--channels-last with precision fp32") {
		t.Errorf("channels-last in strict fp32: %v", err)
	}
	// Channels-last images always run the fused batch norm, asked for or
	// not: the name and FusedBN (bench's fused_bn) say so.
	cl := fakeBackend(t, Options{ChannelsLast: true, Sync: true})
	if want := "precision tf32 (TF32 convolutions, fp32 GEMM), fused BN+ReLU, channels-last"; !strings.HasSuffix(cl.Name(), want) || !cl.FusedBN() {
		t.Errorf("Name() = %q, want it to end with %q; FusedBN() %v", cl.Name(), want, cl.FusedBN())
	}
	w := newTwin(t, cl, 9)
	x := w.actRandn(1, 2, 3, 4, 4)
	y := w.actZeros(2, 3, 4, 4)
	if msg := panicMessage(func() { cl.LRNForward(y.g, x.g, tensor.DefaultLRN) }); !strings.Contains(msg, "LRN of channels-last activations") {
		t.Errorf("LRN of channels-last images: panic %q", msg)
	}
	// A user can reach it (a flag), so it is an error for the CLI to print,
	// not a bug's stack trace; and the backend says so beforehand.
	func() {
		defer func() {
			if err := tensor.DeviceError(recover()); err == nil {
				t.Error("LRN of channels-last images: the panic is not a device error")
			}
		}()
		cl.LRNForward(y.g, x.g, tensor.DefaultLRN)
	}()
	if !cl.NHWC() || be.NHWC() {
		t.Errorf("NHWC() = %v with --channels-last, %v without", cl.NHWC(), be.NHWC())
	}
	f := w.randn(1, 2, 3, 4, 4)
	if msg := panicMessage(func() { cl.MaxPoolForward(w.actZeros(2, 3, 2, 2).g, f.g, 2, 2) }); !strings.Contains(msg, "mixes channels-last and NCHW images") {
		t.Errorf("max-pool from an NCHW image into a channels-last one: panic %q", msg)
	}
}
