//go:build linux && cgo

package gpu

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// linearDims checks y [N,Out] = x [N,In] · w [Out,In]ᵀ and returns N, In,
// Out.
func linearDims(y, x, w, bias *tensor.Tensor) (n, in, out int) {
	if len(w.Shape) != 2 || len(x.Shape) != 2 {
		panic(fmt.Sprintf("gpu: linear %v·%vᵀ", x.Shape, w.Shape))
	}
	n, in, out = x.Shape[0], w.Shape[1], w.Shape[0]
	if x.Shape[1] != in || y.Size() != n*out || bias.Size() != out {
		panic(fmt.Sprintf("gpu: linear %v·%vᵀ + %v into %v", x.Shape, w.Shape, bias.Shape, y.Shape))
	}
	return n, in, out
}

// The Linear GEMMs on row-major data. cuBLAS is column-major, and a
// row-major [r, c] matrix is the column-major [c, r] matrix, its
// transpose, with leading dimension c. So each row-major product is
// computed as its transpose:
//
//	forward   y[N,Out] = x[N,In]·w[Out,In]ᵀ  ⇔  yᵀ[Out,N] = w·xᵀ:
//	          Sgemm(T, N, m=Out, n=N, k=In, A=w lda=In, B=x ldb=In, C=y ldc=Out)
//	dx        dx[N,In] = dy[N,Out]·w[Out,In]  ⇔  dxᵀ[In,N] = wᵀ·dyᵀ:
//	          Sgemm(N, N, m=In, n=N, k=Out, A=w lda=In, B=dy ldb=Out, C=dx ldc=In)
//	dw        dw[Out,In] = dy[N,Out]ᵀ·x[N,In]  ⇔  dwᵀ[In,Out] = xᵀ·dy:
//	          Sgemm(N, T, m=In, n=Out, k=N, A=x lda=In, B=dy ldb=Out, C=dw ldc=In)
//
// where "A=w lda=In" passes w's memory, which column-major reads as wᵀ.

// LinearForward: y = x·wᵀ + b.
func (b *Backend) LinearForward(y, x, w, bias *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigLinearForward).t(y).t(x).t(w).t(bias)) {
		return
	}
	defer b.op()()
	n, in, out := linearDims(y, x, w, bias)
	if n == 0 || out == 0 {
		return
	}
	if halfOps("linear", x, y) {
		b.linearForwardHalf(y, x, w, bias, n, in, out)
		return
	}
	yp := b.ptr(y)
	b.must(b.blas.Sgemm(b.blasH, cuda.OpT, cuda.OpN, out, n, in, 1, b.ptr(w), in, b.ptr(x), in, 0, yp, out),
		fmt.Sprintf("linear %v·%vᵀ", x.Shape, w.Shape))
	b.must(b.k.BiasAddRows(b.stream, yp, b.ptr(bias), n, out), "linear bias")
}

// LinearBackward: dx (unless nil), dw and db from dy.
func (b *Backend) LinearBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigLinearBackward).t(dx).t(dw).t(db).t(dy).t(x).t(w)) {
		return
	}
	defer b.op()()
	n, in, out := linearDims(dy, x, w, db)
	if dw != nil && dw.Size() != out*in {
		panic(fmt.Sprintf("gpu: linear weight gradient %v for weights %v", dw.Shape, w.Shape))
	}
	if halfOps("linear gradient", x, dy, dx) {
		if dx != nil && dx.Size() != n*in {
			panic(fmt.Sprintf("gpu: linear input gradient %v for input %v", dx.Shape, x.Shape))
		}
		b.linearBackwardHalf(dx, dw, db, dy, x, w, n, in, out)
		return
	}
	what := fmt.Sprintf("linear gradient %v·%vᵀ", x.Shape, w.Shape)
	if dx != nil && n > 0 {
		if dx.Size() != n*in {
			panic(fmt.Sprintf("gpu: linear input gradient %v for input %v", dx.Shape, x.Shape))
		}
		b.must(b.blas.Sgemm(b.blasH, cuda.OpN, cuda.OpN, in, n, out, 1, b.ptr(w), in, b.ptr(dy), out, 0, b.ptr(dx), in), what)
	}
	if dw != nil {
		b.linearWeightGrad(dw, dy, x, 0, n, in, out)
	}
	b.must(b.k.ColSum(b.stream, b.ptr(db), b.ptr(dy), n, out), what)
}

// LinearWeightGrad: rows [row, row+k) of a Linear's weight gradient, the
// rows LinearBackward's GEMM writes, by the same GEMM over k of dy's
// columns.
func (b *Backend) LinearWeightGrad(dw, dy, x *tensor.Tensor, row int) {
	if b.rec.mode != eager && b.recorded(newSig(sigLinearWeightGrad).t(dw).t(dy).t(x).v(uint64(row))) {
		return
	}
	defer b.op()()
	if len(dw.Shape) != 2 || len(dy.Shape) != 2 || len(x.Shape) != 2 || isHalf(dw) {
		panic(fmt.Sprintf("gpu: linear weight gradient %v from dy %v and x %v", dw.Shape, dy.Shape, x.Shape))
	}
	n, in, out, k := x.Shape[0], x.Shape[1], dy.Shape[1], dw.Shape[0]
	if dw.Shape[1] != in || dy.Shape[0] != n || row < 0 || row+k > out {
		panic(fmt.Sprintf("gpu: linear weight gradient %v of rows from %d, for dy %v and x %v", dw.Shape, row, dy.Shape, x.Shape))
	}
	b.linearWeightGrad(dw, dy, x, row, n, in, out)
}

// linearWeightGrad writes dw, rows [row, row+dw.Shape[0]) of the weight
// gradient of a Linear from x [n, in] and dy [n, out] (float32, or bf16
// with float32 dw): dwᵀ = xᵀ·dy[:, row:], dy's columns from row on with
// leading dimension out.
func (b *Backend) linearWeightGrad(dw, dy, x *tensor.Tensor, row, n, in, out int) {
	k := dw.Size() / in
	what := fmt.Sprintf("linear weight gradient %v·%v rows %d-%d", dy.Shape, x.Shape, row, row+k)
	if halfOps("linear gradient", x, dy) {
		b.must(b.blas.GemmEx(b.blasH, cuda.OpN, cuda.OpT, in, k, n, 1, b.ptr(x), cuda.R16BF, in, b.ptr(dy)+cuda.DevicePtr(2*row), cuda.R16BF, out,
			0, b.ptr(dw), cuda.R32F, in), what+" (bf16)")
		return
	}
	b.must(b.blas.Sgemm(b.blasH, cuda.OpN, cuda.OpT, in, k, n, 1, b.ptr(x), in, b.ptr(dy)+cuda.DevicePtr(4*row), out, 0, b.ptr(dw), in), what)
}

// ReLUForward: y = max(x, 0); y may be x.
func (b *Backend) ReLUForward(y, x *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigReLUForward).t(y).t(x)) {
		return
	}
	defer b.op()()
	sameSize("ReLU", x, y)
	half := halfOps("ReLU", x, y)
	b.must(b.k.ReLUForward(b.stream, b.ptr(y), b.ptr(x), x.Size(), half), "ReLU")
}

// ReLUBackward: dx = dy where y > 0; dx may be dy.
func (b *Backend) ReLUBackward(dx, dy, y *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigReLUBackward).t(dx).t(dy).t(y)) {
		return
	}
	defer b.op()()
	sameSize("ReLU gradient", y, dy, dx)
	half := halfOps("ReLU gradient", y, dy, dx)
	b.must(b.k.ReLUBackward(b.stream, b.ptr(dx), b.ptr(dy), b.ptr(y), y.Size(), half), "ReLU gradient")
}

// dropout applies key's mask (tensor.DropoutHash) and the 1/(1-p) scale.
// In a recorded step the kernel reads key from a slot, which each replay
// refills.
func (b *Backend) dropout(dst, src *tensor.Tensor, p float64, key uint64) {
	var keyAt cuda.DevicePtr
	if b.rec.mode != eager {
		keyAt = b.scalar(key)
		if b.recorded(newSig(sigDropout).t(dst).t(src).f(p)) {
			return
		}
	}
	defer b.op()()
	sameSize("dropout", src, dst)
	scale := float32(1 / (1 - p)) // as the CPU backend rounds it
	half := halfOps("dropout", src, dst)
	b.must(b.k.Dropout(b.stream, b.ptr(dst), b.ptr(src), src.Size(), key, keyAt, tensor.DropoutThreshold(p), scale, half), "dropout")
}

// DropoutForward zeroes the elements key's mask drops and scales the rest.
func (b *Backend) DropoutForward(y, x *tensor.Tensor, p float64, key uint64) { b.dropout(y, x, p, key) }

// DropoutBackward applies the same mask and scale to dy.
func (b *Backend) DropoutBackward(dx, dy *tensor.Tensor, p float64, key uint64) {
	b.dropout(dx, dy, p, key)
}

// SoftmaxCrossEntropy: loss[0] = mean cross-entropy with label smoothing,
// and dlogits unless nil. Per-row losses go to a scratch buffer and are
// summed by one block in a fixed order, so the loss is the same every run.
// A label outside [0, C) gives a NaN loss (the CPU backend panics).
func (b *Backend) SoftmaxCrossEntropy(loss, dlogits, logits, labels *tensor.Tensor, smoothing float64) {
	if b.rec.mode != eager && b.recorded(newSig(sigXent).t(loss).t(dlogits).t(logits).t(labels).f(smoothing)) {
		return
	}
	defer b.op()()
	if len(logits.Shape) != 2 || labels.Size() != logits.Shape[0] || loss.Size() < 1 {
		panic(fmt.Sprintf("gpu: cross-entropy of logits %v, labels %v into %v", logits.Shape, labels.Shape, loss.Shape))
	}
	n, c := logits.Shape[0], logits.Shape[1]
	var dl cuda.DevicePtr
	if dlogits != nil {
		sameSize("cross-entropy gradient", logits, dlogits)
		dl = b.ptr(dlogits)
	}
	b.grow(&b.mem.rowLoss, 8*int64(n), "per-sample losses")
	xent := b.k.SoftmaxXent
	if halfOps("cross-entropy", logits, dlogits) {
		xent = b.k.SoftmaxXentBF16
	}
	err := xent(b.stream, b.ptr(loss), dl, b.mem.rowLoss.ptr, b.ptr(logits), b.ptr(labels), n, c, smoothing)
	b.must(err, fmt.Sprintf("cross-entropy %v", logits.Shape))
}

// Tally adds the batch's loss and correct predictions to acc on the
// device (one block; the CPU backend's arithmetic).
func (b *Backend) Tally(acc, loss, logits, labels *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigTally).t(acc).t(loss).t(logits).t(labels)) {
		return
	}
	defer b.op()()
	if len(logits.Shape) != 2 || labels.Size() != logits.Shape[0] || loss.Size() < 1 || acc.Size() < 2 {
		panic(fmt.Sprintf("gpu: tally of logits %v, labels %v, loss %v into %v", logits.Shape, labels.Shape, loss.Shape, acc.Shape))
	}
	tally := b.k.Tally
	if isHalf(logits) {
		tally = b.k.TallyBF16
	}
	b.must(tally(b.stream, b.ptr(acc), b.ptr(loss), b.ptr(logits), b.ptr(labels), logits.Shape[0], logits.Shape[1]), fmt.Sprintf("tally of logits %v", logits.Shape))
}

// SGDStep is torch.optim.SGD's update over all of p, g and m in one
// kernel, with the CPU backend's float32 arithmetic. In a recorded step
// the kernel reads the learning rate from a slot, which each replay
// refills.
func (b *Backend) SGDStep(p, g, m *tensor.Tensor, h tensor.SGD, first bool) {
	lr := float32(h.LR)
	var lrAt cuda.DevicePtr
	if b.rec.mode != eager {
		lrAt = b.lrSlot(lr)
		s := newSig(sigSGD).t(p).t(g).t(m).f(h.Momentum).f(h.WeightDecay).f(h.Dampening)
		if b.recorded(s.b(h.Nesterov).b(first)) {
			return
		}
	}
	defer b.op()()
	sameSize("SGD step", p, g, m)
	err := b.k.SGD(b.stream, b.ptr(p), b.ptr(g), b.ptr(m), p.Size(), lr, lrAt, float32(h.Momentum),
		float32(h.WeightDecay), float32(1-h.Dampening), h.Nesterov, first)
	b.must(err, "SGD step")
}
