package gpu

import "github.com/vgg16/vgg16/internal/tensor"

// Activation images — tensors from NewActivation viewed with 4 dimensions
// [N, C, H, W] — are stored channels-last (NHWC: ((n·H + y)·W + x)·C + c)
// with precision bf16 always and in tf32 with Options.ChannelsLast: the
// layout of cuDNN's tensor-core convolutions, which in NCHW transpose
// internally, in workspace as large as the tensor, and took twice
// PyTorch's channels_last time at 224x224 in bf16 (docs/PERFORMANCE.md).
// The weight copies the convolutions read are KRSC to match (half.go's
// convWeights16, conv.go's convWeightsKRSC), and their gradients come back
// to float32 KCRS. Batch norm, bias and max-pool run the _nhwc kernels.
// The layout stays inside the backend: Upload and Download transpose on
// the host, Copy between a channels-last image and anything else
// transposes on the device, and the model's flatten asks (ChannelsLast)
// and copies into NCHW rows. Tensors from New (parameters, and callers'
// own) are NCHW; an op given both kinds of image refuses (halfOps).

// channelsLast reports whether t is stored channels-last.
func channelsLast(t *tensor.Tensor) bool {
	m, ok := t.Mem.(*mem)
	return ok && m.nhwc && len(t.Shape) == 4
}

// ChannelsLast implements tensor.Layouts.
func (b *Backend) ChannelsLast(t *tensor.Tensor) bool { return channelsLast(t) }

// nhwcIter walks the elements of a channels-last tensor of images of c
// channels and hw pixels in memory order, giving each one's index in NCHW
// order (small methods, inlined: the host transposes every batch that the
// CPU loader uploads).
type nhwcIter struct{ img, pos, ch, c, hw int }

// nhwcAt starts at element e.
func nhwcAt(e, c, hw int) nhwcIter {
	rem := e % (c * hw)
	return nhwcIter{img: e / (c * hw), pos: rem / c, ch: rem % c, c: c, hw: hw}
}

func (it *nhwcIter) nchw() int { return (it.img*it.c+it.ch)*it.hw + it.pos }

func (it *nhwcIter) next() {
	if it.ch++; it.ch == it.c {
		it.ch = 0
		if it.pos++; it.pos == it.hw {
			it.pos, it.img = 0, it.img+1
		}
	}
}
