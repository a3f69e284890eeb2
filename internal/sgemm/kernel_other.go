//go:build !amd64

package sgemm

const haveKernel = false

func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("sgemm: no assembly kernel on this architecture")
}
