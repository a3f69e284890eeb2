//go:build linux && cgo

package cuda

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNotFoundNamesLibraryAndFix(t *testing.T) {
	empty := t.TempDir()
	_, err := loadAll([]string{empty}, false)
	if err == nil {
		t.Fatal("loading from an empty directory succeeded")
	}
	msg := err.Error()
	for _, want := range []string{
		"libcuda.so.1 not found", "install the NVIDIA driver",
		"libcublas.so.13 or libcublas.so.12 not found",
		"libcudnn.so.9 not found", "install cuDNN 9",
		"libnvrtc.so.13 or libnvrtc.so.12 not found",
		"VGG16_CUDA_PATH=" + empty, "--device cpu",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Errorf("error %T is not a *LoadError", err)
	}
}

func TestSearchDirsFromEnv(t *testing.T) {
	t.Setenv("VGG16_CUDA_PATH", "/a: /b ::/c")
	got := fmt.Sprint(searchDirs())
	if got != "[/a /b /c]" {
		t.Errorf("searchDirs = %s", got)
	}
}

func TestStatusNames(t *testing.T) {
	for _, c := range []struct {
		lib  string
		code int
		want string
	}{
		{LibDriver, 2, "CUDA_ERROR_OUT_OF_MEMORY"},
		{LibDriver, 100, "CUDA_ERROR_NO_DEVICE"},
		{LibDriver, 700, "CUDA_ERROR_ILLEGAL_ADDRESS"},
		{LibBLAS, 7, "CUBLAS_STATUS_INVALID_VALUE"},
		{LibBLAS, 13, "CUBLAS_STATUS_EXECUTION_FAILED"},
		{LibDNN, 2000, "CUDNN_STATUS_BAD_PARAM"},
		{LibDNN, 3000, "CUDNN_STATUS_NOT_SUPPORTED"},
		{LibDNN, 2003, "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER"},
		{LibDNN, 2999, "CUDNN_STATUS_BAD_PARAM (code 2999)"},
		{LibRTC, 6, "NVRTC_ERROR_COMPILATION"},
		{LibRTC, 77, "NVRTC status 77"},
	} {
		if got := StatusName(c.lib, c.code); got != c.want {
			t.Errorf("StatusName(%s, %d) = %q, want %q", c.lib, c.code, got, c.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	e := newError(LibDriver, "cuMemAlloc_v2", 2)
	e.Hint = "try a smaller --batch"
	if got, want := e.Error(), "cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (out of memory): try a smaller --batch"; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	d := newError(LibDNN, "cudnnConvolutionForward", 2000)
	if got, want := d.Error(), "cudnnConvolutionForward: CUDNN_STATUS_BAD_PARAM"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("step 3: %w", e)
	if !IsOutOfMemory(wrapped) || IsOutOfMemory(d) {
		t.Error("IsOutOfMemory misclassifies")
	}
	if !errors.Is(wrapped, &Error{Lib: LibDriver, Code: 2}) {
		t.Error("errors.Is does not match on library and code")
	}
}

func TestVersionStrings(t *testing.T) {
	if s := CUDAVersionString(13000); s != "13.0" {
		t.Errorf("CUDAVersionString(13000) = %s", s)
	}
	if s := CUDAVersionString(12080); s != "12.8" {
		t.Errorf("CUDAVersionString(12080) = %s", s)
	}
	if s := DNNVersionString(91400); s != "9.14.0" {
		t.Errorf("DNNVersionString(91400) = %s", s)
	}
}

// fakeLib compiles a shared library from C source into dir/name, skipping
// the test when no C compiler is installed.
func fakeLib(t *testing.T, dir, name, src string) {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed: cannot build a fake library")
	}
	c := filepath.Join(t.TempDir(), "fake.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", filepath.Join(dir, name), c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
}

// TestFakeDriverNoDevice loads a stand-in libcuda.so.1 whose every function
// returns CUDA_ERROR_NO_DEVICE, and checks what the user is told.
func TestFakeDriverNoDevice(t *testing.T) {
	dir := t.TempDir()
	var src strings.Builder
	for _, s := range (&Driver{}).table() {
		switch s.name {
		case "cuGetErrorName":
			src.WriteString("int cuGetErrorName(int e, const char** s) { if (e != 100) return 1; *s = \"CUDA_ERROR_NO_DEVICE\"; return 0; }\n")
		case "cuGetErrorString":
			src.WriteString("int cuGetErrorString(int e, const char** s) { if (e != 100) return 1; *s = \"fake driver: no device\"; return 0; }\n")
		default:
			fmt.Fprintf(&src, "int %s(void) { return 100; }\n", s.name)
		}
	}
	fakeLib(t, dir, "libcuda.so.1", src.String())

	d, err := loadDriver([]string{dir}, false)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path() != filepath.Join(dir, "libcuda.so.1") {
		t.Errorf("driver path %q", d.Path())
	}
	err = d.Init()
	if got, want := fmt.Sprint(err), "cuInit: CUDA_ERROR_NO_DEVICE (fake driver: no device)"; got != want {
		t.Errorf("Init error %q, want %q", got, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != ErrNoDevice || ce.Lib != LibDriver {
		t.Errorf("Init error %#v", err)
	}
	_, err = loadAll([]string{dir}, false)
	if err == nil || !strings.Contains(err.Error(), "cuInit: CUDA_ERROR_NO_DEVICE") || !strings.Contains(err.Error(), "libcudnn.so.9 not found") {
		t.Errorf("loadAll error:\n%v", err)
	}
}

// TestFakeDriverMissingSymbol: a library that lacks a function is named
// with the function.
func TestFakeDriverMissingSymbol(t *testing.T) {
	dir := t.TempDir()
	fakeLib(t, dir, "libcuda.so.1", "int cuInit(unsigned f) { return 0; }\n")
	_, err := loadDriver([]string{dir}, false)
	if err == nil || !strings.Contains(err.Error(), "symbol cuDriverGetVersion not found in libcuda.so.1") {
		t.Errorf("error %v", err)
	}
}

// TestFakeDriverUnknownCode: codes the driver cannot name fall back to the
// package's table.
func TestFakeDriverUnknownCode(t *testing.T) {
	dir := t.TempDir()
	var src strings.Builder
	for _, s := range (&Driver{}).table() {
		switch s.name {
		case "cuGetErrorName", "cuGetErrorString":
			fmt.Fprintf(&src, "int %s(int e, const char** s) { *s = 0; return 1; }\n", s.name)
		default:
			fmt.Fprintf(&src, "int %s(void) { return 2; }\n", s.name)
		}
	}
	fakeLib(t, dir, "libcuda.so.1", src.String())
	d, err := loadDriver([]string{dir}, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.MemAlloc(1 << 40)
	if got, want := fmt.Sprint(err), "cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (out of memory)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestProbe runs Probe against whatever is installed: it must not fail,
// and what it prints is logged for a human (and `vgg16 doctor`).
func TestProbe(t *testing.T) {
	r := Probe()
	ok, why := r.Usable()
	t.Logf("usable=%v %s\n%s", ok, why, r)
	if !ok && why == "" {
		t.Error("unusable without a reason")
	}
}

// TestRealLibraries resolves every symbol of whichever real libraries are
// installed (or in $VGG16_CUDA_PATH), which checks the symbol names against
// the libraries themselves.
func TestRealLibraries(t *testing.T) {
	dirs := searchDirs()
	found := 0
	if d, err := loadDriver(dirs, true); err == nil {
		found++
		v, err := d.Version()
		t.Logf("driver %s: version %d (%v), cuInit: %v", d.Path(), v, err, d.Init())
	} else if !isNotFound(err) {
		t.Error(err)
	}
	if b, err := loadBLAS(specBLAS, dirs, true); err == nil {
		found++
		ma, mi, pa, err := b.Property()
		if err != nil {
			t.Error(err)
		}
		t.Logf("cuBLAS %s: %d.%d.%d", b.Path(), ma, mi, pa)
	} else if !isNotFound(err) {
		t.Error(err)
	}
	if d, err := loadDNN(dirs, true); err == nil {
		found++
		t.Logf("cuDNN %s: %s", d.Path(), DNNVersionString(d.Version()))
	} else if !isNotFound(err) {
		t.Error(err)
	}
	if r, err := loadRTC(specRTC, dirs, true); err == nil {
		found++
		ma, mi, err := r.Version()
		archs, aerr := r.SupportedArchs()
		t.Logf("NVRTC %s: %d.%d (%v), archs %v (%v)", r.Path(), ma, mi, err, archs, aerr)
	} else if !isNotFound(err) {
		t.Error(err)
	}
	if found == 0 {
		t.Skip("no CUDA library installed")
	}
}

func isNotFound(err error) bool {
	return err != nil && strings.Contains(err.Error(), " not found (looked in ")
}

// TestForDriver: the CUDA 13 libraries are not tried under a driver that
// supports CUDA 12 only, where CUDA 12's beside them would work; a driver
// older than every name keeps them all, its hint saying why they fail.
func TestForDriver(t *testing.T) {
	for _, c := range []struct {
		spec    libSpec
		version int
		want    string
	}{
		{specBLAS, 12040, "[libcublas.so.12]"},
		{specBLAS, 13000, "[libcublas.so.13 libcublas.so.12]"},
		{specRTC, 12080, "[libnvrtc.so.12]"},
		{specRTC, 11080, "[libnvrtc.so.13 libnvrtc.so.12]"},
	} {
		got := c.spec.forDriver(c.version)
		if fmt.Sprint(got.names) != c.want {
			t.Errorf("%s under driver %d: %v, want %s", c.spec.what, c.version, got.names, c.want)
		}
		if old := c.version < 12000; old != strings.Contains(got.hint, "supports CUDA 11.8 only: update the driver") {
			t.Errorf("%s under driver %d: hint %q", c.spec.what, c.version, got.hint)
		}
	}
	if soMajor("libnvrtc-builtins.so.13.0") != "13" || soMajor("libcuda") != "" {
		t.Errorf("soMajor: %q, %q", soMajor("libnvrtc-builtins.so.13.0"), soMajor("libcuda"))
	}
}
