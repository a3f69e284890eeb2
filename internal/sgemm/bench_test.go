package sgemm

import (
	"fmt"
	"testing"
)

// BenchmarkGemm measures one of Winograd's 16 GEMMs a chunk for a few of
// VGG16's layers at 32x32, batch 64 (Co × tiles × Ci, on one core: the
// backend runs them side by side), with the kernel KernelEnv picks.
// internal/cpu's BenchmarkSGEMM has im2col's shapes, on every core, beside
// OpenBLAS and gonum.
func BenchmarkGemm(b *testing.B) {
	for _, l := range []struct{ ci, co, tiles int }{{64, 64, 2048}, {128, 128, 1024}, {256, 256, 1024}, {512, 512, 256}} {
		m, n, k := l.co, l.tiles, l.ci
		b.Run(fmt.Sprintf("winograd/%dto%d/%dx%dx%d", l.ci, l.co, m, n, k), func(b *testing.B) {
			a, bb, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
			for i := range a {
				a[i] = float32(i%7) * 0.1
			}
			for i := range bb {
				bb[i] = float32(i%5) * 0.1
			}
			for b.Loop() {
				Gemm(false, false, m, n, k, 1, a, k, bb, n, 0, c, n, 1)
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
