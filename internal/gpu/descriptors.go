//go:build linux && cgo

package gpu

import (
	"errors"
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// descriptors caches cuDNN descriptors by shape: made the first time a
// shape is seen, reused after.
type descriptors struct {
	tensors map[[6]int]cuda.TensorDesc // format, data type, then the shape
	filters map[[6]int]cuda.FilterDesc
	lrns    map[tensor.LRN]cuda.LRNDesc
	convs   map[convKey]*convPlan
}

func (d *descriptors) init() {
	d.tensors = map[[6]int]cuda.TensorDesc{}
	d.filters = map[[6]int]cuda.FilterDesc{}
	d.lrns = map[tensor.LRN]cuda.LRNDesc{}
	d.convs = map[convKey]*convPlan{}
}

func (d *descriptors) close(dnn *cuda.DNN) error {
	var errs []error
	for _, p := range d.convs {
		for _, c := range p.conv {
			errs = append(errs, dnn.DestroyConv(c))
		}
	}
	for _, t := range d.tensors {
		errs = append(errs, dnn.DestroyTensor(t))
	}
	for _, f := range d.filters {
		errs = append(errs, dnn.DestroyFilter(f))
	}
	for _, l := range d.lrns {
		errs = append(errs, dnn.DestroyLRN(l))
	}
	d.init()
	return errors.Join(errs...)
}

// tensor4 is the NCHW float descriptor of [n, c, h, w].
func (b *Backend) tensor4(n, c, h, w int) cuda.TensorDesc {
	return b.tensor4of(cuda.DNNTensorNCHW, cuda.DNNFloat, n, c, h, w)
}

// tensor4of is the descriptor of [n, c, h, w] in format (NCHW or NHWC) of
// data type dt.
func (b *Backend) tensor4of(format, dt, n, c, h, w int) cuda.TensorDesc {
	key := [6]int{format, dt, n, c, h, w}
	if t, ok := b.desc.tensors[key]; ok {
		return t
	}
	t, err := b.dnn.NewTensor4dOf(format, dt, n, c, h, w)
	b.must(err, "")
	b.desc.tensors[key] = t
	return t
}

// filter4of is the descriptor of convolution weights [k, c, h, w] of data
// type dt, KCRS for format NCHW, KRSC for NHWC.
func (b *Backend) filter4of(format, dt, k, c, h, w int) cuda.FilterDesc {
	key := [6]int{format, dt, k, c, h, w}
	if f, ok := b.desc.filters[key]; ok {
		return f
	}
	f, err := b.dnn.NewFilter4dOf(format, dt, k, c, h, w)
	b.must(err, "")
	b.desc.filters[key] = f
	return f
}

// nchw reads an image tensor's dimensions; [N, C] is taken as [N, C, 1, 1]
// (as the CPU backend does for batch norm).
func nchw(t *tensor.Tensor) (n, c, h, w int) {
	switch len(t.Shape) {
	case 2:
		return t.Shape[0], t.Shape[1], 1, 1
	case 4:
		return t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
	}
	panic(fmt.Sprintf("gpu: want an NCHW tensor, got %v", t.Shape))
}

// imageDesc is the descriptor of an image tensor.
func (b *Backend) imageDesc(t *tensor.Tensor) cuda.TensorDesc {
	n, c, h, w := nchw(t)
	return b.tensor4(n, c, h, w)
}

// channelDesc is the [1, C, 1, 1] descriptor of per-channel tensors
// (biases, batch-norm parameters and statistics).
func (b *Backend) channelDesc(c int) cuda.TensorDesc { return b.tensor4(1, c, 1, 1) }

// lrn is the descriptor of an LRN. cuDNN's window is lookBehind =
// (n-1)/2, lookAhead = n/2 channels (cudnn_ops.h), PyTorch's is n/2
// before and (n-1)/2 after: the same for odd n, so even n is refused.
func (b *Backend) lrn(p tensor.LRN) cuda.LRNDesc {
	if l, ok := b.desc.lrns[p]; ok {
		return l
	}
	if p.Size%2 == 0 || p.Size < cuda.LRNMinN || p.Size > cuda.LRNMaxN || p.K < cuda.LRNMinK || p.Beta < cuda.LRNMinBeta {
		panic(fmt.Sprintf("gpu: LRN %+v not supported by cuDNN: size must be odd and in [%d, %d], k >= %g, beta >= %g",
			p, cuda.LRNMinN, cuda.LRNMaxN, cuda.LRNMinK, cuda.LRNMinBeta))
	}
	l, err := b.dnn.NewLRN(p.Size, p.Alpha, p.Beta, p.K)
	b.must(err, fmt.Sprintf("LRN %+v", p))
	b.desc.lrns[p] = l
	return l
}
