package layers

import (
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// pooledCPU is the CPU backend offering tensor.PooledBatchNorm made of its
// own ops (batch norm + ReLU into a temporary, then the max-pool), so that
// the layer graph's use of a fused pool is checked where no backend fuses.
type pooledCPU struct {
	*cpu.Backend
	train, infer, backward int // calls
}

func (b *pooledCPU) PoolsBatchNorm(c, h, w int) bool { return h%2 == 0 && w%2 == 0 }

func (b *pooledCPU) BatchNormReLUPoolTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	t := b.New(x.Shape...)
	defer b.Free(t)
	b.BatchNormReLUTrain(t, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps)
	b.MaxPoolForward(y, t, 2, 2)
	b.train++
}

func (b *pooledCPU) BatchNormReLUPoolInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	t := b.New(x.Shape...)
	defer b.Free(t)
	b.BatchNormReLUInfer(t, x, gamma, beta, runMean, runVar, eps)
	b.MaxPoolForward(y, t, 2, 2)
	b.infer++
}

func (b *pooledCPU) BatchNormReLUPoolBackward(dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	t, g, p := b.New(x.Shape...), b.New(x.Shape...), b.New(dy.Shape...)
	defer func() { b.Free(t); b.Free(g); b.Free(p) }()
	b.BatchNormReLUApply(t, x, gamma, beta, saveMean, saveInvStd)
	b.MaxPoolForward(p, t, 2, 2)
	b.MaxPoolBackward(g, dy, t, p, 2, 2)
	b.BatchNormReLUBackward(dx, dgamma, dbeta, g, t, x, gamma, beta, saveMean, saveInvStd)
	b.backward++
}

// TestPooledBatchNorm checks the layer graph on a backend that pools in
// its batch norm: it trains and evaluates as the plain CPU does, to
// rounding, with and without recomputed batch-norm outputs; only the batch
// norms a pool follows take the fused op, and they keep no output buffer.
func TestPooledBatchNorm(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Conv, Out: 8, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 16, K: 3}, {Kind: Pool}}, 8, 12
	cfg.Dropout = 0
	plain := cpu.New()
	x, labels := testBatch(plain, cfg, 6)
	run := func(be tensor.Backend, recompute bool) (result, *Model) {
		m, err := New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		m.RecomputeBN(recompute)
		return train(plain, m, x, labels), m
	}
	want, m := run(plain, false)
	m.Free()
	for _, recompute := range []bool{false, true} {
		be := &pooledCPU{Backend: plain}
		got, m := run(be, recompute)
		how := "pooled in the batch norm"
		if recompute {
			how += ", outputs recomputed"
		}
		compare(t, got, want, how)
		// Two pooled batch norms: two training steps, one evaluation.
		if be.train != 4 || be.backward != 4 || be.infer != 2 {
			t.Errorf("%s: fused ops called %d times forward, %d backward, %d in evaluation; want 4, 4, 2", how, be.train, be.backward, be.infer)
		}
		for i, n := range m.bns {
			if pooled := n.pool != nil; pooled != (i > 0) {
				t.Errorf("batch norm %d followed by a pool: %v", i, pooled)
			}
			if n.pool != nil && n.yBuf.view != nil {
				t.Errorf("%s: batch norm %d, pooled, keeps an output buffer", how, i)
			}
		}
		m.Free()
	}

	// Recomputing, the shared output buffer holds the largest output of
	// the batch norms that do not pool, here the middle one's.
	cfg.Cfg = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 4, K: 3}, {Kind: Conv, Out: 4, K: 3}, {Kind: Pool}}
	m, err := New(&pooledCPU{Backend: plain}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.Init(1)
	m.RecomputeBN(true)
	train(plain, m, x, labels)
	if got, want := m.bnOuts.buf.t.Size(), x.Shape[0]*4*4*4; got != want {
		t.Errorf("shared batch-norm output buffer of %d elements, want %d (the unpooled batch norm's output)", got, want)
	}
}
