//go:build linux && cgo

package device

import (
	"errors"
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/gpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

func openGPU(o Options) (tensor.Backend, error) {
	be, err := gpu.New(gpu.Options{Device: o.GPU, Precision: o.Precision, NoGraphs: o.NoGraphs, FusedBN: !o.UnfusedBN, MaxWorkspaceMiB: o.Workspace, TF32Matmul: o.TF32Linear,
		ConvAPI: o.ConvAPI, ChannelsLast: o.ChannelsLast, UnfusedPool: o.UnfusedPool})
	var ie *gpu.DeviceIndexError
	if errors.As(err, &ie) { // a driver that sees no GPU is not this error: auto takes the CPU
		return nil, flagError{fmt.Errorf("--gpu %d: %w", o.GPU, err)}
	}
	if err != nil {
		return nil, err // a *gpu.Backend that is nil is not a nil tensor.Backend
	}
	return be, nil
}

// OutOfMemory reports whether err is the GPU's running out of memory,
// which the command that ran can advise on with its own flags.
func OutOfMemory(err error) bool { return cuda.IsOutOfMemory(err) }

// GPUReport describes the NVIDIA driver, GPUs and CUDA libraries that this
// machine offers (for `vgg16 doctor`), and says whether --device auto
// would pick the GPU, or why not.
func GPUReport() (report string, usable bool, why string) {
	r := cuda.Probe()
	usable, why = r.Usable()
	return r.String(), usable, why
}
