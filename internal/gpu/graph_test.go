//go:build linux && cgo

package gpu

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/tensor"
)

func TestRecordedSteps(t *testing.T) { precisions(t, testRecordedSteps) }

func TestSGDInBackward(t *testing.T) { precisions(t, testSGDInBackward) }

func TestSGDInBackwardBF16(t *testing.T) { testSGDInBackward(t, gpuBackendBF16(t), bf16StepTol) }

func TestManySGDCalls(t *testing.T) { precisions(t, testManySGDCalls) }

func TestSGDRatesInAStep(t *testing.T) { precisions(t, testSGDRatesInAStep) }

// testRecordedSteps trains the small VGG-BN with dropout twice from the same
// weights on one backend: once issuing every op, once as the training loop
// does, with steps bracketed by BeginStep/EndStep (a warm-up, a capture,
// then replays of the CUDA graph), with a learning rate that changes every
// step, zero included. Losses and weights must agree after every step: a
// replay that reused the captured step's dropout masks or learning rate
// would be far off. Then a step that differs from its recording, and an
// upload inside a recorded step, must fail with a clear message.
func testRecordedSteps(t *testing.T, be *Backend, tol float64) {
	cfg := smallConfig(t)
	m, err := layers.New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	n := 8
	x, labels := stepBatch(t, be, cfg, n, 21, 3)
	loss, dl, mom := be.New(1), be.NewActivation(n, cfg.Classes), be.New(m.FlatSize())
	defer func() {
		for _, t := range []*tensor.Tensor{loss, dl, mom} {
			be.Free(t)
		}
	}()
	lrs := []float64{0.05, 0.2, 0.1, 0, 0.3, 0.02, 0.15}
	run := func(record bool) (losses []float32, weights [][]float32) {
		m.Init(11)
		m.Seed = 5
		be.Fill(mom, 0)
		replays := be.rec.Replays
		for step, lr := range lrs {
			first := step == 0
			if record && !first {
				be.BeginStep("test")
			}
			logits := m.Forward(x, true)
			be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0.1)
			m.Backward(dl)
			be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: lr, Momentum: 0.9, WeightDecay: 5e-4}, first)
			if record && !first {
				be.EndStep()
			}
			losses = append(losses, download(be, loss)[0])
			weights = append(weights, download(be, m.Weights()))
		}
		if record && be.Graphs() {
			// Step 1 warms up, step 2 is captured, the rest replay.
			if got := be.rec.Replays - replays; got != len(lrs)-3 {
				t.Errorf("%d steps replayed, want %d", got, len(lrs)-3)
			}
		}
		return losses, weights
	}
	if !be.Graphs() {
		t.Log("CUDA graphs are off: BeginStep and EndStep only bracket the steps")
	}
	// Each run starts with its own warm-up and capture.
	delete(be.rec.seen, "test")
	if g := be.rec.graphs["test"]; g != nil {
		be.drv.GraphExecDestroy(g.exec)
		be.drv.GraphDestroy(g.graph)
		delete(be.rec.graphs, "test")
	}
	wantLoss, wantW := run(false)
	gotLoss, gotW := run(true)
	for i := range lrs {
		// Not bit for bit: cuDNN may pick algorithms that sum in a varying
		// order. A wrong mask or rate moves these by far more.
		compareHost(t, fmt.Sprintf("step %d (lr %g) loss", i+1, lrs[i]), gotLoss[i:i+1], wantLoss[i:i+1], 10*tol)
		compareHost(t, fmt.Sprintf("step %d (lr %g) weights", i+1, lrs[i]), gotW[i], wantW[i], 10*tol)
	}
	if !be.Graphs() {
		return
	}

	// Freeing memory drops every recording (a graph may use that memory,
	// and the allocator may hand the address to another tensor): the next
	// run warms up and records again, as run checks, and agrees.
	tmp := be.New(16)
	be.Free(tmp)
	if len(be.rec.graphs) != 0 || be.rec.seen["test"] != 0 {
		t.Errorf("after a Free: %d recorded steps, key seen %d times; want none", len(be.rec.graphs), be.rec.seen["test"])
	}
	againLoss, _ := run(true)
	compareHost(t, "losses after the recordings were dropped", againLoss, wantLoss, 10*tol)

	// A step that does other work than its recording.
	other, _ := stepBatch(t, be, cfg, n, 23, 1)
	msg := panicMessage(func() {
		be.BeginStep("test")
		m.Forward(other, true)
	})
	if !strings.Contains(msg, `step "test" differs from its recording at operation 0`) {
		t.Errorf("a step that differs from its recording: panic %q", msg)
	}
	msg = panicMessage(func() {
		be.BeginStep("test")
		be.Upload(x, make([]float32, x.Size()))
	})
	if !strings.Contains(msg, "Upload inside a recorded training step") {
		t.Errorf("an upload inside a recorded step: panic %q", msg)
	}
	// The backend works on after both.
	logits := m.Forward(x, false)
	if v := download(be, logits); len(v) != n*cfg.Classes {
		t.Fatalf("logits after a failed step: %d values", len(v))
	}

	// A step that cannot be captured (here: it uploads) runs again op by
	// op, and recorded steps are off from then on.
	defer func() { be.rec.on, be.rec.off = true, nil }()
	data := download(be, x)
	var runs int
	evalStep := func() {
		runs++
		be.Upload(x, data)
		logits = m.Forward(x, false)
	}
	want := download(be, logits)
	be.Step("uncapturable", evalStep) // warm-up: op by op
	be.Step("uncapturable", evalStep) // capture fails, runs again
	if runs != 3 || be.Graphs() || be.GraphsOff() == nil || !strings.Contains(be.GraphsOff().Error(), "Upload inside a recorded training step") {
		t.Errorf("after a step that cannot be recorded: %d runs, graphs %v, off because %v; want 3 runs, graphs off because of the upload", runs, be.Graphs(), be.GraphsOff())
	}
	compareHost(t, "logits of the step run again", download(be, logits), want, 0)
}

// panicMessage runs f and returns what it panicked with, "" if nothing.
func panicMessage(f func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	f()
	return ""
}

// stepBatch is a training batch for cfg on be: n images of normal noise
// (seeded by seed) and labels (stride·i) mod Classes.
func stepBatch(t *testing.T, be *Backend, cfg layers.Config, n int, seed uint64, stride int) (x, labels *tensor.Tensor) {
	w := newTwin(t, be, seed)
	x = w.act(w.normal(n*3*cfg.ImageSize*cfg.ImageSize, 1), n, 3, cfg.ImageSize, cfg.ImageSize).g
	lab := make([]float32, n)
	for i := range lab {
		lab[i] = float32((stride * i) % cfg.Classes)
	}
	return x, w.put(lab, n).g
}

// testRecomputeBN trains the small VGG-BN twice on the GPU, keeping its
// batch-norm outputs and recomputing them in the backward
// (Model.RecomputeBN), for several steps recorded as CUDA graphs after the
// first: the losses, gradients and weights are the same bit for bit where
// the fused kernels run batch norm (the recomputation repeats the forward's
// arithmetic), and to the precision's tolerance where cuDNN's did.
func testRecomputeBN(t *testing.T, be *Backend, tol float64) {
	cfg := smallConfig(t)
	n := 8
	x, labels := stepBatch(t, be, cfg, n, 22, 7)
	loss, dl := be.New(1), be.NewActivation(n, cfg.Classes)
	defer be.Free(loss)
	defer be.Free(dl)
	run := func(recompute bool) (losses []float32, grads, weights []float32) {
		m := stepModel(t, be, cfg)
		defer m.Free()
		m.RecomputeBN(recompute)
		mom := be.New(m.FlatSize())
		defer be.Free(mom)
		for step := range 4 {
			first := step == 0
			work := func() {
				logits := m.Forward(x, true)
				be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0.1)
				m.Backward(dl)
				be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4}, first)
			}
			if first {
				work()
			} else {
				tensor.Step(be, fmt.Sprint("recompute ", recompute), work)
			}
			losses = append(losses, download(be, loss)[0])
		}
		return losses, download(be, m.Grads()), download(be, m.Weights())
	}
	lk, gk, wk := run(false)
	lr, gr, wr := run(true)
	exact := be.opt.FusedBN || be.nhwc
	for _, c := range []struct {
		name      string
		got, want []float32
	}{{"losses", lr, lk}, {"last gradients", gr, gk}, {"weights", wr, wk}} {
		if e := relErr(c.got, c.want); !(e <= tol) {
			t.Errorf("%s with the batch-norm outputs recomputed: relative error %.3g > %.3g", c.name, e, tol)
		}
		for i := range c.want {
			if exact && math.Float32bits(c.got[i]) != math.Float32bits(c.want[i]) {
				t.Errorf("%s[%d] = %v with the batch-norm outputs recomputed, %v kept (the fused kernels should repeat the forward exactly)", c.name, i, c.got[i], c.want[i])
				break
			}
		}
	}
}

// testSGDInBackward trains the small VGG-BN on the GPU with one SGD step
// after the backward and with each layer updated in the backward
// (Model.BackwardUpdate, the gradients in one layer's buffer), for steps
// recorded as CUDA graphs after the first: the losses, weights and
// momentum are the same bit for bit where two runs of the first way are
// (the same kernels on the same gradients; a GPU whose chosen engines add
// in a varying order gets the precision's tolerance).
func testSGDInBackward(t *testing.T, be *Backend, tol float64) {
	cfg := smallConfig(t)
	n := 8
	x, labels := stepBatch(t, be, cfg, n, 23, 3)
	loss, dl := be.New(1), be.NewActivation(n, cfg.Classes)
	defer be.Free(loss)
	defer be.Free(dl)
	// part: the shared gradients hold part elements of a Linear's weights
	// (0: the default, which every layer of this model fits).
	run := func(inBackward bool, part int) (losses, weights, mom []float32) {
		m := stepModel(t, be, cfg)
		defer m.Free()
		m.GradPart = part
		m.ShareGradients(inBackward)
		moms := be.New(m.FlatSize())
		defer be.Free(moms)
		for step := range 4 {
			first := step == 0
			h := tensor.SGD{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4, Nesterov: step == 3}
			work := func() {
				logits := m.Forward(x, true)
				be.SoftmaxCrossEntropy(loss, dl, logits, labels, 0.1)
				m.BackwardSGD(dl, moms, h, first) // in the backward with shared gradients
			}
			if first {
				work()
			} else {
				tensor.Step(be, fmt.Sprint("sgd in backward ", inBackward, part, step == 3), work)
			}
			losses = append(losses, download(be, loss)[0])
		}
		return losses, download(be, m.Weights()), download(be, moms)
	}
	l0, w0, m0 := run(false, 0)
	l1, w1, m1 := run(false, 0)
	exact := slices.Equal(l0, l1) && slices.Equal(w0, w1) && slices.Equal(m0, m1)
	if !exact {
		t.Logf("two runs with one SGD step differ (engines that add in a varying order): compared to %.3g", tol)
	}
	// In parts of 5000 elements: 9 rows of the first Linear's 64 (512
	// inputs) at a time; the others whole.
	partsExact := exact && weightGradPartsExact(be, 8, 512, 64, 9)
	for _, r := range []struct {
		name  string
		part  int
		exact bool
	}{{"SGD in the backward", 0, exact}, {"SGD in the backward, Linear gradients in parts", 5000, partsExact}} {
		l, w, m := run(true, r.part)
		for _, c := range []struct {
			name      string
			got, want []float32
		}{{"losses", l, l0}, {"weights", w, w0}, {"momentum", m, m0}} {
			if e := relErr(c.got, c.want); !(e <= tol) {
				t.Errorf("%s with %s: relative error %.3g > %.3g", c.name, r.name, e, tol)
			}
			for i := range c.want {
				if r.exact && math.Float32bits(c.got[i]) != math.Float32bits(c.want[i]) {
					t.Errorf("%s[%d] = %v with %s, %v after it (two runs after it agree bit for bit)", c.name, i, c.got[i], r.name, c.want[i])
					break
				}
			}
		}
	}
}

// testManySGDCalls: a recorded step of more SGD calls than it has slots
// for scalars (a Linear updated in many parts), all with the step's one
// learning rate, records and replays, each replay with its own rate: the
// same parameters as one SGD call over all of them each step.
func testManySGDCalls(t *testing.T, be *Backend, _ float64) {
	const n = maxSlots + 100
	w := newTwin(t, be, 17)
	p0, g := w.normal(n, 1), w.normal(n, 1)
	type state struct{ p, m *tensor.Tensor }
	var runs [2]state
	for i := range runs {
		runs[i] = state{be.New(n), be.New(n)}
		be.Upload(runs[i].p, p0)
		defer be.Free(runs[i].p)
		defer be.Free(runs[i].m)
	}
	gt := be.New(n)
	defer be.Free(gt)
	be.Upload(gt, g)
	replays, on := be.rec.Replays, be.rec.on
	for step := range 5 {
		h := tensor.SGD{LR: 0.1 / float64(step+1), Momentum: 0.9, WeightDecay: 1e-3}
		first := step == 0
		be.SGDStep(runs[0].p, gt, runs[0].m, h, first)
		work := func() {
			for i := range n {
				be.SGDStep(runs[1].p.View(i, 1), gt.View(i, 1), runs[1].m.View(i, 1), h, first)
			}
		}
		if first {
			work()
		} else {
			tensor.Step(be, "many SGD calls", work)
		}
	}
	if want, got := download(be, runs[0].p), download(be, runs[1].p); !slices.Equal(got, want) {
		t.Errorf("parameters after %d SGD calls a step differ from one call's: %v… against %v…", n, got[:4], want[:4])
	}
	// Steps 3 and 4 replay the graph captured in step 2 (a capture that
	// failed would have run them op by op, with the same results).
	if got := be.rec.Replays - replays; on && (got != 2 || !be.rec.on) {
		t.Errorf("%d steps of %d SGD calls replayed, want 2 (recorded steps turned off: %v)", got, n, be.rec.off)
	}
}

// testSGDRatesInAStep: a recorded step whose SGD calls take two learning
// rates, both changing from step to step, must give each call its own rate
// on every replay (lrSlot keeps a slot for each rate met in a step). Plain
// SGD (no momentum, no decay) is p -= lr·g, worked out here in float32.
func testSGDRatesInAStep(t *testing.T, be *Backend, _ float64) {
	const n = 8
	p0 := []float32{1, -2, 3, 0.5, -0.25, 4, -8, 16}
	g := []float32{0.5, 1, -1, 2, -4, 0.125, 1.5, -0.75}
	a, b, ga, ma, mb := be.New(n), be.New(n), be.New(n), be.New(n), be.New(n)
	for _, x := range []*tensor.Tensor{a, b, ga, ma, mb} {
		defer be.Free(x)
	}
	be.Upload(a, p0)
	be.Upload(b, p0)
	be.Upload(ga, g)
	wantA, wantB := slices.Clone(p0), slices.Clone(p0)
	replays := be.rec.Replays
	for step := range 5 {
		lrA, lrB := 0.5/float64(step+1), 0.125*float64(step+1)+0.0625 // never equal
		tensor.Step(be, "two learning rates", func() {
			be.SGDStep(a, ga, ma, tensor.SGD{LR: lrA}, step == 0)
			be.SGDStep(b, ga, mb, tensor.SGD{LR: lrB}, step == 0)
		})
		for i := range n {
			wantA[i] -= float32(lrA) * g[i]
			wantB[i] -= float32(lrB) * g[i]
		}
	}
	if got := download(be, a); !slices.Equal(got, wantA) {
		t.Errorf("parameters updated at the first rate: %v, want %v", got, wantA)
	}
	if got := download(be, b); !slices.Equal(got, wantB) {
		t.Errorf("parameters updated at the second rate: %v, want %v", got, wantB)
	}
	if be.rec.on && be.rec.Replays-replays < 2 {
		t.Errorf("%d replays of the step, want at least 2", be.rec.Replays-replays)
	}
}

// weightGradPartsExact reports whether be's LinearWeightGrad over parts of
// rows rows gives the bits of LinearBackward's whole weight gradient, for
// a Linear of in inputs and out outputs at batch n: true on the stand-in,
// and where the card's cuBLAS rounds a part's GEMM as the whole's.
func weightGradPartsExact(be *Backend, n, in, out, rows int) bool {
	w := newTwin(nil, be, 41)
	x, dy := w.normal(n*in, 1), w.normal(n*out, 1)
	if be.BF16() {
		x, dy = rounded(x), rounded(dy)
	}
	xt, dyt := tensor.NewActivation(be, n, in), tensor.NewActivation(be, n, out)
	whole, part, wt, db := be.New(out, in), be.New(rows, in), be.New(out, in), be.New(out)
	defer func() {
		for _, t := range []*tensor.Tensor{xt, dyt, whole, part, wt, db} {
			be.Free(t)
		}
	}()
	be.Upload(xt, x)
	be.Upload(dyt, dy)
	be.LinearBackward(nil, whole, db, dyt, xt, wt)
	all := download(be, whole)
	for r := 0; r < out; r += rows {
		k := min(rows, out-r) // the last part shorter
		p := part.View(0, k, in)
		be.LinearWeightGrad(p, dyt, xt, r)
		if !slices.Equal(download(be, p), all[r*in:(r+k)*in]) {
			return false
		}
	}
	return true
}
