// Package sgemm multiplies float32 matrices in Go: C = alpha·op(A)·op(B) +
// beta·C, row-major, blocked for the caches as GotoBLAS and BLIS do, with
// AVX-512 and AVX2/FMA assembly micro-kernels on amd64. It is the CPU
// backend's SGEMM wherever one of those kernels runs (as fast as OpenBLAS
// there), in every build, those without cgo and Windows's included.
package sgemm

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
)

// The blocking. A micro-kernel computes an mr×nr tile of C from an mr-row
// panel of A and an nr-column panel of B, kc deep; each goroutine packs a
// kc×nc block of B into nr-column panels (its L2 and the L3), then an
// mc×kc block of A into mr-row panels (its L2) and sweeps it across the B
// block, one kc×nr panel (its L1) at a time.
const (
	kc = 256
	mc = 96   // a multiple of every kernel's mr
	nc = 2048 // a multiple of every kernel's nr

	mrMax = 12
	nrMax = 32
)

// tile is a micro-kernel and the shape of its tile.
type tile struct {
	key    string // as KernelEnv names it
	name   string
	mr, nr int
	asm    int // which assembly kernel; 0: none, the loops in Go
}

// The assembly kernels, called directly rather than through a func value:
// escape analysis cannot see through one, and edge's buffer would move to
// the heap at every call.
const (
	asmAVX2 = 1 + iota
	asmAVX512
)

// KernelEnv names the environment variable that picks a narrower kernel
// than the widest this CPU runs, for comparisons: "avx2" or "go" (or
// "avx512", the widest where it runs).
const KernelEnv = "VGG16_SGEMM_KERNEL"

var (
	goTile = tile{key: "go", name: "Go 6x16", mr: 6, nr: 16}
	// use is the kernel Gemm calls: the widest this CPU runs, or the one
	// KernelEnv names where this CPU runs it.
	use, useNote = choose(os.Getenv(KernelEnv))
)

// choose returns the kernel KernelEnv's value names, or the widest with a
// note that says why where the value names none this CPU runs.
func choose(name string) (tile, string) {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return best(), ""
	}
	var keys []string
	for _, t := range tiles() {
		if t.key == name {
			return t, ""
		}
		keys = append(keys, t.key)
	}
	return best(), fmt.Sprintf(" (%s=%s: not a kernel this CPU runs, which are %s)", KernelEnv, name, strings.Join(keys, ", "))
}

// Available reports whether an assembly kernel runs on this CPU (whichever
// KernelEnv picks). Without one Gemm still works, with a portable Go kernel
// many times slower.
func Available() bool { return best().asm != 0 }

// Fast reports whether the kernel in use is an assembly one.
func Fast() bool { return use.asm != 0 }

// Kernel names the micro-kernel in use, for reports ("AVX-512 12x32
// kernel").
func Kernel() string { return use.name + " kernel" + useNote }

// Gemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices, op(A)
// m×k (A is k×m with transA) and op(B) k×n (B is n×k with transB), on up to
// threads goroutines (0: GOMAXPROCS). With beta = 0, C is written without
// being read. lda, ldb and ldc are the row strides.
func Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, threads int) {
	if m <= 0 || n <= 0 {
		return
	}
	checkSizes(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 || alpha == 0 {
		scale(m, n, beta, c, ldc)
		return
	}
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	// Below ~2 MFLOP a second goroutine costs more than it saves. (int64:
	// the product overflows a 32-bit int.)
	if work := 2 * int64(m) * int64(n) * int64(k); work < int64(threads)<<21 {
		threads = int(max(1, work>>21))
	}
	kern := use
	// Each goroutine takes a part of C of its own, columns where C is
	// wide enough, else rows, and multiplies it as a whole product: no
	// buffer is shared, nothing waits, one goroutine a part. (Sharing one
	// packed block of B among the threads needs them in step at every
	// block, and a goroutine and a closure each time: kilobytes of garbage
	// a call, which let the heap of a large model grow by gigabytes
	// before the collector ran.)
	units, unit := (n+kern.nr-1)/kern.nr, kern.nr
	byRows := units < 4*threads
	if byRows {
		units, unit = (m+kern.mr-1)/kern.mr, kern.mr
		if units < 2*threads {
			threads = max(1, units/2)
		}
	}
	limit := n
	if byRows {
		limit = m
	}
	parallel(threads, func(t int) {
		lo, hi := min(units*t/threads*unit, limit), min(units*(t+1)/threads*unit, limit)
		w := getWork()
		defer putWork(w)
		if byRows {
			ai := lo * lda
			if transA {
				ai = lo
			}
			kern.gemm(w, transA, transB, hi-lo, n, k, alpha, a[ai:], lda, b, ldb, beta, c[lo*ldc:], ldc)
			return
		}
		bj := lo
		if transB {
			bj = lo * ldb
		}
		kern.gemm(w, transA, transB, m, hi-lo, k, alpha, a, lda, b[bj:], ldb, beta, c[lo:], ldc)
	})
}

// gemm is Gemm on one goroutine, blocked for the caches.
func (kern tile) gemm(w *work, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	mr, nr := kern.mr, kern.nr
	for jc := 0; jc < n; jc += nc {
		ncb := min(nc, n-jc)
		panels := (ncb + nr - 1) / nr
		for pc := 0; pc < k; pc += kc {
			kcb := min(kc, k-pc)
			betaBlock := float32(1)
			if pc == 0 {
				betaBlock = beta
			}
			bp := grow(&w.b, panels*nr*kcb)
			packB(bp, nr, transB, b, ldb, pc, kcb, jc, ncb, kern.asm != 0)
			for ic := 0; ic < m; ic += mc {
				mcb := min(mc, m-ic)
				ap := grow(&w.a, ((mcb+mr-1)/mr)*mr*kcb)
				packA(ap, mr, transA, a, lda, ic, mcb, pc, kcb, kern.asm != 0)
				for p := range panels {
					j := jc + p*nr
					nrb := min(nr, n-j)
					bpan := bp[p*nr*kcb : (p+1)*nr*kcb]
					for ir := 0; ir < mcb; ir += mr {
						mrb := min(mr, mcb-ir)
						apan := ap[ir*kcb : (ir+mr)*kcb]
						ci := (ic+ir)*ldc + j
						if mrb == mr && nrb == nr {
							kern.run(kcb, apan, bpan, c[ci:], ldc, alpha, betaBlock)
							continue
						}
						kern.edge(kcb, apan, bpan, c[ci:], ldc, mrb, nrb, alpha, betaBlock)
					}
				}
			}
		}
	}
}

// edge computes a tile at the bottom or right border of C: the kernel
// writes a whole tile into a buffer, which is added into C's part.
func (kern tile) edge(k int, a, b, c []float32, ldc, rows, cols int, alpha, beta float32) {
	var buf [mrMax * nrMax]float32
	nr := kern.nr
	kern.run(k, a, b, buf[:], nr, alpha, 0)
	for i := range rows {
		row := c[i*ldc : i*ldc+cols]
		tr := buf[i*nr : i*nr+cols]
		if beta == 0 {
			copy(row, tr)
			continue
		}
		for j := range row {
			row[j] = tr[j] + beta*row[j]
		}
	}
}

// run computes the mr×nr tile C = alpha·a·b + beta·C from packed panels
// (a: k×mr, b: k×nr).
func (kern tile) run(k int, a, b, c []float32, ldc int, alpha, beta float32) {
	mr, nr := kern.mr, kern.nr
	_ = a[k*mr-1]
	_ = b[k*nr-1]
	_ = c[(mr-1)*ldc+nr-1]
	switch kern.asm {
	case asmAVX2:
		kernel6x16(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		return
	case asmAVX512:
		kernel12x32(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		return
	}
	var acc [mrMax][nrMax]float32
	for p := range k {
		ap := a[p*mr : p*mr+mr]
		bp := b[p*nr : p*nr+nr]
		for i, av := range ap {
			r := acc[i][:nr]
			for j, bv := range bp {
				r[j] += av * bv
			}
		}
	}
	for i := range mr {
		row := c[i*ldc : i*ldc+nr]
		for j := range row {
			if beta == 0 {
				row[j] = alpha * acc[i][j]
			} else {
				row[j] = alpha*acc[i][j] + beta*row[j]
			}
		}
	}
}

// packA copies rows [i0, i0+rows) and columns [p0, p0+k) of op(A) into
// mr-row panels, each k×mr (column p of the panel's rows contiguous), the
// rows past the end zero.
func packA(dst []float32, mr int, trans bool, a []float32, lda, i0, rows, p0, k int, fast bool) {
	for ir := 0; ir < rows; ir += mr {
		pan := dst[ir*k : (ir+mr)*k]
		n := min(mr, rows-ir)
		if !trans {
			interleave(pan, mr, a[(i0+ir)*lda+p0:], lda, n, k, fast)
			continue
		}
		// A is k×m: a row of A holds consecutive rows of op(A).
		for p := range k {
			src := a[(p0+p)*lda+i0+ir:]
			d := pan[p*mr : p*mr+mr]
			copy(d, src[:n])
			clear(d[n:])
		}
	}
}

// packB copies rows [p0, p0+k) and columns [j0, j0+cols) of op(B) into
// k×nr panels, one after another, the columns past cols zero.
func packB(dst []float32, nr int, trans bool, b []float32, ldb, p0, k, j0, cols int, fast bool) {
	panels := (cols + nr - 1) / nr
	if trans {
		// B is n×k: column j of op(B) is row j of B.
		for q := range panels {
			interleave(dst[q*nr*k:(q+1)*nr*k], nr, b[(j0+q*nr)*ldb+p0:], ldb, min(nr, cols-q*nr), k, fast)
		}
		return
	}
	// Row by row of B, each read in order (a panel at a time would read
	// nr floats from each of k rows, a page apart when B is wide).
	full := cols / nr
	for p := range k {
		row := b[(p0+p)*ldb+j0:][:cols]
		for q := range full {
			copy(dst[q*nr*k+p*nr:][:nr], row[q*nr:])
		}
		if full < panels {
			d := dst[full*nr*k+p*nr:][:nr]
			n := copy(d, row[full*nr:])
			clear(d[n:])
		}
	}
}

// interleave writes rows [0, n) of src (row r at src[r*ld:], k long) as the
// columns of the k×width panel pan, and zero in its columns [n, width). It
// reads eight rows side by side, so that each store fills eight
// neighbouring floats of a panel row rather than one float of a cache line;
// with fast (a CPU with AVX), eight columns at a time too, as 8x8 blocks
// transposed in registers.
func interleave(pan []float32, width int, src []float32, ld, n, k int, fast bool) {
	_ = pan[k*width-1]
	r := 0
	for ; r+8 <= n; r += 8 {
		r0, r1, r2, r3 := src[r*ld:][:k], src[(r+1)*ld:][:k], src[(r+2)*ld:][:k], src[(r+3)*ld:][:k]
		r4, r5, r6, r7 := src[(r+4)*ld:][:k], src[(r+5)*ld:][:k], src[(r+6)*ld:][:k], src[(r+7)*ld:][:k]
		p0 := 0
		if fast && k >= 8 {
			// 8x8 blocks transposed in registers; the slices above and
			// pan's check at the top bound what it reads and writes.
			p0 = k / 8 * 8
			transpose8(&pan[r], width, &r0[0], ld, k/8)
		}
		for p := p0; p < k; p++ {
			d := (*[8]float32)(pan[p*width+r:])
			d[0], d[1], d[2], d[3] = r0[p], r1[p], r2[p], r3[p]
			d[4], d[5], d[6], d[7] = r4[p], r5[p], r6[p], r7[p]
		}
	}
	for ; r+4 <= n; r += 4 {
		r0, r1, r2, r3 := src[r*ld:][:k], src[(r+1)*ld:][:k], src[(r+2)*ld:][:k], src[(r+3)*ld:][:k]
		for p := range k {
			d := (*[4]float32)(pan[p*width+r:])
			d[0], d[1], d[2], d[3] = r0[p], r1[p], r2[p], r3[p]
		}
	}
	for ; r < n; r++ {
		for p, v := range src[r*ld:][:k] {
			pan[p*width+r] = v
		}
	}
	for ; r < width; r++ {
		for p := range k {
			pan[p*width+r] = 0
		}
	}
}

// scale computes C = beta·C (zero for beta = 0, whatever C held).
func scale(m, n int, beta float32, c []float32, ldc int) {
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// parallel runs f(0), …, f(parts-1), each on a goroutine of its own but
// the last, which runs on the caller's.
func parallel(parts int, f func(part int)) {
	var wg sync.WaitGroup
	for t := range parts - 1 {
		wg.Go(func() { f(t) })
	}
	f(parts - 1)
	wg.Wait()
}

// work holds one goroutine's packing buffers, kept between calls so that
// a training step allocates nothing once warm. Not a sync.Pool: the garbage
// collector empties that, and megabytes reallocated after every collection
// grow the heap of a process whose live heap is gigabytes of activations.
type work struct {
	b []float32 // packed kc×nc block of B
	a []float32 // packed mc×kc block of A
}

var (
	freeMu sync.Mutex
	free   []*work // at most one per goroutine that ran Gemm at once
)

func getWork() *work {
	freeMu.Lock()
	defer freeMu.Unlock()
	if n := len(free); n > 0 {
		w := free[n-1]
		free = free[:n-1]
		return w
	}
	return new(work)
}

func putWork(w *work) {
	freeMu.Lock()
	free = append(free, w)
	freeMu.Unlock()
}

// grow returns (*buf)[:n], reallocated first where it is shorter.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}
