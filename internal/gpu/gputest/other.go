//go:build !(linux && cgo)

package gputest

import "testing"

// BuildFakeCUDA skips the test: the stand-in CUDA libraries, like the GPU
// backend, need Linux and cgo.
func BuildFakeCUDA(t testing.TB) string {
	t.Helper()
	t.Skip("the GPU backend and its stand-in CUDA libraries need a Linux build with cgo")
	return ""
}
