package layers

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/vgg16/vgg16/internal/tensor"
)

// Param is one named parameter: a view into the model's parameter buffer
// and the matching view into its gradient buffer (with ShareGradients, a
// view into the buffer each layer's gradients take in turn; of a Linear
// in parts, the shape of a part).
type Param struct {
	Name string // torchvision's state-dict key, e.g. "features.0.weight"
	W    *tensor.Tensor
	Grad *tensor.Tensor
}

// Buffer is one named BN running statistic.
type Buffer struct {
	Name string // "features.1.running_mean"
	T    *tensor.Tensor
}

// Model is a VGG network on one backend. All parameters live in one
// contiguous buffer and all gradients in another (as in llm.c), so the
// optimizer is one call and a checkpoint one pass.
type Model struct {
	Config Config
	// Seed and the step counter key the dropout masks.
	Seed uint64
	step uint64
	// counted is the step whose training Forward last added its batch to
	// the batch norms' num_batches_tracked: a step run again (SetStep back
	// to the step before, as the training loop does where the GPU's
	// capture of a step fails and it runs the step op by op) is one batch.
	counted uint64
	// GradPart is, with ShareGradients, the most elements of a Linear's
	// weight gradient that the shared buffer holds at once: larger layers
	// take their rows in parts (0: DefaultGradPart). Read by ShareGradients.
	GradPart int

	be        tensor.Backend
	weights   *tensor.Tensor // [FlatSize], every parameter (16-byte aligned, zero gaps)
	grads     *tensor.Tensor // [FlatSize], their gradients
	numParams int
	params    []Param
	buffers   []Buffer
	bns       []*batchNorm
	mods      []module
	acts      activations // the modules' outputs and the gradients between them
	frozen    bool        // FreezeFeatures
	names     []string    // "features.0", … per module
	// bnOuts holds the batch-norm outputs when they are recomputed
	// (RecomputeBN), and inputBN[i] is the batch norm (one that can be
	// recomputed) whose output is module i's input, if any.
	bnOuts  bnOutputs
	inputBN []*batchNorm
	// groups are the parameters BackwardUpdate hands to the optimizer
	// together, in module order; paramOff[i] is parameter i's offset in
	// the flat buffers. shared says grads is one group's size, reused by
	// every group (ShareGradients).
	groups   []group
	paramOff []int
	shared   bool
}

// New builds the network described by cfg on be, with zeroed parameters
// and BN statistics at their initial values (mean 0, variance 1).
// Call Init or load a state dict before use.
func New(be tensor.Backend, cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, be: be}
	m.acts.on = true

	// First pass: the shapes of every parameter, in state-dict order.
	type spec struct {
		name  string
		shape []int
	}
	var specs []spec
	in, size, idx := 3, cfg.ImageSize, 0
	for _, it := range cfg.Cfg {
		switch it.Kind {
		case Conv:
			p := "features." + strconv.Itoa(idx)
			specs = append(specs, spec{p + ".weight", []int{it.Out, in, it.K, it.K}}, spec{p + ".bias", []int{it.Out}})
			idx++
			if cfg.BatchNorm {
				p = "features." + strconv.Itoa(idx)
				specs = append(specs, spec{p + ".weight", []int{it.Out}}, spec{p + ".bias", []int{it.Out}})
				idx++
			}
			idx++ // ReLU
			in = it.Out
		case Pool:
			size /= 2
			idx++
		case LRN:
			idx++
		}
	}
	// Counted in int64: on 32-bit builds a large configuration's sizes
	// overflow int before the bound could refuse them.
	flat64 := int64(in) * int64(size) * int64(size)
	tooMany := func(what string, count int64, largest string) error {
		return fmt.Errorf("model: %s%d parameters (%.1f GB as float32): at most %d (%s)", what, count, 4*float64(count)/1e9, MaxParams, largest)
	}
	// What shrinks a tensor, by the layer that holds it.
	shrink := func(name string) string {
		switch {
		case strings.HasPrefix(name, "classifier.0."):
			return fmt.Sprintf("its input is %d wide: fewer channels, a smaller image or more max-pools shrink it, as does a narrower hidden layer", flat64)
		case strings.HasPrefix(name, "classifier.3."):
			return "a narrower hidden layer shrinks it"
		case strings.HasPrefix(name, "classifier."):
			return "fewer classes or a narrower hidden layer shrink it"
		}
		return "fewer channels in the layer list shrink it"
	}
	if n := flat64 * int64(cfg.Hidden); n > MaxParams { // the first Linear's weights alone
		return nil, tooMany("over ", n, "in classifier.0.weight alone: "+shrink("classifier.0."))
	}
	flat := int(flat64)
	widths := []int{flat, cfg.Hidden, cfg.Hidden, cfg.Classes}
	for i, j := range []int{0, 3, 6} {
		p := "classifier." + strconv.Itoa(j)
		specs = append(specs, spec{p + ".weight", []int{widths[i+1], widths[i]}}, spec{p + ".bias", []int{widths[i+1]}})
	}
	// Each parameter starts at a multiple of paramAlign elements, so that
	// cuDNN gets 16-byte aligned operands without copying them; the gaps
	// stay zero (their gradient is zero, so SGD leaves them so).
	// In int64 for the bound's sake; within it, every offset fits an int.
	offs := make([]int, len(specs))
	var count, total, most int64
	largest := 0
	for i, s := range specs {
		v := int64(1)
		for _, d := range s.shape {
			v *= int64(d)
		}
		offs[i] = int(total)
		count += v
		total += (v + paramAlign - 1) / paramAlign * paramAlign
		if v > most {
			most, largest = v, i
		}
	}
	if total > MaxParams {
		l := specs[largest]
		return nil, tooMany("", count, fmt.Sprintf("the largest tensor is %s %v: %s", l.name, l.shape, shrink(l.name)))
	}
	m.numParams = int(count)
	m.weights, m.grads, m.paramOff = be.New(int(total)), be.New(int(total)), offs
	for i, s := range specs {
		m.params = append(m.params, Param{Name: s.name, W: m.weights.View(offs[i], s.shape...), Grad: m.grads.View(offs[i], s.shape...)})
	}

	// Second pass: the modules, taking their parameters in the same order,
	// a batch norm's joining its convolution's group.
	next := 0
	owner := make([]int, len(specs)) // the module that takes each parameter
	take := func() (*tensor.Tensor, *tensor.Tensor) {
		p := m.params[next]
		owner[next] = len(m.mods) // the module about to be added
		next++
		return p.W, p.Grad
	}
	add := func(prefix string, idx int, mod module) {
		m.mods = append(m.mods, mod)
		m.names = append(m.names, prefix+"."+strconv.Itoa(idx))
	}
	idx = 0
	first := true
	for _, it := range cfg.Cfg {
		switch it.Kind {
		case Conv:
			c := &conv{be: be, k: it.K, pad: (it.K - 1) / 2, needDx: !first}
			c.w, c.dw = take()
			c.b, c.db = take()
			add("features", idx, c)
			idx++
			if cfg.BatchNorm {
				eps, mom := cfg.bn()
				n := &batchNorm{be: be, momentum: mom, eps: eps}
				n.gamma, n.dgamma = take()
				n.beta, n.dbeta = take()
				n.runMean, n.runVar = be.New(it.Out), be.New(it.Out)
				be.Fill(n.runVar, 1)
				n.saveMean, n.saveInv = be.New(it.Out), be.New(it.Out)
				c.biasInBN, n.shift = true, c.b
				p := "features." + strconv.Itoa(idx)
				m.buffers = append(m.buffers, Buffer{p + ".running_mean", n.runMean}, Buffer{p + ".running_var", n.runVar})
				m.bns = append(m.bns, n)
				add("features", idx, n)
				idx++
			}
			r := &relu{be: be}
			if n, ok := m.mods[len(m.mods)-1].(*batchNorm); ok {
				n.relu, r.fused = true, true // one op, which a backend may fuse
				n.outs = &m.bnOuts
			}
			add("features", idx, r)
			idx++
			first = false
		case Pool:
			p := &maxPool{be: be}
			if n := len(m.mods); n >= 2 {
				if r, ok := m.mods[n-1].(*relu); ok && r.fused {
					m.mods[n-2].(*batchNorm).pool = p // a backend may run the three as one op
				}
			}
			add("features", idx, p)
			idx++
		case LRN:
			add("features", idx, &lrn{be: be, p: tensor.DefaultLRN})
			idx++
		}
	}
	m.mods = append(m.mods, &flatten{be: be})
	m.names = append(m.names, "flatten")
	for i := 0; i < 3; i++ {
		l := &linear{be: be}
		l.w, l.dw = take()
		l.b, l.db = take()
		add("classifier", 3*i, l)
		if i < 2 {
			add("classifier", 3*i+1, &relu{be: be})
			add("classifier", 3*i+2, &dropout{be: be, p: cfg.Dropout, layer: uint64(i), model: m})
		}
	}
	m.groupParams(owner)
	shape := []int{3, cfg.ImageSize, cfg.ImageSize}
	m.inputBN = make([]*batchNorm, len(m.mods))
	var from *batchNorm // the batch norm whose output the next module reads
	for i, mod := range m.mods {
		if f, ok := mod.(interface{ setActs(*activations) }); ok {
			f.setActs(&m.acts)
		}
		if n, ok := mod.(*batchNorm); ok {
			n.in = shape
		}
		shape = mod.out(shape)
		m.inputBN[i] = from
		switch mod := mod.(type) {
		case *batchNorm:
			from = nil
			if mod.outs != nil {
				from = mod
			}
		case *relu:
			if !mod.fused {
				from = nil
			} // a fused ReLU hands on the batch norm's output
		default:
			from = nil
		}
	}
	return m, nil
}

// sharedBNOutput is the per-sample size of the largest batch-norm output
// that the shared buffer holds when the outputs are recomputed: not those
// of batch norms that pool in their op, which store none.
func (m *Model) sharedBNOutput() int {
	size := 0
	for _, n := range m.bns {
		if _, pools := n.pools(); n.outs != nil && !pools {
			size = max(size, tensor.Volume(n.in))
		}
	}
	return size
}

// RecomputeBN sets whether training keeps every batch norm's output (the
// default) or one at a time, recomputing each in the backward where it is
// read (bnOutputs): about a third less activation memory for one more
// pass over each output. The choice takes effect at the next Forward (a
// Backward still reads the outputs where its Forward left them).
func (m *Model) RecomputeBN(on bool) { m.bnOuts.want = on }

// switchBNOutputs applies RecomputeBN's choice, at the start of a Forward,
// freeing the buffers that the other way kept the outputs in.
func (m *Model) switchBNOutputs() {
	if m.bnOuts.on == m.bnOuts.want {
		return
	}
	m.bnOuts.on, m.bnOuts.holder = m.bnOuts.want, nil
	if !m.bnOuts.on {
		m.bnOuts.buf.free(m.be)
	}
	// Every output moves (the batch norms' into or out of the shared
	// buffer, the rest in the packed layout): planned anew, and freeing
	// the old buffers drops the backend's recorded steps that held them.
	m.releaseActivations()
}

// Backend is the backend the model lives on.
func (m *Model) Backend() tensor.Backend { return m.be }

// Params lists the parameters in torchvision's state-dict order.
func (m *Model) Params() []Param { return m.params }

// Buffers lists the BN running statistics.
func (m *Model) Buffers() []Buffer { return m.buffers }

// Weights is the buffer holding every parameter, [FlatSize].
func (m *Model) Weights() *tensor.Tensor { return m.weights }

// Grads is the buffer holding every gradient, [FlatSize]; with
// ShareGradients, the buffer that each group's take in turn.
func (m *Model) Grads() *tensor.Tensor { return m.grads }

// NumParams is the number of trainable parameters.
func (m *Model) NumParams() int { return m.numParams }

// FlatSize is the length of Weights and Grads (and so of an optimizer's
// momentum): the parameters and the alignment gaps between them.
func (m *Model) FlatSize() int { return m.weights.Size() }

// paramAlign is the alignment of each parameter in the flat buffers, in
// elements: 16 bytes.
const paramAlign = 4

// Step is the number of training forward passes so far (it keys dropout).
func (m *Model) Step() uint64 { return m.step }

// SetStep restores the step counter: on resume, or before a step runs
// again (the same dropout masks, and the batch counted once in
// num_batches_tracked).
func (m *Model) SetStep(s uint64) { m.step = s }

// Init draws the parameters as torchvision's VGG does: convolutions
// kaiming-normal (fan_out, ReLU gain) with zero bias, BN weight 1 and bias 0,
// Linear normal(0, 0.01) with zero bias; BN statistics reset.
func (m *Model) Init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x766767313621)) // "vgg16!"
	for _, p := range m.params {
		host := make([]float32, p.W.Size())
		switch {
		case len(p.W.Shape) == 4: // conv weight
			std := math.Sqrt(2 / float64(p.W.Shape[0]*p.W.Shape[2]*p.W.Shape[3]))
			for i := range host {
				host[i] = float32(rng.NormFloat64() * std)
			}
		case len(p.W.Shape) == 2: // linear weight
			for i := range host {
				host[i] = float32(rng.NormFloat64() * 0.01)
			}
		case m.isBNWeight(p.Name):
			for i := range host {
				host[i] = 1
			}
		}
		m.be.Upload(p.W, host)
	}
	for _, n := range m.bns {
		m.be.Fill(n.runMean, 0)
		m.be.Fill(n.runVar, 1)
		n.numBatches = 0
	}
	m.step, m.counted = 0, 0
}

func (m *Model) isBNWeight(name string) bool {
	for i, n := range m.names {
		if _, ok := m.mods[i].(*batchNorm); ok && name == n+".weight" {
			return true
		}
	}
	return false
}

// Forward runs the network on x [N,3,S,S] and returns the logits
// [N,Classes], owned by the model until the next Forward. In training mode
// BN uses and updates batch statistics, dropout is on, and the step counter
// advances.
func (m *Model) Forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	want := []int{3, m.Config.ImageSize, m.Config.ImageSize}
	if len(x.Shape) != 4 || !tensor.SameShape(x.Shape[1:], want) {
		panic(fmt.Sprintf("layers: input %v, want [N 3 %d %d]", x.Shape, want[1], want[2]))
	}
	if train {
		m.step++
	}
	m.switchBNOutputs()
	if m.bnOuts.on {
		// Sized for the largest output before any is written, so that the
		// views of the smaller ones that modules keep stay where they were.
		if size := m.sharedBNOutput(); size > 0 {
			m.bnOuts.buf.reserve(m.be, x.Shape[0]*size)
		}
	}
	if m.acts.on && !tensor.Recording(m.be) {
		m.plan(x, train)
		m.acts.fit(m.be)
	}
	m.acts.begin(len(m.mods), train)
	for i, mod := range m.mods {
		x = mod.forward(x, train)
		m.acts.mark(i)
	}
	if train && m.step != m.counted { // as BatchNorm2d's num_batches_tracked += 1, once a step
		for _, n := range m.bns {
			n.numBatches++
		}
		m.counted = m.step
	}
	return x
}

// plan runs a Forward of x, and in training its Backward, dry: each module
// takes its buffers as it would (activations.dry) and runs no op, so that
// the arena can be sized for the pass before it runs. The modules make the
// same choices as in the real pass (pooled or not, copied or not), which
// depend on shapes and the backend only.
func (m *Model) plan(x *tensor.Tensor, train bool) {
	a := &m.acts
	a.dry = true
	defer func() { a.dry = false }()
	a.begin(len(m.mods), train)
	y := a.virtual(m.be, x.Shape)
	for i, mod := range m.mods {
		y = mod.forward(y, train)
		a.mark(i)
	}
	if train {
		m.backward(a.virtual(m.be, y.Shape), nil)
	}
}

// Backward propagates dlogits [N,Classes] from the last training Forward
// and overwrites every gradient (the classifier's only, when the features
// are frozen). It reuses the memory of that Forward's outputs, the
// logits included: read them first.
func (m *Model) Backward(dlogits *tensor.Tensor) {
	if m.shared {
		panic("layers: Backward with shared gradients leaves only the last group's: use BackwardUpdate")
	}
	m.backward(dlogits, nil)
}

// backward is Backward, or its plan (activations.dry), calling update
// after the backward of each group's first module where it is not nil.
func (m *Model) backward(dlogits *tensor.Tensor, update Update) {
	dy := dlogits
	m.acts.backward()
	for i := len(m.mods) - 1; i >= 0 && dy != nil; i-- {
		if _, ok := m.mods[i].(*flatten); ok && m.frozen {
			return // the feature extractor is frozen: no gradient
		}
		if n := m.inputBN[i]; n != nil && m.bnOuts.on && !m.acts.dry {
			n.restore() // the module's input, recomputed
		}
		m.acts.enter(i)
		if l, ok := m.mods[i].(*linear); ok && l.part > 0 && update != nil && !m.acts.dry {
			dy = l.backwardUpdate(dy, m.grads, func(w, g *tensor.Tensor) { update(w, g, w.Off-m.weights.Off) })
			continue
		}
		dy = m.mods[i].backward(dy)
		if update != nil && !m.acts.dry {
			m.updateGroups(i, update)
		}
	}
}

// PackActivations sets whether the modules' outputs and the gradients
// between them share one buffer, the gradients reusing the memory of
// outputs that the backward no longer needs (activations; the default),
// or each output has a buffer of its own and the gradients two more. The
// results are the same either way; packed takes less memory. The choice
// takes effect at the next Forward, and not within a Forward and its
// Backward.
func (m *Model) PackActivations(on bool) {
	if on != m.acts.on {
		m.releaseActivations()
		m.acts.on = on
	}
}

// releaseActivations frees every module's output and gradient buffer.
func (m *Model) releaseActivations() {
	for _, mod := range m.mods {
		if b, ok := mod.(interface{ release(tensor.Backend) }); ok {
			b.release(m.be)
		}
	}
	m.acts.release(m.be)
	m.acts.need = 0
	if m.acts.probe != nil {
		m.be.Free(m.acts.probe)
		m.acts.probe = nil
	}
}

// FreezeFeatures makes Backward stop at the classifier, so that the
// feature extractor's gradients are neither computed nor changed, and
// Trainable name the classifier's parameters only. In training mode its
// batch norms still update their running statistics, as PyTorch's do when
// their parameters have requires_grad=False.
func (m *Model) FreezeFeatures(on bool) { m.frozen = on }

// Trainable is the part of Weights and Grads (and so of the momentum)
// that training updates, as an offset and a length: all of it, or from
// the classifier's first parameter on when the features are frozen
// (parameters are in torchvision's order, features first).
func (m *Model) Trainable() (off, n int) {
	if !m.frozen {
		return 0, m.FlatSize()
	}
	for _, p := range m.params {
		if strings.HasPrefix(p.Name, "classifier.") {
			return p.W.Off, m.FlatSize() - p.W.Off
		}
	}
	return m.FlatSize(), 0
}

// Free releases every tensor the model holds.
func (m *Model) Free() {
	m.be.Free(m.weights)
	m.be.Free(m.grads)
	for _, n := range m.bns {
		for _, t := range []*tensor.Tensor{n.runMean, n.runVar, n.saveMean, n.saveInv} {
			m.be.Free(t)
		}
	}
	m.releaseActivations()
	m.bnOuts.buf.free(m.be)
}
