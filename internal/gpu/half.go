//go:build linux && cgo

package gpu

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Precision bf16 (Options.Precision "bf16"), PyTorch's autocast to
// bfloat16: activations — the model's input, every module's output and the
// gradients passed between modules (tensor.NewActivation) — are stored as
// bfloat16, halving the memory traffic of batch norm, ReLU and pooling and
// running convolutions and Linear on bf16 tensor cores with float
// accumulation. Parameters, their gradients, the momentum, batch-norm
// statistics and the loss stay float32: each bf16 convolution or Linear
// reads a bf16 copy of its weights made just before it (a cast kernel into
// scratch), and writes its weight gradient through bf16 scratch
// (convolutions) or directly as float32 (cuBLAS). Batch norm, pooling, ReLU,
// dropout, biases and the loss run as the project's kernels (kernels.cu,
// "bfloat16 activations"), reading and writing bf16 and computing in float.
//
// Every op looks at its operands: bf16 activations take the bf16 path,
// float32 ones the float path (TF32 convolutions), so a bf16 backend still
// runs float32 tensors that a caller made with New.
//
// bf16 images are channels-last (layout.go).

// NewActivation implements tensor.Activations: bfloat16 storage with
// precision bf16, float32 otherwise.
func (b *Backend) NewActivation(shape ...int) *tensor.Tensor {
	t := b.newTensor(b.bf16, shape, "")
	t.Mem.(*mem).nhwc = b.nhwc
	return t
}

// BF16 reports whether activations are stored as bfloat16.
func (b *Backend) BF16() bool { return b.bf16 }

// halfOps checks that the activation operands of one op agree: all bf16
// (the result is true) or all float32, and its images all channels-last
// or all NCHW.
func halfOps(what string, ts ...*tensor.Tensor) bool {
	h := isHalf(ts[0])
	var img *tensor.Tensor
	for _, t := range ts {
		if t == nil {
			continue
		}
		if isHalf(t) != h {
			panic(fmt.Sprintf("gpu: %s mixes bf16 and float32 activations (%v and %v)", what, ts[0], t))
		}
		if len(t.Shape) != 4 {
			continue
		}
		if img != nil && channelsLast(t) != channelsLast(img) {
			panic(fmt.Sprintf("gpu: %s mixes channels-last and NCHW images (%v and %v): make activations with tensor.NewActivation", what, img, t))
		}
		img = t
	}
	return h
}

// weights16 returns a bfloat16 copy of the float32 weights w in the
// scratch buffer s, made by a cast kernel queued now: the op that reads it
// comes next on the stream, before any later cast can overwrite it.
func (b *Backend) weights16(s *devBuf, w *tensor.Tensor) cuda.DevicePtr {
	if isHalf(w) {
		panic(fmt.Sprintf("gpu: weights %v in bf16: parameters stay float32", w))
	}
	b.grow(s, 2*int64(w.Size()), "bf16 copies of weights")
	b.must(b.k.CastF32ToBF16(b.stream, s.ptr, b.ptr(w), w.Size()), "weights to bf16")
	return s.ptr
}

// convWeights is the copy of a convolution's weights w [K, C, R, S] that
// p reads, in the scratch w16: bf16 for a bf16 p (weights16), KRSC for
// p's channels-last operands (float32 or bf16, transposed by one kernel).
func (b *Backend) convWeights(p *convPlan, w *tensor.Tensor) cuda.DevicePtr {
	if !p.key.nhwc {
		return b.weights16(&b.mem.w16, w)
	}
	k, c, elem := w.Shape[0], w.Shape[1], int64(4)
	if p.key.half {
		elem = 2
	}
	b.grow(&b.mem.w16, elem*int64(w.Size()), "KRSC copies of weights")
	b.must(b.k.Transpose(b.stream, b.mem.w16.ptr, b.ptr(w), k, c, w.Size()/(k*c), p.key.half, false), "weights to KRSC")
	return b.mem.w16.ptr
}

// convGrad32 writes dw (float32 KCRS) from the weight gradient dw16 that
// cuDNN left in p's filter layout and precision.
func (b *Backend) convGrad32(p *convPlan, dw *tensor.Tensor, dw16 cuda.DevicePtr) {
	if !p.key.nhwc {
		b.must(b.k.CastBF16ToF32(b.stream, b.ptr(dw), dw16, dw.Size()), p.key.String())
		return
	}
	k, c := dw.Shape[0], dw.Shape[1]
	b.must(b.k.Transpose(b.stream, b.ptr(dw), dw16, k, dw.Size()/(k*c), c, false, p.key.half), p.key.String())
}

// convForwardHalf: y = conv(x, w) + bias over bf16 x and y.
func (b *Backend) convForwardHalf(p *convPlan, y, x, w, bias *tensor.Tensor) {
	if !b.findAlgorithm(p, cuda.ConvForward) {
		b.convForwardVia32(p, y, x, w, bias)
		return
	}
	w16 := b.convWeights(p, w)
	ptr := b.stage(in(x), out(y))
	b.run(p, cuda.ConvForward, ptr[0], w16, ptr[1])
	b.unstage()
	b.addBias(p, y, bias)
}

// convBackwardDataHalf: dx from bf16 dy and (a bf16 copy of) w.
func (b *Backend) convBackwardDataHalf(p *convPlan, dx, dy, w *tensor.Tensor) {
	if !b.findAlgorithm(p, cuda.ConvBackwardData) {
		b.convBackwardDataVia32(p, dx, dy, w)
		return
	}
	w16 := b.convWeights(p, w)
	ptr := b.stage(in(dy), out(dx))
	b.run(p, cuda.ConvBackwardData, w16, ptr[0], ptr[1])
	b.unstage()
}

// convBackwardFilterHalf: dw (float32) through bf16 scratch, db summed from
// bf16 dy in float.
func (b *Backend) convBackwardFilterHalf(p *convPlan, dw, db, x, dy *tensor.Tensor) {
	if !b.findAlgorithm(p, cuda.ConvBackwardFilter) {
		b.convBackwardFilterVia32(p, dw, db, x, dy)
		return
	}
	b.grow(&b.mem.dw16, 2*int64(dw.Size()), "bf16 weight gradients")
	ptr := b.stage(in(x), in(dy))
	b.run(p, cuda.ConvBackwardFilter, ptr[0], ptr[1], b.mem.dw16.ptr)
	b.unstage()
	b.convGrad32(p, dw, b.mem.dw16.ptr)
	b.biasGrad(p, db, dy)
}

// linearChunk bounds the bf16 copy of a Linear's weights (elements): the
// weights are cast and multiplied a chunk of rows at a time, so the copy
// of VGG16's first Linear at 224x224 (4096 x 25088) takes 16 MiB of scratch
// instead of 196 (and of the second at 32x32, 16 instead of 32). Smaller
// chunks would cost time: the input gradient adds up the chunks' products
// in float32, one more pass over it a chunk (at 224x224, 6.4 MB each).
var linearChunk = 1 << 23

// linearRows is how many rows of a Linear's weights [out, in] go in one
// chunk: all of them where they fit, else a multiple of 64 (so that each
// chunk's outputs start 128-byte aligned) where that fits.
func linearRows(in, out int) int {
	rows := max(1, linearChunk/in)
	if rows >= 64 {
		rows &^= 63
	}
	return min(rows, out)
}

// linearForwardHalf: y = x·wᵀ + b with bf16 x and y (see ops.go for the
// row-major to column-major mapping), a chunk of w's rows (y's columns)
// at a time.
func (b *Backend) linearForwardHalf(y, x, w, bias *tensor.Tensor, n, in, out int) {
	rows := linearRows(in, out)
	for r := 0; r < out; r += rows {
		k := min(rows, out-r)
		w16 := b.weightRows16(w, r, k, in)
		b.must(b.blas.GemmEx(b.blasH, cuda.OpT, cuda.OpN, k, n, in, 1, w16, cuda.R16BF, in, b.ptr(x), cuda.R16BF, in,
			0, b.ptr(y)+cuda.DevicePtr(2*r), cuda.R16BF, out), fmt.Sprintf("linear %v·%vᵀ (bf16)", x.Shape, w.Shape))
	}
	b.must(b.k.BiasAddRowsBF16(b.stream, b.ptr(y), b.ptr(bias), n, out), "linear bias")
}

// weightRows16 casts rows [r, r+k) of the float32 weights w [out, in] to
// bf16 in the scratch w16 (see weights16).
func (b *Backend) weightRows16(w *tensor.Tensor, r, k, in int) cuda.DevicePtr {
	return b.weights16(&b.mem.w16, w.View(r*in, k*in))
}

// linearBackwardHalf: dx (bf16, unless nil), dw (float32, straight from
// cuBLAS, unless nil), db from bf16 dy. dx sums over all of w's rows: chunked, the
// chunks' products add up in float32 scratch, rounded to bf16 once at the
// end, as cuBLAS rounds the whole product.
func (b *Backend) linearBackwardHalf(dx, dw, db, dy, x, w *tensor.Tensor, n, in, out int) {
	what := fmt.Sprintf("linear gradient %v·%vᵀ (bf16)", x.Shape, w.Shape)
	if dx != nil && n > 0 {
		rows := linearRows(in, out)
		if rows == out {
			w16 := b.weights16(&b.mem.w16, w)
			b.must(b.blas.GemmEx(b.blasH, cuda.OpN, cuda.OpN, in, n, out, 1, w16, cuda.R16BF, in, b.ptr(dy), cuda.R16BF, out,
				0, b.ptr(dx), cuda.R16BF, in), what)
		} else {
			b.grow(&b.mem.f32a, 4*int64(n*in), "float32 sums of a Linear's input gradient")
			for r := 0; r < out; r += rows {
				k := min(rows, out-r)
				w16, beta := b.weightRows16(w, r, k, in), float32(1)
				if r == 0 {
					beta = 0
				}
				b.must(b.blas.GemmEx(b.blasH, cuda.OpN, cuda.OpN, in, n, k, 1, w16, cuda.R16BF, in, b.ptr(dy)+cuda.DevicePtr(2*r), cuda.R16BF, out,
					beta, b.mem.f32a.ptr, cuda.R32F, in), what)
			}
			b.must(b.k.CastF32ToBF16(b.stream, b.ptr(dx), b.mem.f32a.ptr, n*in), what)
		}
	}
	if dw != nil {
		b.linearWeightGrad(dw, dy, x, 0, n, in, out)
	}
	b.must(b.k.ColSumBF16(b.stream, b.ptr(db), b.ptr(dy), n, out), what)
}

// A bf16 geometry for which cuDNN offers no algorithm in some direction
// (some versions have none for a few input channels) runs that direction
// in float32: its bf16 operands and the bf16 copy of its weights are
// widened into scratch, the float32 plan of the same geometry runs (TF32,
// which holds bf16 values exactly), and the result is rounded to bf16 as
// the bf16 path rounds it. It costs the float32 copies; the rest of the
// network stays bf16.

// plan32 is the float32 plan of p's geometry.
func (b *Backend) plan32(p *convPlan) *convPlan {
	k := p.key
	k.half = false
	return b.planFor(k)
}

// widen casts the bf16 tensor t into the float32 scratch s, grown to fit
// beforehand by the caller.
func (b *Backend) widen(s *devBuf, t *tensor.Tensor) cuda.DevicePtr {
	b.must(b.k.CastBF16ToF32(b.stream, s.ptr, b.ptr(t), t.Size()), "bf16 to float32")
	return s.ptr
}

// weights32 is w as the bf16 path sees it: rounded to bf16 (KRSC for
// channels-last p), widened back into the float32 scratch f32c.
func (b *Backend) weights32(p *convPlan, w *tensor.Tensor) cuda.DevicePtr {
	w16 := b.convWeights(p, w)
	b.grow(&b.mem.f32c, 4*int64(w.Size()), "float32 copies for a bf16 convolution")
	b.must(b.k.CastBF16ToF32(b.stream, b.mem.f32c.ptr, w16, w.Size()), "bf16 to float32")
	return b.mem.f32c.ptr
}

func (b *Backend) convForwardVia32(p *convPlan, y, x, w, bias *tensor.Tensor) {
	q := b.plan32(p)
	b.algorithm(q, cuda.ConvForward)
	b.grow(&b.mem.f32a, 4*int64(x.Size()), "float32 copies for a bf16 convolution")
	b.grow(&b.mem.f32b, 4*int64(y.Size()), "float32 copies for a bf16 convolution")
	w32 := b.weights32(p, w)
	x32 := b.widen(&b.mem.f32a, x)
	b.run(q, cuda.ConvForward, x32, w32, b.mem.f32b.ptr)
	b.must(b.k.CastF32ToBF16(b.stream, b.ptr(y), b.mem.f32b.ptr, y.Size()), q.key.String())
	b.addBias(p, y, bias)
}

func (b *Backend) convBackwardDataVia32(p *convPlan, dx, dy, w *tensor.Tensor) {
	q := b.plan32(p)
	b.algorithm(q, cuda.ConvBackwardData)
	b.grow(&b.mem.f32a, 4*int64(dy.Size()), "float32 copies for a bf16 convolution")
	b.grow(&b.mem.f32b, 4*int64(dx.Size()), "float32 copies for a bf16 convolution")
	w32 := b.weights32(p, w)
	dy32 := b.widen(&b.mem.f32a, dy)
	b.run(q, cuda.ConvBackwardData, w32, dy32, b.mem.f32b.ptr)
	b.must(b.k.CastF32ToBF16(b.stream, b.ptr(dx), b.mem.f32b.ptr, dx.Size()), q.key.String())
}

func (b *Backend) convBackwardFilterVia32(p *convPlan, dw, db, x, dy *tensor.Tensor) {
	q := b.plan32(p)
	b.algorithm(q, cuda.ConvBackwardFilter)
	b.grow(&b.mem.f32a, 4*int64(x.Size()), "float32 copies for a bf16 convolution")
	b.grow(&b.mem.f32b, 4*int64(dy.Size()), "float32 copies for a bf16 convolution")
	b.grow(&b.mem.f32c, 4*int64(dw.Size()), "float32 copies for a bf16 convolution")
	b.grow(&b.mem.dw16, 2*int64(dw.Size()), "bf16 weight gradients")
	x32, dy32 := b.widen(&b.mem.f32a, x), b.widen(&b.mem.f32b, dy)
	b.run(q, cuda.ConvBackwardFilter, x32, dy32, b.mem.f32c.ptr)
	// Through bf16, as the bf16 path's weight gradient goes.
	b.must(b.k.CastF32ToBF16(b.stream, b.mem.dw16.ptr, b.mem.f32c.ptr, dw.Size()), q.key.String())
	b.convGrad32(p, dw, b.mem.dw16.ptr)
	b.biasGrad(p, db, dy)
}
