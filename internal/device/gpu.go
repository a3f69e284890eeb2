//go:build linux && cgo

package device

import (
	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/gpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

func openGPU(o Options) (tensor.Backend, error) {
	return gpu.New(gpu.Options{Device: o.GPU, Precision: o.Precision, NoGraphs: o.NoGraphs, FusedBN: o.FusedBN, MaxWorkspaceMiB: o.Workspace, TF32Matmul: o.TF32Linear,
		ConvAPI: o.ConvAPI, ChannelsLast: o.ChannelsLast, UnfusedPool: o.UnfusedPool})
}

// GPUReport describes the NVIDIA driver, GPUs and CUDA libraries that this
// machine offers (for `vgg16 doctor`), and says whether --device auto
// would pick the GPU, or why not.
func GPUReport() (report string, usable bool, why string) {
	r := cuda.Probe()
	usable, why = r.Usable()
	return r.String(), usable, why
}
