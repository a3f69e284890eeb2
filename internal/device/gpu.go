package device

import (
	"github.com/vgg16/vgg16/internal/gpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

func openGPU(o Options) (tensor.Backend, error) {
	return gpu.New(gpu.Options{Device: o.GPU, Precision: o.Precision, NoGraphs: o.NoGraphs, FusedBN: o.FusedBN, MaxWorkspaceMiB: o.Workspace, TF32Matmul: o.TF32Linear,
		ConvAPI: o.ConvAPI, ChannelsLast: o.ChannelsLast, UnfusedPool: o.UnfusedPool})
}
