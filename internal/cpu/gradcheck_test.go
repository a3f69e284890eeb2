package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Finite-difference checks of every backward pass. Each op's output y is
// reduced to the scalar L = Σ y·r for a fixed random r, so dL/dy = r; the
// backward pass's gradients are compared with central differences of L
// at a random sample of elements. The CPU backend is float32, so the step
// is large (1e-2) and the tolerance a few 1e-3 relative to the gradient's
// scale.

type gradCase struct {
	name     string
	input    []float32 // live data of the tensor being perturbed
	analytic []float32 // gradient from the backward pass
}

func randn(rng *rand.Rand, t *tensor.Tensor, scale float64) {
	d := cpu.Data(t)
	for i := range d {
		d[i] = float32(rng.NormFloat64() * scale)
	}
}

// checkGrads compares analytic gradients with central differences of loss.
func checkGrads(t *testing.T, loss func() float64, cases []gradCase) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	const h = 1e-2
	for _, c := range cases {
		var scale float64
		for _, g := range c.analytic {
			scale = max(scale, math.Abs(float64(g)))
		}
		want := append([]float32(nil), c.analytic...)
		n := min(len(c.input), 24)
		for k := 0; k < n; k++ {
			i := k
			if len(c.input) > n {
				i = rng.IntN(len(c.input))
			}
			orig := c.input[i]
			c.input[i] = orig + h
			lp := loss()
			c.input[i] = orig - h
			lm := loss()
			c.input[i] = orig
			num := (lp - lm) / (2 * h)
			if d := math.Abs(num - float64(want[i])); d > 5e-3*scale+1e-4 {
				t.Errorf("%s[%d]: backward %.6g, finite difference %.6g (scale %.3g)", c.name, i, want[i], num, scale)
			}
		}
	}
}

func dot(y *tensor.Tensor, r []float32) float64 {
	var s float64
	for i, v := range cpu.Data(y) {
		s += float64(v) * float64(r[i])
	}
	return s
}

func weights(be tensor.Backend, rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := be.New(shape...)
	randn(rng, t, 1)
	return t
}

func TestGradConv(t *testing.T) {
	// 3x3 "same" and 1x1 through both backward-data paths (col2im below 16
	// input channels, transposed convolution above), 3x3 without padding.
	for _, c := range []struct{ k, pad, ci int }{{3, 1, 3}, {3, 1, 16}, {1, 0, 16}, {3, 0, 3}} {
		be := cpu.New()
		rng := rand.New(rand.NewPCG(1, uint64(c.k+c.pad+c.ci)))
		oh, ow := 5+2*c.pad-c.k+1, 6+2*c.pad-c.k+1
		x, w, b := weights(be, rng, 2, c.ci, 5, 6), weights(be, rng, 4, c.ci, c.k, c.k), weights(be, rng, 4)
		y := be.New(2, 4, oh, ow)
		r := cpu.Data(weights(be, rng, 2, 4, oh, ow))
		dy := be.New(2, 4, oh, ow)
		be.Upload(dy, r)
		dx, dw, db := be.New(x.Shape...), be.New(w.Shape...), be.New(4)
		be.ConvBackwardData(dx, dy, w, c.pad)
		be.ConvBackwardFilter(dw, db, x, dy, c.pad)
		loss := func() float64 { be.ConvForward(y, x, w, b, c.pad); return dot(y, r) }
		checkGrads(t, loss, []gradCase{
			{"conv.x", cpu.Data(x), cpu.Data(dx)},
			{"conv.w", cpu.Data(w), cpu.Data(dw)},
			{"conv.b", cpu.Data(b), cpu.Data(db)},
		})
	}
}

func TestGradBatchNorm(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(2, 2))
	x, g, b := weights(be, rng, 4, 3, 3, 3), weights(be, rng, 3), weights(be, rng, 3)
	rm, rv, sm, si := be.New(3), be.New(3), be.New(3), be.New(3)
	y := be.New(x.Shape...)
	r := cpu.Data(weights(be, rng, x.Shape...))
	loss := func() float64 {
		be.BatchNormTrain(y, x, g, b, rm, rv, sm, si, nil, 0.1, 1e-5)
		return dot(y, r)
	}
	loss()
	dy := be.New(x.Shape...)
	be.Upload(dy, r)
	dx, dg, db := be.New(x.Shape...), be.New(3), be.New(3)
	be.BatchNormBackward(dx, dg, db, dy, x, g, sm, si)
	checkGrads(t, loss, []gradCase{
		{"bn.x", cpu.Data(x), cpu.Data(dx)},
		{"bn.gamma", cpu.Data(g), cpu.Data(dg)},
		{"bn.beta", cpu.Data(b), cpu.Data(db)},
	})
}

// TestBatchNormShift checks BatchNormTrain's shift: x with a shift gives
// what x + shift gives without one (the output, the saved 1/std and the
// running statistics), but the saved mean of x itself.
func TestBatchNormShift(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(4, 4))
	x, g, b, shift := weights(be, rng, 4, 3, 3, 3), weights(be, rng, 3), weights(be, rng, 3), weights(be, rng, 3)
	xs := be.New(x.Shape...) // x + shift
	for i, v := range cpu.Data(x) {
		cpu.Data(xs)[i] = v + cpu.Data(shift)[i/9%3]
	}
	type out struct{ y, rm, rv, sm, si *tensor.Tensor }
	run := func(x, shift *tensor.Tensor) out {
		o := out{be.New(x.Shape...), be.New(3), be.New(3), be.New(3), be.New(3)}
		be.Fill(o.rv, 1)
		be.BatchNormTrain(o.y, x, g, b, o.rm, o.rv, o.sm, o.si, shift, 0.1, 1e-5)
		return o
	}
	got, want := run(x, shift), run(xs, nil)
	for _, c := range []struct {
		name      string
		got, want *tensor.Tensor
	}{{"y", got.y, want.y}, {"running mean", got.rm, want.rm}, {"running var", got.rv, want.rv}, {"saved 1/std", got.si, want.si}} {
		for i, v := range cpu.Data(c.got) {
			if w := cpu.Data(c.want)[i]; math.Abs(float64(v-w)) > 1e-5*(1+math.Abs(float64(w))) {
				t.Fatalf("%s[%d] = %g with a shift, %g with it added to x", c.name, i, v, w)
			}
		}
	}
	for ch, v := range cpu.Data(got.sm) {
		if w := cpu.Data(want.sm)[ch] - cpu.Data(shift)[ch]; math.Abs(float64(v-w)) > 1e-5 {
			t.Fatalf("saved mean[%d] = %g, want the mean of x, %g", ch, v, w)
		}
	}
}

func TestGradMaxPool(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(3, 3))
	x := be.New(2, 3, 4, 6)
	// Distinct values 0.1 apart: no window is within the step of a tie.
	for i, p := range rng.Perm(x.Size()) {
		cpu.Data(x)[i] = float32(p) * 0.1
	}
	y := be.New(2, 3, 2, 3)
	r := cpu.Data(weights(be, rng, y.Shape...))
	loss := func() float64 { be.MaxPoolForward(y, x, 2, 2); return dot(y, r) }
	loss()
	dy, dx := be.New(y.Shape...), be.New(x.Shape...)
	be.Upload(dy, r)
	be.MaxPoolBackward(dx, dy, x, y, 2, 2)
	checkGrads(t, loss, []gradCase{{"maxpool.x", cpu.Data(x), cpu.Data(dx)}})
}

func TestGradLRN(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(4, 4))
	// Large activations and alpha so that the normalisation matters.
	p := tensor.LRN{Size: 5, Alpha: 0.5, Beta: 0.75, K: 2}
	x := be.New(2, 7, 3, 3)
	randn(rng, x, 2)
	y := be.New(x.Shape...)
	r := cpu.Data(weights(be, rng, x.Shape...))
	loss := func() float64 { be.LRNForward(y, x, p); return dot(y, r) }
	loss()
	dy, dx := be.New(x.Shape...), be.New(x.Shape...)
	be.Upload(dy, r)
	be.LRNBackward(dx, dy, x, y, p)
	checkGrads(t, loss, []gradCase{{"lrn.x", cpu.Data(x), cpu.Data(dx)}})
}

func TestGradLinear(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(5, 5))
	x, w, b := weights(be, rng, 3, 7), weights(be, rng, 5, 7), weights(be, rng, 5)
	y := be.New(3, 5)
	r := cpu.Data(weights(be, rng, 3, 5))
	dy := be.New(3, 5)
	be.Upload(dy, r)
	dx, dw, db := be.New(3, 7), be.New(5, 7), be.New(5)
	be.LinearBackward(dx, dw, db, dy, x, w)
	loss := func() float64 { be.LinearForward(y, x, w, b); return dot(y, r) }
	checkGrads(t, loss, []gradCase{
		{"linear.x", cpu.Data(x), cpu.Data(dx)},
		{"linear.w", cpu.Data(w), cpu.Data(dw)},
		{"linear.b", cpu.Data(b), cpu.Data(db)},
	})
}

func TestGradReLUAndDropout(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(6, 6))
	x := be.New(4, 50)
	// Keep every input at least 0.1 from the kink at zero.
	for i := range cpu.Data(x) {
		v := 0.1 + rng.Float64()
		if rng.IntN(2) == 0 {
			v = -v
		}
		cpu.Data(x)[i] = float32(v)
	}
	y, z := be.New(4, 50), be.New(4, 50)
	r := cpu.Data(weights(be, rng, 4, 50))
	const p, key = 0.3, 12345
	loss := func() float64 {
		be.ReLUForward(y, x)
		be.DropoutForward(z, y, p, key)
		return dot(z, r)
	}
	loss()
	dz, dy, dx := be.New(4, 50), be.New(4, 50), be.New(4, 50)
	be.Upload(dz, r)
	be.DropoutBackward(dy, dz, p, key)
	be.ReLUBackward(dx, dy, y)
	checkGrads(t, loss, []gradCase{{"relu+dropout.x", cpu.Data(x), cpu.Data(dx)}})

	// The mask keeps about 1-p of the elements, scaled by 1/(1-p).
	kept := 0
	for i, v := range cpu.Data(z) {
		if v != 0 {
			kept++
			if want := cpu.Data(y)[i] / (1 - p); math.Abs(float64(v-want)) > 1e-6 {
				t.Fatalf("dropout kept element %d as %g, want %g", i, v, want)
			}
		}
	}
	if pos := countPositive(cpu.Data(y)); kept < pos*55/100 || kept > pos*85/100 {
		t.Errorf("dropout kept %d of %d positive elements at p=%g", kept, pos, p)
	}
}

func countPositive(v []float32) int {
	n := 0
	for _, x := range v {
		if x > 0 {
			n++
		}
	}
	return n
}

func TestGradSoftmaxCrossEntropy(t *testing.T) {
	for _, smoothing := range []float64{0, 0.1} {
		be := cpu.New()
		rng := rand.New(rand.NewPCG(8, 8))
		logits := weights(be, rng, 4, 6)
		labels := be.New(4)
		be.Upload(labels, []float32{0, 5, 2, 2})
		loss, dl := be.New(1), be.New(4, 6)
		f := func() float64 {
			be.SoftmaxCrossEntropy(loss, nil, logits, labels, smoothing)
			return float64(cpu.Data(loss)[0])
		}
		be.SoftmaxCrossEntropy(loss, dl, logits, labels, smoothing)
		checkGrads(t, f, []gradCase{{"softmax-xent.logits", cpu.Data(logits), cpu.Data(dl)}})
	}
}

// TestSoftmaxCrossEntropyValue pins the loss of a hand-computed case.
func TestSoftmaxCrossEntropyValue(t *testing.T) {
	be := cpu.New()
	logits, labels, loss := be.New(2, 3), be.New(2), be.New(1)
	be.Upload(logits, []float32{1, 2, 3, 1000, 0, -1000})
	be.Upload(labels, []float32{2, 0})
	be.SoftmaxCrossEntropy(loss, nil, logits, labels, 0)
	// -log softmax([1,2,3])[2] = log(e⁻² + e⁻¹ + 1); the second row is
	// certain (and must not overflow).
	want := math.Log(math.Exp(-2)+math.Exp(-1)+1) / 2
	if got := float64(cpu.Data(loss)[0]); math.Abs(got-want) > 1e-6 {
		t.Fatalf("loss %g, want %g", got, want)
	}
	// Equal logits near float32's limit: ln 3 (each class a third), where
	// m + log z would lose log z beside m and give 0.
	be.Upload(logits, []float32{1e36, 1e36, 1e36, -3e38, -3e38, -3e38})
	be.SoftmaxCrossEntropy(loss, nil, logits, labels, 0)
	if got := float64(cpu.Data(loss)[0]); math.Abs(got-math.Log(3)) > 1e-6 {
		t.Fatalf("equal logits of 1e36 and -3e38: loss %g, want ln 3 = %g", got, math.Log(3))
	}
}

// TestMaxPoolTiesAndOddSizes pins PyTorch's rules: the first maximum of a
// window (row-major) takes the gradient, and rows or columns that no
// window covers get none.
func TestMaxPoolTiesAndOddSizes(t *testing.T) {
	be := cpu.New()
	x := be.New(1, 1, 3, 5)
	be.Upload(x, []float32{
		1, 1, 0, 7, 9,
		1, 1, 7, 2, 9,
		9, 9, 9, 9, 9,
	})
	y, dy, dx := be.New(1, 1, 1, 2), be.New(1, 1, 1, 2), be.New(1, 1, 3, 5)
	be.Fill(dx, 42) // must be overwritten everywhere
	be.MaxPoolForward(y, x, 2, 2)
	if got := cpu.Data(y); got[0] != 1 || got[1] != 7 {
		t.Fatalf("max-pool %v, want [1 7]", got)
	}
	be.Upload(dy, []float32{10, 20})
	be.MaxPoolBackward(dx, dy, x, y, 2, 2)
	want := []float32{
		10, 0, 0, 20, 0,
		0, 0, 0, 0, 0,
		0, 0, 0, 0, 0,
	}
	for i, v := range cpu.Data(dx) {
		if v != want[i] {
			t.Fatalf("max-pool gradient %v, want %v", cpu.Data(dx), want)
		}
	}
}

// TestConvMatchesDirect compares the convolution (im2col + SGEMM, both
// backward-data forms, and Winograd F(2x2, 3x3)) with a direct six-loop
// convolution, on shapes down to 1x1 maps where every border case of the
// unrolling meets, and on Winograd's shapes (even planes, ≥ 16 channels
// each side) in several chunks of images, with either SGEMM.
func TestConvMatchesDirect(t *testing.T) {
	defer cpu.SetColLimit(4096)()
	for _, be := range []struct {
		name string
		be   *cpu.Backend
	}{{"winograd", cpu.New()}, {"im2col", cpu.NewIm2col()}, {"gonum", cpu.NewGonum()}, {"go", cpu.NewGoSGEMM()}, {"cblas", nil}} {
		t.Run(be.name, func(t *testing.T) {
			if be.be == nil {
				var err error
				if be.be, err = cpu.NewCBLAS(); err != nil {
					t.Skip(err)
				}
			}
			testConvMatchesDirect(t, be.be)
		})
	}
}

func testConvMatchesDirect(t *testing.T, be *cpu.Backend) {
	// Winograd's GEMMs run side by side on one OpenBLAS thread each; the
	// library's thread count is restored after them.
	threads := cpu.BLASThreadCount()
	defer func() {
		if n := cpu.BLASThreadCount(); n != threads {
			t.Errorf("OpenBLAS runs on %d threads after the convolutions, %d before", n, threads)
		}
	}()
	for _, c := range []struct{ n, ci, co, h, w, k, pad int }{
		{2, 3, 4, 1, 1, 3, 1}, {1, 17, 3, 1, 3, 3, 1}, {2, 16, 5, 2, 2, 3, 1}, {1, 20, 4, 5, 6, 3, 1},
		{2, 4, 3, 4, 4, 1, 0}, {1, 18, 2, 3, 2, 1, 0}, {1, 3, 2, 6, 5, 3, 0}, {1, 2, 2, 5, 5, 5, 2},
		// Winograd's: one 2x2 tile, a row of tiles, several chunks of images,
		// and rows of more than 8 tiles (the transforms' row-at-a-time loops).
		{2, 16, 16, 2, 2, 3, 1}, {3, 17, 20, 2, 8, 3, 1}, {5, 24, 16, 6, 4, 3, 1}, {3, 16, 32, 8, 8, 3, 1},
		{2, 16, 16, 4, 20, 3, 1},
		// Winograd's channels on odd planes, which its 2x2 tiles do not cover:
		// another kernel's (a layer list can make them, 3x3 after a pool of 6x6).
		{1, 16, 16, 3, 5, 3, 1}, {2, 16, 24, 5, 4, 3, 1}, {1, 32, 16, 7, 7, 3, 1},
	} {
		rng := rand.New(rand.NewPCG(uint64(c.h), uint64(c.ci)))
		oh, ow := c.h+2*c.pad-c.k+1, c.w+2*c.pad-c.k+1
		x, w, b := weights(be, rng, c.n, c.ci, c.h, c.w), weights(be, rng, c.co, c.ci, c.k, c.k), weights(be, rng, c.co)
		dy := weights(be, rng, c.n, c.co, oh, ow)
		y, dx, dw, db := be.New(c.n, c.co, oh, ow), be.New(x.Shape...), be.New(w.Shape...), be.New(c.co)
		be.ConvForward(y, x, w, b, c.pad)
		be.ConvBackwardData(dx, dy, w, c.pad)
		be.ConvBackwardFilter(dw, db, x, dy, c.pad)
		// The combined pass gives the same gradients as the two separate ones.
		dx2, dw2, db2 := be.New(x.Shape...), be.New(w.Shape...), be.New(c.co)
		be.ConvBackward(dx2, dw2, db2, x, dy, w, c.pad)
		for name, pair := range map[string][2][]float32{"dx": {cpu.Data(dx2), cpu.Data(dx)}, "dw": {cpu.Data(dw2), cpu.Data(dw)}, "db": {cpu.Data(db2), cpu.Data(db)}} {
			if e := relErr32(pair[0], pair[1]); !(e < 1e-6) {
				t.Errorf("%+v ConvBackward %s: relative error %.3g against the separate passes", c, name, e)
			}
		}
		X, W, B, DY := cpu.Data(x), cpu.Data(w), cpu.Data(b), cpu.Data(dy)
		wantY := make([]float64, len(cpu.Data(y)))
		wantDX := make([]float64, len(X))
		wantDW := make([]float64, len(W))
		for n := 0; n < c.n; n++ {
			for o := 0; o < c.co; o++ {
				for oy := 0; oy < oh; oy++ {
					for ox := 0; ox < ow; ox++ {
						yi := ((n*c.co+o)*oh+oy)*ow + ox
						s := float64(B[o])
						for i := 0; i < c.ci; i++ {
							for ki := 0; ki < c.k; ki++ {
								for kj := 0; kj < c.k; kj++ {
									iy, ix := oy+ki-c.pad, ox+kj-c.pad
									if iy < 0 || iy >= c.h || ix < 0 || ix >= c.w {
										continue
									}
									xi := ((n*c.ci+i)*c.h+iy)*c.w + ix
									wi := ((o*c.ci+i)*c.k+ki)*c.k + kj
									s += float64(X[xi]) * float64(W[wi])
									wantDX[xi] += float64(DY[yi]) * float64(W[wi])
									wantDW[wi] += float64(DY[yi]) * float64(X[xi])
								}
							}
						}
						wantY[yi] = s
					}
				}
			}
		}
		for name, pair := range map[string][2][]float64{
			"forward":         {toF64(cpu.Data(y)), wantY},
			"backward-data":   {toF64(cpu.Data(dx)), wantDX},
			"backward-filter": {toF64(cpu.Data(dw)), wantDW},
		} {
			var d, nrm float64
			for i := range pair[0] {
				d += (pair[0][i] - pair[1][i]) * (pair[0][i] - pair[1][i])
				nrm += pair[1][i] * pair[1][i]
			}
			if e := math.Sqrt(d / nrm); !(e < 1e-5) {
				t.Errorf("%+v %s: relative error %.3g against the direct convolution", c, name, e)
			}
		}
	}
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func relErr32(a, b []float32) float64 {
	var d, n float64
	for i := range a {
		d += (float64(a[i]) - float64(b[i])) * (float64(a[i]) - float64(b[i]))
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / n)
}
