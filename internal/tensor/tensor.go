// Package tensor holds the Tensor type and the Backend interface: the few
// operations a VGG network needs, each a forward/backward pair, implemented
// by a CPU backend (internal/cpu) and a GPU backend (internal/gpu).
//
// Tensors are NCHW float32, laid out as PyTorch lays them out. Their memory
// belongs to the backend that made them; data reaches the host only through
// Backend.Download and leaves it only through Backend.Upload.
package tensor

import "fmt"

// Storage is a block of float32 memory owned by one backend.
type Storage interface {
	// Len is the number of float32 elements in the block.
	Len() int
}

// Tensor is a shape and a window onto a backend's Storage: the elements
// [Off, Off+Size()) of Mem, row-major. Views share Mem.
type Tensor struct {
	Shape []int
	Mem   Storage
	Off   int
}

// Size is the number of elements: the product of the shape.
func (t *Tensor) Size() int { return Volume(t.Shape) }

// Dim returns the size of dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// View returns a tensor of the given shape over the elements of t starting
// at element off. It panics when the window does not fit inside t.
func (t *Tensor) View(off int, shape ...int) *Tensor {
	n := Volume(shape)
	if off < 0 || off+n > t.Size() {
		panic(fmt.Sprintf("tensor: view of %v at %d does not fit in %v", shape, off, t.Shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), Mem: t.Mem, Off: t.Off + off}
}

// Reshape returns a view of all of t with another shape of the same size.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	if Volume(shape) != t.Size() {
		panic(fmt.Sprintf("tensor: cannot reshape %v to %v", t.Shape, shape))
	}
	return t.View(0, shape...)
}

func (t *Tensor) String() string { return fmt.Sprintf("Tensor%v", t.Shape) }

// Volume is the product of the dimensions.
func Volume(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
