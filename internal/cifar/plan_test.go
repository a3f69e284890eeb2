package cifar

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// planned are transforms of every kind, at sizes that copy, shrink and
// enlarge.
var planned = map[string]Planner{
	"seed-224":  SeedTransform{},
	"seed-32":   SeedTransform{Size: 32},
	"cifar-32":  CIFARTransform{},
	"cifar-48":  CIFARTransform{Size: 48},
	"eval-32":   EvalTransform{Norm: CIFARNorm},
	"eval-64":   EvalTransform{Size: 64, Norm: ImageNetNorm},
	"eval-odd":  EvalTransform{Size: 40, Norm: Norm{Mean: [3]float32{0.1, 0.2, 0.3}, Std: [3]float32{0.5, 0.6, 0.7}}},
	"eval-zero": EvalTransform{},
}

// A Plan gives the Loader's batches: the same images in the same order, and
// its crops make the Loader's pixels through ApplyCrop, bit for bit.
func TestPlanMatchesLoader(t *testing.T) {
	ds := synth(45, 0, 3)
	for name, tf := range planned {
		t.Run(name, func(t *testing.T) {
			opt := LoaderOptions{Batch: 8, Shuffle: true, Transform: tf, Seed: 7, Epoch: 2, Workers: 3}
			xs, idx, ys := epoch(t, ds, opt)
			pl, err := NewPlan(ds, opt)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Batches() != len(xs) || pl.Batches() != 6 {
				t.Fatalf("plan has %d batches, the loader %d (want 6)", pl.Batches(), len(xs))
			}
			s := tf.OutputSize()
			per := 3 * s * s
			var b PlanBatch
			for k := range pl.Batches() {
				pl.Batch(k, &b)
				if !slices.Equal(b.Index, idx[k]) || !slices.Equal(b.Labels, ys[k]) {
					t.Fatalf("batch %d: plan indices %v labels %v, loader %v %v", k, b.Index, b.Labels, idx[k], ys[k])
				}
				got := make([]float32, per)
				for p, c := range b.Crops {
					ApplyCrop(got, ds.Image(b.Index[p]), c, s, pl.Transform().Table())
					want := xs[k][p*per : (p+1)*per]
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("batch %d image %d (crop %+v) element %d: plan %v, loader %v", k, p, c, i, got[i], want[i])
						}
					}
				}
			}
		})
	}
}

// Crops drawn by CIFARTransform reach outside the image (the padding),
// the seed's stay inside; both stay within the bounds ApplyCrop accepts.
func TestPlanCropRanges(t *testing.T) {
	rng := newRNG(5)
	outside := 0
	for range 2000 {
		c := CIFARTransform{}.Plan(rng)
		if c.H != Side || c.W != Side || c.Top < -cifarPad || c.Top > cifarPad || c.Left < -cifarPad || c.Left > cifarPad {
			t.Fatalf("CIFAR crop %+v", c)
		}
		if c.Top != 0 || c.Left != 0 {
			outside++
		}
		s := SeedTransform{}.Plan(rng)
		if s.Top < 0 || s.Left < 0 || s.H < 1 || s.W < 1 || s.Top+s.H > Side || s.Left+s.W > Side {
			t.Fatalf("seed crop %+v leaves the image", s)
		}
	}
	if outside < 1900 {
		t.Fatalf("only %d of 2000 CIFAR crops are shifted", outside)
	}
}

// A window partly outside the image reads zeros there: ApplyCrop against a
// padded copy of the image, cropped by hand.
func TestApplyCropOutside(t *testing.T) {
	img := patterned()
	const pad = 6
	P := Side + 2*pad
	padded := make([]byte, 3*P*P)
	for c := range 3 {
		for y := range Side {
			copy(padded[c*P*P+(y+pad)*P+pad:], img[c*Side*Side+y*Side:c*Side*Side+(y+1)*Side])
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tab := &cifarLUT
	for range 200 {
		h, w := 1+rng.IntN(Side), 1+rng.IntN(Side)
		c := Crop{Top: rng.IntN(P-h+1) - pad, Left: rng.IntN(P-w+1) - pad, H: h, W: w, Flip: rng.IntN(2) == 1}
		s := 1 + rng.IntN(40)
		got := make([]float32, 3*s*s)
		ApplyCrop(got, img, c, s, tab)
		// The same window of the padded image, copied to a 32×32 image.
		var win [ImageBytes]byte
		for ch := range 3 {
			for y := range h {
				copy(win[ch*Side*Side+y*Side:ch*Side*Side+y*Side+w], padded[ch*P*P+(c.Top+pad+y)*P+c.Left+pad:])
			}
		}
		want := make([]float32, 3*s*s)
		resizeNorm(want, win[:], 0, 0, h, w, s, c.Flip, tab)
		if !slices.Equal(got, want) {
			t.Fatalf("crop %+v to %d: differs from the padded reference", c, s)
		}
	}
}

func TestApplyCropRejectsBadWindows(t *testing.T) {
	for _, c := range []Crop{{H: 0, W: 3}, {H: 33, W: 32}, {H: 4, W: -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("crop %+v: no panic", c)
				}
			}()
			ApplyCrop(make([]float32, 3*8*8), patterned(), c, 8, &cifarLUT)
		}()
	}
}

func TestNewPlanErrors(t *testing.T) {
	ds := synth(4, 0, 1)
	if _, err := NewPlan(ds, LoaderOptions{Batch: 0}); err == nil {
		t.Error("batch 0: no error")
	}
	if _, err := NewPlan(ds, LoaderOptions{Batch: 2, Transform: opaque{}}); err == nil {
		t.Error("a transform without a plan: no error")
	}
}

// opaque is a Transform that is not a Planner.
type opaque struct{}

func (opaque) Apply(dst []float32, img []byte, rng *rand.Rand) {}
