//go:build !cgo || windows

package cpu

import "runtime"

// Built without cgo (CGO_ENABLED=0, or no C compiler), or for Windows: no
// CBLAS is loaded, so every SGEMM is gonum's.

func loadBLAS() {
	blasOnce.Do(func() {
		blasDesc = "SGEMM: gonum (pure Go: this vgg16 was built without cgo; built with a C compiler and CGO_ENABLED=1 it uses OpenBLAS, a training step ~6x faster)"
		if runtime.GOOS == "windows" {
			blasDesc = "SGEMM: gonum (pure Go, as every Windows build: a training step ~6x slower than with OpenBLAS on Linux)"
		}
	})
}

func blasThreadCount() int { return 0 }

func swapBLASThreads(int) int { return 0 }

func cgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("cpu: cgemm without cgo")
}
