//go:build linux && cgo

package gpu

import (
	"cmp"
	"runtime"
	"slices"
	"strings"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// The op profiler: where a step's GPU time goes. While it is on, every op
// issued outside a recorded step is bracketed by two CUDA events on the
// stream, so each op's GPU time is measured without waiting for the GPU;
// ProfileReport reads and sums them by op. Each of the project's kernels
// an op launches is bracketed too (kernels.Module.Trace), which splits the
// op's time among its kernels and the rest. Profile steps issued op by op
// (no BeginStep): a replayed graph has no ops to bracket.

// ProfileRow is one op's share of the profiled GPU time.
type ProfileRow = tensor.OpTime

type profiler struct {
	on      bool
	depth   int          // ops nest (ConvBackward's two passes): time the outermost
	current string       // the outermost op's name
	start   cuda.Event   // its start
	pool    []cuda.Event // events to reuse
	pending []timedOp    // recorded, not read yet
	kernels []timedOp    // the current op's kernels
	names   map[uintptr]string
	rows    map[string]*ProfileRow
	parts   map[string]map[string]*ProfileRow // by op, by kernel
}

type timedOp struct {
	name        string
	start, stop cuda.Event
	kernels     []timedOp // an op's kernels
}

// Profile turns the op profiler on or off; turning it on clears what it
// had summed.
func (b *Backend) Profile(on bool) {
	p := &b.prof
	p.on = on
	if on {
		p.rows, p.parts = map[string]*ProfileRow{}, map[string]map[string]*ProfileRow{}
		if p.names == nil {
			p.names = map[uintptr]string{}
		}
	}
}

// ProfileReport waits for the GPU and returns each op's calls and GPU time
// since Profile(true), the most time first.
func (b *Backend) ProfileReport() ([]ProfileRow, error) {
	runtime.LockOSThread() // not op(): the report must not time itself
	defer runtime.UnlockOSThread()
	if err := b.drv.CtxSetCurrent(b.ctx); err != nil {
		return nil, err
	}
	p := &b.prof
	if err := b.drv.StreamSynchronize(b.stream); err != nil {
		return nil, err
	}
	for _, t := range p.pending {
		ms, err := b.drv.EventElapsedTime(t.start, t.stop)
		if err != nil {
			return nil, err
		}
		addTime(p.rows, t.name, float64(ms))
		parts := p.parts[t.name]
		if parts == nil {
			parts = map[string]*ProfileRow{}
			p.parts[t.name] = parts
		}
		rest := float64(ms)
		for _, k := range t.kernels {
			if k.stop == 0 {
				p.pool = append(p.pool, k.start)
				continue
			}
			kms, err := b.drv.EventElapsedTime(k.start, k.stop)
			if err != nil {
				return nil, err
			}
			addTime(parts, k.name, float64(kms))
			rest -= float64(kms)
			p.pool = append(p.pool, k.start, k.stop)
		}
		if len(t.kernels) > 0 && rest > 0 {
			addTime(parts, "other", rest)
		}
		p.pool = append(p.pool, t.start, t.stop)
	}
	p.pending = p.pending[:0]
	var rows []ProfileRow
	for _, r := range p.rows {
		row := *r
		for _, k := range p.parts[r.Op] {
			row.Parts = append(row.Parts, *k)
		}
		slices.SortFunc(row.Parts, byTime)
		rows = append(rows, row)
	}
	slices.SortFunc(rows, byTime)
	return rows, nil
}

// addTime adds a call of ms to the row of name.
func addTime(rows map[string]*ProfileRow, name string, ms float64) {
	r := rows[name]
	if r == nil {
		r = &ProfileRow{Op: name}
		rows[name] = r
	}
	r.Calls++
	r.Ms += ms
}

func byTime(a, c ProfileRow) int { return cmp.Compare(c.Ms, a.Ms) }

// profStart is called by op (skip: the frames between it and the op).
func (b *Backend) profStart(skip int) {
	p := &b.prof
	p.depth++
	if p.depth > 1 {
		return
	}
	var pc [1]uintptr
	runtime.Callers(skip+1, pc[:])
	name, ok := p.names[pc[0]]
	if !ok {
		name = "?"
		if f := runtime.FuncForPC(pc[0]); f != nil {
			name = f.Name()[strings.LastIndex(f.Name(), ".")+1:]
		}
		p.names[pc[0]] = name
	}
	p.current, p.start = name, b.event()
	b.must(b.drv.EventRecord(p.start, b.stream), "profiler")
	b.k.Trace = b.traceKernel
}

// traceKernel brackets one kernel of the op being profiled with events
// (not while a step is being captured: the op is dropped then).
func (b *Backend) traceKernel(name string, done bool) {
	p := &b.prof
	n := len(p.kernels)
	if b.rec.mode != eager || (done && (n == 0 || p.kernels[n-1].stop != 0)) {
		return
	}
	e := b.event()
	b.must(b.drv.EventRecord(e, b.stream), "profiler")
	if !done {
		p.kernels = append(p.kernels, timedOp{name: name, start: e})
		return
	}
	p.kernels[n-1].stop = e
}

// profStop ends what profStart began; drop forgets the op (it failed, or
// a capture began inside it).
func (b *Backend) profStop(drop bool) {
	p := &b.prof
	p.depth--
	if p.depth > 0 {
		return
	}
	b.k.Trace = nil
	kernels := p.kernels
	p.kernels = nil
	if drop {
		p.pool = append(p.pool, p.start)
		for _, k := range kernels {
			p.pool = append(p.pool, k.start)
			if k.stop != 0 {
				p.pool = append(p.pool, k.stop)
			}
		}
		return
	}
	stop := b.event()
	b.must(b.drv.EventRecord(stop, b.stream), "profiler")
	p.pending = append(p.pending, timedOp{name: p.current, start: p.start, stop: stop, kernels: kernels})
}

// event takes an event from the pool or creates one.
func (b *Backend) event() cuda.Event {
	p := &b.prof
	if n := len(p.pool); n > 0 {
		e := p.pool[n-1]
		p.pool = p.pool[:n-1]
		return e
	}
	e, err := b.drv.EventCreate(cuda.EventDefault)
	b.must(err, "profiler")
	return e
}

// closeProfiler destroys the events.
func (b *Backend) closeProfiler() []error {
	p := &b.prof
	var errs []error
	for _, t := range p.pending {
		p.pool = append(p.pool, t.start, t.stop)
		for _, k := range t.kernels {
			p.pool = append(p.pool, k.start)
			if k.stop != 0 {
				p.pool = append(p.pool, k.stop)
			}
		}
	}
	for _, e := range p.pool {
		errs = append(errs, b.drv.EventDestroy(e))
	}
	p.pool, p.pending, p.on = nil, nil, false
	return errs
}
