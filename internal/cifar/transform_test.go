package cifar

import (
	"math"
	"math/rand/v2"
	"testing"
)

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 12345)) }

// patterned is an image whose pixel (c, y, x) is a known function.
func patterned() []byte {
	img := make([]byte, ImageBytes)
	for c := range 3 {
		for y := range Side {
			for x := range Side {
				img[(c*Side+y)*Side+x] = byte(c*80 + y*5 + x*3)
			}
		}
	}
	return img
}

// refResize is PyTorch's upsample_bilinear2d (align_corners=False) written
// directly in float64, one output at a time, then rounded half to even.
func refResize(img []byte, c, i, j, h, w, s int) []float64 {
	out := make([]float64, s*s)
	src := func(d, n int) (int, int, float64) {
		r := (float64(d)+0.5)*float64(n)/float64(s) - 0.5
		if r < 0 {
			r = 0
		}
		i0 := int(r)
		i1 := min(i0+1, n-1)
		return i0, i1, r - float64(i0)
	}
	px := func(y, x int) float64 { return float64(img[(c*Side+i+y)*Side+j+x]) }
	for y := range s {
		y0, y1, ly := src(y, h)
		for x := range s {
			x0, x1, lx := src(x, w)
			v := (1-ly)*((1-lx)*px(y0, x0)+lx*px(y0, x1)) + ly*((1-lx)*px(y1, x0)+lx*px(y1, x1))
			out[y*s+x] = math.RoundToEven(v)
		}
	}
	return out
}

// asBytes recovers the resized byte values from a plain-normalised output.
func asBytes(dst []float32) []float64 {
	out := make([]float64, len(dst))
	for i, v := range dst {
		out[i] = math.Round(float64(v) * 255)
	}
	return out
}

func TestResizeKnownValues(t *testing.T) {
	img := make([]byte, ImageBytes)
	for c := range 3 {
		for y := range Side {
			row := img[(c*Side+y)*Side:]
			row[0], row[1] = 0, 100
			row[2], row[3], row[4], row[5] = 2, 3, 5, 6
		}
	}
	// 2 → 4 upsampling of [0, 100]: F.interpolate gives [0, 25, 75, 100].
	dst := make([]float32, 3*4*4)
	resizeNorm(dst, img, 0, 0, 2, 2, 4, false, &plainLUT)
	got := asBytes(dst)
	for k, want := range []float64{0, 25, 75, 100} {
		for c := range 3 {
			for y := range 4 {
				if v := got[(c*4+y)*4+k]; v != want {
					t.Fatalf("c%d y%d x%d = %v, want %v", c, y, k, v, want)
				}
			}
		}
	}
	// Flipped: [100, 75, 25, 0].
	resizeNorm(dst, img, 0, 0, 2, 2, 4, true, &plainLUT)
	if g := asBytes(dst)[:4]; g[0] != 100 || g[1] != 75 || g[2] != 25 || g[3] != 0 {
		t.Fatalf("flipped row = %v", g)
	}
	// 4 → 2 of [2, 3, 5, 6]: the means 2.5 and 5.5 round half to even, as torch.round does.
	dst = make([]float32, 3*2*2)
	resizeNorm(dst, img, 0, 2, 4, 4, 2, false, &plainLUT)
	if g := asBytes(dst)[:2]; g[0] != 2 || g[1] != 6 {
		t.Fatalf("downsampled row = %v, want [2 6]", g)
	}
}

func TestResizeMatchesReference(t *testing.T) {
	img := make([]byte, ImageBytes)
	rng := newRNG(1)
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct{ i, j, h, w, s int }{
		{0, 0, 32, 32, 224}, {3, 5, 17, 23, 224}, {10, 0, 9, 12, 64}, {0, 0, 32, 32, 16}, {1, 2, 30, 29, 32}, {31, 31, 1, 1, 5},
	} {
		dst := make([]float32, 3*tc.s*tc.s)
		resizeNorm(dst, img, tc.i, tc.j, tc.h, tc.w, tc.s, false, &plainLUT)
		got := asBytes(dst)
		off := 0
		for c := range 3 {
			want := refResize(img, c, tc.i, tc.j, tc.h, tc.w, tc.s)
			for k, v := range want {
				if d := math.Abs(got[c*tc.s*tc.s+k] - v); d > 1 {
					t.Fatalf("%+v c%d at %d: %v, reference %v", tc, c, k, got[c*tc.s*tc.s+k], v)
				} else if d != 0 {
					off++ // float32 vs float64 at a .5 boundary
				}
			}
		}
		if off > 3*tc.s*tc.s/1000+1 {
			t.Errorf("%+v: %d values off by one", tc, off)
		}
	}
}

func TestResizeConstantStaysConstant(t *testing.T) {
	img := make([]byte, ImageBytes)
	for i := range img {
		img[i] = 137
	}
	for _, s := range []int{7, 32, 64, 224} {
		for _, tr := range []Transform{EvalTransform{Size: s, Norm: ImageNetNorm}, SeedTransform{Size: s}} {
			dst := make([]float32, 3*s*s)
			tr.Apply(dst, img, newRNG(uint64(s)))
			for c := range 3 {
				want := (float32(137)/255 - ImageNetNorm.Mean[c]) / ImageNetNorm.Std[c]
				for _, v := range dst[c*s*s : (c+1)*s*s] {
					if v != want {
						t.Fatalf("%T size %d channel %d: %v, want %v", tr, s, c, v, want)
					}
				}
			}
		}
	}
}

func TestEvalTransformIdentityAt32(t *testing.T) {
	img := patterned()
	dst := make([]float32, ImageBytes)
	for _, n := range []Norm{{}, CIFARNorm, ImageNetNorm, {Mean: [3]float32{0.5, 0.5, 0.5}, Std: [3]float32{0.5, 0.5, 0.5}}} {
		EvalTransform{Size: 32, Norm: n}.Apply(dst, img, nil)
		for k, v := range dst {
			c := k / (Side * Side)
			want := float32(img[k]) / 255
			if n.Std[c] != 0 {
				want = (want - n.Mean[c]) / n.Std[c]
			}
			if v != want {
				t.Fatalf("norm %v: element %d = %v, want %v", n, k, v, want)
			}
		}
	}
	// Deterministic: the same output twice, whatever the rng.
	a, b := make([]float32, 3*224*224), make([]float32, 3*224*224)
	EvalTransform{Size: 224, Norm: ImageNetNorm}.Apply(a, img, newRNG(1))
	EvalTransform{Size: 224, Norm: ImageNetNorm}.Apply(b, img, newRNG(2))
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("EvalTransform differs between two calls")
		}
	}
}

func TestResizedCropParams(t *testing.T) {
	rng := newRNG(7)
	sizes := map[int]bool{}
	for range 20000 {
		i, j, h, w := resizedCropParams(rng, 32, 32, 0.08, 1, 3.0/4, 4.0/3)
		if h < 1 || w < 1 || i < 0 || j < 0 || i+h > 32 || j+w > 32 {
			t.Fatalf("crop (%d,%d,%d,%d) outside the image", i, j, h, w)
		}
		if r := float64(w) / float64(h); r < 0.6 || r > 1.7 {
			t.Fatalf("crop %dx%d: ratio %v", w, h, r)
		}
		if a := float64(w*h) / 1024; a < 0.06 {
			t.Fatalf("crop %dx%d: area fraction %v below the scale range", w, h, a)
		}
		sizes[w*h] = true
	}
	if len(sizes) < 100 {
		t.Fatalf("only %d different crop areas", len(sizes))
	}
	// The fallback after ten failed tries: the centre crop, clamped to the ratio range.
	for _, tc := range []struct{ H, W, i, j, h, w int }{
		{32, 32, 0, 0, 32, 32},
		{10, 40, 0, 13, 10, 13}, // too wide: h=10, w=round(10·4/3)=13
		{40, 10, 13, 0, 13, 10}, // too tall: w=10, h=round(10/(3/4))=13
	} {
		i, j, h, w := resizedCropParams(rng, tc.H, tc.W, 2, 3, 3.0/4, 4.0/3) // scale > 1 never fits
		if i != tc.i || j != tc.j || h != tc.h || w != tc.w {
			t.Fatalf("fallback for %dx%d = (%d,%d,%d,%d), want (%d,%d,%d,%d)", tc.H, tc.W, i, j, h, w, tc.i, tc.j, tc.h, tc.w)
		}
	}
}

// TestResizedCropDistribution: the draws have torchvision's laws, which
// bounds alone do not show. On a 1000x1000 image with areas of 1–2% every
// first try fits, so over 20,000 crops the log aspect ratio, uniform on
// [ln 3/4, ln 4/3], averages 0 (±0.0012 for one standard error; a ratio
// uniform on [3/4, 4/3] instead would average +0.026), a quarter of them
// fall in the lowest quarter of that range, and the area fraction averages
// 1.5%. The seed's flips come half the time.
func TestResizedCropDistribution(t *testing.T) {
	rng := newRNG(11)
	const n = 20000
	lo, hi := math.Log(3.0/4), math.Log(4.0/3)
	var sumLog, sumArea float64
	low := 0
	for range n {
		_, _, h, w := resizedCropParams(rng, 1000, 1000, 0.01, 0.02, 3.0/4, 4.0/3)
		l := math.Log(float64(w) / float64(h))
		sumLog += l
		if l < lo+(hi-lo)/4 {
			low++
		}
		sumArea += float64(w*h) / 1e6
	}
	if m := sumLog / n; math.Abs(m) > 0.006 {
		t.Errorf("mean log aspect ratio %.4f, want 0 (log-uniform)", m)
	}
	if f := float64(low) / n; math.Abs(f-0.25) > 0.015 {
		t.Errorf("%.3f of the ratios in the lowest quarter of the log range, want 0.25", f)
	}
	if a := sumArea / n; math.Abs(a-0.015) > 0.0003 {
		t.Errorf("mean area fraction %.5f, want 0.015", a)
	}
	flips := 0
	for range n {
		if (SeedTransform{Size: 224}).Plan(rng).Flip {
			flips++
		}
	}
	if f := float64(flips) / n; math.Abs(f-0.5) > 0.015 {
		t.Errorf("flipped %.3f of the time, want 0.5", f)
	}
}

func TestSeedTransform(t *testing.T) {
	img := patterned()
	const s = 224
	tr := SeedTransform{Size: s}
	if tr.OutputSize() != s || (SeedTransform{}).OutputSize() != 224 {
		t.Fatal("OutputSize")
	}
	a, b := make([]float32, 3*s*s), make([]float32, 3*s*s)
	flips := map[bool]int{}
	for seed := range uint64(40) {
		tr.Apply(a, img, newRNG(seed))
		tr.Apply(b, img, newRNG(seed))
		for k := range a {
			if a[k] != b[k] {
				t.Fatalf("seed %d: two runs differ", seed)
			}
		}
		// The same draws, replayed: crop, flip, then the reference resize.
		rng := newRNG(seed)
		i, j, h, w := resizedCropParams(rng, 32, 32, 0.08, 1, 3.0/4, 4.0/3)
		flip := rng.Float64() < 0.5
		flips[flip]++
		for c := range 3 {
			ref := refResize(img, c, i, j, h, w, s)
			lo := (0 - ImageNetNorm.Mean[c]) / ImageNetNorm.Std[c]
			hi := (1 - ImageNetNorm.Mean[c]) / ImageNetNorm.Std[c]
			for y := range s {
				for x := range s {
					v := a[(c*s+y)*s+x]
					if v < lo || v > hi {
						t.Fatalf("value %v outside [%v, %v]", v, lo, hi)
					}
					sx := x
					if flip {
						sx = s - 1 - x
					}
					want := float32(ref[y*s+sx])/255 - ImageNetNorm.Mean[c]
					want /= ImageNetNorm.Std[c]
					if math.Abs(float64(v-want)) > 1.01/255/float64(ImageNetNorm.Std[c]) {
						t.Fatalf("seed %d c%d (%d,%d): %v, want %v", seed, c, y, x, v, want)
					}
				}
			}
		}
	}
	if flips[true] == 0 || flips[false] == 0 {
		t.Fatalf("flips over 40 seeds: %v", flips)
	}
	tr.Apply(a, img, newRNG(1))
	tr.Apply(b, img, newRNG(2))
	same := true
	for k := range a {
		same = same && a[k] == b[k]
	}
	if same {
		t.Fatal("different seeds give the same augmentation")
	}
}

func TestCIFARTransformCropAndFlip(t *testing.T) {
	img := patterned()
	dst := make([]float32, ImageBytes)
	seen := map[string]bool{}
	for seed := range uint64(300) {
		CIFARTransform{Size: 32}.Apply(dst, img, newRNG(seed))
		i, j, flip := cifarParams(newRNG(seed)) // the draws Apply made
		if flip {
			seen["flip"] = true
		} else {
			seen["noflip"] = true
		}
		if i == 0 {
			seen["pad top"] = true
		}
		if j == 8 {
			seen["pad right"] = true
		}
		// out(y, x) = padded(y+i, x'+j), x' mirrored when flipped, where
		// padded(r, q) = img(r-4, q-4) inside the image and 0 outside.
		for c := range 3 {
			for y := range Side {
				for x := range Side {
					xx := x
					if flip {
						xx = Side - 1 - x
					}
					r, q := y+i-4, xx+j-4
					var p byte
					if r >= 0 && r < Side && q >= 0 && q < Side {
						p = img[(c*Side+r)*Side+q]
					}
					want := (float32(p)/255 - CIFARNorm.Mean[c]) / CIFARNorm.Std[c]
					if got := dst[(c*Side+y)*Side+x]; got != want {
						t.Fatalf("seed %d (i=%d j=%d flip=%v) c%d (%d,%d) = %v, want %v", seed, i, j, flip, c, y, x, got, want)
					}
				}
			}
		}
	}
	for _, k := range []string{"flip", "noflip", "pad top", "pad right"} {
		if !seen[k] {
			t.Errorf("300 seeds never gave %q", k)
		}
	}
	// The centre crop without a flip is the image itself: pick such a seed.
	for seed := range uint64(1000) {
		if i, j, flip := cifarParams(newRNG(seed)); i == 4 && j == 4 {
			CIFARTransform{}.Apply(dst, img, newRNG(seed))
			var want [ImageBytes]float32
			EvalTransform{Norm: CIFARNorm}.Apply(want[:], img, nil)
			for k := range dst {
				x := k % Side
				wk := k
				if flip {
					wk = k - x + Side - 1 - x
				}
				if dst[k] != want[wk] {
					t.Fatalf("centre crop (flip=%v) differs at %d", flip, k)
				}
			}
			return
		}
	}
	t.Fatal("no seed gave the centre crop")
}

func TestCIFARTransformResized(t *testing.T) {
	dst := make([]float32, 3*64*64)
	CIFARTransform{Size: 64}.Apply(dst, patterned(), newRNG(3))
	lo := (0 - CIFARNorm.Mean[0]) / CIFARNorm.Std[0]
	for _, v := range dst[:64*64] {
		if v < lo-1e-6 || math.IsNaN(float64(v)) {
			t.Fatalf("value %v", v)
		}
	}
	if (CIFARTransform{}).OutputSize() != 32 || (CIFARTransform{Size: 64}).Eval().Size != 64 || (SeedTransform{}).Eval().Norm != ImageNetNorm {
		t.Fatal("sizes or eval norms")
	}
}

func TestTransformShapeMismatchPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a wrong dst size")
		}
	}()
	SeedTransform{Size: 224}.Apply(make([]float32, 3*32*32), patterned(), newRNG(1))
}

func TestRoundByte(t *testing.T) {
	for i := 0; i <= 255*1024; i++ { // every 1/1024 step, halves included
		v := float32(i) / 1024
		if got, want := roundByte(v), math.RoundToEven(float64(v)); float64(got) != want {
			t.Fatalf("roundByte(%v) = %d, want %v", v, got, want)
		}
	}
	// Float error just outside [0, 255] still lands on the end values.
	for v, want := range map[float32]uint8{-1e-5: 0, -0.49: 0, 255.00003: 255, 255.49: 255} {
		if got := roundByte(v); got != want {
			t.Fatalf("roundByte(%v) = %d, want %d", v, got, want)
		}
	}
}

// TestNormalisationValues: the normalised value of a plain image, channel
// by channel (R, G, B planes in that order), is (v/255 - mean)/std with
// README's constants: CIFAR-10's mean (0.4914, 0.4822, 0.4465) and std
// (0.2470, 0.2435, 0.2616) for the cifar and none augmentations, and
// ImageNet's (0.485, 0.456, 0.406), (0.229, 0.224, 0.225) for the seed's.
// The expected values were worked out apart from the code (in float64).
func TestNormalisationValues(t *testing.T) {
	cases := []struct {
		name  string
		tr    Transform
		table *Table
		want  map[byte][3]float64
	}{
		{"cifar", EvalTransform{Norm: CIFARNorm}, CIFARTransform{}.Table(), map[byte][3]float64{
			0:   {-1.989474, -1.980287, -1.706804},
			128: {0.042756, 0.081153, 0.212006},
			255: {2.059109, 2.126489, 2.115826},
		}},
		{"imagenet", EvalTransform{Norm: ImageNetNorm}, SeedTransform{}.Table(), map[byte][3]float64{
			0:   {-2.117904, -2.035714, -1.804444},
			128: {0.074065, 0.205182, 0.426492},
			255: {2.248908, 2.428571, 2.640000},
		}},
	}
	for _, tc := range cases {
		for v, want := range tc.want {
			img := make([]byte, ImageBytes)
			for i := range img {
				img[i] = v
			}
			dst := make([]float32, 3*Side*Side)
			tc.tr.Apply(dst, img, nil)
			for c := range 3 {
				if got := tc.table[c][v]; math.Abs(float64(got)-want[c]) > 1e-5 {
					t.Errorf("%s table: channel %d, byte %d: %g, want %g", tc.name, c, v, got, want[c])
				}
				for _, i := range []int{0, Side*Side - 1} {
					if got := dst[c*Side*Side+i]; math.Abs(float64(got)-want[c]) > 1e-5 {
						t.Errorf("%s eval transform: channel %d, byte %d: %g, want %g", tc.name, c, v, got, want[c])
					}
				}
			}
		}
	}
}
