//go:build cgo && !windows

package cpu

/*
#cgo CFLAGS: -O3
int wino_input(float *v, const float *x, int lo, int hi, int c, int h, int w, long t, long xs);
void wino_output(float *y, const float *mm, const float *bias, int lo, int hi, int c, int h, int w, long t, long xs);
int wino_output_adjoint(float *dm, const float *dy, int lo, int hi, int c, int h, int w, long t, long xs);
void wino_filter(float *u, const float *w, int lo, int hi, int co, int ci, long xs);
void wino_filter_adjoint(float *dw, const float *du, int lo, int hi, int co, int ci, long xs);
const char *vgg_simd(void);
*/
import "C"

import "unsafe"

// Go's side of winograd.c: each function transforms the planes or
// channels [lo, hi) (see winograd_go.go for what each computes).

// simd names the vector instructions the C loops run with: "AVX-512",
// "AVX2" or "SSE2" as target_clones picked them for this CPU (GCC on
// x86-64 Linux), else the compiler's baseline ("SSE2", "NEON").
func simd() string { return C.GoString(C.vgg_simd()) }

func fptr(s []float32) *C.float { return (*C.float)(unsafe.Pointer(unsafe.SliceData(s))) }

// optPtr is fptr, or NULL for an empty slice (an absent bias or ReLU output).
func optPtr(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return fptr(s)
}

func winoFilterRange(u, w []float32, lo, hi, co, ci, us int) {
	C.wino_filter(fptr(u), fptr(w), C.int(lo), C.int(hi), C.int(co), C.int(ci), C.long(us))
}

func winoInputRange(v, x []float32, lo, hi, c, h, w, t, xs int) {
	if C.wino_input(fptr(v), fptr(x), C.int(lo), C.int(hi), C.int(c), C.int(h), C.int(w), C.long(t), C.long(xs)) != 0 {
		panic("cpu: out of memory for Winograd's scratch")
	}
}

func winoOutputRange(y, mm, bias []float32, lo, hi, c, h, w, t, xs int) {
	C.wino_output(fptr(y), fptr(mm), optPtr(bias), C.int(lo), C.int(hi), C.int(c), C.int(h), C.int(w), C.long(t), C.long(xs))
}

func winoOutputAdjointRange(dm, dy []float32, lo, hi, c, h, w, t, xs int) {
	if C.wino_output_adjoint(fptr(dm), fptr(dy), C.int(lo), C.int(hi), C.int(c), C.int(h), C.int(w), C.long(t), C.long(xs)) != 0 {
		panic("cpu: out of memory for Winograd's scratch")
	}
}

func winoFilterAdjointRange(dw, du []float32, lo, hi, co, ci, us int) {
	C.wino_filter_adjoint(fptr(dw), fptr(du), C.int(lo), C.int(hi), C.int(co), C.int(ci), C.long(us))
}

// withC says the transforms and batch norm's passes run in C.
const withC = true
