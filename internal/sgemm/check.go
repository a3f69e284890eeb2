package sgemm

import "fmt"

// checkSizes panics, naming the operand, where a slice or stride cannot
// hold the matrix the call describes.
func checkSizes(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if k < 0 {
		panic(fmt.Sprintf("sgemm: k = %d", k))
	}
	if k > 0 {
		checkMatrix("A", transA, m, k, a, lda)
		checkMatrix("B", transB, k, n, b, ldb)
	}
	checkMatrix("C", false, m, n, c, ldc)
}

// checkMatrix checks a rows×cols operand stored row-major with stride ld,
// or its transpose (cols×rows) with trans.
func checkMatrix(name string, trans bool, rows, cols int, s []float32, ld int) {
	if trans {
		rows, cols = cols, rows
	}
	if ld < cols {
		panic(fmt.Sprintf("sgemm: %s is %dx%d, stride %d < %d", name, rows, cols, ld, cols))
	}
	if need := (rows-1)*ld + cols; len(s) < need {
		panic(fmt.Sprintf("sgemm: %s is %dx%d with stride %d: needs %d values, has %d", name, rows, cols, ld, need, len(s)))
	}
}
