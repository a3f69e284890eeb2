package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// TestPackedActivations checks that packing the outputs and gradients in
// one arena (activations) changes no result: the same logits, gradients,
// parameters and statistics bit for bit as buffers of their own, through
// training steps of two batch sizes, evaluations between them, dropout,
// local response normalisation, recomputed and pooled batch norms and a
// frozen feature extractor. A gradient written over an output that a
// later backward reads would change them.
func TestPackedActivations(t *testing.T) {
	lrn := []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: LRN}, {Kind: Pool}, {Kind: Conv, Out: 16, K: 3}, {Kind: Pool}}
	plain := cpu.New()
	cases := append(vggCases(plain),
		modelCase{"vgg pooled recompute-bn", smallVGG, true, true, false, &pooledCPU{Backend: plain}},
		modelCase{"lrn", lrn, false, false, false, plain},
		modelCase{"vgg flatten copied", smallVGG, true, false, false, nhwcCPU{plain}},
		modelCase{"vgg flatten copied pooled", smallVGG, true, false, false, &nhwcPooledCPU{pooledCPU{Backend: plain}}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Cfg, cfg.ImageSize, cfg.Hidden, cfg.BatchNorm, cfg.Dropout = c.items, 16, 24, c.bn, 0.5
			want := packedRun(t, c.be, cfg, false, c.recompute, c.freeze)
			sameResults(t, "packed", "in buffers of their own", packedRun(t, c.be, cfg, true, c.recompute, c.freeze), want)
		})
	}
}

// modelCase is a small model and how it trains, for the tests that train
// it two ways and want the same results.
type modelCase struct {
	name                  string
	items                 []Item
	bn, recompute, freeze bool
	be                    tensor.Backend
}

// smallVGG has VGG's kinds of layers: 3x3 and 1x1 convolutions, pools.
var smallVGG = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Conv, Out: 8, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 16, K: 3}, {Kind: Conv, Out: 16, K: 1}, {Kind: Pool}, {Kind: Conv, Out: 12, K: 3}, {Kind: Pool}}

// vggCases are smallVGG with batch norm plain, recomputed and pooled,
// without batch norm, and with its features frozen.
func vggCases(plain *cpu.Backend) []modelCase {
	return []modelCase{
		{"vgg", smallVGG, true, false, false, plain},
		{"vgg recompute-bn", smallVGG, true, true, false, plain},
		{"vgg pooled", smallVGG, true, false, false, &pooledCPU{Backend: plain}},
		{"vgg without batch norm", smallVGG, false, false, false, plain},
		{"vgg frozen", smallVGG, true, false, true, plain},
	}
}

// nhwcCPU is the CPU backend saying that it stores 4-d activations
// channels-last (tensor.Layouts), so that flatten copies them into rows as
// it does on the GPU (the copy is a plain one here: the same results).
type nhwcCPU struct{ *cpu.Backend }

func (nhwcCPU) ChannelsLast(t *tensor.Tensor) bool { return len(t.Shape) == 4 }

type nhwcPooledCPU struct{ pooledCPU }

func (*nhwcPooledCPU) ChannelsLast(t *tensor.Tensor) bool { return len(t.Shape) == 4 }

type named struct {
	name string
	v    []float32
}

// caseModel is cfg's model on be as the tests that train a modelCase two
// ways make it: initialised from seed 3, dropout from seed 9, its batch
// norms recomputed and its features frozen as asked; with a momentum
// buffer. Both are freed when t ends.
func caseModel(t *testing.T, be tensor.Backend, cfg Config, recompute, freeze bool) (*Model, *tensor.Tensor) {
	t.Helper()
	m, err := New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	m.Seed = 9
	m.RecomputeBN(recompute)
	m.FreezeFeatures(freeze)
	mom := be.New(m.FlatSize())
	t.Cleanup(func() {
		be.Free(mom)
		m.Free()
	})
	return m, mom
}

// caseBatches are those tests' batches: 6 images and labels on the host,
// and views of their first 4.
func caseBatches(cfg Config) (x6, l6, x4, l4 *tensor.Tensor) {
	x6, l6 = testBatch(cpu.New(), cfg, 6)
	return x6, l6, x6.View(0, 4, 3, cfg.ImageSize, cfg.ImageSize), l6.View(0, 4)
}

// sameResults fails t unless got and want are the same results bit for
// bit: got computed one way (how), want the other (other).
func sameResults(t *testing.T, how, other string, got, want []named) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d results %s, %d %s", len(got), how, len(want), other)
	}
	for i := range want {
		if got[i].name != want[i].name || len(got[i].v) != len(want[i].v) {
			t.Fatalf("result %d: %s [%d] %s, %s [%d] %s", i, got[i].name, len(got[i].v), how, want[i].name, len(want[i].v), other)
		}
		for j, w := range want[i].v {
			if g := got[i].v[j]; math.Float32bits(g) != math.Float32bits(w) {
				t.Fatalf("%s[%d] = %g %s, %g %s", want[i].name, j, g, how, w, other)
			}
		}
	}
}

// packedRun trains m through steps of batch 6 and 4 with evaluations
// between them and returns everything it computed, in order.
func packedRun(t *testing.T, be tensor.Backend, cfg Config, pack, recompute, freeze bool) []named {
	t.Helper()
	m, mom := caseModel(t, be, cfg, recompute, freeze)
	m.PackActivations(pack)
	x6, l6, x4, l4 := caseBatches(cfg)
	var out []named
	keep := func(name string, t *tensor.Tensor) {
		out = append(out, named{name, append([]float32(nil), cpu.Data(t)...)})
	}
	for step, n := range []int{6, 6, 0, 4, 6, 6, 0, 4} {
		x, labels := x6, l6
		if n == 4 || n == 0 && step > 3 {
			x, labels = x4, l4
		}
		if n == 0 {
			keep(fmt.Sprint("eval logits ", step), m.Forward(x, false))
			continue
		}
		loss, dl := be.New(1), be.New(n, cfg.Classes)
		logits := m.Forward(x, true)
		keep(fmt.Sprint("logits ", step), logits)
		be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0)
		m.Backward(dl)
		keep(fmt.Sprint("gradients ", step), m.Grads())
		be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4}, step == 0)
		be.Free(loss)
		be.Free(dl)
		// Planned before it ran, each pass, the first included, found
		// room in the arena for everything.
		if pack && (m.acts.arena == nil || len(m.acts.spills) > 0 || m.acts.flow.bufs[0].t != nil || m.acts.flow.bufs[1].t != nil) {
			t.Errorf("step %d: arena %v, %d outputs and flow %v beside it", step, m.acts.arena, len(m.acts.spills), m.acts.flow.bufs)
		}
	}
	keep("parameters", m.Weights())
	for _, b := range m.Buffers() {
		keep(b.Name, b.T)
	}
	return out
}

// countingCPU is the CPU backend counting the elements it holds.
type countingCPU struct {
	*cpu.Backend
	held, peak int
}

func (b *countingCPU) New(shape ...int) *tensor.Tensor {
	t := b.Backend.New(shape...)
	b.held += t.Size()
	b.peak = max(b.peak, b.held)
	return t
}

func (b *countingCPU) Free(t *tensor.Tensor) {
	b.held -= t.Size()
	b.Backend.Free(t)
}

// TestPackedActivationsMemory checks what packing saves: a training step,
// the first included (its arena is planned before it runs), holds the
// outputs and no gradient buffer of its own (the gradients reuse the
// memory of outputs no longer needed), the arena keeps its place from step
// to step (as recorded steps need), and Free gives everything back.
func TestPackedActivationsMemory(t *testing.T) {
	cfg := DefaultConfig()
	// VGG's proportions: each block has half the elements of the one
	// before, so the later blocks' outputs have room for the first's
	// gradients.
	cfg.Cfg, cfg.ImageSize, cfg.Hidden = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Conv, Out: 8, K: 3}, {Kind: Pool},
		{Kind: Conv, Out: 16, K: 3}, {Kind: Conv, Out: 16, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 32, K: 3}, {Kind: Conv, Out: 32, K: 3}, {Kind: Pool}}, 32, 16
	var peaks [2]int
	for i, pack := range []bool{false, true} {
		be := &countingCPU{Backend: cpu.New()}
		m, err := New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		m.PackActivations(pack)
		x, labels := testBatch(be.Backend, cfg, 8)
		loss, dl, mom := be.New(1), be.New(8, cfg.Classes), be.New(m.FlatSize())
		be.peak = be.held // the steps' peak, the first's included
		var arena *tensor.Tensor
		for step := range 4 {
			if step == 2 {
				arena = m.acts.arena
			}
			logits := m.Forward(x, true)
			be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0)
			m.Backward(dl)
			be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: 0.05, Momentum: 0.9}, step == 0)
		}
		peaks[i] = be.peak
		if pack && (arena == nil || m.acts.arena != arena) {
			t.Errorf("the arena moved after the second step: %p, then %p", arena, m.acts.arena)
		}
		m.Free()
		for _, t := range []*tensor.Tensor{loss, dl, mom} {
			be.Free(t)
		}
		if be.held != 0 {
			t.Errorf("pack %v: %d elements still held after Free", pack, be.held)
		}
	}
	// Unpacked, the steps also hold two gradient buffers the size of the
	// largest output, 8 images of 8x32x32. Packed, the gradients of the
	// last block (8 images of 32x8x8), which have only the classifier's
	// small outputs above them, still go above the outputs (with the
	// classifier's and the alignment, another 4096 at most).
	const flow, tail = 2 * 8 * 8 * 32 * 32, 2*8*32*8*8 + 4096
	if saved := peaks[0] - peaks[1]; saved < flow-tail {
		t.Errorf("step peak %d elements packed, %d not: saved %d, want at least %d", peaks[1], peaks[0], saved, flow-tail)
	}
}

// TestEvalActivationsMemory: an evaluation's Forward keeps two outputs at
// a time, not all of them, and training still gets the arena it needs.
func TestEvalActivationsMemory(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Conv, Out: 8, K: 3}, {Kind: Pool},
		{Kind: Conv, Out: 16, K: 3}, {Kind: Conv, Out: 16, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 32, K: 3}, {Kind: Pool}}, 32, 16
	be := cpu.New()
	m, err := New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.Init(1)
	m.PackActivations(true)
	x, _ := testBatch(be, cfg, 8)
	m.Forward(x, false)
	// The largest outputs, the first block's convolution and batch norm
	// (8 images of 8x32x32 each), side by side; every later one fits below.
	if got, want := m.acts.size(), 2*8*8*32*32; got != want {
		t.Errorf("evaluation arena %d elements, want %d", got, want)
	}
	if planned, err := EvalActivations(cfg, 8); err != nil || planned != m.acts.size() {
		t.Errorf("EvalActivations %d (%v), the model's evaluation arena %d", planned, err, m.acts.size())
	}
	// Outputs that widen twice in a row leave a third in the arena: the
	// first, dead, below its input, where the next one does not fit.
	wide := cfg
	wide.Cfg, wide.BatchNorm = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Conv, Out: 16, K: 3}, {Kind: Conv, Out: 32, K: 3}, {Kind: Pool}}, false
	if got, err := EvalActivations(wide, 2); err != nil || got != 2*(8+16+32)*32*32 {
		t.Errorf("EvalActivations of widening outputs: %d (%v), want %d", got, err, 2*(8+16+32)*32*32)
	}
	m.Forward(x, true)
	if got, least := m.acts.size(), 4*8*8*32*32; got < least {
		t.Errorf("training arena %d elements, want at least %d (the first block's four outputs)", got, least)
	}
}

// recordingCPU is the CPU backend with the GPU's rules for recorded steps
// (internal/gpu/graph.go): the first step of a key runs eagerly, later ones
// are recorded, nothing may be allocated or freed while recording, and a
// Free drops every recording (their addresses may be gone).
type recordingCPU struct {
	*cpu.Backend
	t         *testing.T
	recording bool
	seen      map[string]bool
	frees     int
}

func (b *recordingCPU) Recording() bool { return b.recording }

func (b *recordingCPU) Step(key string, f func()) {
	b.recording = b.seen[key]
	b.seen[key] = true
	f()
	b.recording = false
}

func (b *recordingCPU) New(shape ...int) *tensor.Tensor {
	if b.recording {
		b.t.Errorf("New%v while recording", shape)
	}
	return b.Backend.New(shape...)
}

func (b *recordingCPU) Free(t *tensor.Tensor) {
	if b.recording {
		b.t.Errorf("Free(%v) while recording", t)
	}
	b.frees++
	clear(b.seen)
	b.Backend.Free(t)
}

// TestPackedActivationsRecorded runs training and evaluation steps of
// several batch sizes interleaved, under the GPU's rules for recorded
// steps, switching RecomputeBN on half way: the same results as unpacked,
// bit for bit, nothing allocated or freed while recording, and the switch
// frees the old layout (which drops the recordings that hold it).
func TestPackedActivationsRecorded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Pool}, {Kind: Conv, Out: 16, K: 3}, {Kind: Pool}}
	cfg.ImageSize, cfg.Hidden, cfg.Dropout = 8, 24, 0.5
	run := func(pack bool) []named {
		be := &recordingCPU{Backend: cpu.New(), t: t, seen: map[string]bool{}}
		m, err := New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Free()
		m.Init(3)
		m.Seed = 1
		m.PackActivations(pack)
		x, labels := testBatch(be.Backend, cfg, 4)
		// The momentum, the loss and its gradient for each batch size,
		// made once, as the training loop makes them.
		mom, loss := be.New(m.FlatSize()), be.New(1)
		dls := map[int]*tensor.Tensor{4: be.New(4, cfg.Classes), 3: be.New(3, cfg.Classes), 2: be.New(2, cfg.Classes)}
		var out []named
		keep := func(name string, t *tensor.Tensor) {
			out = append(out, named{name, append([]float32(nil), cpu.Data(t)...)})
		}
		frees := 0
		// Evaluations size the arena for themselves first; training needs
		// more, which waits for an eager Forward; then a smaller batch, and
		// the switch (which takes effect at the next Forward, one that may
		// free: a batch size not seen before).
		for i, s := range []string{"eval 4", "eval 2", "eval 4", "eval 4", "train 4", "eval 4", "train 4", "eval 4", "train 4", "eval 2",
			"train 4", "train 2", "train 2", "recompute", "train 3", "train 4", "train 4", "eval 4", "train 4", "eval 4"} {
			if s == "recompute" {
				m.RecomputeBN(true)
				frees = be.frees
				continue
			}
			var n int
			var mode string
			fmt.Sscan(s, &mode, &n)
			xb, yb, dl := x.View(0, n, 3, 8, 8), labels.View(0, n), dls[n]
			name := fmt.Sprint(i, " ", s)
			if mode == "eval" {
				tensor.Step(be, s, func() { keep(name+" logits", m.Forward(xb, false)) })
				continue
			}
			tensor.Step(be, s, func() {
				logits := m.Forward(xb, true)
				keep(name+" logits", logits)
				be.SoftmaxCrossEntropy(loss, dl, logits, yb, 0)
				m.Backward(dl)
				keep(name+" gradients", m.Grads())
				be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: 0.05, Momentum: 0.9}, i == 4)
			})
			if s == "train 3" && pack && be.frees == frees {
				t.Errorf("switching to recomputed batch norms freed nothing: the recorded steps keep the old layout")
			}
		}
		return out
	}
	want, got := run(false), run(true)
	for i := range want {
		for j, w := range want[i].v {
			if g := got[i].v[j]; math.Float32bits(g) != math.Float32bits(w) {
				t.Fatalf("%s[%d] = %g packed, %g unpacked", want[i].name, j, g, w)
			}
		}
	}
}

// TestPackedOutputSpillsAgain: a module output that spilled, then fitted
// in the arena in another pass (an evaluation's layout), and spills again
// at its first pass's place gets its own buffer back, not the arena view
// of the other pass (memory another output now holds).
func TestPackedOutputSpillsAgain(t *testing.T) {
	be := cpu.New()
	a := activations{on: true}
	var b buf
	pass := func(at int) *tensor.Tensor {
		a.begin(1, true)
		a.top = at
		return a.output(be, &b, []int{2, 64})
	}
	first := pass(0)                              // no arena yet: its own buffer
	a.arena = tensor.NewActivation(be, packAlign) // room for one output, spills kept
	if v := pass(0); v.Mem != a.arena.Mem {
		t.Fatalf("output at 0 of a %d-element arena not in it", a.size())
	}
	a.need = a.size() // no growth: as while recording
	if v := pass(packAlign); v.Mem != first.Mem {
		t.Errorf("output past the arena's end: %v at %d of the arena, want its own buffer", v.Shape, v.Off)
	}
	a.release(be)
}

// TestPackedActivationsEmptyBatch: a model that has run nothing yet takes
// an empty batch (as the GPU ops do).
func TestPackedActivationsEmptyBatch(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cfg, cfg.ImageSize, cfg.Hidden = []Item{{Kind: Conv, Out: 8, K: 3}, {Kind: Pool}}, 8, 12
	be := cpu.New()
	m, err := New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if y := m.Forward(be.New(0, 3, 8, 8), false); y.Size() != 0 {
		t.Errorf("logits %v for an empty batch", y.Shape)
	}
}
