package sgemm

import "golang.org/x/sys/cpu"

var (
	avx512Tile = tile{key: "avx512", name: "AVX-512 12x32", mr: 12, nr: 32, asm: asmAVX512}
	avx2Tile   = tile{key: "avx2", name: "AVX2/FMA 6x16", mr: 6, nr: 16, asm: asmAVX2}
)

// best is the widest kernel this CPU runs (x/sys/cpu counts a feature only
// where the OS saves its registers).
func best() tile {
	switch {
	case cpu.X86.HasAVX512F:
		return avx512Tile
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return avx2Tile
	}
	return goTile
}

// tiles lists the kernels that run here, for tests and benchmarks.
func tiles() []tile {
	t := []tile{goTile}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		t = append(t, avx2Tile)
	}
	if cpu.X86.HasAVX512F {
		t = append(t, avx512Tile)
	}
	return t
}

// kernel6x16 and kernel12x32 are the assembly kernels (kernel_amd64.s):
// C = alpha·a·b + beta·C for one tile, C not read when beta is ±0.
//
//go:noescape
func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kernel12x32(k int, a, b, c *float32, ldc int, alpha, beta float32)

// transpose8 writes blocks 8x8 blocks of src (rows sstride floats apart),
// transposed, to dst (rows dstride floats apart): see interleave. AVX.
//
//go:noescape
func transpose8(dst *float32, dstride int, src *float32, sstride int, blocks int)
