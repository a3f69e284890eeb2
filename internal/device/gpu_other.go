//go:build !(linux && cgo)

package device

import (
	"errors"
	"runtime"

	"github.com/vgg16/vgg16/internal/tensor"
)

// errNoCUDA says why this build has no GPU backend: it loads the CUDA
// libraries through cgo, on Linux.
var errNoCUDA = errors.New(noCUDA())

func noCUDA() string {
	if runtime.GOOS != "linux" {
		return "this vgg16 is built for " + runtime.GOOS + "/" + runtime.GOARCH + ": the GPU backend (CUDA) runs on Linux"
	}
	return "this vgg16 was built without cgo (CGO_ENABLED=0): the GPU backend needs a build with cgo and a C compiler"
}

func openGPU(Options) (tensor.Backend, error) { return nil, errNoCUDA }

// OutOfMemory is false: this build has no GPU to run out of memory.
func OutOfMemory(error) bool { return false }

// GPUReport says that this build has no GPU backend, and why.
func GPUReport() (report string, usable bool, why string) {
	return "", false, errNoCUDA.Error()
}
