package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vgg16/vgg16/internal/tensor"
)

// The Go loops round each operation on its own, as the C does
// (clones.h) and as they do on amd64, where Go never fuses: on arm64 (and
// ppc64le, s390x, riscv64) Go may turn a·b + c into one fused multiply-add
// unless an explicit conversion rounds a·b first. Each reference below is
// written with those conversions; without them in the backend, these tests
// fail where Go fuses (GOARCH=arm64 under qemu), and training there drifts
// from amd64's by an ulp a step with the same SGEMM.

func TestSGDStepRoundsEachOperation(t *testing.T) {
	const n = 1 << 12
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name  string
		h     tensor.SGD
		first bool
	}{
		{"no momentum", tensor.SGD{LR: 0.1, WeightDecay: 5e-4}, false},
		{"first nesterov", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true}, true},
		{"first", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4}, true},
		{"nesterov", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4, Nesterov: true, Dampening: 0.1}, false},
		{"momentum", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 5e-4, Dampening: 0.1}, false},
	} {
		p0, g0, m0 := randomFloats(r, n), randomFloats(r, n), randomFloats(r, n)
		be := New()
		p, g, m := be.New(n), be.New(n), be.New(n)
		be.Upload(p, p0)
		be.Upload(g, g0)
		be.Upload(m, m0)
		be.SGDStep(p, g, m, c.h, c.first)

		lr, mom, wd, damp := float32(c.h.LR), float32(c.h.Momentum), float32(c.h.WeightDecay), float32(1-c.h.Dampening)
		wantP, wantM := append([]float32(nil), p0...), append([]float32(nil), m0...)
		for i := range wantP {
			d := g0[i] + float32(wd*p0[i])
			switch {
			case mom == 0:
				wantP[i] = p0[i] - float32(lr*d)
			case c.first:
				wantM[i] = d
				if c.h.Nesterov {
					wantP[i] = p0[i] - float32(lr*(d+float32(mom*d)))
				} else {
					wantP[i] = p0[i] - float32(lr*d)
				}
			default:
				mi := float32(mom*m0[i]) + float32(damp*d)
				wantM[i] = mi
				if c.h.Nesterov {
					wantP[i] = p0[i] - float32(lr*(d+float32(mom*mi)))
				} else {
					wantP[i] = p0[i] - float32(lr*mi)
				}
			}
		}
		gotP, gotM := Data(p), Data(m)
		bad := 0
		for i := range wantP {
			if math.Float32bits(gotP[i]) != math.Float32bits(wantP[i]) || math.Float32bits(gotM[i]) != math.Float32bits(wantM[i]) {
				if bad++; bad <= 3 {
					t.Errorf("%s: [%d] p %v m %v, want %v %v (each operation rounded)", c.name, i, gotP[i], gotM[i], wantP[i], wantM[i])
				}
			}
		}
		if bad > 3 {
			t.Errorf("%s: %d of %d differ", c.name, bad, n)
		}
	}
}

func TestBatchNormInferRoundsEachOperation(t *testing.T) {
	const nb, c, hw = 2, 8, 64
	r := rand.New(rand.NewPCG(3, 4))
	x0 := randomFloats(r, nb*c*hw)
	g0, b0, rm0 := randomFloats(r, c), randomFloats(r, c), randomFloats(r, c)
	rv0 := make([]float32, c)
	for i := range rv0 {
		rv0[i] = 0.5 + r.Float32()
	}
	be := New()
	x, y := be.New(nb, c, 8, 8), be.New(nb, c, 8, 8)
	g, b, rm, rv := be.New(c), be.New(c), be.New(c), be.New(c)
	be.Upload(x, x0)
	be.Upload(g, g0)
	be.Upload(b, b0)
	be.Upload(rm, rm0)
	be.Upload(rv, rv0)
	const eps = 1e-5
	be.BatchNormInfer(y, x, g, b, rm, rv, eps)
	got := Data(y)
	for j := range nb * c {
		ch := j % c
		scale := float64(g0[ch]) / math.Sqrt(float64(rv0[ch])+eps)
		shift := float64(b0[ch]) - float64(float64(rm0[ch])*scale)
		s32, h32 := float32(scale), float32(shift)
		for q := range hw {
			i := j*hw + q
			if want := float32(x0[i]*s32) + h32; math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("y[%d] = %v, want %v (each operation rounded)", i, got[i], want)
			}
		}
	}
}
