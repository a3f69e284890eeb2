//go:build linux && cgo

package gpu

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/kernels"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Batch norm + ReLU fused with the 2x2/2 max-pool after it
// (tensor.PooledBatchNorm), for channels-last images: the kernels of
// kernels.cu's section of that name recompute the batch norm's output in
// registers, so that it is never stored, and fold the pool's backward into
// the batch norm's. At 224x224 the five pooled layers' outputs are 0.78 GB
// in bf16 at batch 64; the fusion saves writing and reading them forward
// and the pool's gradient backward (4.75 passes over them).

// PoolsBatchNorm implements tensor.PooledBatchNorm: activation images
// stored channels-last, of even size, whose channels suit the packed
// kernels, unless Options.UnfusedPool.
func (b *Backend) PoolsBatchNorm(c, h, w int) bool {
	return b.nhwc && !b.opt.UnfusedPool && kernels.NHWCGeometry(1, c, h, w, b.info.SMs, b.bf16).Poolable()
}

// pooled checks the shapes of a fused op: x [N,C,H,W], y (the pool's
// output or its gradient) [N,C,H/2,W/2], both channels-last.
func (b *Backend) pooled(what string, y, x *tensor.Tensor) {
	poolShape(y, x, 2, 2)
	halfOps(what, x, y)
	if _, c, h, w := nchw(x); !channelsLast(x) || !b.PoolsBatchNorm(c, h, w) {
		panic(fmt.Sprintf("gpu: %s of %v: fused with a 2x2 max-pool for channels-last images of even size and 8k channels only", what, x.Shape))
	}
}

// BatchNormReLUPoolTrain: BatchNormReLUTrain, then a 2x2/2 max-pool into
// y, bit for bit.
func (b *Backend) BatchNormReLUPoolTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUPoolTrain).t(y).t(x).t(gamma).t(beta).t(runMean).t(runVar).t(saveMean).t(saveInvStd).t(shift).f(momentum).f(eps)) {
		return
	}
	defer b.op()()
	b.pooled("batch norm + max-pool", y, x)
	_, c, _, _ := nchw(x)
	channels("batch norm", c, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift)
	g, part, scale := b.bnGeometry(x, 1)
	err := b.k.BNTrainReLUPool(b.stream, g, b.ptr(y), b.ptr(x), b.ptr(gamma), b.ptr(beta), b.ptr(runMean), b.ptr(runVar),
		b.ptr(saveMean), b.ptr(saveInvStd), b.optPtr(shift), part, scale, momentum, eps)
	b.must(err, fmt.Sprintf("batch norm + max-pool %v", x.Shape))
	b.bnEps[b.ptr(saveInvStd)] = eps
}

// BatchNormReLUPoolInfer: BatchNormReLUInfer, then a 2x2/2 max-pool into
// y, bit for bit.
func (b *Backend) BatchNormReLUPoolInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUPoolInfer).t(y).t(x).t(gamma).t(beta).t(runMean).t(runVar).f(eps)) {
		return
	}
	defer b.op()()
	b.pooled("batch norm + max-pool", y, x)
	_, c, _, _ := nchw(x)
	channels("batch norm", c, gamma, beta, runMean, runVar)
	g, _, coef := b.bnGeometry(x, 2)
	err := b.k.BNInferReLUPool(b.stream, g, b.ptr(y), b.ptr(x), b.ptr(gamma), b.ptr(beta), b.ptr(runMean), b.ptr(runVar),
		coef, coef+cuda.DevicePtr(4*c), eps)
	b.must(err, fmt.Sprintf("batch norm + max-pool %v", x.Shape))
}

// BatchNormReLUPoolBackward: the max-pool's backward from dy (the pool's
// output gradient), routed through the batch norm + ReLU output that the
// kernels recompute from x, then BatchNormReLUBackward into dx.
func (b *Backend) BatchNormReLUPoolBackward(dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUPoolBackward).t(dx).t(dgamma).t(dbeta).t(dy).t(x).t(gamma).t(beta).t(saveMean).t(saveInvStd)) {
		return
	}
	defer b.op()()
	b.pooled("batch norm + max-pool gradient", dy, x)
	sameSize("batch norm + max-pool gradient", x, dx)
	halfOps("batch norm + max-pool gradient", x, dx, dy)
	_, c, _, _ := nchw(x)
	channels("batch norm gradient", c, dgamma, dbeta, gamma, beta, saveMean, saveInvStd)
	g, part, coef := b.bnGeometry(x, 3)
	err := b.k.BNBackwardReLUPool(b.stream, g, b.ptr(dx), b.ptr(dgamma), b.ptr(dbeta), b.ptr(dy), b.ptr(x), b.ptr(gamma),
		b.ptr(beta), b.ptr(saveMean), b.ptr(saveInvStd), part, coef)
	b.must(err, fmt.Sprintf("batch norm + max-pool gradient %v", x.Shape))
}
