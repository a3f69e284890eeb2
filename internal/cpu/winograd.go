package cpu

// Winograd F(2x2, 3x3) for VGG's 3x3 "same" convolutions (winograd.c holds
// the transforms; winograd_go.go the same in Go, for builds without cgo).
// Each 2x2 output tile takes 16 multiplications per input channel instead
// of 36, so the GEMMs between the transforms do 2.25x
// fewer flops than im2col's, and the transformed input is 4x the input
// instead of 9x. The three passes of a training step all take this form:
//
//	forward          Y  = out(U · V)           U = filter(w), V = input(x)
//	backward-data    dX = the forward with the flipped, transposed weights
//	                      (whose transform is U's, reordered and transposed)
//	backward-filter  dw = filterᵀ(Σ outᵀ(dY) · Vᵀ)
//
// where each product is 16 GEMMs, one per element of the 4x4 tile. The
// rounding differs from im2col's by a few float32 steps (the transforms add
// and halve), well inside the PyTorch fixtures' 1e-4.

// WinogradEnv names the environment variable that, set to "0", makes the
// CPU backend run every convolution as im2col + SGEMM (for comparison).
const WinogradEnv = "VGG16_WINOGRAD"

// winograd reports whether geometry g runs as Winograd F(2x2, 3x3): 3x3
// filters with padding 1 on even planes, and at least 16 channels on each
// side (with fewer, im2col's GEMM is as short and the transforms cost more
// than they save).
func (b *Backend) winograd(g convGeom) bool {
	return !b.noWinograd && g.k == 3 && g.pad == 1 && g.h >= 2 && g.w >= 2 && g.h%2 == 0 && g.w%2 == 0 && g.ci >= 16 && g.co >= 16
}

// winoChunk is the number of images transformed at once: the larger of the
// transformed input and output, 4·C·H·W floats an image, within winoLimit.
func (g convGeom) winoChunk() int {
	return max(1, min(g.n, winoLimit/max(1, 4*max(g.ci, g.co)*g.hw)))
}

// winoLimit bounds Winograd's transformed input and output (each) in
// floats: 8 MiB, so that they stay in the caches between the transforms
// and the GEMMs (measured on the 2-core build machines: a VGG16 training
// step at 32x32 took ~10% longer with im2col's 32 MiB bound).
var winoLimit = 2 << 20

// winoStride is the distance in floats between the 16 matrices of V or M,
// each of n floats: past a multiple of 4 KiB by one cache line, so that
// the transforms' 16 streams do not fall into one cache set.
func winoStride(n int) int { return (n+1023)/1024*1024 + 16 }

// winoFilter writes U [16, Co, Ci] (matrices us apart) for w [Co, Ci, 3, 3].
func winoFilter(u, w []float32, co, ci, us int) {
	parallelFor(co, 4, func(lo, hi int) {
		winoFilterRange(u, w, lo, hi, co, ci, us)
	})
}

// winoInput writes V [16, C, m·H·W/4] (matrices xs apart) for images
// [0, m) of x [m, C, H, W].
func winoInput(v, x []float32, m, c, h, w, xs int) {
	t := m * h * w / 4
	parallelFor(m*c, 1, func(lo, hi int) {
		winoInputRange(v, x, lo, hi, c, h, w, t, xs)
	})
}

// convWinograd computes Y = conv(X, W) (+ B unless B is nil) for
// geometry g, which winograd accepts.
func (b *Backend) convWinograd(Y, X, W, B []float32, g convGeom) {
	us := winoStride(g.co * g.ci)
	u := b.scratch(&b.winoBuf, 16*us) // U [16, Co, Ci]
	winoFilter(u, W, g.co, g.ci, us)
	b.winoProducts(Y, X, u, us, B, g, false)
}

// dataGradWinograd computes dx [N, Ci, H, W] for geometry g (the forward
// convolution's), which winograd accepts: the convolution of dy with the
// weights flipped in space and transposed, whose transformed filters are
// U's, transposed, at the tile element with rows and columns 0 and 3
// swapped (G reverses as G·J = P·G with P that swap), so neither the
// flipped weights nor their transform is made.
func (b *Backend) dataGradWinograd(DX, DY, W []float32, g convGeom) {
	us := winoStride(g.co * g.ci)
	u := b.scratch(&b.winoBuf, 16*us) // U [16, Co, Ci]
	winoFilter(u, W, g.co, g.ci, us)
	t := g
	t.ci, t.co = g.co, g.ci
	b.winoProducts(DX, DY, u, us, nil, t, true)
}

// winoSwap is the tile element ξ = 4k+l with k and l each mapped 0↔3.
var winoSwap = [16]int{15, 13, 14, 12, 7, 5, 6, 4, 11, 9, 10, 8, 3, 1, 2, 0}

// winoChunkInput transforms the chunk of at most nb images of X from image
// b0 into V [16, Ci, T] (matrices vs apart, in colBuf): m images, T tiles,
// and the stride ms of the M [16, Co, T] that goes with it.
func (b *Backend) winoChunkInput(X []float32, b0, nb int, g convGeom) (m, t int, v []float32, vs, ms int) {
	m = min(nb, g.n-b0)
	t = m * g.hw / 4
	vs, ms = winoStride(g.ci*t), winoStride(g.co*t)
	v = b.scratch(&b.colBuf, 16*vs)
	winoInput(v, X[b0*g.ci*g.hw:], m, g.ci, g.h, g.w, vs)
	return m, t, v, vs, ms
}

// winoProducts computes Y from X through the transformed filters u
// (matrices us apart) for geometry g: U[ξ]·V[ξ], or with transposed
// U[winoSwap[ξ]]ᵀ·V[ξ] (u then holds [16, g.ci, g.co]).
func (b *Backend) winoProducts(Y, X, u []float32, us int, B []float32, g convGeom, transposed bool) {
	nb := g.winoChunk()
	for b0 := 0; b0 < g.n; b0 += nb {
		m, t, v, vs, ms := b.winoChunkInput(X, b0, nb, g)
		mm := b.scratch(&b.gemmBuf, 16*ms) // M [16, Co, T]
		b.sgemms(16, func(xi int) {
			if transposed {
				b.sgemm(true, false, g.co, t, g.ci, 1, u[winoSwap[xi]*us:], g.co, v[xi*vs:], t, 0, mm[xi*ms:], t)
			} else {
				b.sgemm(false, false, g.co, t, g.ci, 1, u[xi*us:], g.ci, v[xi*vs:], t, 0, mm[xi*ms:], t)
			}
		})
		y := Y[b0*g.co*g.hw:]
		parallelFor(m*g.co, 1, func(lo, hi int) {
			winoOutputRange(y, mm, B, lo, hi, g.co, g.h, g.w, t, ms)
		})
	}
}

// filterGradWinograd computes dw [Co, Ci, 3, 3] and, unless db is nil,
// db [Co] from x and dy for geometry g, which winograd accepts.
func (b *Backend) filterGradWinograd(DW, DB, X, DY []float32, g convGeom) {
	us := winoStride(g.co * g.ci)
	du := b.scratch(&b.winoBuf, 16*us) // dU [16, Co, Ci]
	nb := g.winoChunk()
	for b0 := 0; b0 < g.n; b0 += nb {
		m, t, v, vs, ms := b.winoChunkInput(X, b0, nb, g)
		dm := b.scratch(&b.gemmBuf, 16*ms) // dM [16, Co, T]
		dy := DY[b0*g.co*g.hw:]
		parallelFor(m*g.co, 1, func(lo, hi int) {
			winoOutputAdjointRange(dm, dy, lo, hi, g.co, g.h, g.w, t, ms)
		})
		var beta float32
		if b0 > 0 {
			beta = 1
		}
		b.sgemms(16, func(xi int) {
			// dU[ξ] [Co, Ci] (+)= dM[ξ] [Co, T] · V[ξ]ᵀ
			b.sgemm(false, true, g.co, g.ci, t, 1, dm[xi*ms:], t, v[xi*vs:], t, beta, du[xi*us:], g.ci)
		})
	}
	parallelFor(g.co, 4, func(lo, hi int) {
		winoFilterAdjointRange(DW, du, lo, hi, g.co, g.ci, us)
	})
	if DB != nil {
		biasGrad(DB, DY, g.n, g.co, g.hw)
	}
}

// biasGrad writes db [C], the sums of dy [N, C, HW] over images and
// positions, accumulated in float64.
func biasGrad(DB, DY []float32, n, c, hw int) {
	parallelFor(c, 1, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			var s float64
			for i := range n {
				for _, v := range DY[(i*c+ch)*hw:][:hw] {
					s += float64(v)
				}
			}
			DB[ch] = float32(s)
		}
	})
}
