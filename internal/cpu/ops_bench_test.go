package cpu_test

import (
	"math/rand/v2"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
)

// BenchmarkReLUBackward and BenchmarkMaxPool time the two memory-bound
// ops whose branches were replaced by masks, at VGG16's largest size.
func BenchmarkReLUBackward(b *testing.B) {
	be := cpu.New()
	y, dy, dx := be.New(64, 64, 32, 32), be.New(64, 64, 32, 32), be.New(64, 64, 32, 32)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range cpu.Data(y) {
		cpu.Data(y)[i] = float32(rng.NormFloat64())
		cpu.Data(dy)[i] = float32(rng.NormFloat64())
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		be.ReLUBackward(dx, dy, y)
	}
}

func BenchmarkMaxPool(b *testing.B) {
	be := cpu.New()
	x, y := be.New(64, 64, 32, 32), be.New(64, 64, 16, 16)
	dx, dy := be.New(64, 64, 32, 32), be.New(64, 64, 16, 16)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range cpu.Data(x) {
		cpu.Data(x)[i] = float32(rng.NormFloat64())
	}
	for i := range cpu.Data(dy) {
		cpu.Data(dy)[i] = float32(rng.NormFloat64())
	}
	b.Run("forward", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			be.MaxPoolForward(y, x, 2, 2)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			be.MaxPoolBackward(dx, dy, x, y, 2, 2)
		}
	})
}

// BenchmarkBatchNormReLU times batch norm + ReLU's training forward and
// backward at VGG16's largest activation (32x32, batch 64, 64 channels).
func BenchmarkBatchNormReLU(b *testing.B) {
	be := cpu.New()
	shape := []int{64, 64, 32, 32}
	x, y, dy, dx := be.New(shape...), be.New(shape...), be.New(shape...), be.New(shape...)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range cpu.Data(x) {
		cpu.Data(x)[i] = float32(rng.NormFloat64())
		cpu.Data(dy)[i] = float32(rng.NormFloat64())
	}
	gamma, beta, rm, rv, sm, si, dg, db := be.New(64), be.New(64), be.New(64), be.New(64), be.New(64), be.New(64), be.New(64), be.New(64)
	be.Fill(gamma, 1)
	b.Run("train", func(b *testing.B) {
		for range b.N {
			be.BatchNormReLUTrain(y, x, gamma, beta, rm, rv, sm, si, nil, 0.1, 1e-5)
		}
	})
	b.Run("backward", func(b *testing.B) {
		for range b.N {
			be.BatchNormReLUBackward(dx, dg, db, dy, y, x, gamma, beta, sm, si)
		}
	})
}
