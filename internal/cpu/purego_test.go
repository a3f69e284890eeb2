package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The Go versions of the C passes (winograd_go.go, bn.go) are what a build
// without cgo runs; these tests hold them to the C's bits. `make test`
// also runs this package with CGO_ENABLED=0, where the training and
// parity tests then check the Go versions against the direct convolution
// and the PyTorch fixtures.

// randomFloats are normal values with some zeros of each sign.
func randomFloats(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		switch rng.IntN(16) {
		case 0:
			s[i] = 0
		case 1:
			s[i] = float32(math.Copysign(0, -1))
		default:
			s[i] = float32(rng.NormFloat64())
		}
	}
	return s
}

// sameBits reports the first element where got and want differ in bits.
func sameBits(got, want []float32) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return fmt.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	return nil
}

func sameBits64(got, want []float64) error {
	for i := range got {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			return fmt.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	return nil
}

func needC(t *testing.T) {
	if !withC {
		t.Skip("built without cgo: no C passes to compare the Go ones with")
	}
}

// TestWinogradGoMatchesC runs each transform in C and in Go over planes
// split in two ranges, on small planes (a tile at a time in C) and rows of
// more than 8 tiles (C's row loops).
func TestWinogradGoMatchesC(t *testing.T) {
	needC(t)
	rng := rand.New(rand.NewPCG(3, 5))
	for _, s := range []struct{ m, c, h, w int }{{2, 3, 4, 6}, {1, 2, 6, 20}, {3, 1, 2, 2}, {2, 2, 18, 18}} {
		name := fmt.Sprintf("m%d c%d %dx%d", s.m, s.c, s.h, s.w)
		planes, t4 := s.m*s.c, s.m*s.h*s.w/4
		xs := winoStride(s.c * t4)
		x := randomFloats(rng, planes*s.h*s.w)
		mm := randomFloats(rng, 16*xs)
		bias := randomFloats(rng, s.c)
		split := func(f func(lo, hi int)) { f(0, planes/2); f(planes/2, planes) }

		vc, vg := make([]float32, 16*xs), make([]float32, 16*xs)
		split(func(lo, hi int) { winoInputRange(vc, x, lo, hi, s.c, s.h, s.w, t4, xs) })
		split(func(lo, hi int) { winoInputGo(vg, x, lo, hi, s.c, s.h, s.w, t4, xs) })
		if err := sameBits(vg, vc); err != nil {
			t.Errorf("%s input transform: Go %v", name, err)
		}
		for _, b := range [][]float32{nil, bias} {
			yc, yg := make([]float32, len(x)), make([]float32, len(x))
			split(func(lo, hi int) { winoOutputRange(yc, mm, b, lo, hi, s.c, s.h, s.w, t4, xs) })
			split(func(lo, hi int) { winoOutputGo(yg, mm, b, lo, hi, s.c, s.h, s.w, t4, xs) })
			if err := sameBits(yg, yc); err != nil {
				t.Errorf("%s output transform (bias %v): Go %v", name, b != nil, err)
			}
		}
		dc, dg := make([]float32, 16*xs), make([]float32, 16*xs)
		split(func(lo, hi int) { winoOutputAdjointRange(dc, x, lo, hi, s.c, s.h, s.w, t4, xs) })
		split(func(lo, hi int) { winoOutputAdjointGo(dg, x, lo, hi, s.c, s.h, s.w, t4, xs) })
		if err := sameBits(dg, dc); err != nil {
			t.Errorf("%s output adjoint: Go %v", name, err)
		}
	}
	co, ci := 5, 3
	us := winoStride(co * ci)
	w := randomFloats(rng, co*ci*9)
	uc, ug := make([]float32, 16*us), make([]float32, 16*us)
	winoFilterRange(uc, w, 0, 2, co, ci, us)
	winoFilterRange(uc, w, 2, co, co, ci, us)
	winoFilterGo(ug, w, 0, 2, co, ci, us)
	winoFilterGo(ug, w, 2, co, co, ci, us)
	if err := sameBits(ug, uc); err != nil {
		t.Errorf("filter transform: Go %v", err)
	}
	du := randomFloats(rng, 16*us)
	wc, wg := make([]float32, len(w)), make([]float32, len(w))
	winoFilterAdjointRange(wc, du, 0, co, co, ci, us)
	winoFilterAdjointGo(wg, du, 0, co, co, ci, us)
	if err := sameBits(wg, wc); err != nil {
		t.Errorf("filter adjoint: Go %v", err)
	}
}

// TestBatchNormGoMatchesC runs batch norm's four passes in C and in Go,
// with and without the ReLU, on planes that leave remainders for the
// eight-lane sums.
func TestBatchNormGoMatchesC(t *testing.T) {
	needC(t)
	rng := rand.New(rand.NewPCG(7, 11))
	for _, s := range []struct{ n, c, hw int }{{3, 4, 13}, {2, 3, 16}, {5, 2, 3}, {2, 2, 1024}} {
		name := fmt.Sprintf("n%d c%d hw%d", s.n, s.c, s.hw)
		size := s.n * s.c * s.hw
		x, dy, y := randomFloats(rng, size), randomFloats(rng, size), randomFloats(rng, size)
		perChannel := func() []float64 {
			v := make([]float64, s.c)
			for i := range v {
				v[i] = rng.NormFloat64()
			}
			return v
		}
		scale, shift, inv, k, mdy, mdyx := perChannel(), perChannel(), perChannel(), perChannel(), perChannel(), perChannel()
		split := func(f func(lo, hi int)) { f(0, 1); f(1, s.c) }

		type stats struct{ mean, ss []float64 }
		var st [2]stats
		for i, f := range []func([]float32, int, int, int, int, int, []float64, []float64){bnStats, bnStatsGo} {
			st[i] = stats{make([]float64, s.c), make([]float64, s.c)}
			split(func(lo, hi int) { f(x, s.n, s.c, s.hw, lo, hi, st[i].mean, st[i].ss) })
		}
		if err := sameBits64(st[1].mean, st[0].mean); err != nil {
			t.Errorf("%s mean: Go %v", name, err)
		}
		if err := sameBits64(st[1].ss, st[0].ss); err != nil {
			t.Errorf("%s Σ(x-mean)²: Go %v", name, err)
		}
		mean := st[0].mean
		for _, relu := range []bool{false, true} {
			oc, og := make([]float32, size), make([]float32, size)
			split(func(lo, hi int) { bnApply(oc, x, s.n, s.c, s.hw, lo, hi, scale, shift, relu) })
			split(func(lo, hi int) { bnApplyGo(og, x, s.n, s.c, s.hw, lo, hi, scale, shift, relu) })
			if err := sameBits(og, oc); err != nil {
				t.Errorf("%s apply (relu %v): Go %v", name, relu, err)
			}
		}
		for _, r := range [][]float32{nil, y} {
			sc, sxc, sg, sxg := make([]float64, s.c), make([]float64, s.c), make([]float64, s.c), make([]float64, s.c)
			split(func(lo, hi int) { bnGradSums(dy, x, r, s.n, s.c, s.hw, lo, hi, mean, sc, sxc) })
			split(func(lo, hi int) { bnGradSumsGo(dy, x, r, s.n, s.c, s.hw, lo, hi, mean, sg, sxg) })
			if err := sameBits64(sg, sc); err != nil {
				t.Errorf("%s Σdy (relu %v): Go %v", name, r != nil, err)
			}
			if err := sameBits64(sxg, sxc); err != nil {
				t.Errorf("%s Σdy·(x-mean) (relu %v): Go %v", name, r != nil, err)
			}
			dc, dg := make([]float32, size), make([]float32, size)
			split(func(lo, hi int) { bnGradApply(dc, dy, x, r, s.n, s.c, s.hw, lo, hi, mean, inv, k, mdy, mdyx) })
			split(func(lo, hi int) { bnGradApplyGo(dg, dy, x, r, s.n, s.c, s.hw, lo, hi, mean, inv, k, mdy, mdyx) })
			if err := sameBits(dg, dc); err != nil {
				t.Errorf("%s dx (relu %v): Go %v", name, r != nil, err)
			}
		}
	}
}

// TestBatchNormReLUSpecials holds the ReLU of batch norm's apply and
// gradient passes, C and Go, to the same bits on NaN, infinities and both
// zeros: y = x·1 + (−0) keeps −0 (which the ReLU makes +0) and NaN (which
// it keeps); a gradient passes only where y > 0, and is +0 elsewhere.
func TestBatchNormReLUSpecials(t *testing.T) {
	needC(t)
	nan, inf, nz := float32(math.NaN()), float32(math.Inf(1)), float32(math.Copysign(0, -1))
	x := []float32{nan, inf, -inf, nz, 0, 1, -1, 1e-45, -1e-45, nan, 2, -3, nz, 5, -inf, 7} // n 1, c 1, hw 16
	scale, shift := []float64{1}, []float64{math.Copysign(0, -1)}
	oc, og := make([]float32, len(x)), make([]float32, len(x))
	bnApply(oc, x, 1, 1, len(x), 0, 1, scale, shift, true)
	bnApplyGo(og, x, 1, 1, len(x), 0, 1, scale, shift, true)
	if err := sameBits(og, oc); err != nil {
		t.Errorf("apply with the ReLU: Go %v", err)
	}
	if math.Float32bits(og[3]) != 0 || og[0] == og[0] {
		t.Errorf("ReLU(−0) = %v (bits %#x), ReLU(NaN) = %v: want +0 and NaN", og[3], math.Float32bits(og[3]), og[0])
	}
	dy := []float32{-1, 2, -3, 4, -5, 6, -7, 8, -9, 10, -11, 12, -13, 14, -15, 16}
	mean, one := []float64{0}, []float64{1}
	dc, dg := make([]float32, len(x)), make([]float32, len(x))
	bnGradApply(dc, dy, dy, x, 1, 1, len(x), 0, 1, mean, one, one, []float64{0}, []float64{0})
	bnGradApplyGo(dg, dy, dy, x, 1, 1, len(x), 0, 1, mean, one, one, []float64{0}, []float64{0})
	if err := sameBits(dg, dc); err != nil {
		t.Errorf("gradient masked by y: Go %v", err)
	}
	sc, sxc, sg, sxg := make([]float64, 1), make([]float64, 1), make([]float64, 1), make([]float64, 1)
	bnGradSums(dy, dy, x, 1, 1, len(x), 0, 1, mean, sc, sxc)
	bnGradSumsGo(dy, dy, x, 1, 1, len(x), 0, 1, mean, sg, sxg)
	if err := sameBits64(sg, sc); err != nil {
		t.Errorf("Σdy masked by y: Go %v", err)
	}
	if err := sameBits64(sxg, sxc); err != nil {
		t.Errorf("Σdy·(x-mean) masked by y: Go %v", err)
	}
	// Passed where y is +Inf, 1, 1e-45, 2, 5, 7: 2 + 6 + 8 − 11 + 14 + 16.
	if sg[0] != 35 {
		t.Errorf("Σdy masked by y = %v, want 35", sg[0])
	}
}
