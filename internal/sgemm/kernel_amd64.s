#include "textflag.h"

// The AVX2/FMA micro-kernel: a 6x16 tile of C from a packed 6-row panel
// of A and a packed 16-column panel of B, all twelve 8-float accumulators
// (Y0–Y11) in registers for the whole k loop.

// ROW scales one row's accumulators by alpha (Y12) and, with beta (Y13),
// adds beta times the row of C at DX.
#define ROWBETA(lo, hi) \
	VMULPS Y12, lo, lo; \
	VMULPS Y12, hi, hi; \
	VFMADD231PS (DX), Y13, lo; \
	VFMADD231PS 32(DX), Y13, hi; \
	VMOVUPS lo, (DX); \
	VMOVUPS hi, 32(DX); \
	ADDQ R8, DX

#define ROW(lo, hi) \
	VMULPS Y12, lo, lo; \
	VMULPS Y12, hi, hi; \
	VMOVUPS lo, (DX); \
	VMOVUPS hi, 32(DX); \
	ADDQ R8, DX

// STEP multiplies one column of the A panel (6 floats at SI+off) by one
// row of the B panel (16 floats at DI+boff) into the accumulators.
#define STEP(off, boff) \
	VMOVUPS boff(DI), Y12; \
	VMOVUPS boff+32(DI), Y13; \
	VBROADCASTSS off(SI), Y14; \
	VBROADCASTSS off+4(SI), Y15; \
	VFMADD231PS Y12, Y14, Y0; \
	VFMADD231PS Y13, Y14, Y1; \
	VFMADD231PS Y12, Y15, Y2; \
	VFMADD231PS Y13, Y15, Y3; \
	VBROADCASTSS off+8(SI), Y14; \
	VBROADCASTSS off+12(SI), Y15; \
	VFMADD231PS Y12, Y14, Y4; \
	VFMADD231PS Y13, Y14, Y5; \
	VFMADD231PS Y12, Y15, Y6; \
	VFMADD231PS Y13, Y15, Y7; \
	VBROADCASTSS off+16(SI), Y14; \
	VBROADCASTSS off+20(SI), Y15; \
	VFMADD231PS Y12, Y14, Y8; \
	VFMADD231PS Y13, Y14, Y9; \
	VFMADD231PS Y12, Y15, Y10; \
	VFMADD231PS Y13, Y15, Y11

// func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·kernel6x16(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

	// Four steps a turn, then the rest one at a time.
	MOVQ CX, BX
	SHRQ $2, BX
	ANDQ $3, CX
	TESTQ BX, BX
	JZ   tail

loop4:
	PREFETCHT0 384(DI)
	STEP(0, 0)
	STEP(24, 64)
	PREFETCHT0 448(DI)
	STEP(48, 128)
	STEP(72, 192)
	ADDQ $96, SI
	ADDQ $256, DI
	DECQ BX
	JNZ  loop4

tail:
	TESTQ CX, CX
	JZ   store

loop1:
	STEP(0, 0)
	ADDQ $24, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  loop1

store:
	VBROADCASTSS alpha+40(FP), Y12
	MOVL beta+44(FP), AX
	ANDL $0x7fffffff, AX
	JZ   nobeta
	VBROADCASTSS beta+44(FP), Y13
	ROWBETA(Y0, Y1)
	ROWBETA(Y2, Y3)
	ROWBETA(Y4, Y5)
	ROWBETA(Y6, Y7)
	ROWBETA(Y8, Y9)
	ROWBETA(Y10, Y11)
	VZEROUPPER
	RET

nobeta:
	// beta = 0: C is written, never read (it may hold anything, NaN too).
	ROW(Y0, Y1)
	ROW(Y2, Y3)
	ROW(Y4, Y5)
	ROW(Y6, Y7)
	ROW(Y8, Y9)
	ROW(Y10, Y11)
	VZEROUPPER
	RET
