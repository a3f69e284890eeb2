package layers

import "github.com/vgg16/vgg16/internal/tensor"

// activations is where a model's modules keep their outputs and where
// Backward passes gradients between them: one buffer (the arena), packed
// as a stack, as llm.c keeps its activations in one block.
//
// Forward, each module's output goes on top of the stack, so after module
// i the outputs of modules 0..i lie below marks[i]. Backward, module i
// reads only those (its input and its own output) and the gradient of its
// output; everything above marks[i] is dead until the next Forward. The
// gradient of module i's input therefore goes just above marks[i] (or
// above the gradient it reads, where they would overlap). At 224x224 the
// largest gradients, those of the first block, fall where the outputs of
// the later blocks were: the two whole-size gradient buffers that
// Backward needed otherwise (a fifth of a VGG16 step's activation memory
// at 224x224) are not needed.
//
// The arena is sized before a pass needs it: a Forward where the backend
// may allocate (not inside a recorded step, tensor.Recording) first runs
// the modules dry (Model.plan: each takes its buffers as it would, and no
// op runs), which says how much the pass and its Backward need, and grows
// the arena to that. A pass that finds too little room anyway (a recorded
// step of a larger batch than any planned) puts what does not fit in
// buffers of their own, as the modules had before, and records what it
// needed for the next Forward that may allocate. Offsets are a function of
// the shapes alone, so steps of the same shape use the same addresses, as
// recorded steps require.
type activations struct {
	on    bool           // packing (Model.PackActivations); off: a buffer per output, two for the gradients
	arena *tensor.Tensor // [cap] (tensor.NewActivation), nil until a pass has been planned
	need  int            // elements the largest pass so far asked for, arena or not
	top   int            // Forward: the next free element
	marks []int          // top after each module of the last Forward
	// Backward: the outputs below frontier are live (marks of the module
	// running); [dyOff, dyEnd) is where the gradient it reads was placed,
	// empty for the loss's.
	frontier, dyOff, dyEnd int
	spills                 []*buf   // outputs that did not fit in the arena, in buffers of their own
	flow                   gradFlow // gradients that did not fit
	// dry: a planning pass (Model.plan) places and counts buffers, and
	// hands out virtual tensors: probe's storage (an empty activation, so
	// that the backend answers layout questions as for a real one) with
	// no elements behind them. Modules run no op on them.
	dry   bool
	probe *tensor.Tensor
	// eval: a Forward that no Backward follows, where a module's output is
	// read only by the next module, so each output goes at the bottom of
	// the arena where it fits below the last one ([lastOff, lastEnd)), and
	// just above that one where not: two outputs at a time, not all of
	// them (three where outputs widen twice in a row: the first, dead,
	// below the next, which did not fit under it). VGG16 at 224x224: 4.5x
	// less memory. EvalActivations plans it without allocating.
	eval             bool
	lastOff, lastEnd int
}

// packAlign is the alignment of each tensor in the arena, in elements: 512
// bytes in float32, 256 in bfloat16, as cudaMalloc aligns, so that the GPU's
// vectorised kernels and cuDNN see what they would see in a buffer of its own.
const packAlign = 128

func alignUp(n int) int { return (n + packAlign - 1) / packAlign * packAlign }

// begin starts a Forward (or its plan) of a model with modules modules,
// a training one or not.
func (a *activations) begin(modules int, train bool) {
	a.top, a.eval, a.lastOff, a.lastEnd = 0, !train, 0, 0
	if len(a.marks) != modules {
		a.marks = make([]int, modules)
	}
}

// fit grows the arena to what the passes so far needed, planned or run.
// The backend must be able to allocate now (not tensor.Recording).
func (a *activations) fit(be tensor.Backend) {
	if a.need <= a.size() {
		return
	}
	a.release(be)
	a.arena = tensor.NewActivation(be, a.need)
}

// virtual is a tensor of shape for a planning pass: no elements, the
// storage of an activation.
func (a *activations) virtual(be tensor.Backend, shape []int) *tensor.Tensor {
	if a.probe == nil {
		a.probe = tensor.NewActivation(be, 0)
	}
	return &tensor.Tensor{Shape: append([]int(nil), shape...), Mem: a.probe.Mem}
}

// size is the arena's length in elements.
func (a *activations) size() int {
	if a.arena == nil {
		return 0
	}
	return a.arena.Size()
}

// output returns the buffer for a module's output of shape, taken from the
// top of the stack; b is the module's own buffer, used when packing is
// off or the arena has no room.
func (a *activations) output(be tensor.Backend, b *buf, shape []int) *tensor.Tensor {
	if !a.on {
		return b.get(be, shape...)
	}
	off, n := a.top, tensor.Volume(shape)
	if a.eval {
		if off = 0; n > a.lastOff {
			off = alignUp(a.lastEnd)
		}
		a.lastOff, a.lastEnd = off, off+n
	}
	a.top = alignUp(off + n)
	a.need = max(a.need, a.top)
	if a.dry {
		return a.virtual(be, shape)
	}
	if a.arena != nil && off+n <= a.size() {
		if v := b.view; v == nil || v.Mem != a.arena.Mem || v.Off != a.arena.Off+off || !tensor.SameShape(v.Shape, shape) {
			b.view = a.arena.View(off, shape...)
		}
		return b.view
	}
	if b.t == nil {
		a.spills = append(a.spills, b)
	}
	return b.get(be, shape...)
}

// mark records the top of the stack after module i's forward.
func (a *activations) mark(i int) { a.marks[i] = a.top }

// backward starts a Backward: the gradient of the logits is the caller's.
func (a *activations) backward() { a.dyOff, a.dyEnd = 0, 0 }

// enter says that module i's backward runs next.
func (a *activations) enter(i int) { a.frontier = a.marks[i] }

// grad returns the buffer for the gradient of a module's input, of shape,
// given the gradient dy of its output: above the live outputs and clear
// of dy.
func (a *activations) grad(be tensor.Backend, dy *tensor.Tensor, shape []int) *tensor.Tensor {
	if !a.on {
		return a.flow.next(be, dy, shape...)
	}
	off, n := alignUp(a.frontier), tensor.Volume(shape)
	if off < a.dyEnd && a.dyOff < off+n {
		off = alignUp(a.dyEnd)
	}
	// Where it goes with an arena large enough, whether or not this one
	// is: placements depend on the shapes only.
	a.dyOff, a.dyEnd = off, off+n
	a.need = max(a.need, off+n)
	if a.dry {
		return a.virtual(be, shape)
	}
	if a.arena != nil && off+n <= a.size() {
		return a.arena.View(off, shape...)
	}
	return a.flow.next(be, dy, shape...)
}

// release frees the arena and every buffer that stood in for it (the
// probe stays: it holds no memory).
func (a *activations) release(be tensor.Backend) {
	for _, b := range a.spills {
		b.free(be)
	}
	a.spills = nil
	a.flow.release(be)
	if a.arena != nil {
		be.Free(a.arena)
		a.arena = nil
	}
}

// buf is a module's output buffer: the view it was last handed (in the
// arena, or of t), and t, an activation (tensor.NewActivation) of its own
// where packing is off or the arena had no room, reallocated only when a
// batch needs more room than it has.
type buf struct {
	t    *tensor.Tensor
	view *tensor.Tensor
}

// get returns a view of shape of the buffer's own tensor, made to fit
// (the last view again where it is one of t: not an arena view).
func (b *buf) get(be tensor.Backend, shape ...int) *tensor.Tensor {
	if b.view != nil && b.t != nil && b.view.Mem == b.t.Mem && tensor.SameShape(b.view.Shape, shape) {
		return b.view
	}
	n := tensor.Volume(shape)
	if b.t == nil || b.t.Size() < n {
		if b.t != nil {
			be.Free(b.t)
		}
		b.t = tensor.NewActivation(be, n)
	}
	b.view = b.t.View(0, shape...)
	return b.view
}

// reserve makes the buffer hold at least n elements, so that views of
// any shape up to n taken later do not move it.
func (b *buf) reserve(be tensor.Backend, n int) {
	if b.t != nil && b.t.Size() >= n {
		return
	}
	b.free(be)
	b.t = tensor.NewActivation(be, n)
}

func (b *buf) free(be tensor.Backend) {
	if b.t != nil {
		be.Free(b.t)
	}
	b.t, b.view = nil, nil
}

// bufs are a module's output buffer and the model's activations, where
// its output goes forward and the gradient of its input backward.
type bufs struct {
	yBuf buf
	acts *activations
}

func (b *bufs) release(be tensor.Backend) { b.yBuf.free(be) }

func (b *bufs) setActs(a *activations) { b.acts = a }

// output is the buffer for the module's output, of shape.
func (b *bufs) output(be tensor.Backend, shape ...int) *tensor.Tensor {
	return b.acts.output(be, &b.yBuf, shape)
}

// dx is the buffer for the gradient of the module's input, given the
// gradient dy of its output.
func (b *bufs) dx(be tensor.Backend, dy *tensor.Tensor, shape ...int) *tensor.Tensor {
	return b.acts.grad(be, dy, shape)
}

// dry says that the model is planning its buffers (activations.dry): a
// module takes them and runs no op.
func (b *bufs) dry() bool { return b.acts.dry }

// gradFlow holds the gradients passed between modules during Backward
// where they are not packed (activations): two buffers used in turn (each
// module reads its output's gradient from one and writes its input's into
// the other), instead of one per module. No module needs its output's
// gradient once it has its input's, so two suffice.
type gradFlow struct{ bufs [2]buf }

// next returns a tensor of shape in the buffer that does not hold dy.
func (f *gradFlow) next(be tensor.Backend, dy *tensor.Tensor, shape ...int) *tensor.Tensor {
	i := 0
	if f.bufs[0].t != nil && dy.Mem == f.bufs[0].t.Mem {
		i = 1
	}
	return f.bufs[i].get(be, shape...)
}

func (f *gradFlow) release(be tensor.Backend) {
	f.bufs[0].free(be)
	f.bufs[1].free(be)
}
