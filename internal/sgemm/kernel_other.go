//go:build !amd64

package sgemm

func best() tile { return goTile }

func tiles() []tile { return []tile{goTile} }

// No assembly kernel here: tile.run never calls these.

func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("sgemm: no assembly kernel on this architecture")
}

func kernel12x32(k int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("sgemm: no assembly kernel on this architecture")
}

func transpose8(dst *float32, dstride int, src *float32, sstride int, blocks int) {
	panic("sgemm: no assembly transpose on this architecture")
}
