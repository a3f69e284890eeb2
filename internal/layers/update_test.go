package layers

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// TestBackwardUpdate checks that updating each group of parameters as the
// backward reaches it (BackwardUpdate), with gradients of their own or
// sharing one group's buffer (ShareGradients), trains exactly as one SGD
// step over all parameters after Backward: the same logits, parameters,
// momentum and running statistics bit for bit over steps of two batch
// sizes, with Nesterov momentum, evaluations between steps, recomputed and
// pooled batch norms, a frozen feature extractor, and channel counts that
// leave gaps between parameters (which must stay zero). An update that ran
// before its module's backward, read a gradient another group had written
// over, or missed a group would change them.
func TestBackwardUpdate(t *testing.T) {
	// 5 and 7 channels: biases and batch-norm parameters of 5 and 7 leave
	// gaps; 3x3 kernels over 5 inputs, weights of 7*5*9.
	odd := []Item{{Kind: Conv, Out: 5, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 7, K: 3}, {Kind: LRN}, {Kind: Pool}}
	plain := cpu.New()
	cases := append(vggCases(plain),
		modelCase{"odd channels", odd, true, false, false, plain},
		modelCase{"odd channels without batch norm", odd, false, false, false, plain})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Cfg, cfg.ImageSize, cfg.Hidden, cfg.BatchNorm, cfg.Dropout, cfg.Classes = c.items, 16, 22, c.bn, 0.5, 7
			want := updateRun(t, c.be, cfg, c.recompute, c.freeze, "after", 0)
			for _, how := range []string{"in backward", "shared", "shared in parts"} {
				// in parts: every Linear takes its weights' gradient a few
				// rows at a time, the last part shorter: 100/48 = 2 rows of
				// the first (in 48), 4 of the others (in 22; 7 outputs for
				// the last).
				sameResults(t, "updating "+how, "after Backward", updateRun(t, c.be, cfg, c.recompute, c.freeze, how, 100), want)
			}
		})
	}
}

// updateRun trains a model through steps of batch 6 and 4, with
// evaluations between them, updating after Backward, in BackwardUpdate, or
// in BackwardUpdate with shared gradients, and returns the logits, the
// parameters and the momentum after each step, and the running statistics.
// With "shared in parts" the shared buffer holds part elements of a
// Linear's weights.
func updateRun(t *testing.T, be tensor.Backend, cfg Config, recompute, freeze bool, how string, part int) []named {
	t.Helper()
	m, mom := caseModel(t, be, cfg, recompute, freeze)
	if how == "shared in parts" {
		m.GradPart = part
	}
	m.ShareGradients(strings.HasPrefix(how, "shared"))
	x6, l6, x4, l4 := caseBatches(cfg)
	var out []named
	keep := func(name string, t *tensor.Tensor) {
		out = append(out, named{name, append([]float32(nil), cpu.Data(t)...)})
	}
	for step, n := range []int{6, 6, 0, 4, 6} {
		x, labels := x6, l6
		if n == 4 || n == 0 {
			x, labels = x4, l4
		}
		if n == 0 {
			keep(fmt.Sprint("eval logits ", step), m.Forward(x, false))
			continue
		}
		h := tensor.SGD{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4, Nesterov: step == 4}
		loss, dl := be.New(1), be.New(n, cfg.Classes)
		logits := m.Forward(x, true)
		keep(fmt.Sprint("logits ", step), logits)
		be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0)
		groups := 0 // updates
		if how == "after" {
			m.Backward(dl)
			off, k := m.Trainable()
			be.SGDStep(m.Weights().View(off, k), m.Grads().View(off, k), mom.View(off, k), h, step == 0)
		} else {
			m.BackwardUpdate(dl, func(w, g *tensor.Tensor, off int) {
				groups++
				be.SGDStep(w, g, mom.View(off, w.Size()), h, step == 0)
			})
		}
		runs := 0 // the updates expected: each run of each group, or a Linear's bias and each part of its weights
		for _, g := range m.groups {
			if l, ok := m.mods[g.first].(*linear); ok && l.part > 0 {
				runs += 1 + (l.w.Shape[0]+l.part-1)/l.part
			} else {
				runs += len(g.runs)
			}
		}
		if how != "after" && !freeze && groups != runs {
			t.Errorf("%s, step %d: %d updates, want %d: one for each of the groups' runs (for a Linear in parts, its bias and each part)", how, step, groups, runs)
		}
		keep(fmt.Sprint("parameters ", step), m.Weights())
		keep(fmt.Sprint("momentum ", step), mom)
		be.Free(loss)
		be.Free(dl)
	}
	for _, b := range m.Buffers() {
		keep(b.Name, b.T)
	}
	return out
}

// TestShareGradients checks the shared gradient buffer: one group's size
// (the largest's), every parameter's gradient inside it at its offset in
// its group, and switching back gives each gradient its own place again.
func TestShareGradients(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden, cfg.Classes = []Item{{Kind: Conv, Out: 5, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 8, K: 3}, {Kind: Pool}}, 8, 30, 10
	be := &countingCPU{Backend: cpu.New()}
	m, err := New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Groups: conv 0 (weights 5*3*9, bias 5) with its batch norm (5 + 5),
	// each parameter followed by a gap; conv 3 (8*5*9 + 8) with its batch
	// norm (8 + 8); the Linears 32 -> 30 -> 30 -> 10.
	if len(m.groups) != 5 {
		t.Fatalf("%d groups, want 5 (two convolutions with their batch norms, three Linears)", len(m.groups))
	}
	largest := 30*32 + 30 // the first Linear
	if got, want := fmt.Sprint(m.groups[0].runs), "[[0 135] [136 5] [144 5] [152 5]]"; got != want {
		t.Errorf("first group's runs %s, want %s (each parameter padded to 4 elements)", got, want)
	}
	if got, want := fmt.Sprint(m.groups[1].runs), "[[160 384]]"; got != want {
		t.Errorf("second group's runs %s, want %s", got, want)
	}
	before := be.held
	m.ShareGradients(true)
	if got := be.held - before; got != largest-m.FlatSize() {
		t.Errorf("sharing changed the elements held by %d, want %d (%d for the largest group instead of %d)", got, largest-m.FlatSize(), largest, m.FlatSize())
	}
	for _, g := range m.groups {
		for _, i := range g.params {
			p := m.params[i]
			if p.Grad.Mem != m.grads.Mem || p.Grad.Off != m.paramOff[i]-g.lo || !tensor.SameShape(p.Grad.Shape, p.W.Shape) {
				t.Errorf("%s: gradient at %d %v, want %d %v in the shared buffer", p.Name, p.Grad.Off, p.Grad.Shape, m.paramOff[i]-g.lo, p.W.Shape)
			}
		}
	}
	x, _ := testBatch(be.Backend, cfg, 2)
	m.Init(1)
	m.Forward(x, true)
	func() {
		defer func() {
			if msg := fmt.Sprint(recover()); !strings.Contains(msg, "use BackwardUpdate") {
				t.Errorf("Backward with shared gradients: panic %q, want one that says to use BackwardUpdate", msg)
			}
		}()
		m.Backward(be.New(2, cfg.Classes))
	}()
	m.ShareGradients(false)
	for i, p := range m.params {
		if p.Grad.Mem != m.grads.Mem || p.Grad.Off != m.paramOff[i] {
			t.Errorf("%s: gradient at %d, want %d in a buffer of every gradient", p.Name, p.Grad.Off, m.paramOff[i])
		}
	}
	if m.grads.Size() != m.FlatSize() {
		t.Errorf("gradient buffer of %d, want %d", m.grads.Size(), m.FlatSize())
	}
}

// TestShareGradientsVGG16: VGG16's shared gradient buffer is one part of
// the second Linear's weights, 1024 of its 4096 rows (16 MiB), at 32x32
// and at 224x224, where the first Linear (25088 inputs) takes 128 rows a
// part (a multiple of 64 under 16 MiB) and the largest convolution with
// its batch norm 2.36 M elements.
func TestShareGradientsVGG16(t *testing.T) {
	for _, size := range []int{32, 224} {
		cfg := DefaultConfig()
		cfg.ImageSize = size
		m, err := New(shapes{}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.ShareGradients(true)
		if got, want := m.Grads().Size(), 1024*4096; got != want {
			t.Errorf("%dx%d: shared gradients of %d elements, want %d", size, size, got, want)
		}
		var parts []int
		for _, mod := range m.mods {
			if l, ok := mod.(*linear); ok {
				parts = append(parts, l.part)
			}
		}
		want := "[0 1024 0]"
		if size == 224 {
			want = "[128 1024 0]"
		}
		if got := fmt.Sprint(parts); got != want {
			t.Errorf("%dx%d: the Linears' parts %s rows, want %s", size, size, got, want)
		}
	}
}

// TestSharedGradientsInParts: a model whose Linears all take their
// weights' gradient in parts of 8 elements (2 rows of the first, of 4
// inputs; 1 row of the others, of 64), each with a bias larger than a
// part: the shared buffer is a bias's 64 elements, training gives the
// results of the step after Backward bit for bit, and switching back
// gives every parameter its whole gradient again.
func TestSharedGradientsInParts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden, cfg.Classes, cfg.Dropout = []Item{{Kind: Conv, Out: 1, K: 3}, {Kind: Pool}}, 4, 64, 10, 0.5
	be := cpu.New()
	want := updateRun(t, be, cfg, false, false, "after", 0)
	sameResults(t, "updating in parts", "after Backward", updateRun(t, be, cfg, false, false, "shared in parts", 8), want)

	m, err := New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.GradPart = 8
	m.ShareGradients(true)
	var parts []int
	for _, mod := range m.mods {
		if l, ok := mod.(*linear); ok {
			parts = append(parts, l.part)
		}
	}
	if got := fmt.Sprint(parts); got != "[2 1 1]" || m.grads.Size() != 64 {
		t.Errorf("the Linears' parts %s rows, shared gradients of %d elements; want [2 1 1] and 64", got, m.grads.Size())
	}
	m.ShareGradients(false)
	for i, p := range m.params {
		if p.Grad.Mem != m.grads.Mem || p.Grad.Off != m.paramOff[i] || !tensor.SameShape(p.Grad.Shape, p.W.Shape) {
			t.Errorf("%s: gradient %v at %d, want %v at %d", p.Name, p.Grad.Shape, p.Grad.Off, p.W.Shape, m.paramOff[i])
		}
	}
	for _, mod := range m.mods {
		if l, ok := mod.(*linear); ok && l.part != 0 {
			t.Errorf("a Linear still takes its gradient in parts of %d rows", l.part)
		}
	}
}
