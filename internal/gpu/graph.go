//go:build linux && cgo

package gpu

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"unsafe"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Recorded steps. Issuing a VGG16 training step's ~200 cuDNN, cuBLAS and
// kernel calls takes the host about 5 ms, longer than the H100 needs to
// run them at 32x32, so the GPU would idle between launches. The training
// loop therefore runs each step through tensor.Step, which here is Step:
// BeginStep(key), the step, EndStep. The
// first step of a key runs as usual (it picks the convolution algorithms
// and allocates every buffer), the second is captured into a CUDA graph
// while it is issued, and every later one replays the graph with a single
// launch.
//
// A replay still runs the layers' Go code, which calls the backend's ops
// as before; each op then only checks that it is the op the recording
// holds at that position (its kind, operands and constants, hashed into a
// signature) and returns. The values that legitimately change from step to
// step — dropout keys and the learning rate — are not baked into the
// graph: during capture those kernels are given the address of a slot in
// a small device buffer, and each step writes its values into a
// page-locked host mirror that is copied to the slots just before the
// graph is launched.

// stepMode says what the backend's ops do.
type stepMode int

const (
	eager     stepMode = iota // run now (outside a step, or a key's first step)
	capturing                 // run into the graph being captured
	replaying                 // check against the recording; the graph does the work
)

// maxSlots bounds the scalars (dropout keys, learning rates) of one step.
const maxSlots = 512

// stepGraph is one recorded step.
type stepGraph struct {
	graph cuda.Graph
	exec  cuda.GraphExec
	sigs  []uint64 // each op's signature, in order
	slots int      // scalars the step reads
}

// recorder is the backend's state for recorded steps.
type recorder struct {
	on     bool  // graphs enabled: the driver has them and Options.NoGraphs is off
	off    error // why a failed capture turned them off
	inStep bool
	mode   stepMode
	key    string
	seen   map[string]int
	graphs map[string]*stepGraph
	cur    *stepGraph
	next   int // replay: index of the next op in cur.sigs
	slot   int // next scalar slot
	// lrAt is the slot of this step's learning rate lrBits, which every
	// SGD call of the step that has it reads (a model updated layer by
	// layer in the backward makes dozens); 0 until one takes it.
	lrAt   cuda.DevicePtr
	lrBits uint64

	slotsDev  devBuf         // maxSlots × 8 bytes on the device
	slotsHost unsafe.Pointer // page-locked mirror of slotsDev
	upload    cuda.Event     // recorded after the last copy of the mirror
	pending   bool           // that copy may still be running

	Replays int // steps replayed, for tests and reports
}

// openGraphs prepares recorded steps unless they are off or the driver
// lacks them.
func (b *Backend) openGraphs() error {
	r := &b.rec
	r.seen, r.graphs = map[string]int{}, map[string]*stepGraph{}
	if b.opt.NoGraphs || os.Getenv("VGG16_CUDA_GRAPHS") == "0" || !b.drv.HasGraphs() {
		return nil
	}
	p, err := b.drv.MemAllocHost(8 * maxSlots)
	if err != nil {
		return err
	}
	r.slotsHost = p
	if r.upload, err = b.drv.EventCreate(cuda.EventDisableTiming); err != nil {
		return err
	}
	r.slotsDev.ptr = b.alloc(8*maxSlots, "recorded-step scalars", "other")
	r.slotsDev.bytes = 8 * maxSlots
	r.on = true
	return nil
}

// closeGraphs releases the graphs and the slot buffers.
func (b *Backend) closeGraphs() []error {
	r := &b.rec
	var errs []error
	if r.mode == capturing {
		if g, err := b.drv.StreamEndCapture(b.stream); err == nil && g != 0 {
			errs = append(errs, b.drv.GraphDestroy(g))
		}
	}
	for _, g := range r.graphs {
		errs = append(errs, b.drv.GraphExecDestroy(g.exec), b.drv.GraphDestroy(g.graph))
	}
	clear(r.graphs)
	if r.slotsDev.ptr != 0 {
		errs = append(errs, b.drv.MemFree(r.slotsDev.ptr))
		b.mem.cur -= r.slotsDev.bytes
		r.slotsDev = devBuf{}
	}
	if r.slotsHost != nil {
		errs = append(errs, b.drv.MemFreeHost(r.slotsHost))
		r.slotsHost = nil
	}
	if r.upload != 0 {
		errs = append(errs, b.drv.EventDestroy(r.upload))
		r.upload = 0
	}
	r.on, r.mode, r.inStep = false, eager, false
	return errs
}

// forgetSteps drops every recorded step, before memory that a recording
// may use is freed (a tensor, a scratch buffer that grows): no graph may
// ever replay onto freed memory, even where the allocator would hand the
// same address back. Each key then warms up and records again, which costs
// two steps run op by op. The caller has synchronised the stream.
func (b *Backend) forgetSteps() {
	r := &b.rec
	if r.mode != eager {
		return // notInStep has refused the free already
	}
	for key, g := range r.graphs {
		b.must(b.drv.GraphExecDestroy(g.exec), "dropping recorded step "+key)
		b.must(b.drv.GraphDestroy(g.graph), "dropping recorded step "+key)
	}
	clear(r.graphs)
	clear(r.seen)
}

// Recording reports whether a step is being captured or replayed, when
// nothing may be allocated or freed (tensor.Recording).
func (b *Backend) Recording() bool { return b.rec.mode != eager }

// Graphs reports whether training steps are recorded as CUDA graphs.
func (b *Backend) Graphs() bool { return b.rec.on }

// BeginStep starts a training step. Steps with the same key must issue
// the same operations on the same tensors with the same constants; only
// dropout keys and the learning rate may change. Between BeginStep and
// EndStep the step may not allocate, free, upload or download.
func (b *Backend) BeginStep(key string) {
	r := &b.rec
	if r.inStep {
		panic("gpu: BeginStep inside a step (EndStep missing)")
	}
	r.inStep, r.key, r.slot, r.lrAt = true, key, 0, 0
	if !r.on {
		return
	}
	n := r.seen[key]
	r.seen[key] = n + 1
	g := r.graphs[key]
	if g == nil && n == 0 {
		return // the warm-up: algorithms, workspaces, buffers
	}
	runtime.LockOSThread() // not op(): nothing here for the profiler
	defer runtime.UnlockOSThread()
	b.must(b.drv.CtxSetCurrent(b.ctx), "")
	if r.pending { // the mirror is about to be rewritten
		b.must(b.drv.EventSynchronize(r.upload), "")
		r.pending = false
	}
	if g != nil {
		r.mode, r.cur, r.next = replaying, g, 0
		return
	}
	if err := b.drv.StreamBeginCapture(b.stream, cuda.CaptureModeRelaxed); err != nil {
		r.on, r.off = false, fmt.Errorf("recording step %s: %w", key, err) // this step and the rest run op by op
		return
	}
	r.mode, r.cur = capturing, &stepGraph{}
}

// Step runs f, one training or evaluation step, as BeginStep(key), f(),
// EndStep() do, but survives a step that cannot be recorded: if capturing
// it fails (a library call that CUDA graphs do not allow, say), nothing of
// it has run yet, so recorded steps are turned off (GraphsOff says why)
// and f runs again op by op. f must therefore start from the same state
// each time it is called.
func (b *Backend) Step(key string, f func()) {
	b.BeginStep(key)
	if b.rec.mode != capturing {
		f()
		b.EndStep()
		return
	}
	if err := b.tryCapture(f); err != nil {
		b.rec.on, b.rec.off = false, err
		f()
	}
}

// tryCapture runs f and EndStep while capturing, turning a panic into an
// error.
func (b *Backend) tryCapture(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if b.rec.inStep || b.rec.mode != eager {
				b.abandonStep()
			}
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("%v", r)
			}
		}
	}()
	f()
	b.EndStep()
	return nil
}

// GraphsOff says why recorded steps were turned off after a failed
// capture; nil when they were not.
func (b *Backend) GraphsOff() error { return b.rec.off }

// EndStep ends the step that BeginStep started; a recorded step is
// launched here.
func (b *Backend) EndStep() {
	r := &b.rec
	if !r.inStep {
		panic("gpu: EndStep without BeginStep")
	}
	mode := r.mode
	r.inStep = false
	if mode != capturing {
		r.mode = eager
	}
	switch mode {
	case capturing:
		// Eager only once the capture has ended, so that op() does not
		// profile this call: the profiler's event would be recorded into
		// the graph, and CUDA refuses to time such an event.
		defer b.op()()
		graph, err := b.drv.StreamEndCapture(b.stream)
		b.must(err, "recording step "+r.key)
		r.mode = eager
		exec, err := b.drv.GraphInstantiate(graph)
		if err != nil {
			_ = b.drv.GraphDestroy(graph) // the instantiation error is the one to report
			b.must(err, "recording step "+r.key)
		}
		r.cur.graph, r.cur.exec, r.cur.slots = graph, exec, r.slot
		r.graphs[r.key] = r.cur
		b.launchStep(r.cur)
	case replaying:
		if r.next != len(r.cur.sigs) || r.slot != r.cur.slots {
			panic(fmt.Sprintf("gpu: step %q issued %d operations (%d scalars), its recording %d (%d): steps with the same key must do the same work",
				r.key, r.next, r.slot, len(r.cur.sigs), r.cur.slots))
		}
		defer b.op()()
		b.launchStep(r.cur)
		r.Replays++
	}
}

// launchStep copies the step's scalars to their slots and launches g.
func (b *Backend) launchStep(g *stepGraph) {
	r := &b.rec
	if g.slots > 0 {
		b.must(b.drv.MemcpyHtoDAsync(r.slotsDev.ptr, r.slotsHost, 8*int64(g.slots), b.stream), "recorded-step scalars")
		b.must(b.drv.EventRecord(r.upload, b.stream), "")
		r.pending = true
	}
	b.must(b.drv.GraphLaunch(g.exec, b.stream), "replaying step "+r.key)
}

// abandonStep ends a step that failed half-way: a capture is ended and
// its graph dropped, so the stream works again.
func (b *Backend) abandonStep() {
	r := &b.rec
	if r.mode == capturing {
		if g, err := b.drv.StreamEndCapture(b.stream); err == nil && g != 0 {
			_ = b.drv.GraphDestroy(g) // already failing: the first error is reported
		}
		delete(r.seen, r.key) // warm up and capture again next time
	}
	r.inStep, r.mode = false, eager
}

// recorded is called by an op, outside eager mode, with its signature. It
// reports whether the op is a replay, whose work the graph already holds.
func (b *Backend) recorded(s sig) bool {
	r := &b.rec
	switch r.mode {
	case capturing:
		r.cur.sigs = append(r.cur.sigs, uint64(s))
	case replaying:
		if r.next >= len(r.cur.sigs) || r.cur.sigs[r.next] != uint64(s) {
			at := r.next
			b.abandonStep()
			panic(fmt.Sprintf("gpu: step %q differs from its recording at operation %d (another op, tensor or constant): steps with the same key must do the same work", r.key, at))
		}
		r.next++
		return true
	}
	return false
}

// scalar stores v (8 bytes; a float32 in the low 4) for this run of the
// step and returns the device address its kernel reads it from, or 0
// outside a recorded step, where the kernel takes v by value.
func (b *Backend) scalar(v uint64) cuda.DevicePtr {
	r := &b.rec
	if r.mode == eager {
		return 0
	}
	if r.slot >= maxSlots {
		b.abandonStep()
		panic(fmt.Sprintf("gpu: more than %d dropout keys and learning rates in one step", maxSlots))
	}
	*(*uint64)(unsafe.Add(r.slotsHost, 8*r.slot)) = v
	p := r.slotsDev.ptr + cuda.DevicePtr(8*r.slot)
	r.slot++
	return p
}

// lrSlot is the slot holding the learning rate lr in a recorded step:
// one for every SGD call of the step with that rate, so that the slots
// bound the steps of a model updated in parts no more than one SGD call.
func (b *Backend) lrSlot(lr float32) cuda.DevicePtr {
	r := &b.rec
	bits := uint64(math.Float32bits(lr))
	if r.lrAt == 0 || r.lrBits != bits {
		r.lrAt, r.lrBits = b.scalar(bits), bits
	}
	return r.lrAt
}

// notInStep panics when what (an allocation, a transfer) is attempted
// inside a captured or replayed step, where it cannot be recorded.
func (b *Backend) notInStep(what string) {
	if b.rec.mode != eager {
		b.abandonStep()
		panic(fmt.Sprintf("gpu: %s inside a recorded training step (between BeginStep and EndStep); do it before the step", what))
	}
}

// sig is a signature of an op: its kind, the addresses and shapes of its
// tensors and its constants, hashed (FNV-1a over 64-bit words).
type sig uint64

// Op kinds, the first word of a signature.
const (
	sigFill sig = iota + 1
	sigCopy
	sigConvForward
	sigConvBackwardData
	sigConvBackwardFilter
	sigBNTrain
	sigBNInfer
	sigBNBackward
	sigMaxPoolForward
	sigMaxPoolBackward
	sigLRNForward
	sigLRNBackward
	sigLinearForward
	sigLinearBackward
	sigReLUForward
	sigReLUBackward
	sigDropout
	sigXent
	sigSGD
	sigBNReLUTrain
	sigBNReLUInfer
	sigBNReLUBackward
	sigTally
	sigBNReLUApply
	sigBNReLUPoolTrain
	sigBNReLUPoolInfer
	sigBNReLUPoolBackward
	sigLinearWeightGrad
)

func newSig(kind sig) sig { return sig(14695981039346656037).v(uint64(kind)) }

// v mixes in one word.
func (s sig) v(x uint64) sig { return (s ^ sig(x)) * 1099511628211 }

// b mixes in a flag.
func (s sig) b(x bool) sig {
	if x {
		return s.v(1)
	}
	return s.v(0)
}

// f mixes in a float64 constant.
func (s sig) f(x float64) sig { return s.v(math.Float64bits(x)) }

// t mixes in a tensor's address and shape (nil for an absent tensor).
func (s sig) t(x *tensor.Tensor) sig {
	if x == nil {
		return s.v(0)
	}
	if m, ok := x.Mem.(*mem); ok {
		s = s.v(uint64(m.ptr) + uint64(m.elem())*uint64(x.Off))
	}
	for _, d := range x.Shape {
		s = s.v(uint64(d))
	}
	return s.v(uint64(len(x.Shape)))
}
