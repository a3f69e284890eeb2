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

// The AVX-512 micro-kernel: a 12x32 tile of C from a packed 12-row panel of
// A and a packed 32-column panel of B, 24 16-float accumulators (Z0–Z23).

#define ROWBETA512(lo, hi) \
	VMULPS Z24, lo, lo; \
	VMULPS Z24, hi, hi; \
	VFMADD231PS (DX), Z25, lo; \
	VFMADD231PS 64(DX), Z25, hi; \
	VMOVUPS lo, (DX); \
	VMOVUPS hi, 64(DX); \
	ADDQ R8, DX

#define ROW512(lo, hi) \
	VMULPS Z24, lo, lo; \
	VMULPS Z24, hi, hi; \
	VMOVUPS lo, (DX); \
	VMOVUPS hi, 64(DX); \
	ADDQ R8, DX

#define PAIR512(off, r0, r1, r2, r3, t0, t1) \
	VBROADCASTSS off(SI), t0; \
	VBROADCASTSS off+4(SI), t1; \
	VFMADD231PS Z26, t0, r0; \
	VFMADD231PS Z27, t0, r1; \
	VFMADD231PS Z26, t1, r2; \
	VFMADD231PS Z27, t1, r3

#define STEP512(off, boff) \
	VMOVUPS boff(DI), Z26; \
	VMOVUPS boff+64(DI), Z27; \
	PAIR512(off, Z0, Z1, Z2, Z3, Z28, Z29); \
	PAIR512(off+8, Z4, Z5, Z6, Z7, Z30, Z31); \
	PAIR512(off+16, Z8, Z9, Z10, Z11, Z28, Z29); \
	PAIR512(off+24, Z12, Z13, Z14, Z15, Z30, Z31); \
	PAIR512(off+32, Z16, Z17, Z18, Z19, Z28, Z29); \
	PAIR512(off+40, Z20, Z21, Z22, Z23, Z30, Z31)

// func kernel12x32(k int, a, b, c *float32, ldc int, alpha, beta float32)
TEXT ·kernel12x32(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

	MOVQ CX, BX
	SHRQ $2, BX
	ANDQ $3, CX
	TESTQ BX, BX
	JZ   tail512

loop512:
	PREFETCHT0 1024(DI)
	PREFETCHT0 1088(DI)
	STEP512(0, 0)
	PREFETCHT0 1152(DI)
	PREFETCHT0 1216(DI)
	STEP512(48, 128)
	PREFETCHT0 1280(DI)
	PREFETCHT0 1344(DI)
	STEP512(96, 256)
	PREFETCHT0 1408(DI)
	PREFETCHT0 1472(DI)
	STEP512(144, 384)
	ADDQ $192, SI
	ADDQ $512, DI
	DECQ BX
	JNZ  loop512

tail512:
	TESTQ CX, CX
	JZ   store512

loop512one:
	STEP512(0, 0)
	ADDQ $48, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  loop512one

store512:
	VBROADCASTSS alpha+40(FP), Z24
	MOVL beta+44(FP), AX
	ANDL $0x7fffffff, AX
	JZ   nobeta512
	VBROADCASTSS beta+44(FP), Z25
	ROWBETA512(Z0, Z1)
	ROWBETA512(Z2, Z3)
	ROWBETA512(Z4, Z5)
	ROWBETA512(Z6, Z7)
	ROWBETA512(Z8, Z9)
	ROWBETA512(Z10, Z11)
	ROWBETA512(Z12, Z13)
	ROWBETA512(Z14, Z15)
	ROWBETA512(Z16, Z17)
	ROWBETA512(Z18, Z19)
	ROWBETA512(Z20, Z21)
	ROWBETA512(Z22, Z23)
	VZEROUPPER
	RET

nobeta512:
	ROW512(Z0, Z1)
	ROW512(Z2, Z3)
	ROW512(Z4, Z5)
	ROW512(Z6, Z7)
	ROW512(Z8, Z9)
	ROW512(Z10, Z11)
	ROW512(Z12, Z13)
	ROW512(Z14, Z15)
	ROW512(Z16, Z17)
	ROW512(Z18, Z19)
	ROW512(Z20, Z21)
	ROW512(Z22, Z23)
	VZEROUPPER
	RET

// func transpose8(dst *float32, dstride int, src *float32, sstride int, blocks int)
//
// For b in [0, blocks): the 8x8 block of src at rows 0–7, columns 8b–8b+7
// (rows sstride floats apart) is written transposed to dst: column 8b+i of
// the block as 8 floats at dst + (8b+i)·dstride.
TEXT ·transpose8(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ dstride+8(FP), R8
	SHLQ $2, R8
	MOVQ src+16(FP), SI
	MOVQ sstride+24(FP), R9
	SHLQ $2, R9
	MOVQ blocks+32(FP), CX
	LEAQ (R9)(R9*2), R10 // 3 rows
	LEAQ (R8)(R8*2), R11 // 3 destination rows
	TESTQ CX, CX
	JZ   done8

block8:
	MOVQ SI, AX
	VMOVUPS (AX), Y0
	VMOVUPS (AX)(R9*1), Y1
	VMOVUPS (AX)(R9*2), Y2
	VMOVUPS (AX)(R10*1), Y3
	LEAQ (AX)(R9*4), AX
	VMOVUPS (AX), Y4
	VMOVUPS (AX)(R9*1), Y5
	VMOVUPS (AX)(R9*2), Y6
	VMOVUPS (AX)(R10*1), Y7

	// Pairs of rows interleaved: (r0 r1) → Y8 lo, Y9 hi; and so on.
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15

	// Quads: columns 0, 1, 2, 3 of rows 0–3 (and 4–7) in each lane.
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7

	// Lanes: the low halves give columns 0–3, the high halves 4–7.
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x31, Y7, Y3, Y15

	MOVQ DI, BX
	VMOVUPS Y8, (BX)
	VMOVUPS Y9, (BX)(R8*1)
	VMOVUPS Y10, (BX)(R8*2)
	VMOVUPS Y11, (BX)(R11*1)
	LEAQ (BX)(R8*4), BX
	VMOVUPS Y12, (BX)
	VMOVUPS Y13, (BX)(R8*1)
	VMOVUPS Y14, (BX)(R8*2)
	VMOVUPS Y15, (BX)(R11*1)

	ADDQ $32, SI
	LEAQ (DI)(R8*8), DI
	DECQ CX
	JNZ  block8

done8:
	VZEROUPPER
	RET
