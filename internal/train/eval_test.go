package train

import (
	"reflect"
	"slices"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/layers"
)

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

// TestEvalConfusionRowsAreTrueClasses: the confusion matrix is [true
// class][predicted class] and a class's accuracy is its diagonal entry over
// its row (the images of that class), not over all images. A model whose
// weights are all zero but for the last bias, which favours class 2,
// predicts class 2 for every image: with labels 0,0,0,1,2,2,3 the column
// of class 2 holds 3,1,2,1, the other columns nothing; class 2 is right
// on 2 of its 2 images, the others on none; the accuracy is 2/7.
func TestEvalConfusionRowsAreTrueClasses(t *testing.T) {
	o := smallOptions()
	be := cpu.New()
	m, err := layers.New(be, o.Model)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	params := m.Params()
	for _, p := range params {
		be.Upload(p.W, make([]float32, p.W.Size()))
	}
	last := params[len(params)-1]
	if last.Name != "classifier.6.bias" {
		t.Fatalf("last parameter %s, want classifier.6.bias", last.Name)
	}
	be.Upload(last.W, []float32{0, 0, 5, 0})
	ds := synthetic(7, 1)
	ds.Labels = []uint8{0, 0, 0, 1, 2, 2, 3}
	ev, err := Evaluate(m, ds, EvalTransformFor("cifar", 32), 4, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{{0, 0, 3, 0}, {0, 0, 1, 0}, {0, 0, 2, 0}, {0, 0, 1, 0}}
	if !reflect.DeepEqual(ev.Confusion, want) {
		t.Errorf("confusion %v, want %v ([true][predicted])", ev.Confusion, want)
	}
	if got := []float64{float64(ev.PerClass[0]), float64(ev.PerClass[1]), float64(ev.PerClass[2]), float64(ev.PerClass[3])}; !slices.Equal(got, []float64{0, 0, 1, 0}) {
		t.Errorf("per-class accuracy %v, want [0 0 1 0]", got)
	}
	if ev.Images != 7 || ev.Acc != 2.0/7 {
		t.Errorf("%d images, accuracy %v, want 7 and 2/7", ev.Images, ev.Acc)
	}
}
