// Package vgg16 holds what belongs to the repository as a whole: the CUDA
// kernels' source, which internal/kernels compiles at run time.
package vgg16

import _ "embed"

// KernelsSource is kernels.cu, the project's own CUDA kernels.
//
//go:embed kernels.cu
var KernelsSource string
