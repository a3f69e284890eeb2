package kernels

import "github.com/vgg16/vgg16/internal/cuda"

// Typed launchers, one per kernel of kernels.cu; argument order and types
// follow the kernels' C signatures exactly (pointers and u64 counts are
// 8 bytes, float and int 4). Counts of zero launch nothing.

type ptr = cuda.DevicePtr

// grid is the number of blocks for n elements, capped so that grid-stride
// loops take over for large n.
func (m *Module) grid(n uint64, block uint32) cuda.Dim3 {
	b := (n + uint64(block) - 1) / uint64(block)
	return cuda.Dim3{X: uint32(min(b, uint64(m.maxBlocks))), Y: 1, Z: 1}
}

func (m *Module) launch(f cuda.Function, s cuda.Stream, n uint64, args ...uint64) error {
	if n == 0 {
		return nil
	}
	return m.drv.LaunchKernel(f, m.grid(n, threads), cuda.Dim3{X: threads, Y: 1, Z: 1}, 0, s, args...)
}

// ReLUForward: y = max(x, 0) over n elements; y may be x.
func (m *Module) ReLUForward(s cuda.Stream, y, x ptr, n int) error {
	return m.launch(m.f.reluForward, s, uint64(n), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n)))
}

// ReLUBackward: dx = dy where y > 0, else 0; dx may be dy.
func (m *Module) ReLUBackward(s cuda.Stream, dx, dy, y ptr, n int) error {
	return m.launch(m.f.reluBackward, s, uint64(n), cuda.ArgPtr(dx), cuda.ArgPtr(dy), cuda.ArgPtr(y), cuda.ArgU64(uint64(n)))
}

// Dropout: y = x·scale where DropoutHash(key, i) >= threshold, else 0.
// When keyAt is not 0 the kernel reads the key from that device address
// (8 bytes) instead, so that a recorded step can change it between replays.
func (m *Module) Dropout(s cuda.Stream, y, x ptr, n int, key uint64, keyAt ptr, threshold uint32, scale float32) error {
	return m.launch(m.f.dropout, s, uint64(n), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n)),
		cuda.ArgU64(key), cuda.ArgPtr(keyAt), cuda.ArgU32(threshold), cuda.ArgF32(scale))
}

// SGD updates p and the momentum buffer mom in place from the gradient g
// (n elements each); damp is 1 - dampening. When lrAt is not 0 the kernel
// reads the learning rate (a float32) from that device address instead.
func (m *Module) SGD(s cuda.Stream, p, g, mom ptr, n int, lr float32, lrAt ptr, momentum, wd, damp float32, nesterov, first bool) error {
	return m.launch(m.f.sgd, s, uint64(n), cuda.ArgPtr(p), cuda.ArgPtr(g), cuda.ArgPtr(mom), cuda.ArgU64(uint64(n)),
		cuda.ArgF32(lr), cuda.ArgPtr(lrAt), cuda.ArgF32(momentum), cuda.ArgF32(wd), cuda.ArgF32(damp), cuda.ArgI32(b2i(nesterov)), cuda.ArgI32(b2i(first)))
}

// BiasAddRows: y[r, c] += b[c] for row-major y [rows, cols].
func (m *Module) BiasAddRows(s cuda.Stream, y, b ptr, rows, cols int) error {
	return m.launch(m.f.biasAddRows, s, uint64(rows)*uint64(cols), cuda.ArgPtr(y), cuda.ArgPtr(b), cuda.ArgU64(uint64(rows)), cuda.ArgU64(uint64(cols)))
}

// ColSum: out[c] = Σ_r x[r, c] for row-major x [rows, cols].
func (m *Module) ColSum(s cuda.Stream, out, x ptr, rows, cols int) error {
	return m.launch(m.f.colSum, s, uint64(cols), cuda.ArgPtr(out), cuda.ArgPtr(x), cuda.ArgU64(uint64(rows)), cuda.ArgU64(uint64(cols)))
}

// SoftmaxXent computes the mean cross-entropy of softmax(logits [n, c])
// against labels [n] with label smoothing into loss[0], and dlogits [n, c]
// unless dlogits is 0. rowLoss is scratch for n doubles.
func (m *Module) SoftmaxXent(s cuda.Stream, loss, dlogits, rowLoss, logits, labels ptr, n, c int, smoothing float64) error {
	if n == 0 {
		return nil
	}
	grid := cuda.Dim3{X: uint32(min(uint64(n), uint64(m.maxBlocks))), Y: 1, Z: 1}
	block := cuda.Dim3{X: redThreads, Y: 1, Z: 1}
	err := m.drv.LaunchKernel(m.f.xentRows, grid, block, 0, s, cuda.ArgPtr(rowLoss), cuda.ArgPtr(dlogits), cuda.ArgPtr(logits),
		cuda.ArgPtr(labels), cuda.ArgU64(uint64(n)), cuda.ArgU64(uint64(c)), cuda.ArgF64(smoothing))
	if err != nil {
		return err
	}
	return m.drv.LaunchKernel(m.f.meanRows, cuda.Dim3{X: 1, Y: 1, Z: 1}, block, 0, s, cuda.ArgPtr(loss), cuda.ArgPtr(rowLoss), cuda.ArgU64(uint64(n)))
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
