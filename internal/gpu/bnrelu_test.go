//go:build linux && cgo

package gpu

import (
	"fmt"
	"math"
	"testing"
)

func TestBatchNormReLU(t *testing.T) { precisions(t, testBatchNormReLU) }

// testBatchNormReLU checks batch norm + ReLU as one op against the CPU
// backend, both ways the GPU does it: cuDNN's batch norm and the ReLU
// kernel, and the fused kernels (Options.FusedBN), over shapes from 2x2
// maps (fewer elements per channel than a block takes) to several blocks
// per channel, with and without a shift (a convolution's bias left out).
func testBatchNormReLU(t *testing.T, be *Backend, _ float64) {
	defer func(f bool) { be.opt.FusedBN = f }(be.opt.FusedBN)
	for _, fused := range []bool{false, true} {
		be.opt.FusedBN = fused
		w := newTwin(t, be, 13)
		for i, shape := range [][]int{{5, 3, 2, 2}, {8, 16, 4, 4}, {3, 4, 33, 31}, {6, 10}, {4, 8, 3, 5}} {
			c := shape[1]
			var shift pair
			if i%2 == 1 {
				shift = w.randn(1, c)
			}
			name := fmt.Sprintf("fused %v %v shift %v", fused, shape, shift.c != nil)
			x, runMean, runVar := bnInputs(w, shape)
			gamma, beta := w.randn(1, c), w.randn(1, c)
			saveMean, saveInv := w.zeros(c), w.zeros(c)
			y := w.actZeros(shape...)
			w.c.BatchNormReLUTrain(y.c, x.c, gamma.c, beta.c, runMean.c, runVar.c, saveMean.c, saveInv.c, shift.c, 0.1, 1e-5)
			be.BatchNormReLUTrain(y.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, saveMean.g, saveInv.g, shift.g, 0.1, 1e-5)
			w.check(name+" y", y, 1e-5)
			w.check(name+" running mean", runMean, 1e-5)
			w.check(name+" running var", runVar, 1e-5)
			w.check(name+" saved mean", saveMean, 1e-5)
			w.check(name+" saved inverse std", saveInv, 1e-5)

			// y recomputed from the saved statistics: the forward's y, bit
			// for bit where the fused kernels made it.
			again := w.actZeros(shape...)
			w.c.BatchNormReLUApply(again.c, x.c, gamma.c, beta.c, saveMean.c, saveInv.c)
			be.BatchNormReLUApply(again.g, x.g, gamma.g, beta.g, saveMean.g, saveInv.g)
			w.check(name+" recomputed y", again, 1e-5)
			cy, gy := w.host(y)
			ca, ga := w.host(again)
			if e := relErr(ca, cy); !(e <= 1e-6) {
				t.Errorf("%s: the CPU's recomputed y is %.3g from its forward's", name, e)
			}
			if e := relErr(ga, gy); !(e <= 1e-6) {
				t.Errorf("%s: the GPU's recomputed y is %.3g from its forward's", name, e)
			}
			for i := range gy {
				if be.fused(x.g) && math.Float32bits(ga[i]) != math.Float32bits(gy[i]) {
					t.Errorf("%s: recomputed y[%d] = %v, the fused forward gave %v", name, i, ga[i], gy[i])
					break
				}
			}

			dy := w.actRandn(1, shape...)
			dx, dgamma, dbeta := w.actZeros(shape...), w.zeros(c), w.zeros(c)
			w.c.BatchNormReLUBackward(dx.c, dgamma.c, dbeta.c, dy.c, y.c, x.c, gamma.c, beta.c, saveMean.c, saveInv.c)
			be.BatchNormReLUBackward(dx.g, dgamma.g, dbeta.g, dy.g, y.g, x.g, gamma.g, beta.g, saveMean.g, saveInv.g)
			w.check(name+" dx", dx, 1e-4)
			w.check(name+" dgamma", dgamma, 1e-4)
			w.check(name+" dbeta", dbeta, 1e-5)

			w.c.BatchNormReLUInfer(y.c, x.c, gamma.c, beta.c, runMean.c, runVar.c, 1e-5)
			be.BatchNormReLUInfer(y.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, 1e-5)
			w.check(name+" inference y", y, 1e-5)
		}
	}
}

func TestModelStepFusedBN(t *testing.T)     { precisions(t, withFusedBN(modelStep)) }
func TestRecordedStepsFusedBN(t *testing.T) { precisions(t, withFusedBN(testRecordedSteps)) }

// withFusedBN runs f with the fused batch-norm kernels on.
func withFusedBN(f func(t *testing.T, be *Backend, tol float64)) func(t *testing.T, be *Backend, tol float64) {
	return func(t *testing.T, be *Backend, tol float64) {
		defer func(on bool) { be.opt.FusedBN = on }(be.opt.FusedBN)
		be.opt.FusedBN = true
		f(t, be, tol)
	}
}
