//go:build !cgo || windows

package cpu

// Built without cgo (CGO_ENABLED=0, or no C compiler): no CBLAS can be
// loaded, so every SGEMM is gonum's.

func loadBLAS() {
	blasOnce.Do(func() {
		blasDesc = "SGEMM: gonum (pure Go: this vgg16 was built without cgo; build it with a C compiler and CGO_ENABLED=1 to use OpenBLAS, ~5x faster)"
	})
}

func blasThreadCount() int { return 0 }

func swapBLASThreads(int) int { return 0 }

func cgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("cpu: cgemm without cgo")
}
