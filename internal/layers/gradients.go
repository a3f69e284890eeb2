package layers

import "github.com/vgg16/vgg16/internal/tensor"

// The optimizer in the backward (BackwardUpdate, ShareGradients): each
// layer's parameters are updated as soon as the backward has their
// gradients, so that the gradients of every layer can take one buffer in
// turn instead of one float per parameter.

// group is the parameters that a Backward updating as it goes
// (BackwardUpdate) hands to the optimizer together: a layer's, with those
// of the batch norm after a convolution. Their gradients are all written
// once the backward of module first (the group's first in forward order)
// has run, and read by no later module.
type group struct {
	first  int      // module index
	lo, n  int      // the flat elements [lo, lo+n) its parameters span
	params []int    // indexes into Model.params
	runs   [][2]int // its parameters as gap-free runs: flat offset, length
}

// groupParams makes the groups from the module that took each parameter:
// a batch norm's join the convolution's before it.
func (m *Model) groupParams(owner []int) {
	for i, mod := range owner {
		if _, ok := m.mods[mod].(*batchNorm); ok && mod > 0 {
			if _, ok := m.mods[mod-1].(*conv); ok {
				mod--
			}
		}
		off, n := m.paramOff[i], m.params[i].W.Size()
		if k := len(m.groups); k == 0 || m.groups[k-1].first != mod {
			m.groups = append(m.groups, group{first: mod, lo: off})
		}
		g := &m.groups[len(m.groups)-1]
		g.params = append(g.params, i)
		g.n = off + n - g.lo
		if r := len(g.runs) - 1; r >= 0 && g.runs[r][0]+g.runs[r][1] == off {
			g.runs[r][1] += n
		} else {
			g.runs = append(g.runs, [2]int{off, n})
		}
	}
}

// Update applies an optimizer step to one run of parameters: their
// weights w and gradients g, and off, the run's offset in the flat
// buffers (where its optimizer state lies, as in Weights).
type Update func(w, g *tensor.Tensor, off int)

// BackwardUpdate is Backward that hands each group of parameters (a
// layer's, a convolution's with its batch norm's) to update as soon as
// their gradients are complete, before the backward goes on, as PyTorch's
// optimizer-in-backward hooks do; with ShareGradients the gradients then
// take the memory of one group instead of the whole model's. Every
// parameter's gradient is the one Backward computes, and no later module
// reads the parameters updated, so an element-wise optimizer (SGD) gives
// the parameters an optimizer step after Backward gives, bit for bit.
// update runs once for each gap-free run of a group's parameters (for a
// Linear in parts, ShareGradients: once for its bias, then once a part).
func (m *Model) BackwardUpdate(dlogits *tensor.Tensor, update Update) {
	m.backward(dlogits, update)
}

// BackwardSGD is a training step's backward and SGD with momentum mom
// [FlatSize]: Backward, then one SGD step over the trainable parameters
// (Trainable); with ShareGradients, BackwardUpdate with SGD for each
// layer's parameters in the backward. first says the step fills the
// momentum (the first of a run).
func (m *Model) BackwardSGD(dlogits, mom *tensor.Tensor, h tensor.SGD, first bool) {
	if m.shared {
		m.BackwardUpdate(dlogits, func(w, g *tensor.Tensor, off int) {
			m.be.SGDStep(w, g, mom.View(off, w.Size()), h, first)
		})
		return
	}
	m.Backward(dlogits)
	off, n := m.Trainable()
	m.be.SGDStep(m.weights.View(off, n), m.grads.View(off, n), mom.View(off, n), h, first)
}

// updateGroups calls update for the groups whose first module is i.
func (m *Model) updateGroups(i int, update Update) {
	for _, g := range m.groups {
		if g.first != i {
			continue
		}
		base := 0 // where the gradient buffer starts in the flat layout
		if m.shared {
			base = g.lo
		}
		for _, r := range g.runs {
			update(m.weights.View(r[0], r[1]), m.grads.View(r[0]-base, r[1]), r[0])
		}
	}
}

// ShareGradients sets whether every parameter's gradient has memory of
// its own (false, the default) or the gradients of each group take the
// one buffer the size of the largest group, used by each group in turn
// (true); a Linear larger than GradPart elements computes and hands on
// its weights' gradient a part of its rows at a time (linear.part), so
// that the buffer holds one part. For VGG16: 16 MiB instead of 128 MiB at
// 32x32, and of 512 MiB at 224x224. Only BackwardUpdate can train then:
// Backward would leave the last group's gradients alone, and such a
// Linear's weight gradient is its first part's rows. Not within a Forward
// and its Backward.
func (m *Model) ShareGradients(on bool) {
	if on == m.shared {
		return
	}
	size, part := m.FlatSize(), m.GradPart
	if on {
		size = 0
	}
	if part <= 0 {
		part = DefaultGradPart
	}
	for _, g := range m.groups {
		l, _ := m.mods[g.first].(*linear)
		if l != nil {
			l.part = 0
		}
		if !on {
			continue
		}
		if rows := linearPart(l, part); rows > 0 {
			l.part = rows
			size = max(size, rows*l.w.Shape[1], l.w.Shape[0])
		} else {
			size = max(size, g.n)
		}
	}
	grads := m.be.New(size)
	for _, g := range m.groups {
		base := 0
		if on {
			base = g.lo
		}
		l, _ := m.mods[g.first].(*linear)
		for _, i := range g.params {
			p := m.params[i]
			switch { // the modules hold p.Grad
			case l != nil && l.part > 0 && p.W == l.w:
				*p.Grad = *grads.View(0, l.part, l.w.Shape[1])
			case l != nil && l.part > 0:
				*p.Grad = *grads.View(0, p.W.Shape...)
			default:
				*p.Grad = *grads.View(m.paramOff[i]-base, p.W.Shape...)
			}
		}
	}
	m.be.Free(m.grads)
	m.grads, m.shared = grads, on
}

// DefaultGradPart is Model.GradPart's default: 16 MiB of float32.
const DefaultGradPart = 1 << 22

// linearPart is how many rows of l's weights make a part of its gradient,
// or 0 where l is not a Linear or its whole gradient fits part elements: a
// multiple of 64 rows where that fits (as the GPU's bf16 weight chunks,
// so that each part's columns of dy start 128-byte aligned).
func linearPart(l *linear, part int) int {
	if l == nil {
		return 0
	}
	out, in := l.w.Shape[0], l.w.Shape[1]
	rows := max(1, part/in)
	if rows >= 64 {
		rows &^= 63
	}
	if rows >= out {
		return 0
	}
	return rows
}
