//go:build linux && cgo

package gpu

import (
	"testing"

	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/tensor"
)

func TestProfile(t *testing.T) { precisions(t, testProfile) }

// testProfile profiles a training step of the small VGG-BN issued op by op
// and checks that every op of it was timed once per call, with some GPU
// time; then a replayed recorded step, which shows as one EndStep.
func testProfile(t *testing.T, be *Backend, _ float64) {
	cfg := smallConfig(t) // 16,16,M,32,M: three convolutions, three linears
	m, err := layers.New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.Init(3)
	w := newTwin(t, be, 5)
	n := 4
	x := w.actRandn(1, n, 3, cfg.ImageSize, cfg.ImageSize).g
	labels := w.put(make([]float32, n), n).g
	loss, dl, mom := be.New(1), be.New(n, cfg.Classes), be.New(m.FlatSize())
	defer func() {
		for _, t := range []*tensor.Tensor{loss, dl, mom} {
			be.Free(t)
		}
	}()
	step := func(record bool) {
		if record {
			be.BeginStep("profile")
		}
		be.SoftmaxCrossEntropy(loss, dl, m.Forward(x, true), labels, 0)
		m.Backward(dl)
		be.SGDStep(m.Weights(), m.Grads(), mom, tensor.SGD{LR: 0.01, Momentum: 0.9}, false)
		if record {
			be.EndStep()
		}
	}
	step(false) // algorithms and buffers
	be.Profile(true)
	step(false)
	rows, err := be.ProfileReport()
	be.Profile(false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]ProfileRow{}
	for _, r := range rows {
		got[r.Op] = r
		t.Logf("%-20s %3d calls %8.3f ms", r.Op, r.Calls, r.Ms)
	}
	want := map[string]int{
		"ConvForward": 3, "ConvBackwardFilter": 3, "ConvBackwardData": 2, // not for the first layer
		"BatchNormTrain": 3, "BatchNormBackward": 3, "ReLUForward": 5, "ReLUBackward": 5,
		"MaxPoolForward": 2, "MaxPoolBackward": 2, "LinearForward": 3, "LinearBackward": 3,
		"dropout": 4, "SoftmaxCrossEntropy": 1, "SGDStep": 1,
	}
	kernels := map[string]string{"SGDStep": "sgd_step", "SoftmaxCrossEntropy": "softmax_xent_rows", "MaxPoolForward": "max_pool_forward"}
	if be.nhwc {
		// Fused batch norm + ReLU, two of them with the max-pool after
		// them, and flatten copies the 4x4 maps into rows and back.
		for _, op := range []string{"BatchNormTrain", "BatchNormBackward", "MaxPoolForward", "MaxPoolBackward"} {
			delete(want, op)
			delete(kernels, op)
		}
		want["BatchNormReLUTrain"], want["BatchNormReLUBackward"], want["ReLUForward"], want["ReLUBackward"], want["Copy"] = 1, 1, 2, 2, 2
		want["BatchNormReLUPoolTrain"], want["BatchNormReLUPoolBackward"] = 2, 2
		kernels["BatchNormReLUPoolTrain"] = "bn_apply_pool_nhwc_f32"
	}
	for op, calls := range want {
		if r := got[op]; r.Calls != calls || !(r.Ms > 0) {
			t.Errorf("%s: %d calls, %g ms; want %d calls and some time", op, r.Calls, r.Ms, calls)
		}
	}
	// The project's kernels show within their ops, one call per op call.
	for op, kernel := range kernels {
		r, found := got[op], false
		for _, k := range r.Parts {
			if k.Op == kernel {
				found = k.Calls == r.Calls && k.Ms > 0
			}
		}
		if !found {
			t.Errorf("%s: parts %+v, want %s once a call", op, r.Parts, kernel)
		}
	}
	if !be.Graphs() {
		return
	}
	step(true) // warm-up
	// A step recorded while profiling is not timed (its ops run only when
	// the graph is launched), and nothing of it is left in the report.
	be.Profile(true)
	step(true) // capture
	rows, err = be.ProfileReport()
	if err != nil || len(rows) != 0 {
		t.Errorf("profiling a recorded step: %+v, %v; want no rows and no error", rows, err)
	}
	step(true)
	rows, err = be.ProfileReport()
	be.Profile(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Op != "EndStep" || rows[0].Calls != 1 || !(rows[0].Ms > 0) {
		t.Errorf("a replayed step profiled as %+v, want one EndStep with some time", rows)
	}
}
