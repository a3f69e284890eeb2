//go:build linux && cgo

package kernels

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	vgg16 "github.com/vgg16/vgg16"
	"github.com/vgg16/vgg16/internal/cuda"
)

// Block sizes of the launches. redThreads must equal RED_THREADS in
// kernels.cu: the reduction kernels index shared memory by thread.
const (
	threads    = 256
	redThreads = 128
	// nhwcThreads must equal NHWC_THREADS: the channels-last reductions
	// index shared memory by thread, and every channels-last launch needs a
	// block that is a multiple of c/8.
	nhwcThreads = 256
)

// compileOptions are passed to NVRTC besides the architecture: no fused
// multiply-add (results bit for bit the CPU's), and C++17 (kernels.cu uses
// lambdas, which NVRTC 11's default dialect does not take; 12 and 13
// default to C++17 anyway).
var compileOptions = []string{"--fmad=false", "--std=c++17"}

// Options configure Load.
type Options struct {
	// CacheDir holds compiled kernels; "" is os.UserCacheDir()/vgg16/kernels
	// and "off" disables the cache.
	CacheDir string
	// Source replaces kernels.cu (tests).
	Source string
}

// Module is kernels.cu loaded into the current context.
type Module struct {
	// Trace, when set, is called around every kernel launch with the
	// kernel's name, before (done false) and after: the GPU backend's op
	// profiler records CUDA events there to time each kernel.
	Trace func(kernel string, done bool)

	drv       *cuda.Driver
	mod       cuda.Module
	names     map[cuda.Function]string // each kernel's name, for Trace
	maxBlocks uint32
	f         struct {
		reluForward, reluBackward, dropout, sgd, biasAddRows, colSum, xentRows, meanRows          cuda.Function
		bnStats, bnFinish, bnApply, bnInferCoef, bnAffine, bnGradStats, bnGradFinish, bnGradApply cuda.Function
		bnScales                                                                                  cuda.Function
		cropResize, tally, maxPoolForward, maxPoolBackward                                        cuda.Function
		// bfloat16 activations
		castF32BF16, castBF16F32, reluForwardBF16, reluBackwardBF16, dropoutBF16, biasAddRowsBF16, colSumBF16 cuda.Function
		biasGradFinish, xentRowsBF16, tallyBF16                                                               cuda.Function
		bnStatsBF16, bnApplyBF16, bnAffineBF16, bnGradStatsBF16, bnGradApplyBF16                              cuda.Function
		cropResizeBF16                                                                                        cuda.Function
		// channels-last bfloat16 activations
		bnStatsNHWC, bnApplyNHWC, bnAffineNHWC, bnGradStatsNHWC, bnGradApplyNHWC, biasAddNHWC                 cuda.Function
		maxPoolForwardNHWC, maxPoolBackwardNHWC, transposeF32BF16, transposeBF16F32, transposeBF16, foldParts cuda.Function
		// channels-last float32 activations (tf32 with --channels-last)
		bnStatsNHWCF32, bnApplyNHWCF32, bnAffineNHWCF32, bnGradStatsNHWCF32, bnGradApplyNHWCF32, biasAddNHWCF32 cuda.Function
		maxPoolForwardNHWCF32, maxPoolBackwardNHWCF32, transposeF32, cropResizeNHWC                             cuda.Function
		// channels-last batch norm + ReLU fused with a 2x2 max-pool (bf16, float32)
		bnApplyPoolNHWC, bnAffinePoolNHWC, bnGradStatsPoolNHWC, bnGradApplyPoolNHWC             cuda.Function
		bnApplyPoolNHWCF32, bnAffinePoolNHWCF32, bnGradStatsPoolNHWCF32, bnGradApplyPoolNHWCF32 cuda.Function
		bnFoldFinish, bnGradFoldFinish                                                          cuda.Function
	}
	// Target is what was loaded: "sm_90" (CUBIN) or "compute_90" (PTX).
	Target string
	// CachePath is the cache file used or written, "" when caching is off.
	CachePath string
	// FromCache says the image came from the cache rather than NVRTC.
	FromCache bool
}

// Load compiles (or reads from the cache) and loads the kernels for device
// dev, whose context must be current on the calling thread.
func Load(libs *cuda.Libs, dev cuda.Device, opt Options) (*Module, error) {
	src := opt.Source
	if src == "" {
		src = vgg16.KernelsSource
	}
	d := libs.Driver
	major, err := d.DeviceAttribute(dev, cuda.AttrComputeCapabilityMajor)
	if err != nil {
		return nil, err
	}
	minor, err := d.DeviceAttribute(dev, cuda.AttrComputeCapabilityMinor)
	if err != nil {
		return nil, err
	}
	sms, err := d.DeviceAttribute(dev, cuda.AttrMultiprocessorCount)
	if err != nil {
		return nil, err
	}
	archs, err := libs.RTC.SupportedArchs()
	if err != nil {
		return nil, err
	}
	targets, err := chooseTargets(archs, major*10+minor)
	if err != nil {
		return nil, err
	}
	m := &Module{drv: d, maxBlocks: uint32(max(1, sms) * 16)}
	if err := m.loadImage(libs, src, targets, opt.CacheDir); err != nil {
		return nil, err
	}
	if err := m.lookup(); err != nil {
		d.ModuleUnload(m.mod)
		return nil, err
	}
	return m, nil
}

// target is one way of building the kernels for the device.
type target struct {
	arch string // value of --gpu-architecture
	out  cuda.Output
}

// chooseTargets lists what to try, best first: a CUBIN for the device's
// own architecture, then PTX for it, then PTX for the newest architecture
// NVRTC supports below it (the driver JIT-compiles PTX for newer GPUs).
func chooseTargets(archs []int, cc int) ([]target, error) {
	var ts []target
	if slices.Contains(archs, cc) {
		ts = append(ts, target{fmt.Sprintf("sm_%d", cc), cuda.CUBIN}, target{fmt.Sprintf("compute_%d", cc), cuda.PTX})
	}
	best := 0
	for _, a := range archs {
		if a < cc && a > best {
			best = a
		}
	}
	if best > 0 {
		ts = append(ts, target{fmt.Sprintf("compute_%d", best), cuda.PTX})
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("NVRTC supports architectures %v, none at or below the GPU's sm_%d: install a CUDA toolkit (NVRTC) that knows this GPU", archs, cc)
	}
	return ts, nil
}

// loadImage tries each target in turn: the cache, else NVRTC, then
// cuModuleLoadData. It keeps every failure for the error.
func (m *Module) loadImage(libs *cuda.Libs, src string, targets []target, cacheDir string) error {
	var errs []error
	for _, t := range targets {
		path, err := cachePath(libs, src, t, cacheDir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if path != "" {
			if img, err := os.ReadFile(path); err == nil {
				if mod, err := m.drv.ModuleLoadData(img); err == nil {
					m.mod, m.Target, m.CachePath, m.FromCache = mod, t.arch, path, true
					return nil
				}
				os.Remove(path) // stale: rebuild it below
			}
		}
		img, _, err := libs.RTC.Compile(src, "kernels.cu", append([]string{"--gpu-architecture=" + t.arch}, compileOptions...), t.out)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mod, err := m.drv.ModuleLoadData(img)
		if err != nil {
			errs = append(errs, fmt.Errorf("loading kernels built for %s: %w", t.arch, err))
			continue
		}
		m.mod, m.Target, m.CachePath = mod, t.arch, path
		if path != "" {
			WriteCache(path, img)
		}
		return nil
	}
	return fmt.Errorf("kernels.cu: %w", errors.Join(errs...))
}

// cachePath is the cache file of src built for t, "" when caching is off.
func cachePath(libs *cuda.Libs, src string, t target, dir string) (string, error) {
	if dir == "off" {
		return "", nil
	}
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", nil // no home: run without a cache
		}
		dir = filepath.Join(base, "vgg16", "kernels")
	}
	ma, mi, err := libs.RTC.Version()
	if err != nil {
		return "", err
	}
	drv, err := libs.Driver.Version()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, CacheName(src, t.arch, ma*1000+mi*10, drv)), nil
}

// CacheName is the file name of a compiled image: a hash of the source
// and compile options, then the target, NVRTC and driver versions, so that
// any change to one of them misses the cache.
func CacheName(src, arch string, nvrtcVersion, driverVersion int) string {
	h := sha256.New()
	h.Write([]byte(src))
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(compileOptions, " ")))
	ext := "cubin"
	if strings.HasPrefix(arch, "compute_") {
		ext = "ptx"
	}
	return fmt.Sprintf("%s-%s-nvrtc%d-driver%d.%s", hex.EncodeToString(h.Sum(nil))[:24], arch, nvrtcVersion, driverVersion, ext)
}

// WriteCache stores data at path, a cache file (a compiled image, the GPU
// backend's remembered cuDNN engines), through a temporary file and a
// rename, so that a concurrent reader never sees half a file. Failure only
// costs the work the file saves, next time.
func WriteCache(path string, data []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	merr := tmp.Chmod(0o644) // CreateTemp's 0600: a cache is ordinary data
	cerr := tmp.Close()
	if werr != nil || merr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}

func (m *Module) lookup() error {
	m.names = map[cuda.Function]string{}
	for _, k := range []struct {
		name string
		f    *cuda.Function
	}{
		{"relu_forward", &m.f.reluForward},
		{"relu_backward", &m.f.reluBackward},
		{"dropout_apply", &m.f.dropout},
		{"sgd_step", &m.f.sgd},
		{"bias_add_rows", &m.f.biasAddRows},
		{"col_sum", &m.f.colSum},
		{"softmax_xent_rows", &m.f.xentRows},
		{"mean_rows", &m.f.meanRows},
		{"bn_stats", &m.f.bnStats},
		{"bn_finish", &m.f.bnFinish},
		{"bn_scales", &m.f.bnScales},
		{"bn_apply", &m.f.bnApply},
		{"bn_infer_coef", &m.f.bnInferCoef},
		{"bn_affine", &m.f.bnAffine},
		{"bn_grad_stats", &m.f.bnGradStats},
		{"bn_grad_finish", &m.f.bnGradFinish},
		{"bn_grad_apply", &m.f.bnGradApply},
		{"crop_resize", &m.f.cropResize},
		{"tally", &m.f.tally},
		{"cast_f32_bf16", &m.f.castF32BF16},
		{"cast_bf16_f32", &m.f.castBF16F32},
		{"relu_forward_bf16", &m.f.reluForwardBF16},
		{"relu_backward_bf16", &m.f.reluBackwardBF16},
		{"dropout_apply_bf16", &m.f.dropoutBF16},
		{"bias_add_rows_bf16", &m.f.biasAddRowsBF16},
		{"col_sum_bf16", &m.f.colSumBF16},
		{"bias_grad_finish", &m.f.biasGradFinish},
		{"softmax_xent_rows_bf16", &m.f.xentRowsBF16},
		{"tally_bf16", &m.f.tallyBF16},
		{"bn_stats_bf16", &m.f.bnStatsBF16},
		{"bn_apply_bf16", &m.f.bnApplyBF16},
		{"bn_affine_bf16", &m.f.bnAffineBF16},
		{"bn_grad_stats_bf16", &m.f.bnGradStatsBF16},
		{"bn_grad_apply_bf16", &m.f.bnGradApplyBF16},
		{"max_pool_forward", &m.f.maxPoolForward},
		{"max_pool_backward", &m.f.maxPoolBackward},
		{"crop_resize_bf16", &m.f.cropResizeBF16},
		{"bn_stats_nhwc", &m.f.bnStatsNHWC},
		{"bn_apply_nhwc", &m.f.bnApplyNHWC},
		{"bn_affine_nhwc", &m.f.bnAffineNHWC},
		{"bn_grad_stats_nhwc", &m.f.bnGradStatsNHWC},
		{"bn_grad_apply_nhwc", &m.f.bnGradApplyNHWC},
		{"bias_add_nhwc", &m.f.biasAddNHWC},
		{"max_pool_forward_nhwc", &m.f.maxPoolForwardNHWC},
		{"max_pool_backward_nhwc", &m.f.maxPoolBackwardNHWC},
		{"transpose_f32_bf16", &m.f.transposeF32BF16},
		{"transpose_bf16_f32", &m.f.transposeBF16F32},
		{"transpose_bf16", &m.f.transposeBF16},
		{"fold_parts", &m.f.foldParts},
		{"bn_stats_nhwc_f32", &m.f.bnStatsNHWCF32},
		{"bn_apply_nhwc_f32", &m.f.bnApplyNHWCF32},
		{"bn_affine_nhwc_f32", &m.f.bnAffineNHWCF32},
		{"bn_grad_stats_nhwc_f32", &m.f.bnGradStatsNHWCF32},
		{"bn_grad_apply_nhwc_f32", &m.f.bnGradApplyNHWCF32},
		{"bias_add_nhwc_f32", &m.f.biasAddNHWCF32},
		{"max_pool_forward_nhwc_f32", &m.f.maxPoolForwardNHWCF32},
		{"max_pool_backward_nhwc_f32", &m.f.maxPoolBackwardNHWCF32},
		{"transpose_f32", &m.f.transposeF32},
		{"crop_resize_nhwc", &m.f.cropResizeNHWC},
		{"bn_apply_pool_nhwc", &m.f.bnApplyPoolNHWC},
		{"bn_affine_pool_nhwc", &m.f.bnAffinePoolNHWC},
		{"bn_grad_stats_pool_nhwc", &m.f.bnGradStatsPoolNHWC},
		{"bn_grad_apply_pool_nhwc", &m.f.bnGradApplyPoolNHWC},
		{"bn_apply_pool_nhwc_f32", &m.f.bnApplyPoolNHWCF32},
		{"bn_affine_pool_nhwc_f32", &m.f.bnAffinePoolNHWCF32},
		{"bn_grad_stats_pool_nhwc_f32", &m.f.bnGradStatsPoolNHWCF32},
		{"bn_grad_apply_pool_nhwc_f32", &m.f.bnGradApplyPoolNHWCF32},
		{"bn_fold_finish", &m.f.bnFoldFinish},
		{"bn_grad_fold_finish", &m.f.bnGradFoldFinish},
	} {
		f, err := m.drv.ModuleGetFunction(m.mod, k.name)
		if err != nil {
			return err
		}
		*k.f = f
		m.names[f] = k.name
	}
	return nil
}

// Close unloads the module.
func (m *Module) Close() error { return m.drv.ModuleUnload(m.mod) }
