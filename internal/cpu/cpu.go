// Package cpu is the Backend on the CPU: float32, NCHW, 3x3 convolutions as
// Winograd F(2x2, 3x3) and the others as im2col, each around SGEMM (package
// sgemm's on x86-64, a CBLAS found at run time elsewhere, gonum's where none
// is), Linear as SGEMM, goroutine-parallel loops for everything else. It is
// the reference that the GPU backend is checked against.
package cpu

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/vgg16/vgg16/internal/sgemm"
	"github.com/vgg16/vgg16/internal/tensor"
)

// mem is the Storage of the CPU backend.
type mem struct{ data []float32 }

func (m *mem) Len() int { return len(m.data) }

// Backend implements tensor.Backend on the CPU. It is not safe for
// concurrent use: one training loop drives one backend.
type Backend struct {
	gemm        gemmKind // whose SGEMM
	gemmThreads int      // package sgemm's goroutines a call (0: GOMAXPROCS)
	noWinograd  bool     // every convolution as im2col + SGEMM (WinogradEnv=0)
	winogradEnv string   // WinogradEnv's value when the backend was made, for Name

	// Scratch buffers, grown on first use and reused by later calls so that
	// a training step allocates nothing after the first.
	colBuf    []float32 // im2col matrix [Ci·K·K, images·H·W], or Winograd's V [16, Ci, images·H·W/4]
	gemmBuf   []float32 // GEMM output / gathered gradient [Co, images·H·W], or Winograd's M [16, Co, images·H·W/4]
	winoBuf   []float32 // Winograd's transformed filters or their gradient [16, Co, Ci]
	transBuf  []float32 // transposed operand for gonum
	wtBuf     []float32 // flipped, transposed conv weights [Ci, Co, K, K]
	dwtBuf    []float32 // weight gradient of the transposed convolution [Ci, Co·K·K]
	gatherBuf []float32 // an input gathered channel-major [Ci, images·H·W]
	statBuf   []float64 // per-channel partial sums
}

// New returns a CPU backend with the SGEMM loadBLAS picks (once per
// process).
func New() *Backend {
	loadBLAS()
	return newBackend(blasKind)
}

// newBackend is a backend with the SGEMM gemm, reading WinogradEnv.
func newBackend(gemm gemmKind) *Backend {
	v := os.Getenv(WinogradEnv)
	return &Backend{gemm: gemm, noWinograd: v == "0", winogradEnv: v}
}

// NewGonum returns a CPU backend that uses gonum's SGEMM whatever New would
// pick (for tests and benchmarks of the last fallback).
func NewGonum() *Backend {
	return newBackend(gemmGonum)
}

// NewGoSGEMM returns a CPU backend that uses package sgemm whatever New
// would pick (for tests and benchmarks: where its assembly kernel does not
// run, with its Go loops).
func NewGoSGEMM() *Backend {
	return newBackend(gemmGo)
}

// Name says which SGEMM the backend uses, on how many threads, and how
// it runs 3x3 convolutions.
func (b *Backend) Name() string {
	conv := "Winograd F(2x2, 3x3), " + simd()
	if v := b.winogradEnv; v != "" && v != "0" && v != "1" {
		conv += fmt.Sprintf(" (%s=%s: want 0 or 1, ignored)", WinogradEnv, v)
	}
	if b.noWinograd {
		conv = "im2col (" + WinogradEnv + "=0)"
	}
	gemm := BLAS()
	if b.gemm != blasKind {
		switch b.gemm {
		case gemmCBLAS:
			gemm = "SGEMM: " + cblasDesc
		case gemmGo:
			gemm = "SGEMM: vgg16's own in Go, " + sgemm.Kernel()
		case gemmGonum:
			gemm = "SGEMM: gonum's, pure Go"
		}
	}
	return fmt.Sprintf("cpu, %d threads, %s, 3x3 convolutions: %s", runtime.GOMAXPROCS(0), gemm, conv)
}

func (b *Backend) New(shape ...int) *tensor.Tensor {
	n := tensor.Volume(shape)
	if n < 0 {
		panic(fmt.Sprintf("cpu: negative shape %v", shape))
	}
	return &tensor.Tensor{Shape: append([]int(nil), shape...), Mem: &mem{data: make([]float32, n)}}
}

func (b *Backend) Free(t *tensor.Tensor) {
	if m, ok := t.Mem.(*mem); ok {
		m.data = nil
	}
}

func (b *Backend) Close() error {
	b.colBuf, b.gemmBuf, b.transBuf, b.wtBuf, b.dwtBuf, b.gatherBuf, b.statBuf = nil, nil, nil, nil, nil, nil, nil
	return nil
}

// Data returns the host slice behind a CPU tensor (tests and tools only:
// layers never look inside a tensor).
func Data(t *tensor.Tensor) []float32 {
	m, ok := t.Mem.(*mem)
	if !ok {
		panic(fmt.Sprintf("cpu: %v does not live on the CPU backend", t))
	}
	return m.data[t.Off : t.Off+t.Size()]
}

// optData is Data, or nil for a nil tensor (an optional argument).
func optData(t *tensor.Tensor) []float32 {
	if t == nil {
		return nil
	}
	return Data(t)
}

func (b *Backend) Upload(dst *tensor.Tensor, src []float32) {
	d := Data(dst)
	if len(src) != len(d) {
		panic(fmt.Sprintf("cpu: upload of %d values into %v", len(src), dst))
	}
	copy(d, src)
}

func (b *Backend) Download(dst []float32, src *tensor.Tensor) {
	s := Data(src)
	if len(s) != len(dst) {
		panic(fmt.Sprintf("cpu: download of %v into %d values", src, len(dst)))
	}
	copy(dst, s)
}

func (b *Backend) Fill(t *tensor.Tensor, v float32) {
	d := Data(t)
	for i := range d {
		d[i] = v
	}
}

func (b *Backend) Copy(dst, src *tensor.Tensor) {
	d, s := Data(dst), Data(src)
	if len(d) != len(s) {
		panic(fmt.Sprintf("cpu: copy of %v into %v", src, dst))
	}
	copy(d, s)
}

// scratch returns buf grown to at least n elements, first n of it.
func (b *Backend) scratch(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// parallelFor splits [0,n) into contiguous ranges of at least grain
// elements, one per core, and runs body on each concurrently.
func parallelFor(n, grain int, body func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if grain < 1 {
		grain = 1
	}
	if w := (n + grain - 1) / grain; w < workers {
		workers = w
	}
	if workers <= 1 {
		if n > 0 {
			body(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			body(lo, hi)
		}()
	}
	wg.Wait()
}
