//go:build linux && cgo

// Package gputest builds the stand-in CUDA libraries that the GPU tests run
// on where no GPU is: internal/gpu/testdata/fakecuda.cpp plays the driver,
// cuBLAS, cuDNN and NVRTC on the host and runs the real kernels.cu through
// the host emulation in internal/kernels/testdata/emu.h. Tests only.
package gputest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	vgg16 "github.com/vgg16/vgg16"
	"github.com/vgg16/vgg16/internal/cuda"
)

// BuildFakeCUDA compiles the stand-in into one library and names it as each
// of the four CUDA libraries (symbolic links, so they share one state: the
// driver's allocations are what cuBLAS and cuDNN check their operands
// against), returning the directory for VGG16_CUDA_PATH or cuda.LoadDirs.
// It skips the test where a real GPU is usable or g++ is missing.
func BuildFakeCUDA(t testing.TB) string {
	t.Helper()
	if ok, _ := cuda.Probe().Usable(); ok {
		t.Skip("a real GPU is usable: the GPU tests run on it instead")
	}
	cxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ not installed: cannot build the stand-in CUDA libraries")
	}
	_, here, _, _ := runtime.Caller(0)
	gpuDir := filepath.Dir(filepath.Dir(here))
	emu, err := os.ReadFile(filepath.Join(gpuDir, "..", "kernels", "testdata", "emu.h"))
	if os.IsNotExist(err) {
		t.Skipf("%v: the stand-in's sources are not beside this package", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fake, err := os.ReadFile(filepath.Join(gpuDir, "testdata", "fakecuda.cpp"))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel and cuDNN plan caches the tests fill are theirs alone,
	// not the user's (nor another test package's, running beside them).
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := t.TempDir()
	src := filepath.Join(dir, "fakecuda.cpp")
	if err := os.WriteFile(src, []byte(string(emu)+vgg16.KernelsSource+string(fake)), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libfakecuda.so")
	out, err := exec.Command(cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", "-shared", "-fPIC",
		"-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas", "-o", lib, src).CombinedOutput()
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
