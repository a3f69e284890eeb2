package cpu

import (
	"fmt"
	"testing"
)

// BenchmarkSGEMM measures the raw SGEMM rate for the im2col shapes of
// VGG16 at 32x32, batch 64 (M×N×K = Co × N·H·W × Ci·9), forward.
func BenchmarkSGEMM(b *testing.B) {
	shapes := [][3]int{{64, 65536, 576}, {128, 16384, 576}, {256, 4096, 1152}, {512, 1024, 2304}, {512, 256, 4608}}
	for _, s := range shapes {
		m, n, k := s[0], s[1], s[2]
		for _, impl := range []string{"cblas", "gonum"} {
			be := New()
			if impl == "gonum" {
				be = NewGonum()
			} else if !blasCgo {
				continue
			}
			b.Run(fmt.Sprintf("%s/%dx%dx%d", impl, m, n, k), func(b *testing.B) {
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
