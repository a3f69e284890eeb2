//go:build linux && cgo

package gpu

import (
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// bf16CPU is the CPU backend made to round as the GPU's bf16 precision
// does: every activation an op writes is rounded to bf16, and convolutions
// and Linear layers compute with their weights rounded to bf16 (the
// float32 weights themselves stay as they are). It is the reference a
// bf16 run is held to: PyTorch's float64 fixtures differ from both by the
// rounding itself.
type bf16CPU struct{ *cpu.Backend }

func newBF16CPU() bf16CPU { return bf16CPU{cpu.New()} }

func roundT(ts ...*tensor.Tensor) {
	for _, t := range ts {
		if t != nil {
			d := cpu.Data(t)
			for i, v := range d {
				d[i] = tensor.RoundBF16(v)
			}
		}
	}
}

// w16 is a rounded copy of weights w.
func (b bf16CPU) w16(w *tensor.Tensor) *tensor.Tensor {
	c := b.New(w.Shape...)
	copy(cpu.Data(c), cpu.Data(w))
	roundT(c)
	return c
}

func (b bf16CPU) Upload(dst *tensor.Tensor, src []float32) { b.Backend.Upload(dst, src) }

// NewActivation marks nothing (CPU tensors are all float32): the ops below
// round what they write.
func (b bf16CPU) NewActivation(shape ...int) *tensor.Tensor { return b.New(shape...) }

func (b bf16CPU) ConvForward(y, x, w, bias *tensor.Tensor, pad int) {
	b.Backend.ConvForward(y, x, b.w16(w), bias, pad)
	roundT(y)
}

func (b bf16CPU) ConvBackward(dx, dw, db, x, dy, w *tensor.Tensor, pad int) {
	b.Backend.ConvBackward(dx, dw, db, x, dy, b.w16(w), pad)
	roundT(dx, dw) // the GPU's weight gradient passes through bf16 scratch
}

func (b bf16CPU) BatchNormReLUTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	b.Backend.BatchNormReLUTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps)
	roundT(y)
}

func (b bf16CPU) BatchNormReLUApply(y, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	b.Backend.BatchNormReLUApply(y, x, gamma, beta, saveMean, saveInvStd)
	roundT(y)
}

func (b bf16CPU) BatchNormReLUInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	b.Backend.BatchNormReLUInfer(y, x, gamma, beta, runMean, runVar, eps)
	roundT(y)
}

func (b bf16CPU) BatchNormReLUBackward(dx, dgamma, dbeta, dy, y, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	b.Backend.BatchNormReLUBackward(dx, dgamma, dbeta, dy, y, x, gamma, beta, saveMean, saveInvStd)
	roundT(dx)
}

func (b bf16CPU) LinearForward(y, x, w, bias *tensor.Tensor) {
	b.Backend.LinearForward(y, x, b.w16(w), bias)
	roundT(y)
}

func (b bf16CPU) LinearBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	b.Backend.LinearBackward(dx, dw, db, dy, x, b.w16(w))
	roundT(dx)
}

func (b bf16CPU) DropoutForward(y, x *tensor.Tensor, p float64, key uint64) {
	b.Backend.DropoutForward(y, x, p, key)
	roundT(y)
}

func (b bf16CPU) DropoutBackward(dx, dy *tensor.Tensor, p float64, key uint64) {
	b.Backend.DropoutBackward(dx, dy, p, key)
	roundT(dx)
}

func (b bf16CPU) SoftmaxCrossEntropy(loss, dlogits, logits, labels *tensor.Tensor, smoothing float64) {
	b.Backend.SoftmaxCrossEntropy(loss, dlogits, logits, labels, smoothing)
	roundT(dlogits)
}
