package cpu

import (
	"fmt"
	"testing"
)

// BenchmarkSGEMM measures the raw SGEMM rate for the forward GEMM shape of
// each distinct convolution of VGG16 at 32x32, batch 64 (M×N×K = Co ×
// 64·H·W × Ci·9), named like BenchmarkConv's layers, to set beside them.
func BenchmarkSGEMM(b *testing.B) {
	layers := []struct{ ci, co, hw int }{{3, 64, 32}, {64, 64, 32}, {64, 128, 16}, {128, 128, 16}, {128, 256, 8}, {256, 256, 8}, {256, 512, 4}, {512, 512, 4}, {512, 512, 2}}
	for _, l := range layers {
		m, n, k := l.co, 64*l.hw*l.hw, l.ci*9
		for _, impl := range []string{"cblas", "go", "gonum"} {
			be := NewGoSGEMM()
			switch impl {
			case "gonum":
				be = NewGonum()
			case "cblas":
				var err error
				if be, err = NewCBLAS(); err != nil {
					continue
				}
			}
			b.Run(fmt.Sprintf("%s/%dx%d-%dto%d/%dx%dx%d", impl, l.hw, l.hw, l.ci, l.co, m, n, k), func(b *testing.B) {
				a, bb, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
				for i := range a {
					a[i] = float32(i%7) * 0.1
				}
				for i := range bb {
					bb[i] = float32(i%5) * 0.1
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					be.sgemm(false, false, m, n, k, 1, a, k, bb, n, 0, c, n)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
