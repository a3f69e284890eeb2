//go:build !windows

// Batch norm's passes over NCHW planes for the CPU backend (ops.go), in C
// so that the compiler vectorises them: float64 arithmetic on float32 data,
// as the Go loops did, with sums kept in eight lanes that are added in a
// fixed order at the end (so the result does not depend on which of the
// target_clones versions runs). Each function takes a range [lo, hi) of
// channels so that Go can split the work among goroutines.

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "clones.h"

#define LANES 8

static double fold(const double *acc) {
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// bn_stats writes, for channels [lo, hi) of x [n][c][hw], the mean and the
// centred sum of squares Σ(x - mean)² (two passes: no cancellation).
VGG_CLONES void bn_stats(const float *x, int n, int c, int hw, int lo, int hi, double *mean, double *ss) {
	for (int ch = lo; ch < hi; ch++) {
		double acc[LANES] = {0}, tail = 0;
		for (int i = 0; i < n; i++) {
			const float *v = x + ((long)i * c + ch) * hw;
			int p = 0;
			for (; p + LANES <= hw; p += LANES)
				for (int j = 0; j < LANES; j++) acc[j] += v[p + j];
			for (; p < hw; p++) tail += v[p];
		}
		double m = (fold(acc) + tail) / ((double)n * hw);
		double sq[LANES] = {0}, sqt = 0;
		for (int i = 0; i < n; i++) {
			const float *v = x + ((long)i * c + ch) * hw;
			int p = 0;
			for (; p + LANES <= hw; p += LANES)
				for (int j = 0; j < LANES; j++) {
					double d = v[p + j] - m;
					sq[j] += d * d;
				}
			for (; p < hw; p++) {
				double d = v[p] - m;
				sqt += d * d;
			}
		}
		mean[ch] = m;
		ss[ch] = fold(sq) + sqt;
	}
}

// bn_apply writes y = x·scale[ch] + shift[ch] (in float64, rounded once),
// then max(y, 0) where relu is set, for channels [lo, hi) of [n][c][hw].
VGG_CLONES void bn_apply(float *y, const float *x, int n, int c, int hw, int lo, int hi, const double *scale, const double *shift, int relu) {
	for (int ch = lo; ch < hi; ch++) {
		double s = scale[ch], h = shift[ch];
		for (int i = 0; i < n; i++) {
			const float *v = x + ((long)i * c + ch) * hw;
			float *o = y + ((long)i * c + ch) * hw;
			if (relu) {
				for (int p = 0; p < hw; p++) {
					float r = (float)(v[p] * s + h);
					o[p] = r > 0 ? r : (r == r ? 0 : r); // max(r, 0), NaN kept, as Go's max
				}
			} else {
				for (int p = 0; p < hw; p++) o[p] = (float)(v[p] * s + h);
			}
		}
	}
}

// masked is g where y > 0 (the ReLU passed it), +0 otherwise: a mask of
// bits, not a branch, since which activations are positive is close to
// random.
static inline float masked(float g, float y) {
	uint32_t b;
	memcpy(&b, &g, sizeof b);
	b &= -(uint32_t)(y > 0);
	memcpy(&g, &b, sizeof g);
	return g;
}

// bn_grad_sums writes, for channels [lo, hi), Σdy and Σdy·(x - mean[ch])
// over [n][c][hw], with dy masked by the ReLU output y unless y is NULL.
VGG_CLONES void bn_grad_sums(const float *dy, const float *x, const float *y, int n, int c, int hw, int lo, int hi, const double *mean, double *sdy, double *sdyx) {
	for (int ch = lo; ch < hi; ch++) {
		double m = mean[ch], a[LANES] = {0}, b[LANES] = {0}, at = 0, bt = 0;
		for (int i = 0; i < n; i++) {
			long off = ((long)i * c + ch) * hw;
			const float *g = dy + off, *v = x + off, *r = y ? y + off : 0;
			int p = 0;
			if (y) {
				for (; p + LANES <= hw; p += LANES)
					for (int j = 0; j < LANES; j++) {
						double gv = masked(g[p + j], r[p + j]);
						a[j] += gv;
						b[j] += gv * (v[p + j] - m);
					}
				for (; p < hw; p++) {
					double gv = masked(g[p], r[p]);
					at += gv;
					bt += gv * (v[p] - m);
				}
				continue;
			}
			for (; p + LANES <= hw; p += LANES)
				for (int j = 0; j < LANES; j++) {
					a[j] += g[p + j];
					b[j] += (double)g[p + j] * (v[p + j] - m);
				}
			for (; p < hw; p++) {
				at += g[p];
				bt += (double)g[p] * (v[p] - m);
			}
		}
		sdy[ch] = fold(a) + at;
		sdyx[ch] = fold(b) + bt;
	}
}

// bn_grad_apply writes dx = k·(dy − mdy − (x − mean)·inv·mdyx) for
// channels [lo, hi), with dy masked by y unless y is NULL (all per-channel
// factors float64).
VGG_CLONES void bn_grad_apply(float *dx, const float *dy, const float *x, const float *y, int n, int c, int hw, int lo, int hi, const double *mean, const double *inv, const double *k, const double *mdy, const double *mdyx) {
	for (int ch = lo; ch < hi; ch++) {
		double m = mean[ch], iv = inv[ch], kk = k[ch], md = mdy[ch], mx = mdyx[ch];
		for (int i = 0; i < n; i++) {
			long off = ((long)i * c + ch) * hw;
			const float *g = dy + off, *v = x + off;
			float *o = dx + off;
			if (y) {
				const float *r = y + off;
				for (int p = 0; p < hw; p++) {
					double xhat = (v[p] - m) * iv;
					o[p] = (float)(kk * (masked(g[p], r[p]) - md - xhat * mx));
				}
			} else {
				for (int p = 0; p < hw; p++) {
					double xhat = (v[p] - m) * iv;
					o[p] = (float)(kk * (g[p] - md - xhat * mx));
				}
			}
		}
	}
}
