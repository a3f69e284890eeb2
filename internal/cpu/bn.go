package cpu

import "math"

// Batch norm's passes over channels [lo, hi) of NCHW tensors [n, c, hw],
// with per-channel float64 factors: in C (bn.c, vectorised by the
// compiler) where cgo is on, and these Go functions otherwise. Both sum in
// eight lanes added in a fixed order and compute the same expressions in
// the same order, so they give the same bits (TestBatchNormGoMatchesC);
// the explicit float64 conversions keep Go from fusing a multiply into an
// add, as fp-contract=off does for the C.

const bnLanes = 8

func fold(acc *[bnLanes]float64) float64 {
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

// plane is channel ch of image i in an NCHW tensor [n, c, hw].
func plane(t []float32, i, c, ch, hw int) []float32 { return t[(i*c+ch)*hw:][:hw] }

// bnStatsGo writes mean[ch] and ss[ch] = Σ(x - mean)² for channels
// [lo, hi) (two passes: no cancellation).
func bnStatsGo(x []float32, n, c, hw, lo, hi int, mean, ss []float64) {
	for ch := lo; ch < hi; ch++ {
		var acc [bnLanes]float64
		var tail float64
		for i := range n {
			v := plane(x, i, c, ch, hw)
			p := 0
			for ; p+bnLanes <= hw; p += bnLanes {
				for j := range bnLanes {
					acc[j] += float64(v[p+j])
				}
			}
			for ; p < hw; p++ {
				tail += float64(v[p])
			}
		}
		m := (fold(&acc) + tail) / (float64(n) * float64(hw))
		var sq [bnLanes]float64
		var sqt float64
		for i := range n {
			v := plane(x, i, c, ch, hw)
			p := 0
			for ; p+bnLanes <= hw; p += bnLanes {
				for j := range bnLanes {
					d := float64(v[p+j]) - m
					sq[j] += float64(d * d)
				}
			}
			for ; p < hw; p++ {
				d := float64(v[p]) - m
				sqt += float64(d * d)
			}
		}
		mean[ch] = m
		ss[ch] = fold(&sq) + sqt
	}
}

// bnApplyGo writes y = x·scale[ch] + shift[ch] (in float64, rounded once),
// then max(y, 0) where relu is set (NaN kept, as Go's max).
func bnApplyGo(y, x []float32, n, c, hw, lo, hi int, scale, shift []float64, relu bool) {
	for ch := lo; ch < hi; ch++ {
		s, h := scale[ch], shift[ch]
		for i := range n {
			v, o := plane(x, i, c, ch, hw), plane(y, i, c, ch, hw)
			o = o[:len(v)]
			if !relu {
				for p, xv := range v {
					o[p] = float32(float64(float64(xv)*s) + h)
				}
				continue
			}
			for p, xv := range v {
				// max keeps NaN and makes -0 +0, as the C; it compiles
				// without a branch, which would mispredict half the time.
				o[p] = max(float32(float64(float64(xv)*s)+h), 0)
			}
		}
	}
}

// masked is g where y > 0 (the ReLU passed it), +0 otherwise: a mask, not
// a branch (which activations are positive is close to random).
func masked(g, y float32) float32 {
	var m uint32
	if y > 0 {
		m = ^uint32(0)
	}
	return math.Float32frombits(math.Float32bits(g) & m)
}

// bnGradSumsGo writes Σdy and Σdy·(x - mean) for channels [lo, hi), dy
// masked by the ReLU output y unless y is empty.
func bnGradSumsGo(dy, x, y []float32, n, c, hw, lo, hi int, mean, sdy, sdyx []float64) {
	for ch := lo; ch < hi; ch++ {
		m := mean[ch]
		var a, b [bnLanes]float64
		var at, bt float64
		for i := range n {
			g, v := plane(dy, i, c, ch, hw), plane(x, i, c, ch, hw)
			var r []float32
			if len(y) > 0 {
				r = plane(y, i, c, ch, hw)
			}
			p := 0
			for ; p+bnLanes <= hw; p += bnLanes {
				gs, vs := (*[bnLanes]float32)(g[p:]), (*[bnLanes]float32)(v[p:])
				var gm [bnLanes]float32
				if r != nil {
					rs := (*[bnLanes]float32)(r[p:])
					for j := range bnLanes {
						gm[j] = masked(gs[j], rs[j])
					}
				} else {
					gm = *gs
				}
				for j := range bnLanes {
					gv := float64(gm[j])
					a[j] += gv
					b[j] += float64(gv * (float64(vs[j]) - m))
				}
			}
			for ; p < hw; p++ {
				gs := g[p]
				if r != nil {
					gs = masked(gs, r[p])
				}
				gv := float64(gs)
				at += gv
				bt += float64(gv * (float64(v[p]) - m))
			}
		}
		sdy[ch] = fold(&a) + at
		sdyx[ch] = fold(&b) + bt
	}
}

// bnGradApplyGo writes dx = k·(dy − mdy − (x − mean)·inv·mdyx) for
// channels [lo, hi), dy masked by y unless y is empty.
func bnGradApplyGo(dx, dy, x, y []float32, n, c, hw, lo, hi int, mean, inv, k, mdy, mdyx []float64) {
	for ch := lo; ch < hi; ch++ {
		m, iv, kk, md, mx := mean[ch], inv[ch], k[ch], mdy[ch], mdyx[ch]
		for i := range n {
			g, v, o := plane(dy, i, c, ch, hw), plane(x, i, c, ch, hw), plane(dx, i, c, ch, hw)
			var r []float32
			if len(y) > 0 {
				r = plane(y, i, c, ch, hw)
			}
			for p := range o {
				gv := g[p]
				if r != nil {
					gv = masked(gv, r[p])
				}
				xhat := float64((float64(v[p]) - m) * iv)
				o[p] = float32(kk * (float64(gv) - md - float64(xhat*mx)))
			}
		}
	}
}
