package cpu

import (
	"os"
	"runtime"
	"strings"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/vgg16/vgg16/internal/sgemm"
)

// BLASEnv names the environment variable that picks the CBLAS library to
// load (a file name or path), or "go" for vgg16's own SGEMM (package
// sgemm), or "gonum" for gonum's.
const BLASEnv = "VGG16_BLAS"

// gemmKind says whose SGEMM a backend calls.
type gemmKind int

const (
	gemmCBLAS gemmKind = iota // the CBLAS library loaded at run time
	gemmGo                    // package sgemm: Go, with an assembly kernel
	gemmGonum                 // gonum's, where package sgemm has no kernel
)

var (
	blasOnce  sync.Once
	blasCgo   bool     // cblas_sgemm resolved
	cblasDesc string   // the CBLAS library's name, version and kernel
	blasKind  gemmKind // what New's backends call
	blasDesc  string   // one line: which SGEMM is in use and why
)

// blasEnv is BLASEnv's value: "go" and "gonum" in any case (GO, Gonum),
// else a library's name or path as given.
func blasEnv() string {
	v := strings.TrimSpace(os.Getenv(BLASEnv))
	if lower := strings.ToLower(v); lower == "go" || lower == "gonum" {
		return lower
	}
	return v
}

// pureGo picks the SGEMM where no CBLAS is loaded: package sgemm where its
// assembly kernel runs on this CPU (or where the user asks for it), gonum's
// otherwise (also when asked), and says which.
func pureGo(env string) (gemmKind, string) {
	switch {
	case env == "gonum":
		return gemmGonum, "gonum's, pure Go"
	case sgemm.Available() || env == "go":
		return gemmGo, "vgg16's own in Go, " + sgemm.Kernel()
	}
	why := "no AVX2 and FMA for vgg16's own kernel"
	if runtime.GOARCH != "amd64" {
		why = "vgg16's own kernels are for x86-64 (AVX2, AVX-512)"
	}
	return gemmGonum, "gonum's, pure Go: " + why
}

// FastSGEMM reports whether the SGEMM in use is a fast one (a CBLAS, or
// package sgemm with an assembly kernel), not gonum's or the Go loops.
func FastSGEMM() bool {
	loadBLAS()
	return blasKind == gemmCBLAS || blasKind == gemmGo && sgemm.Fast()
}

// BLAS describes the SGEMM implementation in use, in one line.
func BLAS() string {
	loadBLAS()
	return blasDesc
}

// sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices, with
// op(A) m×k and op(B) k×n.
func (b *Backend) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, bm []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	switch b.gemm {
	case gemmCBLAS:
		cgemm(transA, transB, m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc)
		return
	case gemmGo:
		sgemm.Gemm(transA, transB, m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc, b.gemmThreads)
		return
	}
	if transA {
		// gonum's Sgemm is several times slower with a transposed A:
		// transposing first is cheaper than the GEMM it saves.
		at := b.scratch(&b.transBuf, m*k)
		transpose(at, a, k, m, lda)
		a, lda, transA = at, k, false
	}
	tA, tB := blas.NoTrans, blas.NoTrans
	if transA {
		tA = blas.Trans
	}
	if transB {
		tB = blas.Trans
	}
	gonum.Implementation{}.Sgemm(tA, tB, m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc)
}

var blasThreadsMu sync.Mutex

// sgemms runs body(i) for i in [0, n), each making SGEMM calls that touch
// memory of their own: with OpenBLAS or package sgemm, as many at a time as
// there are cores, each call on one thread (many small GEMMs run faster side
// by side than each split between threads; package sgemm's calls take
// several where the cores outnumber them); otherwise one after another.
func (b *Backend) sgemms(n int, body func(i int)) {
	side := func() {
		parallelFor(n, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				body(i)
			}
		})
	}
	if runtime.GOMAXPROCS(0) > 1 {
		switch b.gemm {
		case gemmGo:
			// Read by the concurrent calls, written only here. More
			// cores than calls share the cores out among them.
			b.gemmThreads = max(1, runtime.GOMAXPROCS(0)/n)
			defer func() { b.gemmThreads = 0 }()
			side()
			return
		case gemmCBLAS:
			// The thread count is the library's, for the whole process: one
			// backend at a time changes and restores it.
			blasThreadsMu.Lock()
			defer blasThreadsMu.Unlock()
			if old := swapBLASThreads(1); old != 0 {
				defer swapBLASThreads(old)
				side()
				return
			}
		}
	}
	for i := range n {
		body(i)
	}
}

// transpose writes the cols×rows transpose of the rows×cols matrix src
// (row stride ld) into dst.
func transpose(dst, src []float32, rows, cols, ld int) {
	parallelFor(rows, 64, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := src[r*ld : r*ld+cols]
			for c, v := range row {
				dst[c*rows+r] = v
			}
		}
	})
}
