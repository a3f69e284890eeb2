//go:build linux && cgo

package gpu

import "github.com/vgg16/vgg16/internal/tensor"

// Activation images — tensors from NewActivation viewed with 4 dimensions
// [N, C, H, W] — are stored channels-last (NHWC: ((n·H + y)·W + x)·C + c)
// with precision bf16 always and in tf32 with Options.ChannelsLast: the
// layout of cuDNN's tensor-core convolutions, which in NCHW transpose
// internally, in workspace as large as the tensor, and took twice
// PyTorch's channels_last time at 224x224 in bf16 (docs/PERFORMANCE.md).
// The weight copies the convolutions read are KRSC to match (half.go's
// convWeights), and their gradients come back
// to float32 KCRS. Batch norm, bias and max-pool run the _nhwc kernels.
// The layout stays inside the backend: Upload and Download go through an
// NCHW copy transposed on the device, Copy between a channels-last image and anything else
// transposes on the device, and the model's flatten asks (ChannelsLast)
// and copies into NCHW rows. Tensors from New (parameters, and callers'
// own) are NCHW; an op given both kinds of image refuses (halfOps).

// channelsLast reports whether t is stored channels-last.
func channelsLast(t *tensor.Tensor) bool {
	m, ok := t.Mem.(*mem)
	return ok && m.nhwc && len(t.Shape) == 4
}

// NHWC reports whether b stores activation images channels-last (bf16,
// or Options.ChannelsLast), so that a caller can refuse, before it runs, a
// model with a layer that takes NCHW only (LRN).
func (b *Backend) NHWC() bool { return b.nhwc }

// ChannelsLast implements tensor.Layouts.
func (b *Backend) ChannelsLast(t *tensor.Tensor) bool { return channelsLast(t) }

// nchwScratch is a tensor of t's shape and element type over the scratch
// b.mem.nchw, stored NCHW: Upload and Download move a channels-last image
// through it, transposing on the device.
func (b *Backend) nchwScratch(t *tensor.Tensor) *tensor.Tensor {
	b.grow(&b.mem.nchw, nbytes(t), "an NCHW copy of an image to transfer")
	return &tensor.Tensor{Shape: t.Shape, Mem: &mem{b: b, ptr: b.mem.nchw.ptr, n: t.Size(), half: isHalf(t)}}
}
