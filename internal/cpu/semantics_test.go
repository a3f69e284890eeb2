package cpu_test

import (
	"math"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// TestSGDStepByHand pins torch.optim.SGD's update, worked by hand for one
// parameter p = 1 with gradient 0.5 twice, lr 0.1, momentum 0.9, weight
// decay 0.1, dampening 0 (but one case): d = g + wd·p; buf = d on the
// first step, then momentum·buf + (1 − dampening)·d; p -= lr·buf, or
// lr·(d + momentum·buf) with nesterov.
//
//	plain:    d₁ = 0.6, buf = 0.6, p = 0.94;
//	          d₂ = 0.594, buf = 1.134, p = 0.8266
//	nesterov: d₁ = 0.6, buf = 0.6, p = 1 − 0.1·1.14 = 0.886;
//	          d₂ = 0.5886, buf = 1.1286, p = 0.886 − 0.1·1.60434 = 0.725566
//	no momentum: p = 1 − 0.1·0.6 = 0.94; then 0.94 − 0.1·0.594 = 0.8806
//	dampening 0.5: as plain, then buf = 0.54 + 0.297 = 0.837, p = 0.8563
func TestSGDStepByHand(t *testing.T) {
	for _, c := range []struct {
		name       string
		h          tensor.SGD
		want1, buf float64 // after the first step
		want2      float64
	}{
		{"plain", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 0.1}, 0.94, 0.6, 0.8266},
		{"nesterov", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 0.1, Nesterov: true}, 0.886, 0.6, 0.725566},
		{"no momentum", tensor.SGD{LR: 0.1, WeightDecay: 0.1}, 0.94, math.NaN(), 0.8806},
		{"dampening", tensor.SGD{LR: 0.1, Momentum: 0.9, WeightDecay: 0.1, Dampening: 0.5}, 0.94, 0.6, 0.8563},
	} {
		be := cpu.New()
		p, g, m := be.New(1), be.New(1), be.New(1)
		be.Fill(p, 1)
		be.Fill(g, 0.5)
		be.Fill(m, float32(math.NaN())) // the first step must not read it
		be.SGDStep(p, g, m, c.h, true)
		if got := float64(cpu.Data(p)[0]); math.Abs(got-c.want1) > 1e-6 {
			t.Errorf("%s: first step p = %.7g, want %.7g", c.name, got, c.want1)
		}
		if !math.IsNaN(c.buf) {
			if got := float64(cpu.Data(m)[0]); math.Abs(got-c.buf) > 1e-6 {
				t.Errorf("%s: first step buf = %.7g, want %.7g", c.name, got, c.buf)
			}
		}
		be.SGDStep(p, g, m, c.h, false)
		if got := float64(cpu.Data(p)[0]); math.Abs(got-c.want2) > 1e-6 {
			t.Errorf("%s: second step p = %.7g, want %.7g", c.name, got, c.want2)
		}
	}
}

// TestLabelSmoothingValue pins CrossEntropyLoss(label_smoothing=ε) as
// PyTorch documents it: (1−ε)·nll + ε·(the mean over the classes of
// −log p), averaged over the batch.
func TestLabelSmoothingValue(t *testing.T) {
	be := cpu.New()
	logits, labels, loss := be.New(2, 3), be.New(2), be.New(1)
	be.Upload(logits, []float32{1, 2, 3, 0, 0, 0})
	be.Upload(labels, []float32{2, 0})
	const eps = 0.1
	// Row 1: log Σ e^x = 3 + log(1 + e⁻¹ + e⁻²); −log p = lse − x.
	lse := 3 + math.Log(1+math.Exp(-1)+math.Exp(-2))
	row1 := (1-eps)*(lse-3) + eps*((lse-1)+(lse-2)+(lse-3))/3
	// Row 2: uniform, −log p = log 3 for every class.
	row2 := math.Log(3)
	want := (row1 + row2) / 2 // ≈ (0.5076060 + 1.0986123) / 2
	be.SoftmaxCrossEntropy(loss, nil, logits, labels, eps)
	if got := float64(cpu.Data(loss)[0]); math.Abs(got-want) > 1e-6 {
		t.Fatalf("loss %.7g, want %.7g", got, want)
	}
	if math.Abs(row1-0.5076060) > 1e-6 {
		t.Fatalf("the worked value: %.7g", row1)
	}
}

// TestBatchNormByHand pins BatchNorm2d's training step, worked by hand for
// one channel of x = 1, 2, 3, 6 (two images of 1x2): mean 3, biased
// variance (4+1+0+9)/4 = 3.5 for the output, unbiased 14/3 for the running
// variance; momentum 0.1 from the initial 0 and 1 gives running mean 0.3
// and running variance 0.9 + 0.1·14/3; with eps 1e-5, gamma 2, beta 1,
// y = 2·(x − 3)/√3.50001 + 1. A shift of 0.5 (the convolution's bias left
// out) moves the running mean only: 0.9·0 + 0.1·3.5.
func TestBatchNormByHand(t *testing.T) {
	be := cpu.New()
	for _, shift := range []float32{0, 0.5} {
		x, y := be.New(2, 1, 1, 2), be.New(2, 1, 1, 2)
		be.Upload(x, []float32{1, 2, 3, 6})
		gamma, beta, rm, rv, sm, si := be.New(1), be.New(1), be.New(1), be.New(1), be.New(1), be.New(1)
		be.Upload(gamma, []float32{2})
		be.Upload(beta, []float32{1})
		be.Upload(rv, []float32{1})
		var sh *tensor.Tensor
		if shift != 0 {
			sh = be.New(1)
			be.Upload(sh, []float32{shift})
		}
		be.BatchNormTrain(y, x, gamma, beta, rm, rv, sm, si, sh, 0.1, 1e-5)
		inv := 1 / math.Sqrt(3.5+1e-5)
		for i, v := range []float64{1, 2, 3, 6} {
			if got, want := float64(cpu.Data(y)[i]), 2*(v-3)*inv+1; math.Abs(got-want) > 1e-6 {
				t.Errorf("shift %g: y[%d] = %.7f, want %.7f", shift, i, got, want)
			}
		}
		for _, c := range []struct {
			what      string
			got, want float64
		}{
			{"running mean", float64(cpu.Data(rm)[0]), 0.1 * (3 + float64(shift))},
			{"running variance", float64(cpu.Data(rv)[0]), 0.9 + 0.1*14.0/3},
			{"saved mean", float64(cpu.Data(sm)[0]), 3},
			{"saved 1/std", float64(cpu.Data(si)[0]), inv},
		} {
			if math.Abs(c.got-c.want) > 1e-6 {
				t.Errorf("shift %g: %s %.7f, want %.7f", shift, c.what, c.got, c.want)
			}
		}
	}
}

// TestTallyTiesTakeFirstClass: a prediction is torch.argmax of the logits,
// which returns the first of equal maxima. Row 1 ties classes 0 and 1
// (label 0: correct), row 2 ties 1 and 2 (label 2: wrong, the prediction
// is 1), row 3 is all equal (label 0: correct), row 4 has a clear
// maximum (class 2, label 2: correct). Tally adds loss·N and the 3 correct.
func TestTallyTiesTakeFirstClass(t *testing.T) {
	be := cpu.New()
	logits, labels, loss, acc := be.New(4, 3), be.New(4), be.New(1), be.New(2)
	be.Upload(logits, []float32{
		5, 5, 1,
		0, 2, 2,
		-1, -1, -1,
		0, 1, 3,
	})
	be.Upload(labels, []float32{0, 2, 0, 2})
	be.Fill(loss, 0.25)
	be.Fill(acc, 0)
	be.Tally(acc, loss, logits, labels)
	if got := cpu.Data(acc); got[0] != 1 || got[1] != 3 {
		t.Fatalf("tally [loss·N, correct] = %v, want [1 3]", got)
	}
}
