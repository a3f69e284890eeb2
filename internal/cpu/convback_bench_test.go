package cpu_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
)

// BenchmarkConvBackward compares the combined backward pass with the two
// separate ones on VGG16's layers at 32x32, batch 64.
func BenchmarkConvBackward(b *testing.B) {
	for _, s := range []struct{ ci, co, hw int }{{64, 64, 32}, {128, 128, 16}, {256, 256, 8}, {512, 512, 4}} {
		be := cpu.New()
		rng := rand.New(rand.NewPCG(3, 3))
		x, w, dy := weights(be, rng, 64, s.ci, s.hw, s.hw), weights(be, rng, s.co, s.ci, 3, 3), weights(be, rng, 64, s.co, s.hw, s.hw)
		dx, dw, db := be.New(x.Shape...), be.New(w.Shape...), be.New(s.co)
		name := fmt.Sprintf("%dx%d-%dto%d", s.hw, s.hw, s.ci, s.co)
		b.Run(name+"/combined", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				be.ConvBackward(dx, dw, db, x, dy, w, 1)
			}
		})
		b.Run(name+"/separate", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				be.ConvBackwardFilter(dw, db, x, dy, 1)
				be.ConvBackwardData(dx, dy, w, 1)
			}
		})
	}
}
