package cifar

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
)

// LoaderOptions configures a Loader for one epoch.
type LoaderOptions struct {
	Batch     int       // images per batch; must be > 0
	Shuffle   bool      // visit the images in an order drawn from (Seed, Epoch)
	DropLast  bool      // drop the last batch when it is short
	Transform Transform // nil means EvalTransform{Size: 32}: plain x/255
	Seed      uint64
	Epoch     int
	Workers   int // goroutines that transform images; 0 means runtime.NumCPU()
	Prefetch  int // finished batches queued ahead of the caller (one more is in preparation); 0 means 2
}

// Batch is a batch of transformed images.
type Batch struct {
	X     []float32 // N×3×S×S
	Y     []float32 // class indices as float32
	N     int
	Index []int // the dataset index of each image

	pending sync.WaitGroup // image chunks not yet transformed
	out     bool           // handed to the caller and not yet released
}

// batchPool recycles batch buffers across loaders, so that epoch after
// epoch of training allocates nothing in steady state.
var batchPool sync.Pool

// Release returns b's buffers to the pool; b must not be used afterwards.
// Releasing nil or releasing twice does nothing.
func Release(b *Batch) {
	if b == nil || !b.out {
		return
	}
	b.out = false
	batchPool.Put(b)
}

// Release is the package-level Release.
func (l *Loader) Release(b *Batch) { Release(b) }

func getBatch(n, per, capacity int) *Batch {
	if v := batchPool.Get(); v != nil {
		b := v.(*Batch)
		if cap(b.X) >= n*per && cap(b.Y) >= n && cap(b.Index) >= n {
			b.X, b.Y, b.Index, b.N = b.X[:n*per], b.Y[:n], b.Index[:n], n
			return b
		}
		// Too small for this loader: let it go.
	}
	capacity = max(capacity, n)
	b := &Batch{X: make([]float32, capacity*per), Y: make([]float32, capacity), Index: make([]int, capacity)}
	b.X, b.Y, b.Index, b.N = b.X[:n*per], b.Y[:n], b.Index[:n], n
	return b
}

// job is a run of images [lo, hi) of a batch for one worker.
type job struct {
	b      *Batch
	lo, hi int
}

// Loader produces the batches of one epoch, in order, transformed by a pool
// of workers ahead of the caller. Everything it produces is a function of
// the dataset, the options, Seed and Epoch: the visiting order comes from
// (Seed, Epoch) and each image's augmentation from (Seed, Epoch, its index
// in the dataset), never from which worker ran when, so any Workers count
// gives the same batches. A Loader is used by one goroutine; call Close when
// done with it (it is safe to call Close before the epoch ends).
type Loader struct {
	ds    *Dataset
	opt   LoaderOptions
	t     Transform
	per   int // floats per image
	order []int
	nb    int

	jobs  chan job
	ready chan *Batch
	quit  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// NewLoader starts the workers for one epoch over ds. It panics when
// opt.Batch is not positive.
func NewLoader(ds *Dataset, opt LoaderOptions) *Loader {
	if opt.Batch <= 0 {
		panic("cifar: LoaderOptions.Batch must be positive")
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.NumCPU()
	}
	if opt.Prefetch <= 0 {
		opt.Prefetch = 2
	}
	t := opt.Transform
	if t == nil {
		t = EvalTransform{Size: Side}
	}
	s := Side
	if sz, ok := t.(Sizer); ok {
		s = sz.OutputSize()
	}
	l := &Loader{
		ds:    ds,
		opt:   opt,
		t:     t,
		per:   3 * s * s,
		order: make([]int, ds.Len()),
		jobs:  make(chan job, 4*opt.Workers),
		ready: make(chan *Batch, opt.Prefetch),
		quit:  make(chan struct{}),
	}
	l.nb = opt.order(l.order)
	l.wg.Add(1 + opt.Workers)
	go l.dispatch()
	for range opt.Workers {
		go l.work()
	}
	return l
}

// Batches is the number of batches in the epoch.
func (l *Loader) Batches() int { return l.nb }

// dispatch fills each batch's labels and hands its images to the workers in
// chunks, then queues the batch; the queue's capacity is the prefetch depth.
func (l *Loader) dispatch() {
	defer l.wg.Done()
	defer close(l.ready)
	defer close(l.jobs)
	B := l.opt.Batch
	chunk := max(1, B/(4*l.opt.Workers))
	for k := range l.nb {
		lo := k * B
		n := min(B, len(l.order)-lo)
		b := getBatch(n, l.per, B)
		for p := range n {
			idx := l.order[lo+p]
			b.Index[p] = idx
			b.Y[p] = float32(l.ds.Labels[idx])
		}
		b.pending.Add((n + chunk - 1) / chunk)
		for a := 0; a < n; a += chunk {
			select {
			case l.jobs <- job{b: b, lo: a, hi: min(n, a+chunk)}:
			case <-l.quit:
				b.pending.Add(-((n - a + chunk - 1) / chunk)) // never sent
				b.pending.Wait()
				batchPool.Put(b)
				return
			}
		}
		select {
		case l.ready <- b:
		case <-l.quit:
			b.pending.Wait()
			batchPool.Put(b)
			return
		}
	}
}

// work transforms images. Each image gets its own generator, seeded from
// (Seed, Epoch, dataset index), reusing one PCG so that nothing allocates.
func (l *Loader) work() {
	defer l.wg.Done()
	src := rand.NewPCG(0, 0)
	rng := rand.New(src)
	for jb := range l.jobs {
		select {
		case <-l.quit: // closing: skip the work, keep the count right
		default:
			b := jb.b
			for p := jb.lo; p < jb.hi; p++ {
				idx := b.Index[p]
				l.opt.seedImage(src, idx)
				l.t.Apply(b.X[p*l.per:(p+1)*l.per], l.ds.Image(idx), rng)
			}
		}
		jb.b.pending.Done()
	}
}

// Next returns the next batch of the epoch, waiting until it is ready, and
// false after the last one (or after Close). Pass each batch to Release
// when done with it.
func (l *Loader) Next() (*Batch, bool) {
	b, ok := <-l.ready
	if !ok {
		return nil, false
	}
	b.pending.Wait()
	b.out = true
	return b, true
}

// Close stops the workers and returns the batches prepared but not taken.
// It waits until no goroutine of the loader runs. Batches already returned
// by Next stay valid until released.
func (l *Loader) Close() {
	l.once.Do(func() {
		close(l.quit)
		for b := range l.ready {
			b.pending.Wait()
			batchPool.Put(b)
		}
		l.wg.Wait()
	})
}

// order fills order with the epoch's visiting order of len(order) images
// and returns the number of batches.
func (opt *LoaderOptions) order(order []int) int {
	n := len(order)
	for i := range order {
		order[i] = i
	}
	if opt.Shuffle {
		ep := uint64(opt.Epoch)
		rng := rand.New(rand.NewPCG(mix(opt.Seed, ep, 0x53485546), mix(opt.Seed, ep, 1))) // "SHUF"
		rng.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	}
	return opt.Batches(n)
}

// Batches is the number of batches an epoch of n images makes.
func (opt *LoaderOptions) Batches(n int) int {
	nb := n / opt.Batch
	if !opt.DropLast && n%opt.Batch != 0 {
		nb++
	}
	return nb
}

// seedImage seeds src for the augmentation of image idx in this epoch.
func (opt *LoaderOptions) seedImage(src *rand.PCG, idx int) {
	ep, i := uint64(opt.Epoch), uint64(idx)
	src.Seed(mix(opt.Seed, ep, i), mix(opt.Seed, ep, i, 0x415547)) // "AUG"
}

// Plan is an epoch as a Loader with the same options would make it, less
// the pixels: each batch's dataset indices, labels and Crops, for a
// device that holds the images and does the pixel work itself (the GPU's
// input pipeline). The draws are the Loader's, so both give the same
// batches. Drawing a batch's crops takes microseconds: a Plan works in
// the caller's goroutine.
type Plan struct {
	ds    *Dataset
	opt   LoaderOptions
	p     Planner
	order []int
	nb    int
	src   *rand.PCG
	rng   *rand.Rand
}

// PlanBatch is one batch of a Plan; its slices are reused by the next
// call of Plan.Batch.
type PlanBatch struct {
	N      int
	Index  []int     // [N] dataset indices
	Labels []float32 // [N] class indices as float32
	Crops  []Crop    // [N]
}

// NewPlan draws the epoch's order; opt.Transform must be a Planner (all
// transforms of this package are), and Workers and Prefetch are unused.
func NewPlan(ds *Dataset, opt LoaderOptions) (*Plan, error) {
	if opt.Batch <= 0 {
		return nil, fmt.Errorf("cifar: batch size %d: must be positive", opt.Batch)
	}
	t := opt.Transform
	if t == nil {
		t = EvalTransform{Size: Side}
	}
	p, ok := t.(Planner)
	if !ok {
		return nil, fmt.Errorf("cifar: transform %T cannot be planned (it is not a Crop and a Table)", t)
	}
	src := rand.NewPCG(0, 0)
	pl := &Plan{ds: ds, opt: opt, p: p, order: make([]int, ds.Len()), src: src, rng: rand.New(src)}
	pl.nb = pl.opt.order(pl.order)
	return pl, nil
}

// Batches is the number of batches in the epoch.
func (pl *Plan) Batches() int { return pl.nb }

// Transform is what the plan's crops are drawn for: its OutputSize and
// Table complete them.
func (pl *Plan) Transform() Planner { return pl.p }

// Batch fills b with batch k (0 ≤ k < Batches()).
func (pl *Plan) Batch(k int, b *PlanBatch) {
	if k < 0 || k >= pl.nb {
		panic(fmt.Sprintf("cifar: batch %d of a plan of %d", k, pl.nb))
	}
	B := pl.opt.Batch
	lo := k * B
	n := min(B, len(pl.order)-lo)
	b.N = n
	b.Index, b.Labels, b.Crops = grow(b.Index, n), grow(b.Labels, n), grow(b.Crops, n)
	for p := range n {
		idx := pl.order[lo+p]
		b.Index[p] = idx
		b.Labels[p] = float32(pl.ds.Labels[idx])
		pl.opt.seedImage(pl.src, idx)
		b.Crops[p] = pl.p.Plan(pl.rng)
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
