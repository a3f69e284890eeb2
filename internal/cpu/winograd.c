//go:build !windows

// Winograd F(2x2, 3x3) transforms for the CPU backend's 3x3 convolutions
// (winograd.go). C so that the compiler vectorises the loops over tiles;
// the GEMMs between the transforms go through the same SGEMM as im2col's.
//
// Notation (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks"): a 4x4 input tile d, a 3x3 filter g and a 2x2 output tile y,
// with y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A and
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//   G  = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]
//   Aᵀ = [1 1 1 0; 0 1 -1 -1].
// Transformed tensors are 16 matrices, one per element ξ of the 4x4 tile:
// V [16][C][T] (inputs), U [16][Co][Ci] (filters), M [16][Co][T] (the
// products), T tiles numbered (image, tile row, tile column).
//
// Every function takes a range [lo, hi) of the planes or channels it
// loops over, so that Go can split the work among goroutines.

#include <stdlib.h>
#include <string.h>

#include "clones.h"

// vgg_simd names the version of the VGG_CLONES functions the loader
// picks on this CPU.
const char *vgg_simd(void) {
#if defined(VGG_HAVE_CLONES)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f")) return "AVX-512";
	if (__builtin_cpu_supports("avx2")) return "AVX2";
	return "SSE2";
#elif defined(__aarch64__)
	return "NEON";
#elif defined(__x86_64__)
	return "SSE2";
#else
	return "C";
#endif
}

// The 16 matrices of V and M lie xs floats apart, where Go pads xs past a
// multiple of the page size: 16 streams a multiple of 4 KiB apart would
// fall into one cache set. Each function writes its 16 streams one after
// another, in runs along a row of tiles, from rows it first splits into
// even and odd columns, so that every inner loop is unit-stride.

// SMALL_TILES: up to this many tiles a row, wino_input takes each tile
// whole (wino_input_small): the row loops' setup would cost more than
// their work.
#define SMALL_TILES 8

// wino_input_small is wino_input for small planes, a tile at a time, with
// pad as scratch for the padded plane ((h+2)·(w+2) floats, zeroed).
static inline void wino_input_small(float *v, const float *x, int lo, int hi, int c, int h, int w, long t, long xs, float *pad) {
	int th = h / 2, tw = w / 2, pw = w + 2;
	for (int p = lo; p < hi; p++) {
		int img = p / c, ch = p % c;
		const float *src = x + (long)p * h * w;
		for (int r = 0; r < h; r++) memcpy(pad + (long)(r + 1) * pw + 1, src + (long)r * w, w * sizeof(float));
		float *out = v + (long)ch * t + (long)img * th * tw;
		for (int ty = 0; ty < th; ty++) {
			const float *r0 = pad + (long)(2 * ty) * pw, *r1 = r0 + pw, *r2 = r1 + pw, *r3 = r2 + pw;
			float *o = out + (long)ty * tw;
			for (int tx = 0; tx < tw; tx++) {
				int j = 2 * tx;
				float a[4], b[4], cc[4], d[4]; // rows of Bᵀ d
				for (int k = 0; k < 4; k++) {
					a[k] = r0[j + k] - r2[j + k], b[k] = r1[j + k] + r2[j + k];
					cc[k] = r2[j + k] - r1[j + k], d[k] = r1[j + k] - r3[j + k];
				}
				const float *rows[4] = {a, b, cc, d};
				for (int q = 0; q < 4; q++) { // … B
					const float *e = rows[q];
					o[(4 * q + 0) * xs + tx] = e[0] - e[2], o[(4 * q + 1) * xs + tx] = e[1] + e[2];
					o[(4 * q + 2) * xs + tx] = e[2] - e[1], o[(4 * q + 3) * xs + tx] = e[1] - e[3];
				}
			}
		}
	}
}

// wino_input writes V for planes [lo, hi) of x [m][c][h][w] (plane p is
// image p/c, channel p%c; padding 1, h and w even). v points at V [16][c][t].
// Returns nonzero where it could not allocate its scratch.
VGG_CLONES int wino_input(float *v, const float *x, int lo, int hi, int c, int h, int w, long t, long xs) {
	int th = h / 2, tw = w / 2, n2 = tw + 1;
	// The padded plane, split by column: even[r][k] is padded column 2k
	// (x's column 2k-1), odd[r][k] padded column 2k+1 (x's column 2k).
	float *even = calloc((size_t)(h + 2) * n2 * 2 + (size_t)n2 * 2, sizeof(float));
	if (!even) return 1;
	float *odd = even + (long)(h + 2) * n2, *xe = odd + (long)(h + 2) * n2, *xo = xe + n2;
	if (tw <= SMALL_TILES) {
		wino_input_small(v, x, lo, hi, c, h, w, t, xs, even);
		free(even);
		return 0;
	}
	for (int p = lo; p < hi; p++) {
		int img = p / c, ch = p % c;
		const float *src = x + (long)p * h * w;
		for (int r = 0; r < h; r++) {
			const float *s = src + (long)r * w;
			float *e = even + (long)(r + 1) * n2, *o = odd + (long)(r + 1) * n2;
			for (int k = 0; k < tw; k++) e[k + 1] = s[2 * k + 1], o[k] = s[2 * k];
		}
		float *out = v + (long)ch * t + (long)img * th * tw;
		for (int ty = 0; ty < th; ty++) {
			long r0 = (long)(2 * ty) * n2, r1 = r0 + n2, r2 = r1 + n2, r3 = r2 + n2;
			for (int q = 0; q < 4; q++) {
				// Row q of Bᵀ d, for every tile of the row: d0-d2, d1+d2, d2-d1, d1-d3.
				const float *pa = q == 0 ? even + r0 : q == 3 ? even + r1 : even + r2;
				const float *pb = q == 0 ? even + r2 : q == 1 ? even + r1 : q == 2 ? even + r1 : even + r3;
				const float *qa = q == 0 ? odd + r0 : q == 3 ? odd + r1 : odd + r2;
				const float *qb = q == 0 ? odd + r2 : q == 1 ? odd + r1 : q == 2 ? odd + r1 : odd + r3;
				if (q == 1) {
					for (int k = 0; k < n2; k++) xe[k] = pa[k] + pb[k], xo[k] = qa[k] + qb[k];
				} else {
					for (int k = 0; k < n2; k++) xe[k] = pa[k] - pb[k], xo[k] = qa[k] - qb[k];
				}
				// … B: the tile's columns are xe[tx], xo[tx], xe[tx+1], xo[tx+1].
				float *o0 = out + (4 * q) * xs + (long)ty * tw, *o1 = o0 + xs, *o2 = o1 + xs, *o3 = o2 + xs;
				for (int k = 0; k < tw; k++) o0[k] = xe[k] - xe[k + 1];
				for (int k = 0; k < tw; k++) o1[k] = xo[k] + xe[k + 1];
				for (int k = 0; k < tw; k++) o2[k] = xe[k + 1] - xo[k];
				for (int k = 0; k < tw; k++) o3[k] = xo[k] - xo[k + 1];
			}
		}
	}
	free(even);
	return 0;
}

// wino_output writes planes [lo, hi) of y [m][c][h][w] (plane p is image
// p/c, channel p%c) from M [16][c][t] at mm, adding bias[ch] unless bias
// is NULL.
VGG_CLONES void wino_output(float *y, const float *mm, const float *bias, int lo, int hi, int c, int h, int w, long t, long xs) {
	int th = h / 2, tw = w / 2;
	for (int p = lo; p < hi; p++) {
		int img = p / c, ch = p % c;
		float bv = bias ? bias[ch] : 0;
		const float *in = mm + (long)ch * t + (long)img * th * tw;
		float *dst = y + (long)p * h * w;
		for (int ty = 0; ty < th; ty++) {
			const float *m = in + (long)ty * tw;
			float *y0 = dst + (long)(2 * ty) * w, *y1 = y0 + w;
			for (int tx = 0; tx < tw; tx++) {
				// Aᵀ m: combine rows.
				float s0 = m[0 * xs + tx] + m[4 * xs + tx] + m[8 * xs + tx];
				float s1 = m[1 * xs + tx] + m[5 * xs + tx] + m[9 * xs + tx];
				float s2 = m[2 * xs + tx] + m[6 * xs + tx] + m[10 * xs + tx];
				float s3 = m[3 * xs + tx] + m[7 * xs + tx] + m[11 * xs + tx];
				float u0 = m[4 * xs + tx] - m[8 * xs + tx] - m[12 * xs + tx];
				float u1 = m[5 * xs + tx] - m[9 * xs + tx] - m[13 * xs + tx];
				float u2 = m[6 * xs + tx] - m[10 * xs + tx] - m[14 * xs + tx];
				float u3 = m[7 * xs + tx] - m[11 * xs + tx] - m[15 * xs + tx];
				// … A: combine columns.
				y0[2 * tx] = s0 + s1 + s2 + bv, y0[2 * tx + 1] = s1 - s2 - s3 + bv;
				y1[2 * tx] = u0 + u1 + u2 + bv, y1[2 * tx + 1] = u1 - u2 - u3 + bv;
			}
		}
	}
}

// wino_output_adjoint is wino_output's transpose without the bias: it
// writes dM [16][c][t] at dm from planes [lo, hi) of dy [m][c][h][w]
// (dM = A dY Aᵀ for each tile). With V it gives the filter gradient.
// Returns nonzero where it could not allocate its scratch.
VGG_CLONES int wino_output_adjoint(float *dm, const float *dy, int lo, int hi, int c, int h, int w, long t, long xs) {
	int th = h / 2, tw = w / 2;
	if (tw <= SMALL_TILES) { // small planes: a tile at a time
		for (int p = lo; p < hi; p++) {
			int img = p / c, ch = p % c;
			const float *src = dy + (long)p * h * w;
			float *out = dm + (long)ch * t + (long)img * th * tw;
			for (int ty = 0; ty < th; ty++) {
				const float *g0 = src + (long)(2 * ty) * w, *g1 = g0 + w;
				float *o = out + (long)ty * tw;
				for (int tx = 0; tx < tw; tx++) {
					float p00 = g0[2 * tx], p01 = g0[2 * tx + 1], p10 = g1[2 * tx], p11 = g1[2 * tx + 1];
					float s[4][2] = {{p00, p01}, {p00 + p10, p01 + p11}, {p00 - p10, p01 - p11}, {-p10, -p11}};
					for (int k = 0; k < 4; k++) {
						o[(4 * k + 0) * xs + tx] = s[k][0];
						o[(4 * k + 1) * xs + tx] = s[k][0] + s[k][1];
						o[(4 * k + 2) * xs + tx] = s[k][0] - s[k][1];
						o[(4 * k + 3) * xs + tx] = -s[k][1];
					}
				}
			}
		}
		return 0;
	}
	float *buf = malloc((size_t)tw * 6 * sizeof(float));
	if (!buf) return 1;
	float *e0 = buf, *o0 = e0 + tw, *e1 = o0 + tw, *o1 = e1 + tw, *se = o1 + tw, *so = se + tw;
	for (int p = lo; p < hi; p++) {
		int img = p / c, ch = p % c;
		const float *src = dy + (long)p * h * w;
		float *out = dm + (long)ch * t + (long)img * th * tw;
		for (int ty = 0; ty < th; ty++) {
			const float *g0 = src + (long)(2 * ty) * w, *g1 = g0 + w;
			for (int k = 0; k < tw; k++) e0[k] = g0[2 * k], o0[k] = g0[2 * k + 1], e1[k] = g1[2 * k], o1[k] = g1[2 * k + 1];
			for (int q = 0; q < 4; q++) {
				// Row q of A dY: dy0, dy0+dy1, dy0-dy1, -dy1 (its two columns se, so).
				for (int k = 0; k < tw; k++) {
					se[k] = q == 0 ? e0[k] : q == 1 ? e0[k] + e1[k] : q == 2 ? e0[k] - e1[k] : -e1[k];
					so[k] = q == 0 ? o0[k] : q == 1 ? o0[k] + o1[k] : q == 2 ? o0[k] - o1[k] : -o1[k];
				}
				// … Aᵀ: s0, s0+s1, s0-s1, -s1.
				float *d0 = out + (4 * q) * xs + (long)ty * tw, *d1 = d0 + xs, *d2 = d1 + xs, *d3 = d2 + xs;
				for (int k = 0; k < tw; k++) d0[k] = se[k];
				for (int k = 0; k < tw; k++) d1[k] = se[k] + so[k];
				for (int k = 0; k < tw; k++) d2[k] = se[k] - so[k];
				for (int k = 0; k < tw; k++) d3[k] = -so[k];
			}
		}
	}
	free(buf);
	return 0;
}

// wino_filter writes U [16][co][ci] (matrices xs apart) at u for output
// channels [lo, hi) of w [co][ci][3][3] (U = G g Gᵀ for each filter).
void wino_filter(float *u, const float *w, int lo, int hi, int co, int ci, long xs) {
	for (int o = lo; o < hi; o++) {
		for (int i = 0; i < ci; i++) {
			const float *g = w + ((long)o * ci + i) * 9;
			float a[4][3]; // G g
			for (int j = 0; j < 3; j++) {
				a[0][j] = g[j];
				a[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
				a[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
				a[3][j] = g[6 + j];
			}
			float *dst = u + (long)o * ci + i;
			for (int k = 0; k < 4; k++) { // … Gᵀ
				dst[(4 * k + 0) * xs] = a[k][0];
				dst[(4 * k + 1) * xs] = 0.5f * (a[k][0] + a[k][1] + a[k][2]);
				dst[(4 * k + 2) * xs] = 0.5f * (a[k][0] - a[k][1] + a[k][2]);
				dst[(4 * k + 3) * xs] = a[k][2];
			}
		}
	}
}

// wino_filter_adjoint is wino_filter's transpose: it writes output
// channels [lo, hi) of dw [co][ci][3][3] from dU [16][co][ci] (matrices
// xs apart) at du (dg = Gᵀ dU G).
void wino_filter_adjoint(float *dw, const float *du, int lo, int hi, int co, int ci, long xs) {
	for (int o = lo; o < hi; o++) {
		for (int i = 0; i < ci; i++) {
			const float *s = du + (long)o * ci + i;
			float a[3][4]; // Gᵀ dU
			for (int l = 0; l < 4; l++) {
				float d0 = s[l * xs], d1 = s[(4 + l) * xs], d2 = s[(8 + l) * xs], d3 = s[(12 + l) * xs];
				a[0][l] = d0 + 0.5f * (d1 + d2);
				a[1][l] = 0.5f * (d1 - d2);
				a[2][l] = 0.5f * (d1 + d2) + d3;
			}
			float *g = dw + ((long)o * ci + i) * 9;
			for (int k = 0; k < 3; k++) { // … G
				g[3 * k + 0] = a[k][0] + 0.5f * (a[k][1] + a[k][2]);
				g[3 * k + 1] = 0.5f * (a[k][1] - a[k][2]);
				g[3 * k + 2] = 0.5f * (a[k][1] + a[k][2]) + a[k][3];
			}
		}
	}
}
