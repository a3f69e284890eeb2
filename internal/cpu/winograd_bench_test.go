package cpu

import (
	"fmt"
	"testing"
)

// BenchmarkWinoInput times Winograd's input transform alone on VGG16's
// planes at 32x32, for the chunk of images one call transforms.
func BenchmarkWinoInput(b *testing.B) {
	for _, s := range []struct{ c, hw int }{{64, 224}, {128, 56}, {64, 32}, {128, 16}, {256, 8}, {512, 4}, {512, 2}} {
		g := convGeom{n: 64, ci: s.c, co: s.c, h: s.hw, w: s.hw, hw: s.hw * s.hw}
		m := g.winoChunk()
		x := make([]float32, m*s.c*g.hw)
		for i := range x {
			x[i] = float32(i % 7)
		}
		t := m * g.hw / 4
		xs := winoStride(s.c * t)
		v := make([]float32, 16*xs)
		b.Run(fmt.Sprintf("%dx%d-%d", s.hw, s.hw, s.c), func(b *testing.B) {
			for range b.N {
				winoInput(v, x, m, s.c, s.hw, s.hw, xs)
			}
			b.ReportMetric(float64(len(x)*4*5)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}
