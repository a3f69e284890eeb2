package cpu_test

import (
	"math"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// TestSGDStepByHand pins torch.optim.SGD's update, worked by hand for one
// parameter p = 1 with gradient 0.5 twice, lr 0.1, momentum 0.9, weight
// decay 0.1, dampening 0: d = g + wd·p; buf = d on the first step, then
// momentum·buf + d; p -= lr·buf, or lr·(d + momentum·buf) with nesterov.
//
//	plain:    d₁ = 0.6, buf = 0.6, p = 0.94;
//	          d₂ = 0.594, buf = 1.134, p = 0.8266
//	nesterov: d₁ = 0.6, buf = 0.6, p = 1 − 0.1·1.14 = 0.886;
//	          d₂ = 0.5886, buf = 1.1286, p = 0.886 − 0.1·1.60434 = 0.725566
//	no momentum: p = 1 − 0.1·0.6 = 0.94; then 0.94 − 0.1·0.594 = 0.8806
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
