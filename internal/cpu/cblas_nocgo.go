//go:build !cgo || windows

package cpu

import (
	"errors"
	"runtime"
)

// Built without cgo (CGO_ENABLED=0, or no C compiler), or for Windows: no
// CBLAS is loaded: every SGEMM is package sgemm's (gonum's on CPUs
// without AVX2 and FMA, or with VGG16_BLAS=gonum).

func loadBLAS() {
	blasOnce.Do(func() {
		env := blasEnv()
		kind, desc := pureGo(env)
		why := "built without cgo"
		if runtime.GOOS == "windows" {
			why = "a Windows build: no CBLAS is loaded"
		}
		if env != "" {
			why += "; " + BLASEnv + "=" + env
		}
		if kind == gemmGonum && env != "gonum" {
			switch runtime.GOOS {
			case "windows": // cgo or not: no CBLAS on Windows
			case "darwin":
				why += "; built with cgo, vgg16 would load Accelerate"
			default:
				why += "; built with cgo, vgg16 would load OpenBLAS"
			}
		}
		blasKind, blasDesc = kind, "SGEMM: "+desc+" ("+why+")"
	})
}

func blasThreadCount() int { return 0 }

func swapBLASThreads(int) int { return 0 }

func cgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("cpu: cgemm without cgo")
}

// NewCBLAS says that no CBLAS can be loaded here.
func NewCBLAS() (*Backend, error) {
	if runtime.GOOS == "windows" {
		return nil, errors.New("no CBLAS is loaded on Windows")
	}
	return nil, errors.New("no CBLAS: this vgg16 was built without cgo")
}
