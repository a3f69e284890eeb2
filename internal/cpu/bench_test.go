package cpu_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/tensor"
)

// BenchmarkTrainStep times one VGG16-BN training step at 32x32, batch 64:
// forward, loss, backward and the SGD update.
func BenchmarkTrainStep(b *testing.B) {
	for _, c := range []struct {
		name string
		be   func() *cpu.Backend
	}{{"default", cpu.New}, {"go", cpu.NewGoSGEMM}, {"cblas", nil}, {"gonum", cpu.NewGonum}} {
		if c.name != "default" && testing.Short() {
			continue
		}
		be := cpu.New()
		switch {
		case c.be != nil:
			be = c.be()
		default:
			var err error
			if be, err = cpu.NewCBLAS(); err != nil {
				b.Logf("cblas: %v", err)
				continue
			}
		}
		b.Run(c.name, func(b *testing.B) { benchTrainStep(b, be) })
	}
}

func benchTrainStep(b *testing.B, be *cpu.Backend) {
	cfg := layers.DefaultConfig()
	cfg.ImageSize = 32
	m, err := layers.New(be, cfg)
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	const n = 64
	rng := rand.New(rand.NewPCG(1, 1))
	x, y := be.New(n, 3, 32, 32), be.New(n)
	for i := range cpu.Data(x) {
		cpu.Data(x)[i] = float32(rng.NormFloat64())
	}
	for i := range cpu.Data(y) {
		cpu.Data(y)[i] = float32(rng.IntN(10))
	}
	loss, dl, mom := be.New(1), be.New(n, 10), be.New(m.FlatSize())
	h := tensor.SGD{LR: 1e-3, Momentum: 0.9, WeightDecay: 5e-4}
	step := func(first bool) {
		logits := m.Forward(x, true)
		be.SoftmaxCrossEntropy(loss, dl, logits, y, 0)
		m.Backward(dl)
		be.SGDStep(m.Weights(), m.Grads(), mom, h, first)
	}
	step(true)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step(false)
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "img/s")
}

// BenchmarkConv times each distinct convolution of VGG16 at 32x32, batch
// 64, forward and backward (data + filter), in GFLOP/s: compare with
// BenchmarkSGEMM's raw rate for the same GEMM shapes.
func BenchmarkConv(b *testing.B) {
	shapes := []struct{ ci, co, hw int }{{3, 64, 32}, {64, 64, 32}, {64, 128, 16}, {128, 128, 16}, {128, 256, 8}, {256, 256, 8}, {256, 512, 4}, {512, 512, 4}, {512, 512, 2}}
	const n = 64
	for _, s := range shapes {
		be := cpu.New()
		rng := rand.New(rand.NewPCG(2, 2))
		fill := func(t *tensor.Tensor) *tensor.Tensor {
			for i := range cpu.Data(t) {
				cpu.Data(t)[i] = float32(rng.NormFloat64())
			}
			return t
		}
		x, w, bias := fill(be.New(n, s.ci, s.hw, s.hw)), fill(be.New(s.co, s.ci, 3, 3)), be.New(s.co)
		y, dy := be.New(n, s.co, s.hw, s.hw), fill(be.New(n, s.co, s.hw, s.hw))
		dx, dw, db := be.New(x.Shape...), be.New(w.Shape...), be.New(s.co)
		flop := 2 * float64(n*s.co*s.hw*s.hw*s.ci*9)
		name := fmt.Sprintf("%dx%d-%dto%d", s.hw, s.hw, s.ci, s.co)
		b.Run(name+"/forward", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				be.ConvForward(y, x, w, bias, 1)
			}
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(name+"/backward-data", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				be.ConvBackwardData(dx, dy, w, 1)
			}
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(name+"/backward-filter", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				be.ConvBackwardFilter(dw, db, x, dy, 1)
			}
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
