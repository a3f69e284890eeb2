package cpu

// winograd.c's transforms in Go, for builds without cgo, and the check
// that both give the same bits (TestWinogradGoMatchesC). Each computes the
// same expressions in the same order, a tile at a time or (the input and
// output on planes of more than winoSmallTiles tiles a row) a row of tiles
// at a time; explicit float32 conversions keep the compiler from fusing a
// multiply into an add (which Go may do on arm64), as fp-contract=off does
// for the C.

// winoFilterGo writes U [16][co][ci] (matrices us apart) for output
// channels [lo, hi) of w [co][ci][3][3]: U = G g Gᵀ for each filter.
func winoFilterGo(u, w []float32, lo, hi, co, ci, us int) {
	for o := lo; o < hi; o++ {
		for i := range ci {
			g := w[(o*ci+i)*9:][:9]
			var a [4][3]float32 // G g
			for j := range 3 {
				a[0][j] = g[j]
				a[1][j] = 0.5 * (g[j] + g[3+j] + g[6+j])
				a[2][j] = 0.5 * (g[j] - g[3+j] + g[6+j])
				a[3][j] = g[6+j]
			}
			d := o*ci + i
			for k := range 4 { // … Gᵀ
				u[(4*k+0)*us+d] = a[k][0]
				u[(4*k+1)*us+d] = 0.5 * (a[k][0] + a[k][1] + a[k][2])
				u[(4*k+2)*us+d] = 0.5 * (a[k][0] - a[k][1] + a[k][2])
				u[(4*k+3)*us+d] = a[k][2]
			}
		}
	}
}

// winoFilterAdjointGo writes output channels [lo, hi) of dw [co][ci][3][3]
// from dU [16][co][ci] (matrices us apart): dg = Gᵀ dU G.
func winoFilterAdjointGo(dw, du []float32, lo, hi, co, ci, us int) {
	for o := lo; o < hi; o++ {
		for i := range ci {
			s := o*ci + i
			var a [3][4]float32 // Gᵀ dU
			for l := range 4 {
				d0, d1, d2, d3 := du[l*us+s], du[(4+l)*us+s], du[(8+l)*us+s], du[(12+l)*us+s]
				a[0][l] = d0 + float32(0.5*(d1+d2))
				a[1][l] = 0.5 * (d1 - d2)
				a[2][l] = float32(0.5*(d1+d2)) + d3
			}
			g := dw[s*9:][:9]
			for k := range 3 { // … G
				g[3*k+0] = a[k][0] + float32(0.5*(a[k][1]+a[k][2]))
				g[3*k+1] = 0.5 * (a[k][1] - a[k][2])
				g[3*k+2] = float32(0.5*(a[k][1]+a[k][2])) + a[k][3]
			}
		}
	}
}

// winoInputGo writes V [16][c][t] (matrices xs apart) for planes [lo, hi)
// of x [m][c][h][w] (plane p is image p/c, channel p%c; padding 1, h and w
// even): V = Bᵀ d B for each 4x4 tile d of the padded plane.
func winoInputGo(v, x []float32, lo, hi, c, h, w, t, xs int) {
	th, tw, pw := h/2, w/2, w+2
	if tw > winoSmallTiles {
		winoInputRowsGo(v, x, lo, hi, c, h, w, t, xs)
		return
	}
	pad := make([]float32, (h+2)*pw) // the plane with a border of zeros
	for p := lo; p < hi; p++ {
		img, ch := p/c, p%c
		for r := range h {
			copy(pad[(r+1)*pw+1:][:w], x[(p*h+r)*w:][:w])
		}
		base := ch*t + img*th*tw
		for ty := range th {
			r0 := pad[2*ty*pw:]
			r1, r2, r3 := r0[pw:], r0[2*pw:], r0[3*pw:]
			for tx := range tw {
				j, o := 2*tx, base+ty*tw+tx
				var rows [4][4]float32 // Bᵀ d
				for k := range 4 {
					rows[0][k] = r0[j+k] - r2[j+k]
					rows[1][k] = r1[j+k] + r2[j+k]
					rows[2][k] = r2[j+k] - r1[j+k]
					rows[3][k] = r1[j+k] - r3[j+k]
				}
				for q, e := range rows { // … B
					v[(4*q+0)*xs+o] = e[0] - e[2]
					v[(4*q+1)*xs+o] = e[1] + e[2]
					v[(4*q+2)*xs+o] = e[2] - e[1]
					v[(4*q+3)*xs+o] = e[1] - e[3]
				}
			}
		}
	}
}

// winoOutputRowGo is a row of tiles of winoOutputGo (m is their first
// matrix element), each product a run over the row: the same operations on
// the same values, with the bounds checked once a run, not once a value.
// rows is scratch for Aᵀ m, [8][tw].
func winoOutputRowGo(y0, y1, m, rows []float32, bv float32, tw, xs int) {
	in := func(k int) []float32 { return m[k*xs:][:tw] }
	out := func(i int) []float32 { return rows[i*tw:][:tw] }
	for i := range 4 { // Aᵀ m: s_i = m_i + m_4+i + m_8+i, u_i = m_4+i − m_8+i − m_12+i
		a, b, c, d := in(i), in(4+i), in(8+i), in(12+i)
		s, u := out(i), out(4+i)
		for tx := range s {
			s[tx] = a[tx] + b[tx] + c[tx]
		}
		for tx := range u {
			u[tx] = b[tx] - c[tx] - d[tx]
		}
	}
	s0, s1, s2, s3 := out(0), out(1), out(2), out(3)
	u0, u1, u2, u3 := out(4), out(5), out(6), out(7)
	y0, y1 = y0[:2*tw], y1[:2*tw]
	for tx := range tw { // … A
		y0[2*tx], y0[2*tx+1] = s0[tx]+s1[tx]+s2[tx]+bv, s1[tx]-s2[tx]-s3[tx]+bv
		y1[2*tx], y1[2*tx+1] = u0[tx]+u1[tx]+u2[tx]+bv, u1[tx]-u2[tx]-u3[tx]+bv
	}
}

// winoSmallTiles is winograd.c's SMALL_TILES: up to this many tiles a row,
// the input and output transforms take a tile at a time (the row loops'
// setup would cost more than their work).
const winoSmallTiles = 8

// winoInputRowsGo is winoInputGo for planes of more than winoSmallTiles
// tiles a row, as wino_input's row loops: the padded plane split into its
// even and odd columns, each row of Bᵀ d computed for the whole row of
// tiles, then each of its four products with B written as a run. The same
// operations on the same values as a tile at a time, so the same bits; the
// loops run over contiguous runs, with their bounds checked once a run.
func winoInputRowsGo(v, x []float32, lo, hi, c, h, w, t, xs int) {
	th, tw, n2 := h/2, w/2, w/2+1
	// even[r][k] is padded column 2k (x's column 2k-1), odd[r][k] padded
	// column 2k+1 (x's column 2k); the first even column and the last odd
	// one are the zero border.
	even, odd := make([]float32, (h+2)*n2), make([]float32, (h+2)*n2)
	xe, xo := make([]float32, n2), make([]float32, n2)
	for p := lo; p < hi; p++ {
		img, ch := p/c, p%c
		for r := range h {
			s := x[(p*h+r)*w:][:w]
			e, o := even[(r+1)*n2:][:n2], odd[(r+1)*n2:][:n2]
			for k := range tw {
				e[k+1], o[k] = s[2*k+1], s[2*k]
			}
		}
		base := ch*t + img*th*tw
		for ty := range th {
			row := func(r int) ([]float32, []float32) { return even[(2*ty+r)*n2:][:n2], odd[(2*ty+r)*n2:][:n2] }
			e0, od0 := row(0)
			e1, od1 := row(1)
			e2, od2 := row(2)
			e3, od3 := row(3)
			for q := range 4 {
				// Row q of Bᵀ d, for every tile of the row: d0-d2, d1+d2, d2-d1, d1-d3.
				switch q {
				case 0:
					sub(xe, e0, e2)
					sub(xo, od0, od2)
				case 1:
					for k := range xe {
						xe[k], xo[k] = e1[k]+e2[k], od1[k]+od2[k]
					}
				case 2:
					sub(xe, e2, e1)
					sub(xo, od2, od1)
				case 3:
					sub(xe, e1, e3)
					sub(xo, od1, od3)
				}
				// … B: the tile's columns are xe[tx], xo[tx], xe[tx+1], xo[tx+1].
				o := base + ty*tw
				o0, o1 := v[(4*q)*xs+o:][:tw], v[(4*q+1)*xs+o:][:tw]
				o2, o3 := v[(4*q+2)*xs+o:][:tw], v[(4*q+3)*xs+o:][:tw]
				ea, eb, oa, ob := xe[:tw], xe[1:][:tw], xo[:tw], xo[1:][:tw]
				for k := range o0 {
					o0[k] = ea[k] - eb[k]
				}
				for k := range o1 {
					o1[k] = oa[k] + eb[k]
				}
				for k := range o2 {
					o2[k] = eb[k] - oa[k]
				}
				for k := range o3 {
					o3[k] = oa[k] - ob[k]
				}
			}
		}
	}
}

// sub writes a − b.
func sub(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for k := range dst {
		dst[k] = a[k] - b[k]
	}
}

// winoOutputGo writes planes [lo, hi) of y [m][c][h][w] from M [16][c][t]
// (matrices xs apart): Aᵀ m A for each tile, plus bias[ch] unless bias is
// empty (+0 then, as the C adds).
func winoOutputGo(y, mm, bias []float32, lo, hi, c, h, w, t, xs int) {
	th, tw := h/2, w/2
	var rows []float32 // Aᵀ m for a row of tiles: [8][tw]
	if tw > winoSmallTiles {
		rows = make([]float32, 8*tw)
	}
	for p := lo; p < hi; p++ {
		img, ch := p/c, p%c
		var bv float32
		if len(bias) > 0 {
			bv = bias[ch]
		}
		base := ch*t + img*th*tw
		for ty := range th {
			y0 := y[(p*h+2*ty)*w:][:w]
			y1 := y[(p*h+2*ty+1)*w:][:w]
			if rows != nil {
				winoOutputRowGo(y0, y1, mm[base+ty*tw:], rows, bv, tw, xs)
				continue
			}
			for tx := range tw {
				o := base + ty*tw + tx
				var m [16]float32
				for k := range m {
					m[k] = mm[k*xs+o]
				}
				// Aᵀ m: combine rows.
				s0, s1, s2, s3 := m[0]+m[4]+m[8], m[1]+m[5]+m[9], m[2]+m[6]+m[10], m[3]+m[7]+m[11]
				u0, u1, u2, u3 := m[4]-m[8]-m[12], m[5]-m[9]-m[13], m[6]-m[10]-m[14], m[7]-m[11]-m[15]
				// … A: combine columns.
				y0[2*tx], y0[2*tx+1] = s0+s1+s2+bv, s1-s2-s3+bv
				y1[2*tx], y1[2*tx+1] = u0+u1+u2+bv, u1-u2-u3+bv
			}
		}
	}
}

// winoOutputAdjointGo is winoOutputGo's transpose without the bias: it
// writes dM [16][c][t] (matrices xs apart) from planes [lo, hi) of dy
// [m][c][h][w], dM = A dY Aᵀ for each tile.
func winoOutputAdjointGo(dm, dy []float32, lo, hi, c, h, w, t, xs int) {
	th, tw := h/2, w/2
	for p := lo; p < hi; p++ {
		img, ch := p/c, p%c
		base := ch*t + img*th*tw
		for ty := range th {
			g0 := dy[(p*h+2*ty)*w:][:w]
			g1 := dy[(p*h+2*ty+1)*w:][:w]
			for tx := range tw {
				o := base + ty*tw + tx
				p00, p01, p10, p11 := g0[2*tx], g0[2*tx+1], g1[2*tx], g1[2*tx+1]
				s := [4][2]float32{{p00, p01}, {p00 + p10, p01 + p11}, {p00 - p10, p01 - p11}, {-p10, -p11}}
				for k := range 4 {
					dm[(4*k+0)*xs+o] = s[k][0]
					dm[(4*k+1)*xs+o] = s[k][0] + s[k][1]
					dm[(4*k+2)*xs+o] = s[k][0] - s[k][1]
					dm[(4*k+3)*xs+o] = -s[k][1]
				}
			}
		}
	}
}
