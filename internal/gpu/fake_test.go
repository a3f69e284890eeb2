package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	vgg16 "github.com/vgg16/vgg16"
	"github.com/vgg16/vgg16/internal/cuda"
)

// buildFakeCUDA compiles testdata/fakecuda.cpp, with the kernels and their
// host emulation, into one library and names it as each of the four CUDA
// libraries (symbolic links, so they share one state: the driver's
// allocations are what cuBLAS and cuDNN check their operands against).
func buildFakeCUDA(t *testing.T) string {
	t.Helper()
	if ok, _ := cuda.Probe().Usable(); ok {
		t.Skip("a real GPU is usable: the GPU tests run on it instead")
	}
	cxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ not installed: cannot build the stand-in CUDA libraries")
	}
	emu, err := os.ReadFile(filepath.Join("..", "kernels", "testdata", "emu.h"))
	if os.IsNotExist(err) {
		t.Skipf("%v: run the test from its package directory", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fake, err := os.ReadFile(filepath.Join("testdata", "fakecuda.cpp"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "fakecuda.cpp")
	if err := os.WriteFile(src, []byte(string(emu)+vgg16.KernelsSource+string(fake)), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libfakecuda.so")
	out, err := exec.Command(cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", "-shared", "-fPIC",
		"-Wall", "-Wno-unused-function", "-o", lib, src).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("compiling the stand-in CUDA libraries: %v\n%s", err, out)
	}
	for _, name := range []string{"libcuda.so.1", "libcublas.so.12", "libcudnn.so.9", "libnvrtc.so.12"} {
		if err := os.Symlink(lib, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

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
	dir := buildFakeCUDA(t)
	libs, err := cuda.LoadDirs([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for _, p := range []struct {
		name string
		tol  float64
	}{{"fp32", 1e-4}, {"tf32", 5e-3}} {
		t.Run(p.name, func(t *testing.T) {
			strict, _ := parsePrecision(p.name)
			be, err := newWithLibs(libs, Options{Precision: p.name, Sync: true, KernelCache: cache}, strict)
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
				{"MemoryAccounting", testMemoryAccounting},
				{"OutOfMemory", testOutOfMemoryNamesSizeAndBatch},
				{"Convolution", testConvolution},
				{"BatchNorm", testBatchNorm},
				{"MaxPool", testMaxPool},
				{"LRN", testLRN},
				{"Linear", testLinear},
				{"ReLU", testReLU},
				{"Dropout", testDropoutMaskIsTheCPUs},
				{"SoftmaxCrossEntropy", testSoftmaxCrossEntropy},
				{"SGDStep", testSGDStep},
				{"ModelStep", modelStep},
				{"Parity", func(t *testing.T, be *Backend, tol float64) { runParity(t, be, tol) }},
			} {
				t.Run(c.name, func(t *testing.T) { c.f(t, be, p.tol) })
			}
		})
	}
}

// TestFakeCUDAKernelCache: a second backend finds the kernels in the cache.
func TestFakeCUDAKernelCache(t *testing.T) {
	libs, err := cuda.LoadDirs([]string{buildFakeCUDA(t)})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for i, want := range []bool{false, true} {
		be, err := newWithLibs(libs, Options{KernelCache: cache}, false)
		if err != nil {
			t.Fatal(err)
		}
		if be.k.FromCache != want {
			t.Errorf("backend %d: kernels from cache %v, want %v (%s)", i, be.k.FromCache, want, be.k.CachePath)
		}
		be.Close()
	}
}
