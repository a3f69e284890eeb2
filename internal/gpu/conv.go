//go:build linux && cgo

package gpu

import (
	"fmt"
	"strings"
	"time"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// maxWorkspace caps the workspace an algorithm may ask for, unless
// Options.MaxWorkspaceMiB says otherwise.
const maxWorkspace = 4 << 30

// convKey is the geometry of one stride-1 convolution.
type convKey struct {
	n, ci, h, w, co, k, pad int
	half                    bool // bf16 data, float accumulation
	// nhwc: x and y channels-last, w KRSC (the bf16 path's layout; its
	// float32 fallback keeps it)
	nhwc bool
}

func (k convKey) String() string {
	s := fmt.Sprintf("conv x[%d %d %d %d] w[%d %d %d %d] pad %d", k.n, k.ci, k.h, k.w, k.co, k.ci, k.k, k.k, k.pad)
	if k.half {
		s += " bf16"
	}
	if k.nhwc && !k.half {
		s += " nhwc"
	}
	return s
}

// convPlan is everything cuDNN needs for one geometry: descriptors, and
// per direction (forward, backward data, backward filter) a convolution
// descriptor carrying the math type of the algorithm chosen for it, the
// algorithm and its workspace size.
type convPlan struct {
	key     convKey
	x, y, b cuda.TensorDesc // input, output, bias [1, Co, 1, 1]
	w       cuda.FilterDesc
	conv    [3]cuda.ConvDesc
	algo    [3]int
	ws      [3]int64
	found   [3]bool
	none    [3]bool // searched, and no algorithm was usable
	// The backend API (convgraph.go), by direction: the plan, or why the
	// direction runs through the legacy API instead ("" when it does not).
	graph    [3]*convGraph
	graphWhy [3]string
}

// convMath is the math type the algorithm search starts from.
func (b *Backend) convMath() int {
	if b.strict {
		return cuda.DNNFMAMath
	}
	return cuda.DNNDefaultMath
}

// plan returns the plan of convolving x [N,Ci,H,W] with w [Co,Ci,K,K].
func (b *Backend) plan(x, w *tensor.Tensor, pad int) *convPlan {
	if len(x.Shape) != 4 || len(w.Shape) != 4 || w.Shape[1] != x.Shape[1] || w.Shape[2] != w.Shape[3] || pad < 0 {
		panic(fmt.Sprintf("gpu: convolution of %v with weights %v, pad %d", x.Shape, w.Shape, pad))
	}
	return b.planFor(convKey{n: x.Shape[0], ci: x.Shape[1], h: x.Shape[2], w: x.Shape[3], co: w.Shape[0], k: w.Shape[2], pad: pad, half: isHalf(x), nhwc: channelsLast(x)})
}

// planFor returns the plan of the geometry key, made the first time.
func (b *Backend) planFor(key convKey) *convPlan {
	if p, ok := b.desc.convs[key]; ok {
		return p
	}
	pad := key.pad
	oh, ow := key.h+2*pad-key.k+1, key.w+2*pad-key.k+1
	dt := cuda.DNNFloat
	if key.half {
		dt = cuda.DNNBFloat16
	}
	f := cuda.DNNTensorNCHW
	if key.nhwc {
		f = cuda.DNNTensorNHWC
	}
	p := &convPlan{key: key,
		x: b.tensor4of(f, dt, key.n, key.ci, key.h, key.w),
		y: b.tensor4of(f, dt, key.n, key.co, oh, ow),
		b: b.channelDesc(key.co),
		w: b.filter4of(f, dt, key.co, key.ci, key.k, key.k),
	}
	math := b.convMath()
	if key.half {
		// bf16 takes tensor cores only when asked: under the default
		// math cuDNN's search offers Winograd and FFT kernels on CUDA
		// cores (measured on an H200: 3x slower than TF32).
		math = cuda.DNNTensorOpMath
	}
	for i := range p.conv {
		c, err := b.dnn.NewConv2d(pad, math)
		b.must(err, key.String())
		p.conv[i] = c
	}
	b.desc.convs[key] = p
	return p
}

// outShape is the shape the output of p must have.
func (p *convPlan) outShape() []int {
	k := p.key
	return []int{k.n, k.co, k.h + 2*k.pad - k.k + 1, k.w + 2*k.pad - k.k + 1}
}

// descs are the descriptors of a direction, in cuDNN's argument order.
func (p *convPlan) descs(dir cuda.ConvDir) (a, bb, o uintptr) {
	x, y, w := uintptr(p.x), uintptr(p.y), uintptr(p.w)
	switch dir {
	case cuda.ConvForward:
		return x, w, y
	case cuda.ConvBackwardData:
		return w, y, x
	}
	return x, y, w
}

// algorithm picks, the first time a direction of p runs, the fastest
// algorithm cuDNN measures that fits the workspace limit (and is
// deterministic when asked), sets its math type on the direction's
// descriptor, and grows the shared workspace to fit it. It panics, naming
// the geometry and every algorithm's status, when none is usable.
func (b *Backend) algorithm(p *convPlan, dir cuda.ConvDir) {
	if !b.findAlgorithm(p, dir) {
		a, bb, o := p.descs(dir)
		perfs, err := b.dnn.FindConv(dir, b.dnnH, a, bb, p.conv[dir], o)
		detail := fmt.Sprintf("%s: %s", p.key, describePerfs(perfs, b.workspaceLimit()))
		if err != nil { // the search itself failed: its status says why
			detail = fmt.Sprintf("%s: %v", p.key, err)
		}
		if p.graphWhy[dir] != "" {
			detail += "; " + p.graphWhy[dir]
		}
		panic(&cuda.Error{Call: "cudnnFindConvolution" + dir.String() + "Algorithm", Lib: cuda.LibDNN, Name: "no usable algorithm",
			Detail: detail, Hint: b.oomHint(0)})
	}
}

// findAlgorithm is algorithm, reporting whether a usable algorithm was
// found instead of panicking (the answer is kept: a direction without one
// is searched once). Where the backend API builds a plan for the
// direction (convgraph.go) that is the answer, and the legacy search is
// not made.
func (b *Backend) findAlgorithm(p *convPlan, dir cuda.ConvDir) bool {
	if b.graphReady(p, dir) {
		return true
	}
	if p.found[dir] {
		return true
	}
	if p.none[dir] {
		return false
	}
	a, bb, o := p.descs(dir)
	start := time.Now()
	perfs, err := b.dnn.FindConv(dir, b.dnnH, a, bb, p.conv[dir], o)
	b.search.legacy++
	b.search.legacyTime += time.Since(start)
	b.must(err, p.key.String())
	limit := b.workspaceLimit()
	for _, pf := range perfs {
		if pf.Status != 0 || pf.Memory > limit || (b.opt.Deterministic && pf.Determinism != cuda.DNNDeterministic) {
			continue
		}
		// ALLOW_CONVERSION may round float data to half precision: more
		// than TF32 gives away, so never taken.
		if pf.MathType == cuda.DNNTensorOpAllow {
			continue
		}
		// Strict fp32 keeps CUDNN_FMA_MATH whatever the search reports;
		// tf32 takes the algorithm's own math type, as PyTorch does.
		math := pf.MathType
		if b.strict {
			math = cuda.DNNFMAMath
		}
		if b.dnn.SetConvMathType(p.conv[dir], math) != nil {
			continue
		}
		ws, err := b.dnn.ConvWorkspace(dir, b.dnnH, a, bb, p.conv[dir], o, pf.Algo)
		if err != nil || ws > limit {
			continue
		}
		p.algo[dir], p.ws[dir], p.found[dir] = pf.Algo, ws, true
		b.grow(&b.mem.ws, ws, "the cuDNN workspace")
		return true
	}
	p.none[dir] = true
	return false
}

// workspaceLimit is the most workspace one algorithm may take: half of
// the free memory plus what the workspace holds already, at most
// maxWorkspace.
func (b *Backend) workspaceLimit() int64 {
	free, _, err := b.drv.MemGetInfo()
	b.must(err, "")
	limit := int64(maxWorkspace)
	if b.opt.MaxWorkspaceMiB > 0 {
		limit = int64(b.opt.MaxWorkspaceMiB) << 20
	}
	return min(limit, free/2+b.mem.ws.bytes)
}

func describePerfs(perfs []cuda.ConvPerf, limit int64) string {
	var s []string
	for _, p := range perfs {
		s = append(s, fmt.Sprintf("algo %d: %s, %s, math %d", p.Algo, cuda.StatusName(cuda.LibDNN, p.Status), formatBytes(p.Memory), p.MathType))
	}
	return fmt.Sprintf("workspace limit %s; %s", formatBytes(limit), strings.Join(s, "; "))
}

// run runs direction dir of p, which algorithm or findAlgorithm settled:
// through the backend API's plan where there is one, else the legacy
// algorithm. A plan whose every candidate fails at its first run (when
// they are timed) leaves the direction to the legacy search, made here.
func (b *Backend) run(p *convPlan, dir cuda.ConvDir, a, bb, o cuda.DevicePtr) {
	if p.graph[dir] != nil && b.graphRun(p, dir, a, bb, o) {
		return
	}
	if !p.found[dir] {
		b.algorithm(p, dir)
	}
	ad, bd, od := p.descs(dir)
	b.grow(&b.mem.ws, p.ws[dir], "the cuDNN workspace") // as graphRun's
	err := b.dnn.ConvRun(dir, b.dnnH, 1, ad, a, bd, bb, p.conv[dir], p.algo[dir], b.mem.ws.ptr, p.ws[dir], 0, od, o)
	b.must(err, p.key.String())
}

// ConvForward: y = conv(x, w) + bias.
func (b *Backend) ConvForward(y, x, w, bias *tensor.Tensor, pad int) {
	if b.rec.mode != eager && b.recorded(newSig(sigConvForward).t(y).t(x).t(w).t(bias).v(uint64(pad))) {
		return
	}
	defer b.op()()
	p := b.plan(x, w, pad)
	if !tensor.SameShape(y.Shape, p.outShape()) || (bias != nil && bias.Size() != p.key.co) {
		panic(fmt.Sprintf("gpu: convolution output %v / bias %v for %s", y.Shape, bias, p.key))
	}
	if halfOps("convolution", x, y) {
		b.convForwardHalf(p, y, x, w, bias)
		return
	}
	if p.key.nhwc {
		b.convForwardNHWC(p, y, x, w, bias)
		return
	}
	b.algorithm(p, cuda.ConvForward)
	ptr := b.stage(in(x), in(w), in(bias), out(y))
	b.run(p, cuda.ConvForward, ptr[0], ptr[1], ptr[3])
	if bias != nil {
		b.must(b.dnn.AddTensor(b.dnnH, 1, p.b, ptr[2], 1, p.y, ptr[3]), p.key.String())
	}
	b.unstage()
}

// ConvBackwardData: dx from dy and w.
func (b *Backend) ConvBackwardData(dx, dy, w *tensor.Tensor, pad int) {
	if b.rec.mode != eager && b.recorded(newSig(sigConvBackwardData).t(dx).t(dy).t(w).v(uint64(pad))) {
		return
	}
	defer b.op()()
	p := b.plan(dx, w, pad)
	if !tensor.SameShape(dy.Shape, p.outShape()) {
		panic(fmt.Sprintf("gpu: convolution gradient %v for %s", dy.Shape, p.key))
	}
	if halfOps("convolution gradient", dx, dy) {
		b.convBackwardDataHalf(p, dx, dy, w)
		return
	}
	if p.key.nhwc {
		b.algorithm(p, cuda.ConvBackwardData)
		wk := b.convWeights(p, w)
		ptr := b.stage(in(dy), out(dx))
		b.run(p, cuda.ConvBackwardData, wk, ptr[0], ptr[1])
		b.unstage()
		return
	}
	b.algorithm(p, cuda.ConvBackwardData)
	ptr := b.stage(in(w), in(dy), out(dx))
	b.run(p, cuda.ConvBackwardData, ptr[0], ptr[1], ptr[2])
	b.unstage()
}

// ConvBackwardFilter: dw from x and dy, db = Σ dy over batch and space
// (unless db is nil).
func (b *Backend) ConvBackwardFilter(dw, db, x, dy *tensor.Tensor, pad int) {
	if b.rec.mode != eager && b.recorded(newSig(sigConvBackwardFilter).t(dw).t(db).t(x).t(dy).v(uint64(pad))) {
		return
	}
	defer b.op()()
	p := b.plan(x, dw, pad)
	if !tensor.SameShape(dy.Shape, p.outShape()) || (db != nil && db.Size() != p.key.co) {
		panic(fmt.Sprintf("gpu: convolution gradient %v / bias gradient %v for %s", dy.Shape, db, p.key))
	}
	if halfOps("convolution gradient", x, dy) {
		b.convBackwardFilterHalf(p, dw, db, x, dy)
		return
	}
	if p.key.nhwc {
		b.convBackwardFilterNHWC(p, dw, db, x, dy)
		return
	}
	b.algorithm(p, cuda.ConvBackwardFilter)
	ptr := b.stage(in(x), in(dy), out(dw), out(db))
	b.run(p, cuda.ConvBackwardFilter, ptr[0], ptr[1], ptr[2])
	if db != nil {
		b.must(b.dnn.ConvBackwardBias(b.dnnH, 1, p.y, ptr[1], 0, p.b, ptr[3]), p.key.String())
	}
	b.unstage()
}

// Channels-last float32 convolutions (Options.ChannelsLast): cuDNN reads
// KRSC weights, so each direction that reads them gets a transposed copy
// in scratch (convWeights), and the weight gradient comes back through one;
// the bias and its gradient are the project's kernels (cuDNN's bias calls
// take the NCHW descriptors).

func (b *Backend) convForwardNHWC(p *convPlan, y, x, w, bias *tensor.Tensor) {
	b.algorithm(p, cuda.ConvForward)
	wk := b.convWeights(p, w)
	ptr := b.stage(in(x), out(y))
	b.run(p, cuda.ConvForward, ptr[0], wk, ptr[1])
	b.unstage()
	b.addBias(p, y, bias)
}

// addBias adds a convolution's float32 bias (unless nil) to its output y,
// bf16 or channels-last, in the project's kernel.
func (b *Backend) addBias(p *convPlan, y, bias *tensor.Tensor) {
	if bias == nil {
		return
	}
	g, _, _ := b.bnGeometry(y, 0)
	b.must(b.k.BiasAdd(b.stream, g, b.ptr(y), b.ptr(bias)), p.key.String())
}

// biasGrad sums dy (bf16 or channels-last) into db, unless db is nil.
func (b *Backend) biasGrad(p *convPlan, db, dy *tensor.Tensor) {
	if db == nil {
		return
	}
	g, part, _ := b.bnGeometry(dy, 0) // its partial sums, as batch norm's statistics
	b.must(b.k.BiasGrad(b.stream, g, b.ptr(db), b.ptr(dy), part), p.key.String())
}

func (b *Backend) convBackwardFilterNHWC(p *convPlan, dw, db, x, dy *tensor.Tensor) {
	b.algorithm(p, cuda.ConvBackwardFilter)
	b.grow(&b.mem.dw16, 4*int64(dw.Size()), "KRSC weight gradients")
	ptr := b.stage(in(x), in(dy))
	b.run(p, cuda.ConvBackwardFilter, ptr[0], ptr[1], b.mem.dw16.ptr)
	b.unstage()
	b.convGrad32(p, dw, b.mem.dw16.ptr)
	b.biasGrad(p, db, dy)
}

// ConvBackward runs cuDNN's two backward passes: they share nothing that
// cuDNN would let the backend reuse.
func (b *Backend) ConvBackward(dx, dw, db, x, dy, w *tensor.Tensor, pad int) {
	b.ConvBackwardFilter(dw, db, x, dy, pad)
	if dx != nil {
		b.ConvBackwardData(dx, dy, w, pad)
	}
}
