//go:build linux && cgo

package gpu

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

func TestParsePrecision(t *testing.T) {
	for p, want := range map[string][2]bool{"": {}, "tf32": {}, "TF32": {}, "fp32": {true, false}, "bf16": {false, true}, "BF16": {false, true}} {
		if strict, bf16, err := parsePrecision(p); err != nil || strict != want[0] || bf16 != want[1] {
			t.Errorf("parsePrecision(%q) = %v, %v, %v", p, strict, bf16, err)
		}
	}
	if _, err := New(Options{Precision: "fp16"}); err == nil || !strings.Contains(err.Error(), "want tf32, fp32 or bf16") {
		t.Errorf("New with precision fp16: %v", err)
	}
}

// TestNewExplainsMissingGPU: without a GPU, New says what is missing.
func TestNewExplainsMissingGPU(t *testing.T) {
	if ok, _ := cuda.Probe().Usable(); ok {
		t.Skip("a GPU is usable here")
	}
	_, err := New(Options{})
	if err == nil {
		t.Fatal("New succeeded without a usable GPU")
	}
	if !strings.Contains(err.Error(), "--device cpu") {
		t.Errorf("error does not suggest --device cpu: %v", err)
	}
	t.Logf("New: %v", err)
}

func TestUploadDownloadFillCopy(t *testing.T) { precisions(t, testUploadDownloadFillCopy) }

func testUploadDownloadFillCopy(t *testing.T, be *Backend, _ float64) {
	old := stageChunk
	stageChunk = 4096 // several chunks each way
	defer func() { stageChunk = old }()
	w := newTwin(t, be, 1)
	data := w.normal(10007, 1)
	big := be.New(10012)
	defer be.Free(big)
	zero := make([]float32, 10012)
	be.Download(zero, big)
	for i, v := range zero {
		if v != 0 {
			t.Fatalf("New is not zero-filled: [%d] = %v", i, v)
		}
	}
	v := big.View(3, 10007)
	be.Upload(v, data)
	got := make([]float32, 10007)
	be.Download(got, v)
	for i := range got {
		if got[i] != data[i] {
			t.Fatalf("round trip [%d] = %v, want %v", i, got[i], data[i])
		}
	}
	be.Download(zero, big)
	if zero[0] != 0 || zero[2] != 0 || zero[3] != data[0] || zero[10011] != 0 {
		t.Errorf("upload into a view touched its neighbours: %v … %v", zero[:5], zero[10009:])
	}
	dst := be.New(10007)
	defer be.Free(dst)
	be.Copy(dst, v)
	be.Fill(v, -2.5)
	be.Download(got, dst)
	if got[0] != data[0] || got[10006] != data[10006] {
		t.Errorf("copy: %v", got[:3])
	}
	be.Download(got, v)
	if got[0] != -2.5 || got[10006] != -2.5 {
		t.Errorf("fill: %v", got[:3])
	}
}

func TestMemoryAccounting(t *testing.T) { precisions(t, testMemoryAccounting) }

func testMemoryAccounting(t *testing.T, be *Backend, _ float64) {
	before := be.CurrentBytes()
	be.ResetPeak()
	x := be.New(1 << 20)
	if got := be.CurrentBytes() - before; got != 4<<20 {
		t.Errorf("New(1<<20) holds %d bytes more", got)
	}
	if be.PeakBytes() < be.CurrentBytes() {
		t.Errorf("peak %d below current %d", be.PeakBytes(), be.CurrentBytes())
	}
	// The peak's parts: the new float32 tensor among the float32 tensors,
	// the cuBLAS workspace, nothing unaccounted; all of it the peak.
	var sum int64
	parts := be.PeakParts()
	for _, v := range parts {
		sum += v
	}
	if sum != be.PeakBytes() || parts["float32 tensors"] < 4<<20 || parts["the cuBLAS workspace"] != blasWorkspace || parts["other"] > 8*maxSlots {
		t.Errorf("peak %d bytes, parts %v (sum %d)", be.PeakBytes(), parts, sum)
	}
	be.Free(x)
	be.Free(x) // a second Free does nothing
	if be.CurrentBytes() != before {
		t.Errorf("Free left %d bytes", be.CurrentBytes()-before)
	}
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "used after Free") {
				t.Errorf("use after Free: panic %v", r)
			}
		}()
		be.Fill(x, 1)
	}()
}

func TestOutOfMemoryNamesSizeAndMemory(t *testing.T) {
	precisions(t, testOutOfMemoryNamesSizeAndMemory)
}

func testOutOfMemoryNamesSizeAndMemory(t *testing.T, be *Backend, _ float64) {
	defer func() {
		r := recover()
		err, ok := r.(*cuda.Error)
		if !ok {
			t.Fatalf("panic %v (%T), want a *cuda.Error", r, r)
		}
		msg := err.Error()
		// The size and the memory there is; what to do is the command's to
		// say (cmd/vgg16's TestOutOfMemoryAdvice), not the backend's.
		if !cuda.IsOutOfMemory(err) || !strings.Contains(msg, "4096.00 GiB") || !strings.Contains(msg, "GiB free of 8.00 GiB") || !strings.Contains(msg, "held by this program") || strings.Contains(msg, "--") {
			t.Errorf("out-of-memory error: %s", msg)
		}
		t.Log(msg)
		if !errors.Is(err, &cuda.Error{Lib: cuda.LibDriver, Code: cuda.ErrOutOfMemory}) {
			t.Error("errors.Is does not see the driver's code")
		}
	}()
	be.New(1 << 40) // 4 TiB
}

func TestConvolution(t *testing.T) { precisions(t, testConvolution) }

func testConvolution(t *testing.T, be *Backend, tol float64) {
	w := newTwin(t, be, 2)
	for _, s := range []struct{ n, ci, h, wd, co, k, pad, off int }{
		{2, 3, 8, 8, 4, 3, 1, 0},
		{3, 5, 7, 6, 6, 1, 0, 1}, // 1x1 (VGG16-1), misaligned parameters
		{4, 16, 16, 16, 32, 3, 1, 0},
		{2, 8, 5, 9, 8, 3, 0, 3}, // valid padding, misaligned
	} {
		name := fmt.Sprintf("%+v", s)
		oh, ow := s.h+2*s.pad-s.k+1, s.wd+2*s.pad-s.k+1
		x := w.actRandn(1, s.n, s.ci, s.h, s.wd)
		wt := w.view(s.off, w.normal(s.co*s.ci*s.k*s.k, 0.3), s.co, s.ci, s.k, s.k)
		bias := w.view(s.off, w.normal(s.co, 1), s.co)
		y := w.actZeros(s.n, s.co, oh, ow)
		w.c.ConvForward(y.c, x.c, wt.c, bias.c, s.pad)
		be.ConvForward(y.g, x.g, wt.g, bias.g, s.pad)
		w.check(name+" y", y, tol)

		dy := w.actRandn(1, s.n, s.co, oh, ow)
		dx := w.actZeros(s.n, s.ci, s.h, s.wd)
		w.c.ConvBackwardData(dx.c, dy.c, wt.c, s.pad)
		be.ConvBackwardData(dx.g, dy.g, wt.g, s.pad)
		w.check(name+" dx", dx, tol)

		dw := w.view(s.off, make([]float32, s.co*s.ci*s.k*s.k), s.co, s.ci, s.k, s.k)
		db := w.view(s.off, make([]float32, s.co), s.co)
		w.c.ConvBackwardFilter(dw.c, db.c, x.c, dy.c, s.pad)
		be.ConvBackwardFilter(dw.g, db.g, x.g, dy.g, s.pad)
		w.check(name+" dw", dw, tol)
		w.check(name+" db", db, 1e-5)
	}
}

func TestBatchNorm(t *testing.T) { precisions(t, testBatchNorm) }

func testBatchNorm(t *testing.T, be *Backend, tol float64) {
	w := newTwin(t, be, 3)
	for i, shape := range [][]int{{4, 3, 5, 5}, {8, 16, 4, 4}, {6, 10}, {2, 5, 3, 3}} {
		c := shape[1]
		var shift pair // a convolution's bias left out of x, on every other shape
		if i%2 == 1 {
			shift = w.randn(1, c)
		}
		name := fmt.Sprint(shape, " shift ", shift.c != nil)
		x, runMean, runVar := bnInputs(w, shape)
		gamma := w.view(1, w.normal(c, 1), c)
		beta := w.view(2, w.normal(c, 1), c)
		saveMean, saveInv := w.zeros(c), w.zeros(c)
		y := w.actZeros(shape...)
		w.c.BatchNormTrain(y.c, x.c, gamma.c, beta.c, runMean.c, runVar.c, saveMean.c, saveInv.c, shift.c, 0.1, 1e-5)
		be.BatchNormTrain(y.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, saveMean.g, saveInv.g, shift.g, 0.1, 1e-5)
		w.check(name+" y", y, 1e-4)
		w.check(name+" running mean", runMean, 1e-5)
		w.check(name+" running var (unbiased)", runVar, 1e-5)
		w.check(name+" saved mean", saveMean, 1e-5)
		w.check(name+" saved inverse std", saveInv, 1e-5)

		dy := w.actRandn(1, shape...)
		dx, dgamma, dbeta := w.actZeros(shape...), w.view(3, make([]float32, c), c), w.zeros(c)
		w.c.BatchNormBackward(dx.c, dgamma.c, dbeta.c, dy.c, x.c, gamma.c, saveMean.c, saveInv.c)
		be.BatchNormBackward(dx.g, dgamma.g, dbeta.g, dy.g, x.g, gamma.g, saveMean.g, saveInv.g)
		w.check(name+" dx", dx, 1e-4)
		w.check(name+" dgamma", dgamma, 1e-4)
		w.check(name+" dbeta", dbeta, 1e-5)

		w.c.BatchNormInfer(y.c, x.c, gamma.c, beta.c, runMean.c, runVar.c, 1e-5)
		be.BatchNormInfer(y.g, x.g, gamma.g, beta.g, runMean.g, runVar.g, 1e-5)
		w.check(name+" inference y", y, 1e-5)
	}
}

func TestMaxPool(t *testing.T) { precisions(t, testMaxPool) }

func testMaxPool(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 4)
	for _, s := range [][]int{{2, 3, 8, 6}, {4, 16, 7, 7}, {2, 16, 8, 8}} {
		x := w.actRandn(1, s...)
		y := w.actZeros(s[0], s[1], (s[2]-2)/2+1, (s[3]-2)/2+1)
		w.c.MaxPoolForward(y.c, x.c, 2, 2)
		be.MaxPoolForward(y.g, x.g, 2, 2)
		w.same(fmt.Sprint(s, " y"), y)
		dy := w.actRandn(1, y.c.Shape...)
		dx := w.actZeros(s...)
		w.c.MaxPoolBackward(dx.c, dy.c, x.c, y.c, 2, 2)
		be.MaxPoolBackward(dx.g, dy.g, x.g, y.g, 2, 2)
		w.same(fmt.Sprint(s, " dx"), dx)
	}
}

func TestLRN(t *testing.T) { precisions(t, testLRN) }

func testLRN(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 5)
	for _, c := range []struct {
		shape []int
		p     tensor.LRN
	}{
		{[]int{2, 7, 5, 5}, tensor.DefaultLRN},
		{[]int{2, 3, 4, 4}, tensor.DefaultLRN}, // fewer channels than the window
		{[]int{3, 9, 3, 3}, tensor.LRN{Size: 3, Alpha: 0.05, Beta: 0.5, K: 1}},
	} {
		name := fmt.Sprintf("%v %+v", c.shape, c.p)
		x := w.randn(3, c.shape...)
		y := w.zeros(c.shape...)
		w.c.LRNForward(y.c, x.c, c.p)
		be.LRNForward(y.g, x.g, c.p)
		w.check(name+" y", y, 1e-5)
		dy := w.randn(1, c.shape...)
		dx := w.zeros(c.shape...)
		w.c.LRNBackward(dx.c, dy.c, x.c, y.c, c.p)
		be.LRNBackward(dx.g, dy.g, x.g, y.g, c.p)
		w.check(name+" dx", dx, 1e-4)
	}
}

func TestLinear(t *testing.T) { precisions(t, testLinear) }

func testLinear(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 6)
	for _, s := range []struct{ n, in, out int }{{5, 7, 3}, {64, 300, 100}, {1, 513, 10}} {
		name := fmt.Sprintf("%+v", s)
		x := w.randn(1, s.n, s.in)
		wt := w.view(1, w.normal(s.out*s.in, 0.1), s.out, s.in)
		bias := w.view(1, w.normal(s.out, 1), s.out)
		y := w.zeros(s.n, s.out)
		w.c.LinearForward(y.c, x.c, wt.c, bias.c)
		be.LinearForward(y.g, x.g, wt.g, bias.g)
		w.check(name+" y", y, 1e-5)
		dy := w.randn(1, s.n, s.out)
		dx, dw, db := w.zeros(s.n, s.in), w.zeros(s.out, s.in), w.zeros(s.out)
		w.c.LinearBackward(dx.c, dw.c, db.c, dy.c, x.c, wt.c)
		be.LinearBackward(dx.g, dw.g, db.g, dy.g, x.g, wt.g)
		w.check(name+" dx", dx, 1e-5)
		w.check(name+" dw", dw, 1e-5)
		w.same(name+" db", db)
		w.checkWeightGradRows(name, dw, dy, x, 1e-5)
		be.Fill(dw.g, 7)
		be.LinearBackward(nil, dw.g, db.g, dy.g, x.g, wt.g)
		w.check(name+" dw without dx", dw, 1e-5)
		be.Fill(dx.g, 7)
		be.Fill(db.g, 7)
		be.LinearBackward(dx.g, nil, db.g, dy.g, x.g, wt.g)
		w.check(name+" dx without dw", dx, 1e-5)
		w.same(name+" db without dw", db)
	}
}

// checkWeightGradRows computes the weight gradient dw [out, in] (which
// both backends hold, from LinearBackward) again in parts of rows
// (LinearWeightGrad: 3 rows at a time, the last part shorter): each part
// within tol of the CPU's, and within 1e-6 of the rows the GPU's whole
// GEMM wrote (bit for bit where its cuBLAS rounds a part as the whole:
// logged).
func (w *twin) checkWeightGradRows(name string, dw, dy, x pair, tol float64) {
	w.t.Helper()
	out, in := dw.c.Shape[0], dw.c.Shape[1]
	_, whole := w.host(dw)
	same := true
	for r := 0; r < out; r += 3 {
		k := min(3, out-r)
		part := w.zeros(k, in)
		w.c.LinearWeightGrad(part.c, dy.c, x.c, r)
		w.g.LinearWeightGrad(part.g, dy.g, x.g, r)
		what := fmt.Sprintf("%s dw rows %d-%d", name, r, r+k)
		w.check(what, part, tol)
		_, g := w.host(part)
		rows := whole[r*in : (r+k)*in]
		if e := relErr(g, rows); !(e <= 1e-6) {
			w.t.Errorf("%s: relative error %.3g from the whole GEMM's rows", what, e)
		}
		for i := range rows {
			same = same && math.Float32bits(g[i]) == math.Float32bits(rows[i])
		}
	}
	w.t.Logf("%s: the weight gradient in parts of 3 rows is the whole GEMM's bit for bit: %v", name, same)
}

func TestReLU(t *testing.T) { precisions(t, testReLU) }

func testReLU(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 7)
	x := w.randn(1, 3, 4, 5, 6)
	y := w.zeros(3, 4, 5, 6)
	w.c.ReLUForward(y.c, x.c)
	be.ReLUForward(y.g, x.g)
	w.same("y", y)
	dy := w.randn(1, 3, 4, 5, 6)
	dx := w.zeros(3, 4, 5, 6)
	w.c.ReLUBackward(dx.c, dy.c, y.c)
	be.ReLUBackward(dx.g, dy.g, y.g)
	w.same("dx", dx)
	// In place, as the layers use it.
	w.c.ReLUForward(x.c, x.c)
	be.ReLUForward(x.g, x.g)
	w.same("in-place y", x)
	w.c.ReLUBackward(dy.c, dy.c, x.c)
	be.ReLUBackward(dy.g, dy.g, x.g)
	w.same("in-place dx", dy)
}

// TestDropoutMaskIsTheCPUs: the GPU draws the CPU's mask bit for bit.
func TestDropoutMaskIsTheCPUs(t *testing.T) { precisions(t, testDropoutMaskIsTheCPUs) }

func testDropoutMaskIsTheCPUs(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 8)
	// 0.15: float32(1/(1-p)) (the CPU's and PyTorch's scale) is 1.1764706,
	// 1/float32(1-p) 1.1764705; at 0.5 and 0.1 the two agree.
	for _, p := range []float64{0.5, 0.1, 0.15} {
		for layer := uint64(0); layer < 2; layer++ {
			key := tensor.DropoutKey(1234, 17, layer)
			x := w.randn(1, 4, 10007)
			y := w.zeros(4, 10007)
			w.c.DropoutForward(y.c, x.c, p, key)
			be.DropoutForward(y.g, x.g, p, key)
			w.same(fmt.Sprintf("p=%g layer %d forward", p, layer), y)
			dy := w.randn(1, 4, 10007)
			dx := w.zeros(4, 10007)
			w.c.DropoutBackward(dx.c, dy.c, p, key)
			be.DropoutBackward(dx.g, dy.g, p, key)
			w.same(fmt.Sprintf("p=%g layer %d backward", p, layer), dx)
		}
	}
}

func TestSoftmaxCrossEntropy(t *testing.T) { precisions(t, testSoftmaxCrossEntropy) }

func testSoftmaxCrossEntropy(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 9)
	for _, c := range []struct {
		n, classes int
		smoothing  float64
		grad       bool
	}{{8, 10, 0, true}, {8, 10, 0.1, true}, {130, 1000, 0.05, true}, {3, 10, 0, false}} {
		name := fmt.Sprintf("%+v", c)
		logits := w.randn(3, c.n, c.classes)
		lab := make([]float32, c.n)
		for i := range lab {
			lab[i] = float32(w.r.IntN(c.classes))
		}
		labels := w.put(lab, c.n)
		loss := w.zeros(1)
		var dl pair
		if c.grad {
			dl = w.zeros(c.n, c.classes)
		}
		w.c.SoftmaxCrossEntropy(loss.c, dl.c, logits.c, labels.c, c.smoothing)
		be.SoftmaxCrossEntropy(loss.g, dl.g, logits.g, labels.g, c.smoothing)
		w.check(name+" loss", loss, 1e-6)
		if c.grad {
			w.check(name+" dlogits", dl, 1e-6)
		}
	}
}

// TestSGDStep: the update is the CPU's bit for bit.
func TestSGDStep(t *testing.T) { precisions(t, testSGDStep) }

func testSGDStep(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 10)
	for _, h := range []tensor.SGD{
		{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4},
		{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4, Nesterov: true},
		{LR: 0.01, Momentum: 0.8, Dampening: 0.3},
		{LR: 0.2},
	} {
		p, g, m := w.randn(1, 10001), w.randn(1, 10001), w.zeros(10001)
		for step := 0; step < 3; step++ {
			w.c.SGDStep(p.c, g.c, m.c, h, step == 0)
			be.SGDStep(p.g, g.g, m.g, h, step == 0)
		}
		w.same(fmt.Sprintf("%+v p", h), p)
		w.same(fmt.Sprintf("%+v momentum", h), m)
	}
}

// bnInputs are a batch-norm input of shape, with a mean and spread away
// from (0, 1), and running statistics to start from.
// testImageCopies: activation images (channels-last with bf16 or
// Options.ChannelsLast) keep NCHW values through Upload, Download and
// copies to and from float32 images (New) and rows (flatten's).
func testImageCopies(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 41)
	data := w.normal(2*16*3*5, 1)
	want := data
	if be.BF16() {
		want = rounded(data)
	}
	x := tensor.NewActivation(be, 2, 16, 3, 5)
	f := be.New(2, 16, 3, 5)
	rows := tensor.NewActivation(be, 2, 16*3*5)
	defer be.Free(x)
	defer be.Free(f)
	defer be.Free(rows)
	be.Upload(x, data)
	compareHost(t, "activation image upload/download", download(be, x), want, 0)
	be.Fill(x, 0)
	be.Upload(f, data)
	be.Copy(x, f)
	compareHost(t, "float32 image to activation", download(be, x), want, 0)
	be.Copy(rows, x)
	compareHost(t, "activation image to rows (NCHW order)", download(be, rows), want, 0)
	be.Fill(x, 0)
	be.Copy(x, rows)
	be.Fill(f, 0)
	be.Copy(f, x)
	compareHost(t, "rows to an activation image to float32", download(be, f), want, 0)
	if l := tensor.Layouts(be); l.ChannelsLast(x) != be.nhwc || l.ChannelsLast(f) || l.ChannelsLast(rows) {
		t.Errorf("ChannelsLast: activation image %v, float32 image %v, rows %v; want %v, false, false",
			l.ChannelsLast(x), l.ChannelsLast(f), l.ChannelsLast(rows), be.nhwc)
	}
}

func bnInputs(w *twin, shape []int) (x, runMean, runVar pair) {
	c := shape[1]
	xs := w.normal(tensor.Volume(shape), 2)
	for i := range xs {
		xs[i] += 0.5
	}
	rv := w.normal(c, 1)
	for i := range rv {
		rv[i] = 1 + float32(math.Abs(float64(rv[i])))
	}
	return w.act(xs, shape...), w.randn(1, c), w.put(rv, c)
}

// TestTally: the running metrics are the CPU's bit for bit, ties (the
// first maximum wins) and a row of NaNs (never correct) included.
func TestTally(t *testing.T) { precisions(t, testTally) }

func testTally(t *testing.T, be *Backend, _ float64) {
	w := newTwin(t, be, 12)
	acc := w.put([]float32{1.5, 3}, 2)
	for _, c := range []struct{ n, classes int }{{7, 10}, {300, 10}, {5, 1000}} {
		lg := w.normal(c.n*c.classes, 1)
		for i := range lg {
			lg[i] = float32(math.Round(float64(lg[i])*2) / 2) // many ties
		}
		for j := range c.classes {
			lg[j] = float32(math.NaN())
		}
		lab := make([]float32, c.n)
		for i := range lab {
			lab[i] = float32(w.r.IntN(c.classes))
			if i%3 == 0 { // make some rows right: the label at the first maximum
				best := 0
				for j := range c.classes {
					if lg[i*c.classes+j] > lg[i*c.classes+best] {
						best = j
					}
				}
				lab[i] = float32(best)
			}
		}
		logits, labels := w.put(lg, c.n, c.classes), w.put(lab, c.n)
		loss := w.put([]float32{float32(w.r.Float64() * 3)}, 1)
		w.c.Tally(acc.c, loss.c, logits.c, labels.c)
		be.Tally(acc.g, loss.g, logits.g, labels.g)
		w.same(fmt.Sprintf("tally %d×%d", c.n, c.classes), acc)
	}
	if got := cpu.Data(acc.c)[1]; got < 3+100 {
		t.Errorf("only %v rows counted correct: the test's rows were meant to be a third right", got-3)
	}
}
