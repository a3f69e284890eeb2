package cpu

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/tensor"
)

// Convolution as im2col + SGEMM. A chunk of images at a time is unrolled
// into col [Ci·K·K, images·Ho·Wo] (so that one large GEMM covers several
// images even where the feature maps are small), multiplied by the weights
// w [Co, Ci·K·K], and the result [Co, images·Ho·Wo] scattered back to NCHW.

// colLimit bounds the im2col buffer (in float32s) so that 224x224 inputs do
// not need gigabytes: at least one image is always unrolled.
var colLimit = 8 << 20 // a variable so that tests can force several chunks

// convGeom is the geometry of one stride-1 convolution.
type convGeom struct {
	n, ci, h, w   int // input
	co, k, pad    int // filter
	oh, ow        int // output
	hw, ohw, kdim int // h·w, oh·ow, ci·k·k
}

func geometry(x, w *tensor.Tensor, pad int) convGeom {
	if len(x.Shape) != 4 || len(w.Shape) != 4 || w.Shape[1] != x.Shape[1] || w.Shape[2] != w.Shape[3] {
		panic(fmt.Sprintf("cpu: convolution of %v with weights %v", x.Shape, w.Shape))
	}
	g := convGeom{n: x.Shape[0], ci: x.Shape[1], h: x.Shape[2], w: x.Shape[3], co: w.Shape[0], k: w.Shape[2], pad: pad}
	g.oh, g.ow = g.h+2*pad-g.k+1, g.w+2*pad-g.k+1
	g.hw, g.ohw, g.kdim = g.h*g.w, g.oh*g.ow, g.ci*g.k*g.k
	return g
}

// chunk is the number of images unrolled at once.
func (g convGeom) chunk() int {
	return max(1, min(g.n, colLimit/max(1, g.kdim*g.ohw)))
}

// im2col unrolls images [0,m) of x (starting at image 0 of the slice) into
// col [kdim, m·ohw].
func im2col(col, x []float32, m int, g convGeom) {
	ld := m * g.ohw
	kk := g.k * g.k
	parallelFor(g.kdim, 1, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			c, ki, kj := r/kk, r/g.k%g.k, r%g.k
			off := kj - g.pad
			x0, x1 := max(0, -off), min(g.ow, g.w-off) // output columns whose input is inside
			for i := 0; i < m; i++ {
				src := x[(i*g.ci+c)*g.hw:][:g.hw]
				dst := col[r*ld+i*g.ohw:][:g.ohw]
				for oy := 0; oy < g.oh; oy++ {
					row := dst[oy*g.ow : (oy+1)*g.ow]
					iy := oy + ki - g.pad
					if iy < 0 || iy >= g.h || x1 <= x0 {
						clear(row)
						continue
					}
					in := src[iy*g.w : (iy+1)*g.w]
					if g.ow < 16 { // short rows: a plain loop beats three calls
						for ox := range row {
							if ix := ox + off; ix >= 0 && ix < g.w {
								row[ox] = in[ix]
							} else {
								row[ox] = 0
							}
						}
						continue
					}
					clear(row[:x0])
					copy(row[x0:x1], in[x0+off:x1+off])
					clear(row[x1:])
				}
			}
		}
	})
}

// col2im sums col [kdim, m·ohw] back into images [0,m) of dx, which it
// overwrites.
func col2im(dx, col []float32, m int, g convGeom) {
	ld := m * g.ohw
	parallelFor(m*g.ci, 1, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			i, c := j/g.ci, j%g.ci
			dst := dx[(i*g.ci+c)*g.hw:][:g.hw]
			clear(dst)
			for ki := 0; ki < g.k; ki++ {
				for kj := 0; kj < g.k; kj++ {
					r := (c*g.k+ki)*g.k + kj
					src := col[r*ld+i*g.ohw:][:g.ohw]
					off := kj - g.pad
					x0, x1 := max(0, -off), min(g.ow, g.w-off)
					if x1 <= x0 {
						continue
					}
					for oy := 0; oy < g.oh; oy++ {
						iy := oy + ki - g.pad
						if iy < 0 || iy >= g.h {
							continue
						}
						d := dst[iy*g.w+x0+off : iy*g.w+x1+off]
						s := src[oy*g.ow+x0 : oy*g.ow+x1]
						for t, v := range s {
							d[t] += v
						}
					}
				}
			}
		}
	})
}

// gatherNCHW copies images [0,m) of t [m,Co,ohw] into out [Co, m·ohw].
func gatherNCHW(out, t []float32, m, co, ohw int) {
	parallelFor(m*co, 4, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			i, c := j/co, j%co
			copy(out[c*m*ohw+i*ohw:][:ohw], t[(i*co+c)*ohw:][:ohw])
		}
	})
}

func (b *Backend) ConvForward(y, x, w, bias *tensor.Tensor, pad int) {
	g := geometry(x, w, pad)
	Y, B := Data(y), optData(bias)
	if len(Y) != g.n*g.co*g.ohw || (bias != nil && len(B) != g.co) {
		panic(fmt.Sprintf("cpu: convolution output %v / bias %v for input %v, weights %v", y.Shape, bias, x.Shape, w.Shape))
	}
	b.conv(Y, Data(x), Data(w), B, g)
}

// conv computes Y = conv(X, W) (+ B unless B is nil) for geometry g.
func (b *Backend) conv(Y, X, W, B []float32, g convGeom) {
	if b.winograd(g) {
		b.convWinograd(Y, X, W, B, g)
		return
	}
	nb := g.chunk()
	for b0 := 0; b0 < g.n; b0 += nb {
		m := min(nb, g.n-b0)
		col := b.scratch(&b.colBuf, g.kdim*m*g.ohw)
		im2col(col, X[b0*g.ci*g.hw:], m, g)
		out := b.scratch(&b.gemmBuf, g.co*m*g.ohw) // [Co, m·ohw]
		b.sgemm(false, false, g.co, m*g.ohw, g.kdim, 1, W, g.kdim, col, m*g.ohw, 0, out, m*g.ohw)
		parallelFor(m*g.co, 4, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				i, c := j/g.co, j%g.co
				dst := Y[((b0+i)*g.co+c)*g.ohw:][:g.ohw]
				src := out[c*m*g.ohw+i*g.ohw:][:g.ohw]
				if B == nil {
					copy(dst, src)
					continue
				}
				bv := B[c]
				for p, v := range src {
					dst[p] = v + bv
				}
			}
		})
	}
}

// ConvBackwardData computes dx as the forward convolution of dy with the
// weights transposed (in and out channels swapped) and flipped in space,
// padded by K-1-pad. It is the same arithmetic as wᵀ·dy followed by col2im,
// but its GEMM sums over Co·K·K instead of Co, which SGEMM runs faster
// (75 against 106 GFLOP/s for VGG16's conv1_2 on the build machines), and
// it writes dx once instead of accumulating into it.
func (b *Backend) ConvBackwardData(dx, dy, w *tensor.Tensor, pad int) {
	g := geometry(dx, w, pad)
	DX, DY, W := Data(dx), Data(dy), Data(w)
	if len(DY) != g.n*g.co*g.ohw {
		panic(fmt.Sprintf("cpu: convolution gradient %v for input %v, weights %v", dy.Shape, dx.Shape, w.Shape))
	}
	if b.winograd(g) {
		b.dataGradWinograd(DX, DY, W, g)
		return
	}
	// The transposed convolution's GEMM has Ci rows: with few input
	// channels (the first layer's 3) col2im is faster.
	if g.oh != g.h || g.ow != g.w || g.ci < 16 {
		b.convBackwardDataCol2im(DX, DY, W, g)
		return
	}
	wt := b.scratch(&b.wtBuf, len(W)) // [Ci, Co, K, K], flipped
	flipTranspose(wt, W, g.co, g.ci, g.k*g.k)
	t := convGeom{n: g.n, ci: g.co, h: g.oh, w: g.ow, co: g.ci, k: g.k, pad: g.k - 1 - g.pad}
	t.oh, t.ow = t.h+2*t.pad-t.k+1, t.w+2*t.pad-t.k+1
	t.hw, t.ohw, t.kdim = t.h*t.w, t.oh*t.ow, t.ci*t.k*t.k
	b.conv(DX, DY, wt, nil, t)
}

// convBackwardDataCol2im is the general backward pass (any padding):
// col = wᵀ·dy, then col2im.
func (b *Backend) convBackwardDataCol2im(DX, DY, W []float32, g convGeom) {
	nb := g.chunk()
	for b0 := 0; b0 < g.n; b0 += nb {
		m := min(nb, g.n-b0)
		dyc := b.scratch(&b.gemmBuf, g.co*m*g.ohw) // [Co, m·ohw]
		gatherNCHW(dyc, DY[b0*g.co*g.ohw:], m, g.co, g.ohw)
		col := b.scratch(&b.colBuf, g.kdim*m*g.ohw) // [kdim, m·ohw] = wᵀ·dyc
		b.sgemm(true, false, g.kdim, m*g.ohw, g.co, 1, W, g.kdim, dyc, m*g.ohw, 0, col, m*g.ohw)
		col2im(DX[b0*g.ci*g.hw:], col, m, g)
	}
}

func (b *Backend) ConvBackwardFilter(dw, db, x, dy *tensor.Tensor, pad int) {
	g := geometry(x, dw, pad)
	X, DY, DW, DB := Data(x), Data(dy), Data(dw), optData(db)
	if len(DY) != g.n*g.co*g.ohw || (db != nil && len(DB) != g.co) {
		panic(fmt.Sprintf("cpu: convolution gradient %v / bias gradient %v for input %v, weights %v", dy.Shape, db, x.Shape, dw.Shape))
	}
	if b.winograd(g) {
		b.filterGradWinograd(DW, DB, X, DY, g)
		return
	}
	sums := b.stats(g.co)
	nb := g.chunk()
	for b0 := 0; b0 < g.n; b0 += nb {
		m := min(nb, g.n-b0)
		col := b.scratch(&b.colBuf, g.kdim*m*g.ohw)
		im2col(col, X[b0*g.ci*g.hw:], m, g)
		dyc := b.scratch(&b.gemmBuf, g.co*m*g.ohw)
		gatherNCHW(dyc, DY[b0*g.co*g.ohw:], m, g.co, g.ohw)
		var beta float32
		if b0 > 0 {
			beta = 1
		}
		// dw [Co, kdim] (+)= dyc [Co, m·ohw] · colᵀ
		b.sgemm(false, true, g.co, g.kdim, m*g.ohw, 1, dyc, m*g.ohw, col, m*g.ohw, beta, DW, g.kdim)
		if DB == nil {
			continue
		}
		parallelFor(g.co, 1, func(lo, hi int) {
			for c := lo; c < hi; c++ {
				var s float64
				for _, v := range dyc[c*m*g.ohw:][:m*g.ohw] {
					s += float64(v)
				}
				sums[c] += s
			}
		})
	}
	for c := range DB {
		DB[c] = float32(sums[c])
	}
}

// ConvBackward computes dx (unless nil), dw and db in one pass. For the
// "same" convolutions of VGG with at least 16 input channels it unrolls dy
// once and uses it twice: backward-data is the transposed convolution
// (flipped weights · unrolled dy), and backward-filter is
// x · unrolled-dyᵀ, since dw[o,i,ki,kj] = Σ x[i,q] · dy[o, q-(ki-pad,kj-pad)]
// is the unrolled dy's row (o, K-1-ki, K-1-kj). That replaces an unrolling
// of x (9x its size) by a gather (1x). Other geometries take the two
// separate passes.
func (b *Backend) ConvBackward(dx, dw, db, x, dy, w *tensor.Tensor, pad int) {
	g := geometry(x, w, pad)
	if dx == nil || g.oh != g.h || g.ow != g.w || g.ci < 16 || b.winograd(g) {
		b.ConvBackwardFilter(dw, db, x, dy, pad)
		if dx != nil {
			b.ConvBackwardData(dx, dy, w, pad)
		}
		return
	}
	X, DY, W, DX, DW, DB := Data(x), Data(dy), Data(w), Data(dx), Data(dw), optData(db)
	if len(DY) != g.n*g.co*g.ohw || len(DX) != len(X) || len(DW) != len(W) || (db != nil && len(DB) != g.co) {
		panic(fmt.Sprintf("cpu: convolution backward of %v, weights %v, gradient %v", x.Shape, w.Shape, dy.Shape))
	}
	kk := g.k * g.k
	wt := b.scratch(&b.wtBuf, len(W)) // [Ci, Co·K·K], flipped
	flipTranspose(wt, W, g.co, g.ci, kk)
	// The transposed convolution: input dy (Co channels), output dx.
	t := convGeom{n: g.n, ci: g.co, h: g.oh, w: g.ow, co: g.ci, k: g.k, pad: g.k - 1 - g.pad}
	t.oh, t.ow = t.h+2*t.pad-t.k+1, t.w+2*t.pad-t.k+1
	t.hw, t.ohw, t.kdim = t.h*t.w, t.oh*t.ow, t.ci*t.k*t.k
	dwt := b.scratch(&b.dwtBuf, g.ci*t.kdim) // [Ci, Co·K·K] = x · unrolled-dyᵀ
	sums := b.stats(g.co)
	nb := max(1, min(g.n, colLimit/max(1, t.kdim*t.ohw)))
	for b0 := 0; b0 < g.n; b0 += nb {
		m := min(nb, g.n-b0)
		col := b.scratch(&b.colBuf, t.kdim*m*t.ohw) // dy unrolled [Co·K·K, m·hw]
		im2col(col, DY[b0*g.co*g.ohw:], m, t)
		out := b.scratch(&b.gemmBuf, g.ci*m*g.hw) // [Ci, m·hw]
		b.sgemm(false, false, g.ci, m*g.hw, t.kdim, 1, wt, t.kdim, col, m*g.hw, 0, out, m*g.hw)
		scatterNCHW(DX[b0*g.ci*g.hw:], out, m, g.ci, g.hw)
		xg := b.scratch(&b.gatherBuf, g.ci*m*g.hw) // x as [Ci, m·hw]
		gatherNCHW(xg, X[b0*g.ci*g.hw:], m, g.ci, g.hw)
		var beta float32
		if b0 > 0 {
			beta = 1
		}
		b.sgemm(false, true, g.ci, t.kdim, m*g.hw, 1, xg, m*g.hw, col, m*g.hw, beta, dwt, t.kdim)
		// db is the sum of dy: the centre tap's rows of the unrolled dy.
		centre := (g.k-1-g.pad)*g.k + (g.k - 1 - g.pad)
		if DB == nil {
			continue
		}
		parallelFor(g.co, 1, func(lo, hi int) {
			for o := lo; o < hi; o++ {
				var s float64
				for _, v := range col[(o*kk+centre)*m*g.hw:][:m*g.hw] {
					s += float64(v)
				}
				sums[o] += s
			}
		})
	}
	parallelFor(g.co, 8, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			for i := 0; i < g.ci; i++ {
				src := dwt[i*t.kdim+o*kk:][:kk]
				dst := DW[(o*g.ci+i)*kk:][:kk]
				for j, v := range src {
					dst[kk-1-j] = v
				}
			}
			if DB != nil {
				DB[o] = float32(sums[o])
			}
		}
	})
}

// flipTranspose writes w [Co, Ci, K·K] as [Ci, Co, K·K] with each kernel
// reversed: the weights of the transposed convolution.
func flipTranspose(wt, w []float32, co, ci, kk int) {
	parallelFor(co, 8, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			for i := 0; i < ci; i++ {
				src := w[(o*ci+i)*kk:][:kk]
				dst := wt[(i*co+o)*kk:][:kk]
				for j, v := range src {
					dst[kk-1-j] = v
				}
			}
		}
	})
}

// scatterNCHW copies out [C, m·hw] into images [0,m) of t [m, C, hw].
func scatterNCHW(t, out []float32, m, c, hw int) {
	parallelFor(m*c, 4, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			i, ch := j/c, j%c
			copy(t[(i*c+ch)*hw:][:hw], out[ch*m*hw+i*hw:][:hw])
		}
	})
}

// stats returns a zeroed float64 scratch slice of n elements.
func (b *Backend) stats(n int) []float64 {
	if cap(b.statBuf) < n {
		b.statBuf = make([]float64, n)
	}
	s := b.statBuf[:n]
	clear(s)
	return s
}
