package layers

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// TestRecomputeBN checks that a model recomputing its batch-norm outputs
// in the backward trains as one keeping them, to rounding (the CPU
// recomputes from the float32 saved statistics), keeps one output buffer
// instead of one a batch norm, and gives them back when turned off.
func TestRecomputeBN(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Conv, Out: 8, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 16, K: 3}, {Kind: Pool}}, 8, 12
	cfg.Dropout = 0
	be := cpu.New()
	x, labels := testBatch(be, cfg, 6)
	run := func(recompute bool) result {
		m, err := New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Free()
		m.Init(1)
		m.RecomputeBN(recompute)
		res := train(be, m, x, labels)
		for _, n := range m.bns {
			if kept := n.yBuf.view != nil; kept == recompute {
				t.Errorf("recompute %v: a batch norm keeps its own output buffer: %v", recompute, kept)
			}
		}
		if has := m.bnOuts.buf.t != nil; has != recompute {
			t.Errorf("recompute %v: the shared batch-norm output buffer exists: %v", recompute, has)
		}
		if recompute {
			// Turned off, the outputs move back at the next Forward.
			m.RecomputeBN(false)
			if m.bnOuts.buf.t == nil {
				t.Error("RecomputeBN(false) freed the shared buffer before the next Forward")
			}
			m.Forward(x, true)
			if m.bnOuts.buf.t != nil || m.bns[0].yBuf.view == nil {
				t.Error("after RecomputeBN(false) and a Forward, the batch norms do not keep their outputs")
			}
		}
		return res
	}
	compare(t, run(true), run(false), "with the batch-norm outputs recomputed")

	// Without batch norm there is nothing to recompute, and nothing changes.
	cfg.BatchNorm = false
	var res [2]result
	for i, on := range []bool{false, true} {
		m, err := New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		m.RecomputeBN(on)
		res[i] = train(be, m, x, labels)
		if m.bnOuts.buf.t != nil {
			t.Errorf("recompute %v without batch norm: a shared output buffer", on)
		}
		m.Free()
	}
	compare(t, res[1], res[0], "asking a model without batch norm to recompute")
}

// testBatch is n random images of cfg's size and their labels.
func testBatch(be *cpu.Backend, cfg Config, n int) (x, labels *tensor.Tensor) {
	rng := rand.New(rand.NewPCG(7, 7))
	x, labels = be.New(n, 3, cfg.ImageSize, cfg.ImageSize), be.New(n)
	for i := range cpu.Data(x) {
		cpu.Data(x)[i] = float32(rng.NormFloat64())
	}
	for i := range cpu.Data(labels) {
		cpu.Data(labels)[i] = float32(rng.IntN(cfg.Classes))
	}
	return x, labels
}

// result is what train gives: the first step's logits and gradients, the
// parameters and running statistics after two steps, and the evaluation
// logits then.
type result struct {
	logits, grads, weights, buffers, eval []float32
}

// train runs two SGD steps of m on (x, labels) and an evaluation.
func train(be *cpu.Backend, m *Model, x, labels *tensor.Tensor) result {
	var res result
	n := x.Shape[0]
	loss, dl, mom := be.New(1), be.New(n, m.Config.Classes), be.New(m.FlatSize())
	for step := range 2 {
		logits := m.Forward(x, true)
		if step == 0 {
			res.logits = append([]float32(nil), cpu.Data(logits)...)
		}
		be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0)
		m.Backward(dl)
		if step == 0 {
			res.grads = append([]float32(nil), cpu.Data(m.Grads())...)
		}
		be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}, step == 0)
	}
	res.weights = append([]float32(nil), cpu.Data(m.Weights())...)
	for _, b := range m.Buffers() {
		res.buffers = append(res.buffers, cpu.Data(b.T)...)
	}
	res.eval = append([]float32(nil), cpu.Data(m.Forward(x, false))...)
	return res
}

// compare requires got and want to agree to rounding.
func compare(t *testing.T, got, want result, how string) {
	t.Helper()
	for _, c := range []struct {
		name      string
		got, want []float32
		tol       float64
	}{
		{"train logits", got.logits, want.logits, 1e-5},
		{"first gradients", got.grads, want.grads, 1e-5},
		{"parameters after two steps", got.weights, want.weights, 1e-5},
		{"running statistics", got.buffers, want.buffers, 1e-5},
		{"eval logits", got.eval, want.eval, 1e-4},
	} {
		var diff, norm float64
		for i, w := range c.want {
			d := float64(c.got[i] - w)
			diff += d * d
			norm += float64(w) * float64(w)
		}
		e := math.Sqrt(diff) // absolute where there is nothing (no batch norm: no statistics)
		if norm > 0 {
			e = math.Sqrt(diff / norm)
		}
		if !(e < c.tol) {
			t.Errorf("%s: relative difference %.3g %s, want < %g", c.name, e, how, c.tol)
		}
	}
}

// TestBiasInBN checks that leaving a convolution's bias out in training
// (conv.biasInBN, the batch norm's shift) changes nothing but rounding:
// two training steps and an evaluation of a model with nonzero biases,
// once as built and once with every bias added where it stands, give the
// same logits, gradients (the biases' own: zero against rounding noise),
// parameters and running statistics.
func TestBiasInBN(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 16, K: 3}, {Kind: Conv, Out: 16, K: 1}, {Kind: Pool}}, 8, 12
	cfg.Dropout = 0
	be := cpu.New()
	x, labels := testBatch(be, cfg, 6)
	run := func(fold bool) result {
		m, err := New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Free()
		m.Init(1)
		r := rand.New(rand.NewPCG(8, 8))
		for _, mod := range m.mods {
			c, ok := mod.(*conv)
			if !ok {
				continue
			}
			if !c.biasInBN {
				t.Fatal("a convolution before batch norm keeps its bias in training")
			}
			for i := range cpu.Data(c.b) {
				cpu.Data(c.b)[i] = float32(r.NormFloat64()) // far from torchvision's zeros
			}
			if !fold {
				c.biasInBN = false
			}
		}
		if !fold {
			for _, n := range m.bns {
				n.shift = nil
			}
		}
		return train(be, m, x, labels)
	}
	compare(t, run(true), run(false), "with the bias left to batch norm")
}
