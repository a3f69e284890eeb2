//go:build linux && cgo

package gpu

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/kernels"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Batch norm followed by ReLU. By default these are cuDNN's batch norm and
// the ReLU kernel, one after the other. With Options.FusedBN they are the
// project's kernels (kernels.cu, "Batch norm fused with ReLU"): two passes
// over the data forward instead of five, and the ReLU's backward folded
// into batch norm's. At 224x224 cuDNN's NCHW batch norm and the separate
// ReLU take ~35% of a step (docs/PERFORMANCE.md).

// FusedBN reports whether batch norm + ReLU run as the fused kernels:
// asked for, or channels-last images (bf16, Options.ChannelsLast), which
// always run them (fused).
func (b *Backend) FusedBN() bool { return b.opt.FusedBN || b.nhwc }

// bnGeometry is x's geometry for the fused kernels, and the scratch they
// need (partial sums, then per-channel floats) grown to fit.
func (b *Backend) bnGeometry(x *tensor.Tensor, floatsPerChannel int) (kernels.BN, cuda.DevicePtr, cuda.DevicePtr) {
	n, c, h, w := nchw(x)
	var g kernels.BN
	if channelsLast(x) {
		g = kernels.NHWCGeometry(n, c, h, w, b.info.SMs, isHalf(x))
	} else {
		g = kernels.BN{N: n, C: c, HW: h * w, Splits: kernels.Splits(n, c, h*w, b.info.SMs), BF16: isHalf(x)}
	}
	b.grow(&b.mem.bn, g.PartBytes()+int64(4*floatsPerChannel*c), "batch-norm scratch")
	return g, b.mem.bn.ptr, b.mem.bn.ptr + cuda.DevicePtr(g.PartBytes())
}

// fused reports whether batch norm of x runs as the fused kernels: when
// asked, and always for bf16 data (cuDNN's batch norm is float here) and
// channels-last images (the backend gives cuDNN's batch norm NCHW only).
func (b *Backend) fused(x *tensor.Tensor) bool { return b.opt.FusedBN || isHalf(x) || channelsLast(x) }

// BatchNormReLUTrain: batch norm with batch statistics, then ReLU on y.
func (b *Backend) BatchNormReLUTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	if !b.fused(x) {
		b.BatchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps)
		b.ReLUForward(y, y)
		return
	}
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUTrain).t(y).t(x).t(gamma).t(beta).t(runMean).t(runVar).t(saveMean).t(saveInvStd).t(shift).f(momentum).f(eps)) {
		return
	}
	defer b.op()()
	b.fusedBNTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps, true)
}

// fusedBNTrain is batch norm with batch statistics in the project's
// kernels, then ReLU when relu.
func (b *Backend) fusedBNTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64, relu bool) {
	_, c, _, _ := nchw(x)
	sameSize("batch norm", x, y)
	halfOps("batch norm", x, y)
	channels("batch norm", c, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift)
	g, part, scale := b.bnGeometry(x, 1)
	err := b.k.BNTrainReLU(b.stream, g, b.ptr(y), b.ptr(x), b.ptr(gamma), b.ptr(beta), b.ptr(runMean), b.ptr(runVar),
		b.ptr(saveMean), b.ptr(saveInvStd), b.optPtr(shift), part, scale, momentum, eps, relu)
	b.must(err, fmt.Sprintf("batch norm %v", x.Shape))
	b.bnEps[b.ptr(saveInvStd)] = eps
}

// BatchNormReLUApply: BatchNormReLUTrain's y again, from the saved
// statistics. Always the project's kernels, whichever made y: from the
// fused ones (the default) bit for bit, since it computes the scale and
// applies it as they do; from cuDNN's batch norm to rounding.
func (b *Backend) BatchNormReLUApply(y, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUApply).t(y).t(x).t(gamma).t(beta).t(saveMean).t(saveInvStd)) {
		return
	}
	defer b.op()()
	_, c, _, _ := nchw(x)
	sameSize("batch norm", x, y)
	halfOps("batch norm", x, y)
	channels("batch norm", c, gamma, beta, saveMean, saveInvStd)
	g, _, scale := b.bnGeometry(x, 1)
	err := b.k.BNApplyReLU(b.stream, g, b.ptr(y), b.ptr(x), b.ptr(gamma), b.ptr(beta), b.ptr(saveMean), b.ptr(saveInvStd), scale, true)
	b.must(err, fmt.Sprintf("batch norm %v", x.Shape))
}

// BatchNormReLUInfer: batch norm with the running statistics, then ReLU.
func (b *Backend) BatchNormReLUInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	if !b.fused(x) {
		b.BatchNormInfer(y, x, gamma, beta, runMean, runVar, eps)
		b.ReLUForward(y, y)
		return
	}
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUInfer).t(y).t(x).t(gamma).t(beta).t(runMean).t(runVar).f(eps)) {
		return
	}
	defer b.op()()
	b.fusedBNInfer(y, x, gamma, beta, runMean, runVar, eps, true)
}

func (b *Backend) fusedBNInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64, relu bool) {
	_, c, _, _ := nchw(x)
	sameSize("batch norm", x, y)
	halfOps("batch norm", x, y)
	channels("batch norm", c, gamma, beta, runMean, runVar)
	g, _, coef := b.bnGeometry(x, 2)
	err := b.k.BNInferReLU(b.stream, g, b.ptr(y), b.ptr(x), b.ptr(gamma), b.ptr(beta), b.ptr(runMean), b.ptr(runVar),
		coef, coef+cuda.DevicePtr(4*c), eps, relu)
	b.must(err, fmt.Sprintf("batch norm %v", x.Shape))
}

// BatchNormReLUBackward: ReLU's backward through y, then batch norm's.
// The fused kernels tell where the ReLU cut from x, gamma and beta, as the
// forward computed y, and do not read y.
func (b *Backend) BatchNormReLUBackward(dx, dgamma, dbeta, dy, y, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	if !b.fused(x) {
		b.ReLUBackward(dy, dy, y)
		b.BatchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd)
		return
	}
	if b.rec.mode != eager && b.recorded(newSig(sigBNReLUBackward).t(dx).t(dgamma).t(dbeta).t(dy).t(y).t(x).t(gamma).t(beta).t(saveMean).t(saveInvStd)) {
		return
	}
	defer b.op()()
	sameSize("batch norm gradient", x, y)
	halfOps("batch norm gradient", x, y)
	b.fusedBNBackward(dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInvStd)
}

// fusedBNBackward is batch norm's backward, after the ReLU's when beta is
// not nil.
func (b *Backend) fusedBNBackward(dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	_, c, _, _ := nchw(x)
	sameSize("batch norm gradient", x, dy, dx)
	halfOps("batch norm gradient", x, dy, dx)
	var bp cuda.DevicePtr
	if beta != nil {
		bp = b.ptr(beta)
	}
	channels("batch norm gradient", c, dgamma, dbeta, gamma, beta, saveMean, saveInvStd)
	g, part, coef := b.bnGeometry(x, 3)
	err := b.k.BNBackwardReLU(b.stream, g, b.ptr(dx), b.ptr(dgamma), b.ptr(dbeta), b.ptr(dy), b.ptr(x), b.ptr(gamma), bp,
		b.ptr(saveMean), b.ptr(saveInvStd), part, coef, beta != nil)
	b.must(err, fmt.Sprintf("batch norm gradient %v", x.Shape))
}
