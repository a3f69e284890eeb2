//go:build linux && cgo

package gpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/vgg16/vgg16/internal/tensor"
)

// TestPooledBatchNorm checks the ops that fuse a 2x2 max-pool into batch
// norm + ReLU (pool.go) against the same backend's separate ops, for
// channels-last images in float32 and bf16: forward, the running and
// saved statistics and inference bit for bit; backward to the rounding
// that a different order of the sums gives. Inputs on a coarse grid make
// ties within windows (the first maximum must win) and whole windows the
// ReLU zeroes.
func TestPooledBatchNorm(t *testing.T) {
	for _, prec := range []string{"tf32", "tf32 channels-last", "bf16"} {
		t.Run(prec, func(t *testing.T) { testPooledBatchNorm(t, gpuBackend(t, prec), 0) })
	}
}

func testPooledBatchNorm(t *testing.T, be *Backend, _ float64) {
	if img := tensor.NewActivation(be, 2, 16, 4, 4); !channelsLast(img) {
		defer be.Free(img)
		if be.PoolsBatchNorm(16, 4, 4) {
			t.Error("NCHW images are pooled in the batch norm")
		}
		return
	} else {
		be.Free(img)
	}
	w := newTwin(t, be, 21)
	for _, c := range []struct {
		shape       []int
		pools       bool
		coarse, nan bool
	}{
		{[]int{3, 16, 6, 10}, true, false, false},
		{[]int{2, 64, 4, 4}, true, true, false},
		{[]int{5, 8, 2, 2}, true, true, false},
		{[]int{3, 512, 4, 6}, true, true, false},  // several blocks share the sums (splits), 64 packs a row
		{[]int{8, 64, 32, 32}, true, true, false}, // more windows than the grid has threads
		{[]int{2, 16, 4, 6}, true, false, true},   // NaNs: forward and inference only
		{[]int{3, 16, 5, 6}, false, false, false}, // odd height
		{[]int{3, 12, 4, 4}, false, false, false}, // 12 channels: no packs of 8
	} {
		name := fmt.Sprintf("%v", c.shape)
		ch := c.shape[1]
		x, runMean, runVar := bnInputs(w, c.shape)
		if c.coarse || c.nan {
			_, xs := w.host(x)
			for i := range xs {
				if c.coarse {
					xs[i] = float32(math.Round(float64(xs[i])*2) / 2)
				}
				if c.nan && i%37 == 5 {
					xs[i] = float32(math.NaN())
				}
			}
			w.g.Upload(x.g, xs)
		}
		if got := be.PoolsBatchNorm(ch, c.shape[2], c.shape[3]); got != c.pools {
			t.Errorf("%s: PoolsBatchNorm %v, want %v", name, got, c.pools)
		}
		if !c.pools {
			continue
		}
		func() {
			defer func(u bool) { be.opt.UnfusedPool = u }(be.opt.UnfusedPool)
			be.opt.UnfusedPool = true
			if be.PoolsBatchNorm(ch, c.shape[2], c.shape[3]) {
				t.Errorf("%s: pooled with Options.UnfusedPool", name)
			}
		}()
		pooled := []int{c.shape[0], ch, c.shape[2] / 2, c.shape[3] / 2}
		gamma, beta, shift := w.randn(1, ch), w.randn(1, ch), w.randn(1, ch)
		rm, rv := w.randn(1, ch), w.randn(1, ch)
		copyPair(be, rm.g, runMean.g)
		copyPair(be, rv.g, runVar.g)
		saveMean, saveInv, sm, si := w.zeros(ch), w.zeros(ch), w.zeros(ch), w.zeros(ch)

		// The separate ops.
		y, want := w.actZeros(c.shape...), w.actZeros(pooled...)
		be.BatchNormReLUTrain(y.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, saveMean.g, saveInv.g, shift.g, 0.1, 1e-5)
		be.MaxPoolForward(want.g, y.g, 2, 2)
		// Fused.
		got := w.actZeros(pooled...)
		be.BatchNormReLUPoolTrain(got.g, x.g, gamma.g, beta.g, rm.g, rv.g, sm.g, si.g, shift.g, 0.1, 1e-5)
		sameBitsGPU(t, be, name+" pooled output", got.g, want.g)
		sameBitsGPU(t, be, name+" running mean", rm.g, runMean.g)
		sameBitsGPU(t, be, name+" running variance", rv.g, runVar.g)
		sameBitsGPU(t, be, name+" saved mean", sm.g, saveMean.g)
		sameBitsGPU(t, be, name+" saved inverse std", si.g, saveInv.g)

		if c.nan {
			// The batch statistics of a channel with a NaN are NaN; with
			// running statistics that are not, only those elements are,
			// and the pool's NaN rule decides their windows.
			_, mean, vari := bnInputs(w, c.shape)
			be.BatchNormReLUInfer(y.g, x.g, gamma.g, beta.g, mean.g, vari.g, 1e-5)
			be.MaxPoolForward(want.g, y.g, 2, 2)
			be.BatchNormReLUPoolInfer(got.g, x.g, gamma.g, beta.g, mean.g, vari.g, 1e-5)
			sameBitsGPU(t, be, name+" inference output with NaNs", got.g, want.g)
			continue
		}
		dy := w.actRandn(1, pooled...)
		dyFull, dx, dgamma, dbeta := w.actZeros(c.shape...), w.actZeros(c.shape...), w.zeros(ch), w.zeros(ch)
		be.MaxPoolBackward(dyFull.g, dy.g, y.g, want.g, 2, 2)
		be.BatchNormReLUBackward(dx.g, dgamma.g, dbeta.g, dyFull.g, y.g, x.g, gamma.g, beta.g, saveMean.g, saveInv.g)
		fdx, fdgamma, fdbeta := w.actZeros(c.shape...), w.zeros(ch), w.zeros(ch)
		be.BatchNormReLUPoolBackward(fdx.g, fdgamma.g, fdbeta.g, dy.g, x.g, gamma.g, beta.g, sm.g, si.g)
		tol := 1e-6
		if be.BF16() {
			tol = 1e-3 // a coefficient a rounding apart moves some of dx by one bf16 step
		}
		nearGPU(t, be, name+" dx", fdx.g, dx.g, tol)
		nearGPU(t, be, name+" dgamma", fdgamma.g, dgamma.g, 1e-6)
		nearGPU(t, be, name+" dbeta", fdbeta.g, dbeta.g, 1e-6)

		be.BatchNormReLUInfer(y.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, 1e-5)
		be.MaxPoolForward(want.g, y.g, 2, 2)
		be.BatchNormReLUPoolInfer(got.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, 1e-5)
		sameBitsGPU(t, be, name+" inference output", got.g, want.g)
	}
}

// copyPair copies src into dst on the GPU (both float32 tensors).
func copyPair(be *Backend, dst, src *tensor.Tensor) {
	h := make([]float32, src.Size())
	be.Download(h, src)
	be.Upload(dst, h)
}

func sameBitsGPU(t *testing.T, be *Backend, what string, got, want *tensor.Tensor) {
	t.Helper()
	g, w := make([]float32, got.Size()), make([]float32, want.Size())
	be.Download(g, got)
	be.Download(w, want)
	for i := range w {
		if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
			t.Errorf("%s: [%d] = %v, the separate ops give %v", what, i, g[i], w[i])
			return
		}
	}
}

func nearGPU(t *testing.T, be *Backend, what string, got, want *tensor.Tensor, tol float64) {
	t.Helper()
	g, w := make([]float32, got.Size()), make([]float32, want.Size())
	be.Download(g, got)
	be.Download(w, want)
	if e := relErr(g, w); !(e <= tol) {
		t.Errorf("%s: relative difference %.3g from the separate ops, want <= %g", what, e, tol)
	}
}
