//go:build linux && cgo

package kernels

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/cuda"
)

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

// start launches f with grid and block on stream s, between the calls to
// Trace where it is set.
func (m *Module) start(f cuda.Function, grid, block cuda.Dim3, s cuda.Stream, args ...uint64) error {
	if m.Trace == nil {
		return m.drv.LaunchKernel(f, grid, block, 0, s, args...)
	}
	name := m.names[f]
	m.Trace(name, false)
	err := m.drv.LaunchKernel(f, grid, block, 0, s, args...)
	m.Trace(name, true)
	return err
}

func (m *Module) launch(f cuda.Function, s cuda.Stream, n uint64, args ...uint64) error {
	if n == 0 {
		return nil
	}
	return m.start(f, m.grid(n, threads), cuda.Dim3{X: threads, Y: 1, Z: 1}, s, args...)
}

// pick is the bf16 kernel of a pair when bf16, else the float32 one.
func pick(f32, bf16 cuda.Function, half bool) cuda.Function {
	if half {
		return bf16
	}
	return f32
}

// ReLUForward: y = max(x, 0) over n elements; y may be x. bf16 says both
// are bf16, else float32.
func (m *Module) ReLUForward(s cuda.Stream, y, x ptr, n int, bf16 bool) error {
	return m.launch(pick(m.f.reluForward, m.f.reluForwardBF16, bf16), s, uint64(n), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n)))
}

// ReLUBackward: dx = dy where y > 0, else 0; dx may be dy. bf16 says all
// three are bf16, else float32.
func (m *Module) ReLUBackward(s cuda.Stream, dx, dy, y ptr, n int, bf16 bool) error {
	return m.launch(pick(m.f.reluBackward, m.f.reluBackwardBF16, bf16), s, uint64(n),
		cuda.ArgPtr(dx), cuda.ArgPtr(dy), cuda.ArgPtr(y), cuda.ArgU64(uint64(n)))
}

// Dropout: y = x·scale where DropoutHash(key, i) >= threshold, else 0.
// When keyAt is not 0 the kernel reads the key from that device address
// (8 bytes) instead, so that a recorded step can change it between replays.
// bf16 says x and y are bf16, else float32.
func (m *Module) Dropout(s cuda.Stream, y, x ptr, n int, key uint64, keyAt ptr, threshold uint32, scale float32, bf16 bool) error {
	return m.launch(pick(m.f.dropout, m.f.dropoutBF16, bf16), s, uint64(n), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n)),
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
	return m.softmaxXent(m.f.xentRows, s, loss, dlogits, rowLoss, logits, labels, n, c, smoothing)
}

// softmaxXent launches f (softmax_xent_rows or its bf16 variant), then
// mean_rows.
func (m *Module) softmaxXent(f cuda.Function, s cuda.Stream, loss, dlogits, rowLoss, logits, labels ptr, n, c int, smoothing float64) error {
	if n == 0 {
		return nil
	}
	grid := cuda.Dim3{X: uint32(min(uint64(n), uint64(m.maxBlocks))), Y: 1, Z: 1}
	block := cuda.Dim3{X: redThreads, Y: 1, Z: 1}
	err := m.start(f, grid, block, s, cuda.ArgPtr(rowLoss), cuda.ArgPtr(dlogits), cuda.ArgPtr(logits),
		cuda.ArgPtr(labels), cuda.ArgU64(uint64(n)), cuda.ArgU64(uint64(c)), cuda.ArgF64(smoothing))
	if err != nil {
		return err
	}
	return m.start(m.f.meanRows, cuda.Dim3{X: 1, Y: 1, Z: 1}, block, s, cuda.ArgPtr(loss), cuda.ArgPtr(rowLoss), cuda.ArgU64(uint64(n)))
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// BN is one batch-norm layer's geometry for the fused batch-norm kernels:
// x [N, C, HW...] in NCHW order, and how many blocks share each channel's
// sums; or, with NHWC, a channels-last x [N·H·W, C] (NHWCGeometry).
type BN struct {
	N, C, HW int
	Splits   int
	// BF16 says that the activations x, y, dy and dx are bfloat16 (the
	// _bf16 kernels); the parameters, statistics and their gradients are
	// float32 either way.
	BF16 bool
	// NHWC says that x is channels-last: N counts rows (image positions),
	// HW is 1. Where C suits them (nhwc) the _nhwc kernels run it, Splits
	// blocks of all channels each; otherwise the NCHW kernels, which are
	// correct on it as on N·H·W images of 1×1.
	NHWC bool
	// H and W are the image size of a channels-last x (NHWCGeometry), which
	// the kernels fused with a 2x2 max-pool need (Poolable).
	H, W int
}

// nhwc says whether g runs the channels-last kernels: C a multiple of 8
// and C/8 a divisor of the block.
func (g BN) nhwc() bool { return g.NHWC && g.C%8 == 0 && nhwcThreads%(g.C/8) == 0 }

// NHWCGeometry is the geometry of a channels-last x (bf16, else float32) of n images of c
// channels, h×w each, for a GPU of sms multiprocessors: 8 blocks a
// multiprocessor of all channels each (a full GPU's threads), or fewer so
// that each thread walks at least 8 rows. fold_parts adds the blocks' sums
// per channel in parallel before the finishing kernels.
func NHWCGeometry(n, c, h, w, sms int, bf16 bool) BN {
	g := BN{N: n * h * w, C: c, HW: 1, BF16: bf16, NHWC: true, H: h, W: w}
	if !g.nhwc() {
		g.Splits = Splits(g.N, c, 1, sms)
		return g
	}
	rowsAtOnce := nhwcThreads / (c / 8)
	g.Splits = max(1, min(8*sms, (g.N+8*rowsAtOnce-1)/(8*rowsAtOnce)))
	return g
}

// bnKernels are the kernels that read or write g's activations.
type bnKernels struct{ stats, apply, affine, gradStats, gradApply cuda.Function }

func (m *Module) bn(g BN) bnKernels {
	switch {
	case g.nhwc() && g.BF16:
		return bnKernels{m.f.bnStatsNHWC, m.f.bnApplyNHWC, m.f.bnAffineNHWC, m.f.bnGradStatsNHWC, m.f.bnGradApplyNHWC}
	case g.nhwc():
		return bnKernels{m.f.bnStatsNHWCF32, m.f.bnApplyNHWCF32, m.f.bnAffineNHWCF32, m.f.bnGradStatsNHWCF32, m.f.bnGradApplyNHWCF32}
	case g.BF16:
		return bnKernels{m.f.bnStatsBF16, m.f.bnApplyBF16, m.f.bnAffineBF16, m.f.bnGradStatsBF16, m.f.bnGradApplyBF16}
	}
	return bnKernels{m.f.bnStats, m.f.bnApply, m.f.bnAffine, m.f.bnGradStats, m.f.bnGradApply}
}

// aligned checks the 16-byte alignment the channels-last kernels' pack
// accesses need (always so for whole images of a multiple of 8 channels).
func (g BN) aligned(ps ...ptr) error {
	if !g.nhwc() {
		return nil
	}
	for _, p := range ps {
		if p%16 != 0 {
			return fmt.Errorf("kernels: channels-last activations at %#x, not 16-byte aligned", uint64(p))
		}
	}
	return nil
}

// Splits is how many blocks share one channel's sums: enough blocks to
// fill the GPU (sms multiprocessors, 16 blocks of redThreads each) without
// giving a block under 1024 elements. Where a plane fills a block the
// shares are whole images, so more than n splits would leave blocks idle.
// (4 blocks a multiprocessor measured 3-5x short of the memory bandwidth
// on an H200 at 224x224.)
func Splits(n, c, hw, sms int) int {
	s := max(1, (16*sms+c-1)/c)
	s = min(s, (n*hw+1023)/1024, 1024)
	if hw >= redThreads {
		s = min(s, n)
	}
	return max(1, s)
}

// PartBytes is the scratch the fused kernels need for g's partial sums
// (and, for the channels-last kernels, their per-channel totals after).
func (g BN) PartBytes() int64 {
	if g.nhwc() {
		return 16 * int64(g.C) * int64(g.Splits+1)
	}
	return 16 * int64(g.C) * int64(g.Splits)
}

// fold returns where the finishing kernels read g's partial sums in part,
// and how many a channel: part and g.Splits, or for the channels-last
// kernels the per-channel totals that fold_parts writes after them.
func (m *Module) fold(s cuda.Stream, g BN, part ptr) (ptr, uint64, error) {
	if !g.nhwc() {
		return part, cuda.ArgU32(uint32(g.Splits)), nil
	}
	out := part + ptr(16*g.C*g.Splits)
	err := m.start(m.f.foldParts, cuda.Dim3{X: uint32(g.C), Y: 1, Z: 1}, cuda.Dim3{X: redThreads, Y: 1, Z: 1}, s,
		cuda.ArgPtr(out), cuda.ArgPtr(part), cuda.ArgU64(uint64(g.C)), cuda.ArgU32(uint32(g.Splits)))
	return out, cuda.ArgU32(1), err
}

func (g BN) dims() []uint64 {
	return []uint64{cuda.ArgU64(uint64(g.N)), cuda.ArgU64(uint64(g.C)), cuda.ArgU64(uint64(g.HW))}
}

func (m *Module) reduce(f cuda.Function, s cuda.Stream, g BN, args ...uint64) error {
	if g.nhwc() {
		return m.start(f, cuda.Dim3{X: uint32(g.Splits), Y: 1, Z: 1}, cuda.Dim3{X: nhwcThreads, Y: 1, Z: 1}, s, args...)
	}
	grid := cuda.Dim3{X: uint32(g.C * g.Splits), Y: 1, Z: 1}
	return m.start(f, grid, cuda.Dim3{X: redThreads, Y: 1, Z: 1}, s, args...)
}

// each launches one of g's element-wise kernels over its N·C·HW elements
// (packs of 8 channels for the channels-last kernels).
func (m *Module) each(f cuda.Function, s cuda.Stream, g BN, args ...uint64) error {
	n := uint64(g.N) * uint64(g.C) * uint64(g.HW)
	if g.nhwc() {
		n /= 8
	}
	return m.launch(f, s, n, args...)
}

// BNTrainReLU is batch norm with batch statistics, then ReLU when relu:
// y = (x − mean)·gamma/sqrt(var + eps) + beta over each channel of x,
// saving the batch mean and 1/sqrt(var + eps) and moving the running
// statistics by momentum (towards the mean of x + shift when shift is not
// 0: the bias of the convolution before, left out of x). part is
// PartBytes of scratch, scale C floats.
func (m *Module) BNTrainReLU(s cuda.Stream, g BN, y, x, gamma, beta, runMean, runVar, saveMean, saveInv, shift, part, scale ptr, momentum, eps float64, relu bool) error {
	if g.N*g.C*g.HW == 0 {
		return nil
	}
	if err := g.aligned(y, x); err != nil {
		return err
	}
	if err := m.bnBatchStats(s, g, x, gamma, runMean, runVar, saveMean, saveInv, shift, part, scale, momentum, eps); err != nil {
		return err
	}
	d := g.dims()
	return m.each(m.bn(g).apply, s, g, cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgPtr(saveMean), cuda.ArgPtr(scale),
		cuda.ArgPtr(beta), d[0], d[1], d[2], cuda.ArgI32(b2i(relu)))
}

// bnBatchStats is BNTrainReLU up to its output: the batch statistics of
// x saved, the running ones moved, and scale (C floats) set to
// gamma·saveInv as the apply kernels multiply by it.
func (m *Module) bnBatchStats(s cuda.Stream, g BN, x, gamma, runMean, runVar, saveMean, saveInv, shift, part, scale ptr, momentum, eps float64) error {
	d := g.dims()
	if err := m.reduce(m.bn(g).stats, s, g, cuda.ArgPtr(part), cuda.ArgPtr(x), d[0], d[1], d[2], cuda.ArgU32(uint32(g.Splits))); err != nil {
		return err
	}
	f, sums, splits := m.f.bnFinish, part, cuda.ArgU32(uint32(g.Splits))
	if g.nhwc() { // fold_parts and bn_finish in one launch
		f = m.f.bnFoldFinish
	}
	return m.finish(f, s, g, cuda.ArgPtr(saveMean), cuda.ArgPtr(saveInv), cuda.ArgPtr(runMean), cuda.ArgPtr(runVar),
		cuda.ArgPtr(scale), cuda.ArgPtr(gamma), cuda.ArgPtr(shift), cuda.ArgPtr(sums), d[1], splits, cuda.ArgU64(uint64(g.N*g.HW)),
		cuda.ArgF64(eps), cuda.ArgF64(momentum))
}

// finish launches a per-channel finishing kernel of g: one thread a
// channel for the NCHW kernels' bn_finish and bn_grad_finish, which add
// each channel's splits in turn; one block a channel for the
// channels-last kernels' bn_fold_finish and bn_grad_fold_finish, which
// add them as fold_parts does.
func (m *Module) finish(f cuda.Function, s cuda.Stream, g BN, args ...uint64) error {
	if g.nhwc() {
		return m.start(f, cuda.Dim3{X: uint32(g.C), Y: 1, Z: 1}, cuda.Dim3{X: redThreads, Y: 1, Z: 1}, s, args...)
	}
	return m.launch(f, s, uint64(g.C), args...)
}

// BNApplyReLU writes BNTrainReLU's y again from the statistics it saved:
// y = (x − saveMean)·gamma·saveInv + beta, then ReLU when relu, bit for
// bit as BNTrainReLU computed it. scale is C floats of scratch.
func (m *Module) BNApplyReLU(s cuda.Stream, g BN, y, x, gamma, beta, saveMean, saveInv, scale ptr, relu bool) error {
	if g.N*g.C*g.HW == 0 {
		return nil
	}
	if err := g.aligned(y, x); err != nil {
		return err
	}
	d := g.dims()
	if err := m.launch(m.f.bnScales, s, uint64(g.C), cuda.ArgPtr(scale), cuda.ArgPtr(gamma), cuda.ArgPtr(saveInv), d[1]); err != nil {
		return err
	}
	return m.each(m.bn(g).apply, s, g, cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgPtr(saveMean), cuda.ArgPtr(scale),
		cuda.ArgPtr(beta), d[0], d[1], d[2], cuda.ArgI32(b2i(relu)))
}

// BNInferReLU is batch norm with the running statistics, then ReLU when
// relu; scale and shift are C floats of scratch.
func (m *Module) BNInferReLU(s cuda.Stream, g BN, y, x, gamma, beta, runMean, runVar, scale, shift ptr, eps float64, relu bool) error {
	if g.N*g.C*g.HW == 0 {
		return nil
	}
	if err := g.aligned(y, x); err != nil {
		return err
	}
	d := g.dims()
	err := m.launch(m.f.bnInferCoef, s, uint64(g.C), cuda.ArgPtr(scale), cuda.ArgPtr(shift), cuda.ArgPtr(gamma), cuda.ArgPtr(beta),
		cuda.ArgPtr(runMean), cuda.ArgPtr(runVar), d[1], cuda.ArgF64(eps))
	if err != nil {
		return err
	}
	return m.each(m.bn(g).affine, s, g, cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgPtr(scale), cuda.ArgPtr(shift),
		d[0], d[1], d[2], cuda.ArgI32(b2i(relu)))
}

// BNBackwardReLU is ReLU's backward (when relu) and then batch norm's: dx,
// dgamma and dbeta from dy, x and the saved statistics. The ReLU's mask is
// recomputed from x, gamma and beta as the forward computed its output
// (the kernels' relu_cut), so the forward's output is not read (2 of 7
// passes over the activations). part is PartBytes of scratch, coef 3·C
// floats; beta is unused without relu.
func (m *Module) BNBackwardReLU(s cuda.Stream, g BN, dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInv, part, coef ptr, relu bool) error {
	if g.N*g.C*g.HW == 0 {
		return nil
	}
	if err := g.aligned(dx, dy, x); err != nil {
		return err
	}
	d := g.dims()
	err := m.reduce(m.bn(g).gradStats, s, g, cuda.ArgPtr(part), cuda.ArgPtr(dy), cuda.ArgPtr(x), cuda.ArgPtr(saveMean),
		cuda.ArgPtr(saveInv), cuda.ArgPtr(gamma), cuda.ArgPtr(beta), d[0], d[1], d[2], cuda.ArgU32(uint32(g.Splits)), cuda.ArgI32(b2i(relu)))
	if err != nil {
		return err
	}
	if err := m.bnGradFinish(s, g, dgamma, dbeta, gamma, saveInv, part, coef); err != nil {
		return err
	}
	return m.each(m.bn(g).gradApply, s, g, cuda.ArgPtr(dx), cuda.ArgPtr(dy), cuda.ArgPtr(x),
		cuda.ArgPtr(saveMean), cuda.ArgPtr(saveInv), cuda.ArgPtr(coef), cuda.ArgPtr(beta), d[0], d[1], d[2], cuda.ArgI32(b2i(relu)))
}

// bnGradFinish turns the gradient sums that a grad-stats kernel left in
// part into dgamma, dbeta and the apply kernels' coef (3·C floats).
func (m *Module) bnGradFinish(s cuda.Stream, g BN, dgamma, dbeta, gamma, saveInv, part, coef ptr) error {
	f := m.f.bnGradFinish
	if g.nhwc() { // fold_parts and bn_grad_finish in one launch
		f = m.f.bnGradFoldFinish
	}
	return m.finish(f, s, g, cuda.ArgPtr(dgamma), cuda.ArgPtr(dbeta), cuda.ArgPtr(coef), cuda.ArgPtr(gamma),
		cuda.ArgPtr(saveInv), cuda.ArgPtr(part), cuda.ArgU64(uint64(g.C)), cuda.ArgU32(uint32(g.Splits)), cuda.ArgU64(uint64(g.N*g.HW)))
}

// ---- Batch norm + ReLU fused with a 2x2/2 max-pool ---------------------------
//
// The kernels of kernels.cu's section of that name: y and dy are the
// pool's output and its gradient, [images, H/2, W/2, C] channels-last; x
// and dx the batch norm's input and its gradient. The batch norm's output
// is recomputed in registers and never stored.

// Poolable says whether the kernels fused with a 2x2/2 max-pool take g:
// the channels-last kernels' packs of channels, and images of even size.
func (g BN) Poolable() bool { return g.nhwc() && g.H > 0 && g.W > 0 && g.H%2 == 0 && g.W%2 == 0 }

// poolDims are the pooled kernels' geometry arguments: images, C, H, W.
func (g BN) poolDims() []uint64 {
	return []uint64{cuda.ArgU64(uint64(g.N / (g.H * g.W))), cuda.ArgU64(uint64(g.C)), cuda.ArgU32(uint32(g.H)), cuda.ArgU32(uint32(g.W))}
}

// poolPacks is the number of threads of the pooled element-wise kernels:
// one a pack of 8 channels of each window.
func (g BN) poolPacks() uint64 { return uint64(g.N/4) * uint64(g.C/8) }

// span is a buffer a pooled kernel reads or writes: its start and whether
// it holds the pooled images (a quarter of the batch norm's).
type span struct {
	p      ptr
	pooled bool
}

// checkPool checks the pooled kernels' geometry and buffers: out, which
// they write, and in, which they read. out must not overlap any of in:
// a thread writes one window's output while other blocks still read other
// windows' inputs, which a GPU runs at the same time.
func (g BN) checkPool(out span, in ...span) error {
	if !g.Poolable() {
		return fmt.Errorf("kernels: batch norm fused with a 2x2 max-pool of %d channels of %dx%d images (channels-last, packs of 8 channels, even sizes)", g.C, g.H, g.W)
	}
	elem := uint64(4)
	if g.BF16 {
		elem = 2
	}
	bytes := func(s span) uint64 {
		n := uint64(g.N) * uint64(g.C) * elem
		if s.pooled {
			n /= 4
		}
		return n
	}
	for _, r := range in {
		if out.p < r.p+ptr(bytes(r)) && r.p < out.p+ptr(bytes(out)) {
			return fmt.Errorf("kernels: batch norm fused with a 2x2 max-pool: output [%#x, +%d) overlaps an input [%#x, +%d)", uint64(out.p), bytes(out), uint64(r.p), bytes(r))
		}
	}
	ps := []ptr{out.p}
	for _, r := range in {
		ps = append(ps, r.p)
	}
	return g.aligned(ps...)
}

// BNTrainReLUPool is BNTrainReLU with relu, then a 2x2/2 max-pool into
// y: the batch statistics of x saved and the running ones moved as there,
// and y the maxima of the output BNTrainReLU would write, bit for bit.
func (m *Module) BNTrainReLUPool(s cuda.Stream, g BN, y, x, gamma, beta, runMean, runVar, saveMean, saveInv, shift, part, scale ptr, momentum, eps float64) error {
	if g.N*g.C == 0 {
		return nil
	}
	if err := g.checkPool(span{y, true}, span{x, false}); err != nil {
		return err
	}
	if err := m.bnBatchStats(s, g, x, gamma, runMean, runVar, saveMean, saveInv, shift, part, scale, momentum, eps); err != nil {
		return err
	}
	d := g.poolDims()
	f := pick(m.f.bnApplyPoolNHWCF32, m.f.bnApplyPoolNHWC, g.BF16)
	return m.launch(f, s, g.poolPacks(), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgPtr(saveMean), cuda.ArgPtr(scale), cuda.ArgPtr(beta),
		d[0], d[1], d[2], d[3])
}

// BNInferReLUPool is BNInferReLU with relu, then a 2x2/2 max-pool into y;
// scale and shift are C floats of scratch.
func (m *Module) BNInferReLUPool(s cuda.Stream, g BN, y, x, gamma, beta, runMean, runVar, scale, shift ptr, eps float64) error {
	if g.N*g.C == 0 {
		return nil
	}
	if err := g.checkPool(span{y, true}, span{x, false}); err != nil {
		return err
	}
	err := m.launch(m.f.bnInferCoef, s, uint64(g.C), cuda.ArgPtr(scale), cuda.ArgPtr(shift), cuda.ArgPtr(gamma), cuda.ArgPtr(beta),
		cuda.ArgPtr(runMean), cuda.ArgPtr(runVar), cuda.ArgU64(uint64(g.C)), cuda.ArgF64(eps))
	if err != nil {
		return err
	}
	d := g.poolDims()
	f := pick(m.f.bnAffinePoolNHWCF32, m.f.bnAffinePoolNHWC, g.BF16)
	return m.launch(f, s, g.poolPacks(), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgPtr(scale), cuda.ArgPtr(shift), d[0], d[1], d[2], d[3])
}

// BNBackwardReLUPool is the 2x2/2 max-pool's backward (through the
// output BNTrainReLUPool's batch norm + ReLU had, recomputed from x),
// then BNBackwardReLU's: dx, dgamma and dbeta from the pool's output
// gradient dy. part is PartBytes of scratch, coef 3·C floats.
func (m *Module) BNBackwardReLUPool(s cuda.Stream, g BN, dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInv, part, coef ptr) error {
	if g.N*g.C == 0 {
		return nil
	}
	if err := g.checkPool(span{dx, false}, span{dy, true}, span{x, false}); err != nil {
		return err
	}
	d := g.poolDims()
	f := pick(m.f.bnGradStatsPoolNHWCF32, m.f.bnGradStatsPoolNHWC, g.BF16)
	err := m.reduce(f, s, g, cuda.ArgPtr(part), cuda.ArgPtr(dy), cuda.ArgPtr(x), cuda.ArgPtr(saveMean), cuda.ArgPtr(saveInv),
		cuda.ArgPtr(gamma), cuda.ArgPtr(beta), d[0], d[1], d[2], d[3], cuda.ArgU32(uint32(g.Splits)))
	if err != nil {
		return err
	}
	if err := m.bnGradFinish(s, g, dgamma, dbeta, gamma, saveInv, part, coef); err != nil {
		return err
	}
	f = pick(m.f.bnGradApplyPoolNHWCF32, m.f.bnGradApplyPoolNHWC, g.BF16)
	return m.launch(f, s, g.poolPacks(), cuda.ArgPtr(dx), cuda.ArgPtr(dy), cuda.ArgPtr(x), cuda.ArgPtr(saveMean), cuda.ArgPtr(saveInv),
		cuda.ArgPtr(coef), cuda.ArgPtr(beta), d[0], d[1], d[2], d[3])
}

// CropWords is the size of one crop in CropResize's crops array, in int32s:
// image index, top, left, height, width, flip (0 or 1).
const CropWords = 6

// CropResize makes the model inputs y [n, 3, size, size] from the uint8
// images [N, 3, side, side], the crops [n, CropWords] and the
// normalisation table [3, 256] (floats), as cifar.ApplyCrop does.
func (m *Module) CropResize(s cuda.Stream, y, images, crops, table ptr, n, size, side int) error {
	return m.cropResize(m.f.cropResize, s, y, images, crops, table, n, size, side)
}

func (m *Module) cropResize(f cuda.Function, s cuda.Stream, y, images, crops, table ptr, n, size, side int) error {
	return m.launch(f, s, uint64(n)*3*uint64(size)*uint64(size), cuda.ArgPtr(y), cuda.ArgPtr(images), cuda.ArgPtr(crops),
		cuda.ArgPtr(table), cuda.ArgU64(uint64(n)), cuda.ArgU32(uint32(size)), cuda.ArgU32(uint32(side)))
}

// Tally adds a batch to the running metrics acc [2]: acc[0] += loss[0]·n,
// acc[1] += the rows of logits [n, c] whose argmax is labels[i].
func (m *Module) Tally(s cuda.Stream, acc, loss, logits, labels ptr, n, c int) error {
	return m.tally(m.f.tally, s, acc, loss, logits, labels, n, c)
}

func (m *Module) tally(f cuda.Function, s cuda.Stream, acc, loss, logits, labels ptr, n, c int) error {
	if n == 0 {
		return nil
	}
	return m.start(f, cuda.Dim3{X: 1, Y: 1, Z: 1}, cuda.Dim3{X: redThreads, Y: 1, Z: 1}, s,
		cuda.ArgPtr(acc), cuda.ArgPtr(loss), cuda.ArgPtr(logits), cuda.ArgPtr(labels), cuda.ArgU64(uint64(n)), cuda.ArgU64(uint64(c)))
}

// ---- bfloat16 activations (--precision bf16) ---------------------------------
//
// The launchers of the _bf16 kernels: pointers named like activations (x,
// y, dx, dy, logits, dlogits) are bfloat16 (2 bytes an element), the rest
// (biases, their gradients, losses, labels, tables) float32. Batch norm
// has no launchers of its own: BN.BF16 selects its bf16 kernels.

// CastF32ToBF16: y (bf16) = x (float32) rounded to nearest even, n elements.
func (m *Module) CastF32ToBF16(s cuda.Stream, y, x ptr, n int) error {
	return m.launch(m.f.castF32BF16, s, uint64(n), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n)))
}

// CastBF16ToF32: y (float32) = x (bf16), exact, n elements.
func (m *Module) CastBF16ToF32(s cuda.Stream, y, x ptr, n int) error {
	return m.launch(m.f.castBF16F32, s, uint64(n), cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n)))
}

// BiasAddRowsBF16: y[r, c] += b[c] for a row-major bf16 y [rows, cols] and
// float32 b.
func (m *Module) BiasAddRowsBF16(s cuda.Stream, y, b ptr, rows, cols int) error {
	return m.launch(m.f.biasAddRowsBF16, s, uint64(rows)*uint64(cols), cuda.ArgPtr(y), cuda.ArgPtr(b), cuda.ArgU64(uint64(rows)), cuda.ArgU64(uint64(cols)))
}

// ColSumBF16: out[c] (float32) = Σ_r x[r, c] for a row-major bf16 x [rows, cols].
func (m *Module) ColSumBF16(s cuda.Stream, out, x ptr, rows, cols int) error {
	return m.launch(m.f.colSumBF16, s, uint64(cols), cuda.ArgPtr(out), cuda.ArgPtr(x), cuda.ArgU64(uint64(rows)), cuda.ArgU64(uint64(cols)))
}

// BiasAdd: y[i, ch, p] += b[ch] for a channels-last y of geometry g (bf16
// or float32) and float32 b [c] (a convolution's bias; NCHW biases go
// through cuDNN).
func (m *Module) BiasAdd(s cuda.Stream, g BN, y, b ptr) error {
	if err := g.aligned(y); err != nil {
		return err
	}
	d := g.dims()
	switch {
	case g.nhwc():
		return m.each(pick(m.f.biasAddNHWCF32, m.f.biasAddNHWC, g.BF16), s, g, cuda.ArgPtr(y), cuda.ArgPtr(b), d[0], d[1], d[2])
	case g.NHWC: // rows of C channels
		return m.launch(pick(m.f.biasAddRows, m.f.biasAddRowsBF16, g.BF16), s, uint64(g.N)*uint64(g.C), cuda.ArgPtr(y), cuda.ArgPtr(b),
			cuda.ArgU64(uint64(g.N)), cuda.ArgU64(uint64(g.C)))
	}
	return fmt.Errorf("kernels: a bias addition to NCHW images (cuDNN's)")
}

// BiasGrad: db[ch] (float32) = Σ dy over channel ch of dy [N, C, HW] (a
// convolution's bias gradient; bf16 when g.BF16), as batch norm's
// statistics are summed: g.Splits blocks a channel into part (PartBytes
// of scratch), then one thread a channel.
func (m *Module) BiasGrad(s cuda.Stream, g BN, db, dy, part ptr) error {
	if g.N*g.C*g.HW == 0 {
		return nil
	}
	if err := g.aligned(dy); err != nil {
		return err
	}
	d := g.dims()
	if err := m.reduce(m.bn(g).stats, s, g, cuda.ArgPtr(part), cuda.ArgPtr(dy), d[0], d[1], d[2], cuda.ArgU32(uint32(g.Splits))); err != nil {
		return err
	}
	sums, splits, err := m.fold(s, g, part)
	if err != nil {
		return err
	}
	return m.launch(m.f.biasGradFinish, s, uint64(g.C), cuda.ArgPtr(db), cuda.ArgPtr(sums), d[1], splits)
}

// SoftmaxXentBF16 is SoftmaxXent with bf16 logits and dlogits (loss,
// rowLoss and labels as there).
func (m *Module) SoftmaxXentBF16(s cuda.Stream, loss, dlogits, rowLoss, logits, labels ptr, n, c int, smoothing float64) error {
	return m.softmaxXent(m.f.xentRowsBF16, s, loss, dlogits, rowLoss, logits, labels, n, c, smoothing)
}

// TallyBF16 is Tally with bf16 logits.
func (m *Module) TallyBF16(s cuda.Stream, acc, loss, logits, labels ptr, n, c int) error {
	return m.tally(m.f.tallyBF16, s, acc, loss, logits, labels, n, c)
}

// poolOut is the output size of a max-pool window k with stride st over n
// inputs (no padding, floor), 0 when the window does not fit.
func poolOut(n, k, st int) int {
	if n < k {
		return 0
	}
	return (n-k)/st + 1
}

func poolArgs(planes, h, w, k, st int) ([]uint64, error) {
	if k < 1 || st < 1 {
		return nil, fmt.Errorf("kernels: max-pool window %d stride %d", k, st)
	}
	return []uint64{cuda.ArgU64(uint64(planes)), cuda.ArgU32(uint32(h)), cuda.ArgU32(uint32(w)), cuda.ArgU32(uint32(k)), cuda.ArgU32(uint32(st))}, nil
}

// MaxPoolForward: y [planes, oh, ow] = the maximum of each k×k window,
// stride st, of x [planes, h, w] (oh = poolOut(h, k, st), ow alike), NaN
// propagating, as the CPU backend's MaxPoolForward: float32 NCHW images
// (channels-last ones take MaxPoolNHWC).
func (m *Module) MaxPoolForward(s cuda.Stream, y, x ptr, planes, h, w, k, st int) error {
	a, err := poolArgs(planes, h, w, k, st)
	if err != nil {
		return err
	}
	return m.launch(m.f.maxPoolForward, s, uint64(planes)*uint64(poolOut(h, k, st))*uint64(poolOut(w, k, st)),
		append([]uint64{cuda.ArgPtr(y), cuda.ArgPtr(x)}, a...)...)
}

// MaxPoolBackward: dx [planes, h, w] from dy [planes, oh, ow] and the
// forward's x: each window's gradient goes to its first maximum in
// row-major order and overlapping windows' gradients add, as the CPU
// backend's MaxPoolBackward. It writes all of dx. Float32 NCHW images.
func (m *Module) MaxPoolBackward(s cuda.Stream, dx, dy, x ptr, planes, h, w, k, st int) error {
	a, err := poolArgs(planes, h, w, k, st)
	if err != nil {
		return err
	}
	return m.launch(m.f.maxPoolBackward, s, uint64(planes)*uint64(h)*uint64(w),
		append([]uint64{cuda.ArgPtr(dx), cuda.ArgPtr(dy), cuda.ArgPtr(x)}, a...)...)
}

// CropResizeNHWC is CropResize into a channels-last float32 y [n, size,
// size, 3].
func (m *Module) CropResizeNHWC(s cuda.Stream, y, images, crops, table ptr, n, size, side int) error {
	return m.cropResize(m.f.cropResizeNHWC, s, y, images, crops, table, n, size, side)
}

// CropResizeBF16 is CropResize with y stored as bf16, channels-last [n,
// size, size, 3].
func (m *Module) CropResizeBF16(s cuda.Stream, y, images, crops, table ptr, n, size, side int) error {
	return m.cropResize(m.f.cropResizeBF16, s, y, images, crops, table, n, size, side)
}

// MaxPoolNHWC is MaxPoolForward of channels-last x [n, h, w, c] into
// y [n, oh, ow, c], bf16 or float32.
func (m *Module) MaxPoolNHWC(s cuda.Stream, y, x ptr, n, c, h, w, k, st int, bf16 bool) error {
	a, err := poolArgs(c, h, w, k, st) // (c, h, w, k, st): the kernel's arguments after n
	if err != nil {
		return err
	}
	return m.launch(pick(m.f.maxPoolForwardNHWCF32, m.f.maxPoolForwardNHWC, bf16), s, uint64(n)*uint64(c)*uint64(poolOut(h, k, st))*uint64(poolOut(w, k, st)),
		append([]uint64{cuda.ArgPtr(y), cuda.ArgPtr(x), cuda.ArgU64(uint64(n))}, a...)...)
}

// MaxPoolBackwardNHWC is MaxPoolBackward of channels-last dx, dy and x
// (x [n, h, w, c]), bf16 or float32.
func (m *Module) MaxPoolBackwardNHWC(s cuda.Stream, dx, dy, x ptr, n, c, h, w, k, st int, bf16 bool) error {
	a, err := poolArgs(c, h, w, k, st)
	if err != nil {
		return err
	}
	return m.launch(pick(m.f.maxPoolBackwardNHWCF32, m.f.maxPoolBackwardNHWC, bf16), s, uint64(n)*uint64(c)*uint64(h)*uint64(w),
		append([]uint64{cuda.ArgPtr(dx), cuda.ArgPtr(dy), cuda.ArgPtr(x), cuda.ArgU64(uint64(n))}, a...)...)
}

// Transpose: y [batch, cols, rows] = x [batch, rows, cols] with each
// matrix transposed, converting float32 to bf16 (yBF16 only), bf16 to
// float32 (xBF16 only) or neither.
func (m *Module) Transpose(s cuda.Stream, y, x ptr, batch, rows, cols int, yBF16, xBF16 bool) error {
	var f cuda.Function
	switch {
	case yBF16 && xBF16:
		f = m.f.transposeBF16
	case yBF16:
		f = m.f.transposeF32BF16
	case xBF16:
		f = m.f.transposeBF16F32
	default:
		f = m.f.transposeF32
	}
	return m.launch(f, s, uint64(batch)*uint64(rows)*uint64(cols), cuda.ArgPtr(y), cuda.ArgPtr(x),
		cuda.ArgU64(uint64(batch)), cuda.ArgU64(uint64(rows)), cuda.ArgU64(uint64(cols)))
}
