package layers

import (
	"github.com/vgg16/vgg16/internal/tensor"
)

// module is one torchvision module of the network (Conv2d, BatchNorm2d,
// ReLU, MaxPool2d, LocalResponseNorm, Linear, Dropout, or the flatten
// between features and classifier): a forward/backward pair. forward keeps
// what backward needs; backward returns the gradient of forward's input
// (nil where nobody needs it) and writes the parameters' gradients.
type module interface {
	forward(x *tensor.Tensor, train bool) *tensor.Tensor
	backward(dy *tensor.Tensor) *tensor.Tensor
	// out is the per-sample output shape for a per-sample input shape.
	out(in []int) []int
	// kind and kernel describe the module in the summary table.
	kind() string
	kernel() string
}

func withBatch(n int, s []int) []int { return append([]int{n}, s...) }

// conv is a stride-1 convolution with "same" padding.
//
// When a batch norm follows (biasInBN), training leaves the bias out: batch
// norm with batch statistics subtracts the mean again, so the bias changes
// neither its output nor any gradient but its own, which is zero. The
// batch norm adds it to the mean its running statistics move towards
// (its shift), as if it had been added; evaluation, which normalises with
// those statistics, adds it. That saves a pass over the output forward
// and one backward (PyTorch computes both: the bias's gradient is
// rounding noise around zero there).
type conv struct {
	be       tensor.Backend
	w, b     *tensor.Tensor // [Co,Ci,K,K], [Co]
	dw, db   *tensor.Tensor
	k, pad   int
	needDx   bool // false for the first layer, whose input is the data
	biasInBN bool // a batch norm follows: in training it takes the bias
	x        *tensor.Tensor
	bufs
}

func (m *conv) out(in []int) []int { return []int{m.w.Shape[0], in[1], in[2]} }
func (m *conv) kind() string       { return "Conv2d" }
func (m *conv) kernel() string {
	if m.k == 1 {
		return "1x1"
	}
	return "3x3"
}

func (m *conv) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	m.x = x
	y := m.output(m.be, withBatch(x.Shape[0], m.out(x.Shape[1:]))...)
	b := m.b
	if train && m.biasInBN {
		b = nil
	}
	if m.dry() {
		return y
	}
	m.be.ConvForward(y, x, m.w, b, m.pad)
	return y
}

func (m *conv) backward(dy *tensor.Tensor) *tensor.Tensor {
	var dx *tensor.Tensor
	if m.needDx {
		dx = m.dx(m.be, dy, m.x.Shape...)
	}
	if m.dry() {
		return dx
	}
	db := m.db
	if m.biasInBN {
		db = nil
		m.be.Fill(m.db, 0)
	}
	m.be.ConvBackward(dx, m.dw, db, m.x, dy, m.w, m.pad)
	return dx
}

// batchNorm is BatchNorm2d with PyTorch's defaults.
type batchNorm struct {
	be                tensor.Backend
	gamma, beta       *tensor.Tensor // [C]
	dgamma, dbeta     *tensor.Tensor
	runMean, runVar   *tensor.Tensor // [C]
	saveMean, saveInv *tensor.Tensor // [C]
	numBatches        int64          // num_batches_tracked: Model.Forward counts the training batches
	momentum, eps     float64
	x, y              *tensor.Tensor
	relu              bool           // the ReLU after it is done here (BatchNormReLU*), as one op
	shift             *tensor.Tensor // [C]: the bias of the convolution before, left out in training (conv.biasInBN)
	outs              *bnOutputs     // with relu: the model's, used when it recomputes (Model.RecomputeBN)
	// pool is the 2x2 max-pool after the ReLU, if one follows: a backend
	// that can (tensor.PooledBatchNorm) runs the three as one op, which
	// writes the pool's output only; pooled says the last forward did so.
	pool   *maxPool
	pooled bool
	in     []int // the per-sample input shape [C, H, W]
	bufs
}

// bnOutputs is where a model that recomputes its batch-norm outputs
// (Model.RecomputeBN) puts them: one buffer for all, holding one at a time.
// A batch norm's output is read only by the next module's forward (a
// convolution's or a max-pool's) and by backward passes: forward, each
// batch norm overwrites the one before it, which nobody needs any more;
// backward, a module whose input it was has it recomputed first
// (batchNorm.restore), from the batch norm's input and saved statistics.
// That keeps one output instead of every one (at 224x224, 13 of them),
// for one more pass over each but the last.
type bnOutputs struct {
	on, want bool // recomputing, and what RecomputeBN asked for the next Forward
	buf      buf
	holder   *batchNorm // whose output buf holds
}

// restore makes the model's batch-norm output buffer hold m's output of
// the last training forward, recomputing it unless it is already there.
func (m *batchNorm) restore() {
	if m.outs.holder == m || m.pooled {
		return // there, or never stored: the pool's backward is the batch norm's
	}
	m.y = m.outs.buf.get(m.be, m.x.Shape...)
	m.be.BatchNormReLUApply(m.y, m.x, m.gamma, m.beta, m.saveMean, m.saveInv)
	m.outs.holder = m
}

func (m *batchNorm) out(in []int) []int { return in }
func (m *batchNorm) kind() string       { return "BatchNorm2d" }
func (m *batchNorm) kernel() string     { return "" }

func (m *batchNorm) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	m.x = x
	if m.pooledForward(x, train) {
		return m.pool.y
	}
	var y *tensor.Tensor
	switch {
	case m.recomputed() && m.dry():
		y = m.acts.virtual(m.be, x.Shape) // the shared buffer, outside the arena
	case m.recomputed():
		y = m.outs.buf.get(m.be, x.Shape...)
		m.outs.holder = m
	default:
		y = m.output(m.be, x.Shape...)
	}
	m.y = y
	if m.dry() {
		return y
	}
	switch {
	case train && m.relu:
		m.be.BatchNormReLUTrain(y, x, m.gamma, m.beta, m.runMean, m.runVar, m.saveMean, m.saveInv, m.shift, m.momentum, m.eps)
	case train:
		m.be.BatchNormTrain(y, x, m.gamma, m.beta, m.runMean, m.runVar, m.saveMean, m.saveInv, m.shift, m.momentum, m.eps)
	case m.relu:
		m.be.BatchNormReLUInfer(y, x, m.gamma, m.beta, m.runMean, m.runVar, m.eps)
	default:
		m.be.BatchNormInfer(y, x, m.gamma, m.beta, m.runMean, m.runVar, m.eps)
	}
	return y
}

// pooledForward runs the batch norm, its ReLU and the max-pool after
// them as one op where the backend can, writing the pool's output
// (m.pool.y) only, and says whether it did. The pool module then passes
// its input through, forward and backward.
func (m *batchNorm) pooledForward(x *tensor.Tensor, train bool) bool {
	var p tensor.PooledBatchNorm
	p, m.pooled = m.pools()
	if m.pool == nil {
		return false
	}
	m.pool.fused = m.pooled
	if !m.pooled {
		return false
	}
	y := m.pool.output(m.be, withBatch(x.Shape[0], m.pool.out(x.Shape[1:]))...)
	m.pool.x, m.pool.y, m.y = nil, y, nil
	if m.dry() {
		return true
	}
	if train {
		p.BatchNormReLUPoolTrain(y, x, m.gamma, m.beta, m.runMean, m.runVar, m.saveMean, m.saveInv, m.shift, m.momentum, m.eps)
	} else {
		p.BatchNormReLUPoolInfer(y, x, m.gamma, m.beta, m.runMean, m.runVar, m.eps)
	}
	return true
}

// pools says whether the backend runs m, its ReLU and the max-pool after
// them as one op (tensor.PooledBatchNorm), and gives that interface.
func (m *batchNorm) pools() (tensor.PooledBatchNorm, bool) {
	p, ok := m.be.(tensor.PooledBatchNorm)
	return p, ok && m.pool != nil && len(m.in) == 3 && p.PoolsBatchNorm(m.in[0], m.in[1], m.in[2])
}

// recomputed reports whether m's output lives in the model's shared
// buffer, recomputed for the backward.
func (m *batchNorm) recomputed() bool { return m.outs != nil && m.outs.on }

func (m *batchNorm) backward(dy *tensor.Tensor) *tensor.Tensor {
	dx := m.dx(m.be, dy, m.x.Shape...)
	if m.dry() {
		return dx
	}
	if m.pooled { // dy is the pool's output gradient
		m.be.(tensor.PooledBatchNorm).BatchNormReLUPoolBackward(dx, m.dgamma, m.dbeta, dy, m.x, m.gamma, m.beta, m.saveMean, m.saveInv)
		return dx
	}
	if m.relu {
		m.be.BatchNormReLUBackward(dx, m.dgamma, m.dbeta, dy, m.y, m.x, m.gamma, m.beta, m.saveMean, m.saveInv)
	} else {
		m.be.BatchNormBackward(dx, m.dgamma, m.dbeta, dy, m.x, m.gamma, m.saveMean, m.saveInv)
	}
	return dx
}

// relu works in place: its input is never needed again (BN's backward
// uses BN's input, and a convolution's input is a pool's or ReLU's output),
// and its backward overwrites the incoming gradient.
type relu struct {
	be    tensor.Backend
	y     *tensor.Tensor
	fused bool         // the batch norm before it applies it (and its backward)
	acts  *activations // the model's, to know a planning pass
}

func (m *relu) setActs(a *activations) { m.acts = a }

func (m *relu) out(in []int) []int { return in }
func (m *relu) kind() string       { return "ReLU" }
func (m *relu) kernel() string     { return "" }

func (m *relu) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	if m.fused || m.acts.dry {
		return x
	}
	m.be.ReLUForward(x, x)
	m.y = x
	return x
}

func (m *relu) backward(dy *tensor.Tensor) *tensor.Tensor {
	if m.fused || m.acts.dry {
		return dy
	}
	m.be.ReLUBackward(dy, dy, m.y)
	return dy
}

// maxPool is MaxPool2d(2, 2).
type maxPool struct {
	be   tensor.Backend
	x, y *tensor.Tensor
	// fused says that the batch norm before it pooled its output in its
	// own op (batchNorm.pooledForward), into this module's buffer: forward
	// and backward pass their input through.
	fused bool
	bufs
}

func (m *maxPool) out(in []int) []int { return []int{in[0], in[1] / 2, in[2] / 2} }
func (m *maxPool) kind() string       { return "MaxPool2d" }
func (m *maxPool) kernel() string     { return "2x2/2" }

func (m *maxPool) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	if m.fused {
		return x
	}
	m.x = x
	m.y = m.output(m.be, withBatch(x.Shape[0], m.out(x.Shape[1:]))...)
	if m.dry() {
		return m.y
	}
	m.be.MaxPoolForward(m.y, x, 2, 2)
	return m.y
}

func (m *maxPool) backward(dy *tensor.Tensor) *tensor.Tensor {
	if m.fused {
		return dy
	}
	dx := m.dx(m.be, dy, m.x.Shape...)
	if m.dry() {
		return dx
	}
	m.be.MaxPoolBackward(dx, dy, m.x, m.y, 2, 2)
	return dx
}

// lrn is LocalResponseNorm(5, 1e-4, 0.75, 2).
type lrn struct {
	be   tensor.Backend
	p    tensor.LRN
	x, y *tensor.Tensor
	bufs
}

func (m *lrn) out(in []int) []int { return in }
func (m *lrn) kind() string       { return "LocalResponseNorm" }
func (m *lrn) kernel() string     { return "5" }

func (m *lrn) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	m.x = x
	m.y = m.output(m.be, x.Shape...)
	if m.dry() {
		return m.y
	}
	m.be.LRNForward(m.y, x, m.p)
	return m.y
}

func (m *lrn) backward(dy *tensor.Tensor) *tensor.Tensor {
	dx := m.dx(m.be, dy, m.x.Shape...)
	if m.dry() {
		return dx
	}
	m.be.LRNBackward(dx, dy, m.x, m.y, m.p)
	return dx
}

// flatten is torch.flatten(x, 1): NCHW memory is already in (C,H,W) order,
// so it is a view both ways. A backend that stores x channels-last
// (tensor.Layouts) gets a copy in NCHW order instead, and the gradient
// copied back, where the image is more than one pixel.
type flatten struct {
	be tensor.Backend
	in []int
	// copied says that forward copied x (backward copies dy back).
	copied bool
	bufs
}

func (m *flatten) out(in []int) []int { return []int{tensor.Volume(in)} }
func (m *flatten) kind() string       { return "Flatten" }
func (m *flatten) kernel() string     { return "" }

func (m *flatten) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	m.in = x.Shape
	rows := x.Reshape(x.Shape[0], tensor.Volume(x.Shape[1:]))
	l, ok := m.be.(tensor.Layouts)
	m.copied = ok && len(x.Shape) == 4 && x.Shape[2]*x.Shape[3] > 1 && l.ChannelsLast(x)
	if !m.copied {
		return rows
	}
	y := m.output(m.be, rows.Shape...)
	if !m.dry() {
		m.be.Copy(y, x)
	}
	return y
}

func (m *flatten) backward(dy *tensor.Tensor) *tensor.Tensor {
	if !m.copied {
		return dy.Reshape(m.in...)
	}
	dx := m.dx(m.be, dy, m.in...)
	if !m.dry() {
		m.be.Copy(dx, dy)
	}
	return dx
}

// linear is y = x·wᵀ + b.
type linear struct {
	be     tensor.Backend
	w, b   *tensor.Tensor // [Out,In], [Out]
	dw, db *tensor.Tensor
	x      *tensor.Tensor
	// part is how many rows of the weights backwardUpdate takes at a time
	// (Model.ShareGradients sets it; 0: the layer is one group).
	part int
	bufs
}

func (m *linear) out(in []int) []int { return []int{m.w.Shape[0]} }
func (m *linear) kind() string       { return "Linear" }
func (m *linear) kernel() string     { return "" }

func (m *linear) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	m.x = x
	y := m.output(m.be, x.Shape[0], m.w.Shape[0])
	if m.dry() {
		return y
	}
	m.be.LinearForward(y, x, m.w, m.b)
	return y
}

func (m *linear) backward(dy *tensor.Tensor) *tensor.Tensor {
	dx := m.dx(m.be, dy, m.x.Shape...)
	if m.dry() {
		return dx
	}
	m.be.LinearBackward(dx, m.dw, m.db, dy, m.x, m.w)
	return dx
}

// backwardUpdate is backward for a layer larger than the gradient buffer
// g (part > 0): dx first, from the weights as they were; then the bias's
// gradient, handed to update; then the weights' gradient part rows at a
// time, each part handed to update before the next takes its place in g.
func (m *linear) backwardUpdate(dy, g *tensor.Tensor, update func(w, g *tensor.Tensor)) *tensor.Tensor {
	dx := m.dx(m.be, dy, m.x.Shape...)
	out, in := m.w.Shape[0], m.w.Shape[1]
	db := g.View(0, out)
	m.be.LinearBackward(dx, nil, db, dy, m.x, m.w)
	update(m.b, db)
	for r := 0; r < out; r += m.part {
		k := min(m.part, out-r)
		dw := g.View(0, k, in)
		m.be.LinearWeightGrad(dw, dy, m.x, r)
		update(m.w.View(r*in, k, in), dw)
	}
	return dx
}

// dropout draws its mask from (seed, step, layer), see tensor.DropoutKey.
type dropout struct {
	be    tensor.Backend
	p     float64
	layer uint64
	model *Model // for the seed and the step number
	key   uint64
	bufs
}

func (m *dropout) out(in []int) []int { return in }
func (m *dropout) kind() string       { return "Dropout" }
func (m *dropout) kernel() string     { return "" }

func (m *dropout) forward(x *tensor.Tensor, train bool) *tensor.Tensor {
	if !train || m.p == 0 {
		m.key = 0
		return x
	}
	m.key = tensor.DropoutKey(m.model.Seed, m.model.step, m.layer)
	y := m.output(m.be, x.Shape...)
	if m.dry() {
		return y
	}
	m.be.DropoutForward(y, x, m.p, m.key)
	return y
}

func (m *dropout) backward(dy *tensor.Tensor) *tensor.Tensor {
	if m.p == 0 {
		return dy
	}
	dx := m.dx(m.be, dy, dy.Shape...)
	if m.dry() {
		return dx
	}
	m.be.DropoutBackward(dx, dy, m.p, m.key)
	return dx
}
