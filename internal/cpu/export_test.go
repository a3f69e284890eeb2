package cpu

// NewIm2col returns a CPU backend that runs every convolution as im2col +
// SGEMM, Winograd's geometries included.
func NewIm2col() *Backend {
	b := New()
	b.noWinograd = true
	return b
}

// SetColLimit bounds the convolutions' scratch to n floats, so that small
// tests run in several chunks of images; the returned func restores it.
func SetColLimit(n int) (restore func()) {
	oldCol, oldWino := colLimit, winoLimit
	colLimit, winoLimit = n, n
	return func() { colLimit, winoLimit = oldCol, oldWino }
}

// BLASThreadCount is OpenBLAS's thread count (0 for another library).
func BLASThreadCount() int { return blasThreadCount() }
