package train

import "testing"

// TestRecipesAsREADME pins the recipes' settings to README's words. The
// seed's: VGG16-BN at 224x224, SGD lr 1e-3 momentum 0.9 (no weight decay,
// no nesterov), StepLR ×0.1 every 10 epochs, batch 64, 100 epochs,
// RandomResizedCrop augmentation. --recipe cifar: 32x32, pad-crop + flip,
// batch 256, nesterov SGD (momentum 0.9) with weight decay 5e-4, a 2-epoch
// linear warm-up to lr 0.05 then linear decay to 0 (onecycle), 30 epochs.
func TestRecipesAsREADME(t *testing.T) {
	type settings struct {
		arch                 string
		bn                   bool
		size, epochs, batch  int
		lr, momentum, wd     float64
		nesterov             bool
		schedule             string
		stepSize             int
		gamma, warmup        float64
		augment              string
		hidden, classes      int
		dropout, labelSmooth float64
	}
	get := func(o Options) settings {
		return settings{o.Model.Arch, o.Model.BatchNorm, o.Model.ImageSize, o.Epochs, o.Batch, o.LR, o.Momentum, o.WeightDecay,
			o.Nesterov, o.Schedule, o.StepSize, o.Gamma, o.Warmup, o.Augment, o.Model.Hidden, o.Model.Classes, o.Model.Dropout, o.LabelSmoothing}
	}
	seed := settings{arch: "vgg16", bn: true, size: 224, epochs: 100, batch: 64, lr: 1e-3, momentum: 0.9, schedule: "step",
		stepSize: 10, gamma: 0.1, augment: "seed", hidden: 4096, classes: 10, dropout: 0.5}
	cifar := seed
	cifar.size, cifar.epochs, cifar.batch, cifar.lr, cifar.wd, cifar.nesterov = 32, 30, 256, 0.05, 5e-4, true
	cifar.schedule, cifar.warmup, cifar.augment = "onecycle", 2, "cifar"
	for _, c := range []struct {
		name string
		o    Options
		want settings
	}{{"seed", SeedRecipe(), seed}, {"cifar", CIFARRecipe(), cifar}} {
		if got := get(c.o); got != c.want {
			t.Errorf("--recipe %s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
		if err := c.o.Validate(); err != nil {
			t.Errorf("--recipe %s: %v", c.name, err)
		}
	}
}
