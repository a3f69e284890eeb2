//go:build cgo && !windows

package cpu

/*
void bn_stats(const float *x, int n, int c, int hw, int lo, int hi, double *mean, double *ss);
void bn_apply(float *y, const float *x, int n, int c, int hw, int lo, int hi, const double *scale, const double *shift, int relu);
void bn_grad_sums(const float *dy, const float *x, const float *y, int n, int c, int hw, int lo, int hi, const double *mean, double *sdy, double *sdyx);
void bn_grad_apply(float *dx, const float *dy, const float *x, const float *y, int n, int c, int hw, int lo, int hi, const double *mean, const double *inv, const double *k, const double *mdy, const double *mdyx);
*/
import "C"

import "unsafe"

// Go's side of bn.c (bn.go says what each pass computes).

func dptr(s []float64) *C.double { return (*C.double)(unsafe.Pointer(unsafe.SliceData(s))) }

func bnStats(x []float32, n, c, hw, lo, hi int, mean, ss []float64) {
	C.bn_stats(fptr(x), C.int(n), C.int(c), C.int(hw), C.int(lo), C.int(hi), dptr(mean), dptr(ss))
}

func bnApply(y, x []float32, n, c, hw, lo, hi int, scale, shift []float64, relu bool) {
	var r C.int
	if relu {
		r = 1
	}
	C.bn_apply(fptr(y), fptr(x), C.int(n), C.int(c), C.int(hw), C.int(lo), C.int(hi), dptr(scale), dptr(shift), r)
}

func bnGradSums(dy, x, y []float32, n, c, hw, lo, hi int, mean, sdy, sdyx []float64) {
	C.bn_grad_sums(fptr(dy), fptr(x), optPtr(y), C.int(n), C.int(c), C.int(hw), C.int(lo), C.int(hi), dptr(mean), dptr(sdy), dptr(sdyx))
}

func bnGradApply(dx, dy, x, y []float32, n, c, hw, lo, hi int, mean, inv, k, mdy, mdyx []float64) {
	C.bn_grad_apply(fptr(dx), fptr(dy), fptr(x), optPtr(y), C.int(n), C.int(c), C.int(hw), C.int(lo), C.int(hi),
		dptr(mean), dptr(inv), dptr(k), dptr(mdy), dptr(mdyx))
}
