package cifar

import (
	"runtime"
	"slices"
	"testing"
	"time"
)

// epoch runs one loader to the end and returns copies of its batches.
func epoch(t testing.TB, ds *Dataset, opt LoaderOptions) (xs [][]float32, idx [][]int, ys [][]float32) {
	l := NewLoader(ds, opt)
	defer l.Close()
	per := 3 * Side * Side
	if sz, ok := opt.Transform.(Sizer); ok {
		per = 3 * sz.OutputSize() * sz.OutputSize()
	}
	n := 0
	for {
		b, ok := l.Next()
		if !ok {
			break
		}
		if b.N != len(b.Index) || len(b.Y) != b.N || len(b.X) != b.N*per {
			t.Fatalf("batch sizes N=%d X=%d Y=%d", b.N, len(b.X), len(b.Y))
		}
		xs = append(xs, slices.Clone(b.X))
		idx = append(idx, slices.Clone(b.Index))
		ys = append(ys, slices.Clone(b.Y))
		l.Release(b)
		n++
	}
	if n != l.Batches() {
		t.Fatalf("%d batches, Batches() = %d", n, l.Batches())
	}
	return xs, idx, ys
}

func TestLoaderVisitsEveryImageOnce(t *testing.T) {
	ds := synth(103, 0, 1)
	eval := EvalTransform{Size: 32}
	for _, dropLast := range []bool{false, true} {
		xs, idx, ys := epoch(t, ds, LoaderOptions{Batch: 10, Shuffle: true, DropLast: dropLast, Transform: eval, Seed: 5, Workers: 3})
		wantBatches, wantImages := 11, 103
		if dropLast {
			wantBatches, wantImages = 10, 100
		}
		if len(xs) != wantBatches {
			t.Fatalf("dropLast=%v: %d batches, want %d", dropLast, len(xs), wantBatches)
		}
		count := map[int]int{}
		want := make([]float32, ImageBytes)
		total := 0
		for k := range xs {
			if len(idx[k]) != 10 && !(k == len(xs)-1 && !dropLast && len(idx[k]) == 3) {
				t.Fatalf("batch %d has %d images", k, len(idx[k]))
			}
			for p, i := range idx[k] {
				count[i]++
				total++
				if ys[k][p] != float32(ds.Labels[i]) {
					t.Fatalf("label of image %d", i)
				}
				eval.Apply(want, ds.Image(i), nil)
				if !slices.Equal(xs[k][p*ImageBytes:(p+1)*ImageBytes], want) {
					t.Fatalf("batch %d slot %d is not image %d", k, p, i)
				}
			}
		}
		if total != wantImages {
			t.Fatalf("%d images, want %d", total, wantImages)
		}
		for i, c := range count {
			if c != 1 {
				t.Fatalf("image %d seen %d times", i, c)
			}
		}
	}
}

func TestLoaderSameOutputForAnyWorkerCount(t *testing.T) {
	ds := synth(70, 0, 2)
	for _, tr := range []Transform{CIFARTransform{}, SeedTransform{Size: 48}} {
		opt := LoaderOptions{Batch: 16, Shuffle: true, Transform: tr, Seed: 9, Epoch: 3, Workers: 1, Prefetch: 1}
		x1, i1, _ := epoch(t, ds, opt)
		opt.Workers, opt.Prefetch = 4, 3
		x4, i4, _ := epoch(t, ds, opt)
		for k := range x1 {
			if !slices.Equal(i1[k], i4[k]) || !slices.Equal(x1[k], x4[k]) {
				t.Fatalf("%T: batch %d differs between 1 and 4 workers", tr, k)
			}
		}
	}
}

func TestLoaderEpochsAndSeeds(t *testing.T) {
	ds := synth(64, 0, 3)
	opt := LoaderOptions{Batch: 64, Shuffle: true, Transform: CIFARTransform{}, Seed: 1, Workers: 2}
	x0, i0, _ := epoch(t, ds, opt)
	x0b, i0b, _ := epoch(t, ds, opt)
	if !slices.Equal(i0[0], i0b[0]) || !slices.Equal(x0[0], x0b[0]) {
		t.Fatal("same seed and epoch, different batches")
	}
	opt.Epoch = 1
	_, i1, _ := epoch(t, ds, opt)
	if slices.Equal(i0[0], i1[0]) {
		t.Fatal("epochs 0 and 1 visit the images in the same order")
	}
	opt.Epoch, opt.Seed = 0, 2
	_, i2, _ := epoch(t, ds, opt)
	if slices.Equal(i0[0], i2[0]) {
		t.Fatal("seeds 1 and 2 give the same order")
	}

	// An image's augmentation depends on (seed, epoch, its index), not on
	// where the shuffle put it.
	opt.Seed = 1
	opt.Shuffle = false
	xs, _, _ := epoch(t, ds, opt)
	for p, i := range i0[0] {
		if !slices.Equal(x0[0][p*ImageBytes:(p+1)*ImageBytes], xs[0][i*ImageBytes:(i+1)*ImageBytes]) {
			t.Fatalf("image %d augmented differently with and without shuffling", i)
		}
	}
	// Unshuffled is in dataset order.
	_, iu, _ := epoch(t, ds, opt)
	for p, i := range iu[0] {
		if p != i {
			t.Fatal("unshuffled loader out of order")
		}
	}
	// A different epoch augments the same image differently.
	opt.Epoch = 1
	xe, _, _ := epoch(t, ds, opt)
	if slices.Equal(xs[0], xe[0]) {
		t.Fatal("epochs 0 and 1 augment identically")
	}
}

func TestLoaderCloseEarly(t *testing.T) {
	ds := synth(200, 0, 4)
	before := runtime.NumGoroutine()
	for range 5 {
		l := NewLoader(ds, LoaderOptions{Batch: 8, Shuffle: true, Transform: SeedTransform{Size: 64}, Workers: 4})
		b, ok := l.Next()
		if !ok {
			t.Fatal("no first batch")
		}
		l.Close()
		l.Close() // twice is fine
		if _, ok := l.Next(); ok {
			t.Fatal("Next after Close returned a batch")
		}
		if b.N != 8 || len(b.X) != 8*3*64*64 { // still valid after Close
			t.Fatal("batch changed after Close")
		}
		Release(b)
		Release(b) // twice is a no-op
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
	// An empty dataset gives no batches.
	l := NewLoader(&Dataset{}, LoaderOptions{Batch: 4})
	if _, ok := l.Next(); ok || l.Batches() != 0 {
		t.Fatal("batches from an empty dataset")
	}
	l.Close()
}

func TestLoaderSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	ds := synth(2000, 0, 5)
	l := NewLoader(ds, LoaderOptions{Batch: 8, Shuffle: true, Transform: CIFARTransform{}, Workers: 2})
	defer l.Close()
	for range 20 { // warm up the pool
		b, _ := l.Next()
		l.Release(b)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	n := 0
	for {
		b, ok := l.Next()
		if !ok {
			break
		}
		l.Release(b)
		n++
	}
	runtime.ReadMemStats(&m1)
	per := float64(m1.Mallocs-m0.Mallocs) / float64(n)
	t.Logf("%.3f allocations per batch over %d batches", per, n)
	if per > 0.5 {
		t.Fatalf("%.2f allocations per batch in steady state over %d batches", per, n)
	}
}

// BenchmarkLoader measures images/s through the loader with the seed's
// augmentation at 224 and the CIFAR one at 32, on all CPUs.
func BenchmarkLoader(b *testing.B) {
	ds := synth(1024, 0, 6)
	for _, bc := range []struct {
		name  string
		t     Transform
		batch int
	}{{"Seed224", SeedTransform{Size: 224}, 64}, {"CIFAR32", CIFARTransform{}, 128}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			// One epoch first, so that the batch pool is warm and B/op
			// shows the steady state.
			warm := NewLoader(ds, LoaderOptions{Batch: bc.batch, Shuffle: true, Transform: bc.t, Epoch: -1})
			for bt, ok := warm.Next(); ok; bt, ok = warm.Next() {
				warm.Release(bt)
			}
			warm.Close()
			images := 0
			ep := 0
			l := NewLoader(ds, LoaderOptions{Batch: bc.batch, Shuffle: true, Transform: bc.t, Epoch: ep})
			b.ResetTimer()
			for range b.N {
				bt, ok := l.Next()
				if !ok {
					l.Close()
					ep++
					l = NewLoader(ds, LoaderOptions{Batch: bc.batch, Shuffle: true, Transform: bc.t, Epoch: ep})
					bt, _ = l.Next()
				}
				images += bt.N
				l.Release(bt)
			}
			b.StopTimer()
			l.Close()
			b.ReportMetric(float64(images)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
