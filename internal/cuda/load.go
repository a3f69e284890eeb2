//go:build linux && cgo

package cuda

import (
	"errors"
	"fmt"
	"sync"
)

// The libraries, as Load looks for them.
var (
	specDriver = libSpec{
		names: []string{"libcuda.so.1"},
		what:  LibDriver,
		hint:  "install the NVIDIA driver (in Docker, run with --gpus all)",
	}
	specBLAS = libSpec{
		names:      []string{"libcublas.so.13", "libcublas.so.12"},
		what:       LibBLAS,
		hint:       "install cuBLAS from CUDA 13 or 12 (libcublas)",
		companions: []string{"libcublasLt.so.{major}"},
	}
	// cuDNN 9's libcudnn is a shim that opens its sub-libraries by soname
	// as it needs them, libcudnn_graph (which the others need) first.
	specDNN = libSpec{
		names: []string{"libcudnn.so.9"},
		what:  LibDNN,
		hint:  "install cuDNN 9",
		// In the order they need each other; not adv (RNNs, attention).
		companions: []string{"libcudnn_graph.so.{major}", "libcudnn_ops.so.{major}", "libcudnn_cnn.so.{major}",
			"libcudnn_heuristic.so.{major}", "libcudnn_engines_precompiled.so.{major}", "libcudnn_engines_runtime_compiled.so.{major}"},
	}
	// Where the shim lacks a function: the sub-libraries that hold them
	// (handles, versions, errors and the backend API in graph).
	specDNNSub = []libSpec{
		{names: []string{"libcudnn_graph.so.9"}, what: LibDNN, hint: "install cuDNN 9"},
		{names: []string{"libcudnn_ops.so.9"}, what: LibDNN, hint: "install cuDNN 9"},
		{names: []string{"libcudnn_cnn.so.9"}, what: LibDNN, hint: "install cuDNN 9"},
	}
	specRTC = libSpec{
		names:      []string{"libnvrtc.so.13", "libnvrtc.so.12"},
		what:       LibRTC,
		hint:       "install NVRTC from CUDA 13 or 12 (libnvrtc)",
		companions: []string{"libnvrtc-builtins.so.{major}*"},
	}
)

// Libs is every library the GPU backend needs, loaded and with cuInit done.
type Libs struct {
	Driver *Driver
	BLAS   *BLAS
	DNN    *DNN
	RTC    *RTC
}

var loaded struct {
	once sync.Once
	libs *Libs
	err  error
}

// Load opens the driver, cuBLAS, cuDNN and NVRTC, resolves every function
// the project uses and initialises the driver. It does the work once; later
// calls return the first call's result. The error says which library or
// symbol is missing and how to get it.
func Load() (*Libs, error) {
	loaded.once.Do(func() {
		loaded.libs, loaded.err = loadAll(searchDirs(), true)
	})
	return loaded.libs, loaded.err
}

// loadAll loads everything from dirs (and the system path when system is
// set), reporting every missing library at once.
func loadAll(dirs []string, system bool) (*Libs, error) {
	var l Libs
	var errs []error
	var err error
	blas, rtc := specBLAS, specRTC
	if l.Driver, err = loadDriver(dirs, system); err == nil {
		if v, verr := l.Driver.Version(); verr == nil {
			blas, rtc = toolkitSpecs(v)
		}
		if err = l.Driver.Init(); err != nil {
			var ce *Error
			if errors.As(err, &ce) {
				ce.Hint = "the NVIDIA driver is installed but cannot use a GPU (in Docker, run with --gpus all), or run with --device cpu"
			}
		}
	}
	errs = append(errs, err)
	l.BLAS, err = loadBLAS(blas, dirs, system)
	errs = append(errs, err)
	l.DNN, err = loadDNN(dirs, system)
	errs = append(errs, err)
	l.RTC, err = loadRTC(rtc, dirs, system)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &l, nil
}

// toolkitSpecs are cuBLAS's and NVRTC's specs for a driver of CUDA
// version v (cuDriverGetVersion's; 0 where unknown: all names).
func toolkitSpecs(v int) (blas, rtc libSpec) {
	if v <= 0 {
		return specBLAS, specRTC
	}
	return specBLAS.forDriver(v), specRTC.forDriver(v)
}

func loadDriver(dirs []string, system bool) (*Driver, error) {
	l, err := openLib(specDriver, dirs, system)
	if err != nil {
		return nil, err
	}
	d := &Driver{lib: l}
	return d, l.resolve(d.table())
}

func loadBLAS(spec libSpec, dirs []string, system bool) (*BLAS, error) {
	l, err := openLib(spec, dirs, system)
	if err != nil {
		return nil, err
	}
	b := &BLAS{lib: l}
	return b, l.resolve(b.table())
}

// loadDNN opens cuDNN 9's shim and, if it lacks any legacy function (a
// packaging that ships the sub-libraries alone), cudnn_ops and cudnn_cnn.
func loadDNN(dirs []string, system bool) (*DNN, error) {
	l, err := openLib(specDNN, dirs, system)
	if err != nil {
		return nil, err
	}
	d := &DNN{lib: l}
	if err := l.resolve(d.table()); err == nil {
		return d, checkDNNVersion(d)
	}
	for _, spec := range specDNNSub {
		if sub, err := openLib(spec, dirs, system); err == nil {
			l.fallbacks = append(l.fallbacks, sub)
		}
	}
	if err := l.resolve(d.table()); err != nil {
		return nil, err
	}
	return d, checkDNNVersion(d)
}

// checkDNNVersion refuses a cuDNN other than 9: the status codes and the
// legacy API this package declares are cuDNN 9's.
func checkDNNVersion(d *DNN) error {
	if v := d.Version(); v < 90000 || v >= 100000 {
		return &LoadError{Lib: LibDNN, Msg: fmt.Sprintf("%s reports cuDNN version %d, want 9.x: install cuDNN 9, or run with --device cpu", d.lib.path, v)}
	}
	return nil
}

func loadRTC(spec libSpec, dirs []string, system bool) (*RTC, error) {
	l, err := openLib(spec, dirs, system)
	if err != nil {
		return nil, err
	}
	r := &RTC{lib: l}
	return r, l.resolve(r.table())
}

// LoadRTC loads NVRTC alone, which needs no GPU: enough to check that the
// kernels compile (tests, `vgg16 doctor`).
func LoadRTC() (*RTC, error) { return loadRTC(specRTC, searchDirs(), true) }

// LoadRTCFrom loads NVRTC from dirs only (tests).
func LoadRTCFrom(dirs []string) (*RTC, error) { return loadRTC(specRTC, dirs, false) }

// LoadDirs loads every library from dirs only, never the system path, and
// without Load's caching: for tests that run the backends on stand-in
// libraries.
func LoadDirs(dirs []string) (*Libs, error) { return loadAll(dirs, false) }
