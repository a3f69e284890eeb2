package sgemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// reference computes alpha·op(A)·op(B) + beta·C in float64, C read only
// where beta ≠ 0.
func reference(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			s *= float64(alpha)
			if beta != 0 {
				s += float64(beta) * float64(c[i*ldc+j])
			}
			out[i*n+j] = s
		}
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// check runs one product with every kernel this CPU runs and compares C, its padding included, against the reference.
func check(t *testing.T, r *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32, pad, threads int) {
	t.Helper()
	lda, ldb, ldc := k+pad, n+pad, n+pad
	if transA {
		lda = m + pad
	}
	if transB {
		ldb = k + pad
	}
	rowsA, rowsB := m, k
	if transA {
		rowsA = k
	}
	if transB {
		rowsB = n
	}
	// Each slice ends at its matrix's last element: no slack after it.
	a := randSlice(r, max(0, rowsA*lda-pad))
	b := randSlice(r, max(0, rowsB*ldb-pad))
	c0 := randSlice(r, m*ldc-pad)
	if beta == 0 {
		for i := range c0 {
			c0[i] = float32(math.NaN()) // never read
		}
	}
	want := reference(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc)
	for _, kern := range tiles() {
		c := append([]float32(nil), c0...)
		func() {
			defer func(u tile) { use = u }(use)
			use = kern
			Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads)
		}()
		name := fmt.Sprintf("%s: transA=%v transB=%v m=%d n=%d k=%d alpha=%g beta=%g pad=%d threads=%d", kern.name, transA, transB, m, n, k, alpha, beta, pad, threads)
		// Each product's rounding error is within k·eps of the sum of the
		// terms' magnitudes; sqrt(k)·4 standard deviations is generous for
		// random signs and far below any mistake in indexing.
		tol := 1e-6 * (math.Sqrt(float64(k)) + 1) * 8
		for i := range m {
			for j := range n {
				got, w := float64(c[i*ldc+j]), want[i*n+j]
				if math.Abs(got-w) > tol*(math.Abs(w)+math.Sqrt(float64(k))) || math.IsNaN(got) {
					t.Fatalf("%s: C[%d,%d] = %v, want %v", name, i, j, got, w)
				}
			}
			for j := n; j < ldc && i*ldc+j < len(c); j++ { // the stride's padding is untouched
				if c[i*ldc+j] != c0[i*ldc+j] && !(math.IsNaN(float64(c[i*ldc+j])) && math.IsNaN(float64(c0[i*ldc+j]))) {
					t.Fatalf("%s: padding C[%d,%d] changed", name, i, j)
				}
			}
		}
	}
}

func TestGemmSmall(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			for _, m := range []int{1, 5, 6, 7, 12, 13, 25} {
				for _, n := range []int{1, 15, 16, 17, 32, 33, 65} {
					for _, k := range []int{0, 1, 3, 4, 9} {
						check(t, r, tA, tB, m, n, k, 1, 0, 0, 1)
						check(t, r, tA, tB, m, n, k, -0.5, 0.75, 3, 2)
					}
				}
			}
		}
	}
}

// TestGemmBlocks crosses every blocking boundary: k past kc (C accumulates
// over blocks with beta 1), m past mc, n past nc, and several threads, each
// with its part of C (columns, or rows where C is narrow).
func TestGemmBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, s := range []struct{ m, n, k int }{
		{mc + 5, 70, kc + 3},
		{2*mc + mrMax + 1, nc + nrMax + 3, 2*kc + 1},
		{64, 2048, 64},
		{3, nc + 1, 600},
		{300, 5, 37},
	} {
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				check(t, r, tA, tB, s.m, s.n, s.k, 1.5, 0, 1, 3)
				check(t, r, tA, tB, s.m, s.n, s.k, 1, 1, 0, 4)
			}
		}
	}
}

func TestGemmAlphaZero(t *testing.T) {
	c := []float32{1, 2, float32(math.NaN()), 4}
	Gemm(false, false, 2, 2, 3, 0, []float32{1, 2, 3, 4, 5, 6}, 3, []float32{1, 2, 3, 4, 5, 6}, 2, 0, c, 2, 1)
	for i, v := range c {
		if v != 0 {
			t.Errorf("alpha = beta = 0: C[%d] = %v, want 0", i, v)
		}
	}
	c = []float32{1, 2, 3, 4}
	Gemm(false, false, 2, 2, 0, 1, nil, 0, nil, 2, 2, c, 2, 1)
	if c[3] != 8 {
		t.Errorf("k = 0, beta = 2: C[3] = %v, want 8", c[3])
	}
}

func TestGemmSizeErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		f    func()
		want string
	}{
		{"short A", func() {
			Gemm(false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2, 1)
		}, "A is 2x2 with stride 2: needs 4 values, has 3"},
		{"transposed B stride", func() {
			Gemm(false, true, 2, 3, 2, 1, make([]float32, 4), 2, make([]float32, 6), 1, 0, make([]float32, 6), 3, 1)
		}, "B is 3x2, stride 1 < 2"},
		{"short C", func() {
			Gemm(false, false, 2, 2, 2, 1, make([]float32, 4), 2, make([]float32, 4), 2, 0, make([]float32, 3), 2, 1)
		}, "C is 2x2 with stride 2"},
	} {
		func() {
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, c.want) {
					t.Errorf("%s: panic %q, want one containing %q", c.name, msg, c.want)
				}
			}()
			c.f()
		}()
	}
}

// TestGemmAllocations holds a call to a few allocations (the goroutines'),
// not one per tile: edge tiles' buffers once escaped to the heap, 12,551
// allocations (19 MB) for one product of VGG16's first Linear layer at
// 224x224, batch 8, whose garbage grew the training process by 2 GB.
func TestGemmAllocations(t *testing.T) {
	m, n, k := 8, 512, 1024 // every tile an edge tile
	a, b, c := make([]float32, m*k), make([]float32, n*k), make([]float32, m*n)
	for _, threads := range []int{1, 2} {
		allocs := testing.AllocsPerRun(5, func() {
			Gemm(false, true, m, n, k, 1, a, k, b, k, 0, c, n, threads)
		})
		if allocs > 10 {
			t.Errorf("%d threads: %v allocations a call, want at most 10", threads, allocs)
		}
	}
}

func TestChooseKernel(t *testing.T) {
	for _, k := range tiles() {
		if got, note := choose(" " + strings.ToUpper(k.key) + " "); got != k || note != "" {
			t.Errorf("choose(%q) = %s%s, want %s", k.key, got.name, note, k.name)
		}
	}
	if got, note := choose("avx9"); got != best() || !strings.Contains(note, "avx9: not a kernel this CPU runs, which are go") {
		t.Errorf("choose(avx9) = %s%s, want %s and a note", got.name, note, best().name)
	}
	defer func(u tile) { use = u }(use)
	use = goTile
	if Available() != (best().asm != 0) || Fast() {
		t.Errorf("with the Go kernel chosen: Available() = %v, Fast() = %v; want %v, false", Available(), Fast(), best().asm != 0)
	}
}
