package sgemm

import (
	"fmt"
	"testing"
)

// BenchmarkGemm measures the forward GEMM of each distinct convolution of
// VGG16 at 32x32, batch 64, as im2col runs it (M×N×K = Co × 64·H·W × Ci·9,
// on every core), and one of Winograd's 16 GEMMs a chunk for a few layers
// (Co × tiles × Ci, one core: the backend runs them side by side), the
// shapes of internal/cpu's BenchmarkSGEMM and BenchmarkConv.
func BenchmarkGemm(b *testing.B) {
	type shape struct {
		name       string
		m, n, k, t int
	}
	var shapes []shape
	for _, l := range []struct{ ci, co, hw int }{{3, 64, 32}, {64, 64, 32}, {64, 128, 16}, {128, 128, 16}, {128, 256, 8}, {256, 256, 8}, {256, 512, 4}, {512, 512, 4}, {512, 512, 2}} {
		shapes = append(shapes, shape{fmt.Sprintf("im2col/%dx%d-%dto%d", l.hw, l.hw, l.ci, l.co), l.co, 64 * l.hw * l.hw, l.ci * 9, 0})
	}
	for _, l := range []struct{ ci, co, tiles int }{{64, 64, 2048}, {128, 128, 1024}, {256, 256, 1024}, {512, 512, 256}} {
		shapes = append(shapes, shape{fmt.Sprintf("winograd/%dto%d", l.ci, l.co), l.co, l.tiles, l.ci, 1})
	}
	for _, s := range shapes {
		b.Run(fmt.Sprintf("%s/%dx%dx%d", s.name, s.m, s.n, s.k), func(b *testing.B) {
			a, bb, c := make([]float32, s.m*s.k), make([]float32, s.k*s.n), make([]float32, s.m*s.n)
			for i := range a {
				a[i] = float32(i%7) * 0.1
			}
			for i := range bb {
				bb[i] = float32(i%5) * 0.1
			}
			for b.Loop() {
				Gemm(false, false, s.m, s.n, s.k, 1, a, s.k, bb, s.n, 0, c, s.n, s.t)
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
