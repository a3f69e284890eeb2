//go:build linux && cgo

package gpu

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/tensor"
)

// defaultBNEps is used by BatchNormBackward when it meets saved statistics
// that no BatchNormTrain of this backend wrote.
const defaultBNEps = 1e-5

func sameSize(what string, ts ...*tensor.Tensor) {
	for _, t := range ts[1:] {
		if t.Size() != ts[0].Size() {
			panic(fmt.Sprintf("gpu: %s of %v with %v", what, ts[0].Shape, t.Shape))
		}
	}
}

// channels checks that each of ts (nil: an optional one left out) holds
// one value a channel.
func channels(what string, c int, ts ...*tensor.Tensor) {
	for _, t := range ts {
		if t != nil && t.Size() != c {
			panic(fmt.Sprintf("gpu: %s over %d channels given %v", what, c, t.Shape))
		}
	}
}

// BatchNormTrain is cudnnBatchNormalizationForwardTraining, spatial mode,
// with exponentialAverageFactor = momentum: r = (1-momentum)·r +
// momentum·batch. Like PyTorch (whose CUDA batch norm is this call), cuDNN
// moves the running variance towards the unbiased batch variance n/(n-1),
// normalises with the biased one, and saves the batch mean and
// 1/sqrt(var+eps). cuDNN has no shift: the running mean gets it
// afterwards, r += momentum·shift. bf16 or channels-last x take the
// project's kernels instead.
func (b *Backend) BatchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNTrain).t(y).t(x).t(gamma).t(beta).t(runMean).t(runVar).t(saveMean).t(saveInvStd).t(shift).f(momentum).f(eps)) {
		return
	}
	defer b.op()()
	if isHalf(x) || channelsLast(x) {
		b.fusedBNTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps, false)
		return
	}
	_, c, _, _ := nchw(x)
	sameSize("batch norm", x, y)
	channels("batch norm", c, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift)
	xd, bd := b.imageDesc(x), b.channelDesc(c)
	p := b.stage(in(x), out(y), in(gamma), in(beta), inout(runMean), inout(runVar), out(saveMean), out(saveInvStd))
	err := b.dnn.BNTrain(b.dnnH, xd, p[0], xd, p[1], bd, p[2], p[3], momentum, p[4], p[5], eps, p[6], p[7])
	b.must(err, fmt.Sprintf("batch norm %v", x.Shape))
	b.unstage()
	if shift != nil {
		// The SGD kernel without momentum or decay is r -= lr·shift.
		err := b.k.SGD(b.stream, b.ptr(runMean), b.ptr(shift), 0, c, float32(-momentum), 0, 0, 0, 1, false, false)
		b.must(err, fmt.Sprintf("batch norm %v running mean", x.Shape))
	}
	b.bnEps[b.ptr(saveInvStd)] = eps
}

// BatchNormInfer normalises x with the running statistics.
func (b *Backend) BatchNormInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNInfer).t(y).t(x).t(gamma).t(beta).t(runMean).t(runVar).f(eps)) {
		return
	}
	defer b.op()()
	if isHalf(x) || channelsLast(x) {
		b.fusedBNInfer(y, x, gamma, beta, runMean, runVar, eps, false)
		return
	}
	_, c, _, _ := nchw(x)
	sameSize("batch norm", x, y)
	channels("batch norm", c, gamma, beta, runMean, runVar)
	xd, bd := b.imageDesc(x), b.channelDesc(c)
	p := b.stage(in(x), out(y), in(gamma), in(beta), in(runMean), in(runVar))
	err := b.dnn.BNInfer(b.dnnH, xd, p[0], xd, p[1], bd, p[2], p[3], p[4], p[5], eps)
	b.must(err, fmt.Sprintf("batch norm %v", x.Shape))
	b.unstage()
}

// BatchNormBackward: dx, dgamma, dbeta from the saved statistics of the
// matching BatchNormTrain (and its epsilon).
func (b *Backend) BatchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigBNBackward).t(dx).t(dgamma).t(dbeta).t(dy).t(x).t(gamma).t(saveMean).t(saveInvStd)) {
		return
	}
	defer b.op()()
	if isHalf(x) || channelsLast(x) {
		b.fusedBNBackward(dx, dgamma, dbeta, dy, x, gamma, nil, saveMean, saveInvStd)
		return
	}
	_, c, _, _ := nchw(x)
	sameSize("batch norm gradient", x, dy, dx)
	channels("batch norm gradient", c, dgamma, dbeta, gamma, saveMean, saveInvStd)
	eps, ok := b.bnEps[b.ptr(saveInvStd)]
	if !ok {
		eps = defaultBNEps
	}
	xd, bd := b.imageDesc(x), b.channelDesc(c)
	p := b.stage(in(x), in(dy), out(dx), in(gamma), out(dgamma), out(dbeta), in(saveMean), in(saveInvStd))
	err := b.dnn.BNBackward(b.dnnH, xd, p[0], xd, p[1], xd, p[2], bd, p[3], p[4], p[5], eps, p[6], p[7])
	b.must(err, fmt.Sprintf("batch norm gradient %v", x.Shape))
	b.unstage()
}

// poolShape checks y against x pooled k×k with stride s.
func poolShape(y, x *tensor.Tensor, k, s int) {
	n, c, h, w := nchw(x)
	want := []int{n, c, (h-k)/s + 1, (w-k)/s + 1}
	if len(x.Shape) != 4 || !tensor.SameShape(y.Shape, want) {
		panic(fmt.Sprintf("gpu: max-pool %dx%d/%d of %v into %v", k, k, s, x.Shape, y.Shape))
	}
}

// MaxPoolForward is the max_pool_forward kernel (kernels.cu), NaN
// propagated, as the CPU backend's: one window a thread for VGG's 2x2
// pools, where cuDNN's NCHW pooling took 2.5x longer (H200, 224x224).
func (b *Backend) MaxPoolForward(y, x *tensor.Tensor, k, s int) {
	if b.rec.mode != eager && b.recorded(newSig(sigMaxPoolForward).t(y).t(x).v(uint64(k)).v(uint64(s))) {
		return
	}
	defer b.op()()
	poolShape(y, x, k, s)
	half := halfOps("max-pool", x, y)
	n, c, h, w := nchw(x)
	if channelsLast(x) {
		b.must(b.k.MaxPoolNHWC(b.stream, b.ptr(y), b.ptr(x), n, c, h, w, k, s, half), fmt.Sprintf("max-pool %v", x.Shape))
		return
	}
	if half {
		panic(fmt.Sprintf("gpu: max-pool of bf16 NCHW images %v (bf16 images are channels-last)", x.Shape))
	}
	b.must(b.k.MaxPoolForward(b.stream, b.ptr(y), b.ptr(x), n*c, h, w, k, s), fmt.Sprintf("max-pool %v", x.Shape))
}

// MaxPoolBackward is the max_pool_backward kernel: each window's gradient
// goes to its first maximum in row-major order, as on the CPU.
func (b *Backend) MaxPoolBackward(dx, dy, x, y *tensor.Tensor, k, s int) {
	if b.rec.mode != eager && b.recorded(newSig(sigMaxPoolBackward).t(dx).t(dy).t(x).t(y).v(uint64(k)).v(uint64(s))) {
		return
	}
	defer b.op()()
	poolShape(y, x, k, s)
	sameSize("max-pool gradient", y, dy)
	sameSize("max-pool gradient", x, dx)
	half := halfOps("max-pool gradient", x, y, dy, dx)
	n, c, h, w := nchw(x)
	if channelsLast(x) {
		b.must(b.k.MaxPoolBackwardNHWC(b.stream, b.ptr(dx), b.ptr(dy), b.ptr(x), n, c, h, w, k, s, half), fmt.Sprintf("max-pool gradient %v", x.Shape))
		return
	}
	if half {
		panic(fmt.Sprintf("gpu: max-pool gradient of bf16 NCHW images %v (bf16 images are channels-last)", x.Shape))
	}
	b.must(b.k.MaxPoolBackward(b.stream, b.ptr(dx), b.ptr(dy), b.ptr(x), n*c, h, w, k, s), fmt.Sprintf("max-pool gradient %v", x.Shape))
}

// LRNForward is cudnnLRNCrossChannelForward: y = x / (k + alpha/n·Σx²)^beta,
// cuDNN dividing alpha by the window itself, as PyTorch does.
func (b *Backend) LRNForward(y, x *tensor.Tensor, p tensor.LRN) {
	if b.rec.mode != eager && b.recorded(newSig(sigLRNForward).t(y).t(x).v(uint64(p.Size)).f(p.Alpha).f(p.Beta).f(p.K)) {
		return
	}
	defer b.op()()
	sameSize("LRN", x, y)
	noHalfLRN(x)
	d := b.imageDesc(x)
	ptr := b.stage(in(x), out(y))
	b.must(b.dnn.LRNForward(b.dnnH, b.lrn(p), d, ptr[0], d, ptr[1]), fmt.Sprintf("LRN %v", x.Shape))
	b.unstage()
}

// LRNBackward is cudnnLRNCrossChannelBackward.
func (b *Backend) LRNBackward(dx, dy, x, y *tensor.Tensor, p tensor.LRN) {
	if b.rec.mode != eager && b.recorded(newSig(sigLRNBackward).t(dx).t(dy).t(x).t(y).v(uint64(p.Size)).f(p.Alpha).f(p.Beta).f(p.K)) {
		return
	}
	defer b.op()()
	sameSize("LRN gradient", x, y, dy, dx)
	noHalfLRN(x)
	d := b.imageDesc(x)
	ptr := b.stage(in(y), in(dy), in(x), out(dx))
	b.must(b.dnn.LRNBackward(b.dnnH, b.lrn(p), d, ptr[0], d, ptr[1], d, ptr[2], d, ptr[3]), fmt.Sprintf("LRN gradient %v", x.Shape))
	b.unstage()
}

// noHalfLRN refuses bf16 data and channels-last images: cuDNN's LRN is
// float NCHW here, and only vgg11-lrn has one.
func noHalfLRN(x *tensor.Tensor) {
	if isHalf(x) {
		panic(fmt.Errorf("gpu: LRN of bf16 activations %v: not supported; run vgg11-lrn with --precision tf32 or fp32", x.Shape))
	}
	if channelsLast(x) {
		panic(fmt.Errorf("gpu: LRN of channels-last activations %v: not supported; run vgg11-lrn without --channels-last", x.Shape))
	}
}
