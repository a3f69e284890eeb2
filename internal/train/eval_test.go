package train

import "testing"

// TestArgmaxFirstOfTies: evaluation's prediction is torch.argmax's, the
// first of equal maxima.
func TestArgmaxFirstOfTies(t *testing.T) {
	for _, c := range []struct {
		v    []float32
		want int
	}{{[]float32{1, 3, 3, 0}, 1}, {[]float32{2, 2, 2}, 0}, {[]float32{0, -1, 5, 5}, 2}, {[]float32{-3, -2, -1}, 2}} {
		if got := argmax(c.v); got != c.want {
			t.Errorf("argmax(%v) = %d, want %d", c.v, got, c.want)
		}
	}
}

// TestEvalNormalisationPerAugment: --augment chooses the normalisation of
// training and evaluation alike (README): ImageNet's mean and std with
// seed, CIFAR-10's ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
// with cifar and none.
func TestEvalNormalisationPerAugment(t *testing.T) {
	imagenet := [2][3]float32{{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}}
	cifar10 := [2][3]float32{{0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}}
	for augment, want := range map[string][2][3]float32{"seed": imagenet, "cifar": cifar10, "none": cifar10} {
		o := smallOptions()
		o.Augment = augment
		r := &Run{Opt: o}
		n := r.evalTransform().Norm
		if got := [2][3]float32{n.Mean, n.Std}; got != want {
			t.Errorf("--augment %s: evaluation normalises with mean, std %v, want %v", augment, got, want)
		}
		if r.evalTransform().Size != 32 {
			t.Errorf("--augment %s: evaluation at %d, want the model's 32", augment, r.evalTransform().Size)
		}
		if tr := r.transform(); augment == "none" && tr != r.evalTransform() {
			t.Errorf("--augment none trains with %+v, want the evaluation transform", tr)
		}
	}
}
