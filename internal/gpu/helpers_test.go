//go:build linux && cgo

package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Backends are shared by the tests of one precision: opening one costs a
// kernel compilation (or cache read) and cuDNN's start-up.
var shared struct {
	mu  sync.Mutex
	be  map[string]*Backend
	err map[string]error
}

func TestMain(m *testing.M) {
	shared.be, shared.err = map[string]*Backend{}, map[string]error{}
	code := m.Run()
	for _, be := range shared.be {
		be.Close()
	}
	os.Exit(code)
}

// gpuBackend opens (once) a backend of the given precision that
// synchronises after every op, so that an error names its op. It skips the
// test where no GPU is usable, and fails it where one is but New fails.
func gpuBackend(t testing.TB, precision string) *Backend {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if be, ok := shared.be[precision]; ok {
		return be
	}
	err, tried := shared.err[precision]
	if !tried {
		var be *Backend
		prec, layout, _ := strings.Cut(precision, " ")
		be, err = New(Options{Precision: prec, Sync: true, ChannelsLast: layout == "channels-last"})
		if err == nil {
			shared.be[precision] = be
			t.Logf("GPU backend: %s (kernels %s)", be.Name(), be.Info().Kernels)
			return be
		}
		shared.err[precision] = err
	}
	if ok, _ := cuda.Probe().Usable(); ok {
		t.Fatalf("a GPU is usable here but New failed: %v", err)
	}
	t.Skipf("no usable GPU: %v", err)
	return nil
}

// precisions runs f for each precision with its tolerance for results
// that went through a convolution: 1e-4 in strict fp32, 5e-3 with TF32
// (with NCHW and with channels-last images).
func precisions(t *testing.T, f func(t *testing.T, be *Backend, convTol float64)) {
	for _, p := range []struct {
		name string
		tol  float64
	}{{"fp32", 1e-4}, {"tf32", 5e-3}, {"tf32 channels-last", 5e-3}} {
		t.Run(p.name, func(t *testing.T) { f(t, gpuBackend(t, p.name), p.tol) })
	}
}

// twin holds the same tensors on the CPU backend (the reference) and the
// GPU backend.
type twin struct {
	t *testing.T
	c *cpu.Backend
	g *Backend
	r *rand.Rand
}

// pair is one tensor on both backends.
type pair struct{ c, g *tensor.Tensor }

func newTwin(t *testing.T, g *Backend, seed uint64) *twin {
	return &twin{t: t, c: cpu.New(), g: g, r: rand.New(rand.NewPCG(seed, 99))}
}

// put uploads data to new tensors of the given shape on both backends.
func (w *twin) put(data []float32, shape ...int) pair {
	p := pair{w.c.New(shape...), w.g.New(shape...)}
	w.c.Upload(p.c, data)
	w.g.Upload(p.g, data)
	w.t.Cleanup(func() { w.g.Free(p.g) })
	return p
}

// act is put for an activation: tensor.NewActivation on the GPU (bf16
// with precision bf16), and on both backends the data as the GPU holds it
// (rounded to bf16 there).
func (w *twin) act(data []float32, shape ...int) pair {
	if w.g.BF16() {
		data = rounded(data)
	}
	p := pair{w.c.New(shape...), tensor.NewActivation(w.g, shape...)}
	w.c.Upload(p.c, data)
	w.g.Upload(p.g, data)
	w.t.Cleanup(func() { w.g.Free(p.g) })
	return p
}

// rounded is v rounded to bf16 precision.
func rounded(v []float32) []float32 {
	r := make([]float32, len(v))
	for i, x := range v {
		r[i] = tensor.RoundBF16(x)
	}
	return r
}

// actRandn and actZeros are randn and zeros for activations (act).
func (w *twin) actRandn(scale float64, shape ...int) pair {
	return w.act(w.normal(tensor.Volume(shape), scale), shape...)
}

func (w *twin) actZeros(shape ...int) pair {
	return w.act(make([]float32, tensor.Volume(shape)), shape...)
}

func (w *twin) randn(scale float64, shape ...int) pair {
	return w.put(w.normal(tensor.Volume(shape), scale), shape...)
}

func (w *twin) normal(n int, scale float64) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(w.r.NormFloat64() * scale)
	}
	return d
}

func (w *twin) zeros(shape ...int) pair {
	return w.put(make([]float32, tensor.Volume(shape)), shape...)
}

// view is a view of shape at element off of a larger pair, to exercise
// parameters that are not 16-byte aligned (as in the model's flat buffer).
func (w *twin) view(off int, data []float32, shape ...int) pair {
	big := w.put(append(w.normal(off, 1), append(data, w.normal(3, 1)...)...), off+len(data)+3)
	return pair{big.c.View(off, shape...), big.g.View(off, shape...)}
}

func (w *twin) host(p pair) (cpuData, gpuData []float32) {
	g := make([]float32, p.g.Size())
	w.g.Download(g, p.g)
	return cpu.Data(p.c), g
}

// relErr is ‖got − want‖ / ‖want‖ (absolute when want is zero); NaN when
// either has a NaN.
func relErr(got, want []float32) float64 {
	var d, n float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		d += e * e
		n += float64(want[i]) * float64(want[i])
	}
	if n == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / n)
}

// check compares a pair within a relative error.
func (w *twin) check(name string, p pair, tol float64) {
	w.t.Helper()
	c, g := w.host(p)
	if e := relErr(g, c); !(e <= tol) {
		w.t.Errorf("%s %v: relative error %.3g > %.3g (gpu %v… cpu %v…)", name, p.c.Shape, e, tol, head(g), head(c))
	}
}

// same requires bit-identical results.
func (w *twin) same(name string, p pair) {
	w.t.Helper()
	c, g := w.host(p)
	for i := range c {
		if math.Float32bits(c[i]) != math.Float32bits(g[i]) {
			w.t.Errorf("%s[%d] = %v on the GPU, %v on the CPU", name, i, g[i], c[i])
			return
		}
	}
}

func head(v []float32) string {
	return fmt.Sprint(v[:min(4, len(v))])
}
