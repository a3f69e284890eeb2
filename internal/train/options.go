// Package train runs the training loop: SGD with momentum and weight decay,
// learning-rate schedules, validation every epoch, checkpoints (best by
// validation accuracy, last every epoch), resume, and the metrics log and
// plot. It drives a layers.Model on whatever backend the model lives on.
package train

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/layers"
)

// Options are the hyper-parameters of a run. Every field is a CLI flag.
type Options struct {
	Model          layers.Config `json:"model"`
	Epochs         int           `json:"epochs"`
	Batch          int           `json:"batch"`
	LR             float64       `json:"lr"`       // base (step, cosine) or peak (onecycle) learning rate
	Momentum       float64       `json:"momentum"` // SGD momentum
	WeightDecay    float64       `json:"weight_decay"`
	Nesterov       bool          `json:"nesterov"`
	Schedule       string        `json:"schedule"`  // step, cosine, onecycle, constant
	StepSize       int           `json:"step_size"` // StepLR: epochs between decays
	Gamma          float64       `json:"gamma"`     // StepLR: decay factor
	Warmup         float64       `json:"warmup"`    // epochs of linear warm-up (cosine, onecycle)
	LabelSmoothing float64       `json:"label_smoothing"`
	Augment        string        `json:"augment"` // seed, cifar, none
	Seed           uint64        `json:"seed"`
	Workers        int           `json:"workers"` // data-loading goroutines, 0 = all cores
	// CPUAugment makes the batches on the CPU (Workers goroutines) even on
	// a backend that can make them itself from the dataset held in its
	// memory (the GPU); both give the same batches.
	CPUAugment bool `json:"cpu_augment,omitempty"`
	// Init names a weights file to start from (transfer learning): every
	// tensor whose name and shape match is loaded, the rest of the
	// classifier keeps its initialisation.
	Init string `json:"init,omitempty"`
	// Pretrained names a weights file (torchvision's vgg16-*.pth or
	// vgg16_bn-*.pth, any VGG state dict) to start from as the seed's
	// transfer learning does: everything is loaded except the classifier's
	// last Linear, which starts fresh with Model.Classes outputs (and any
	// other classifier layer whose shape differs, at 32x32). Model must
	// have the file's layers (checkpoint.InferConfig).
	Pretrained string `json:"pretrained,omitempty"`
	// FreezeFeatures trains the classifier only: the feature extractor
	// gets no gradient and no update (its backward is skipped).
	FreezeFeatures bool `json:"freeze_features,omitempty"`
	// RecomputeBN keeps one batch-norm output at a time and recomputes the
	// others in the backward (layers.Model.RecomputeBN): less device
	// memory, one more pass over each output. The same training.
	RecomputeBN bool `json:"recompute_bn,omitempty"`
	// SGDInBackward updates each layer's parameters as soon as the
	// backward has their gradients (layers.Model.BackwardUpdate), which
	// then share one buffer of a layer's size (a part of a large Linear's):
	// less memory, the same training (SGD is element-wise).
	SGDInBackward bool `json:"sgd_in_backward,omitempty"`
	// Data is where the images came from, so that a resumed run trains on
	// the same ones (nil in checkpoints of older versions).
	Data *DataOptions `json:"data,omitempty"`
	// Precision is the GPU's --precision the run trains in (tf32, fp32,
	// bf16; "" on the CPU), which a resumed run keeps unless told otherwise.
	// The device does not read it: the command opens the device with it.
	Precision string `json:"precision,omitempty"`
}

// DataOptions are the data flags of a run: the dataset (an absolute
// directory or file, or "demo"), how many training images were used (0:
// all) and the fraction held out for validation.
type DataOptions struct {
	Dir      string  `json:"dir"`
	Limit    int     `json:"limit"`
	ValSplit float64 `json:"val_split"`
	// ValSplitGiven: --val-split was given (a source without a test set
	// holds out 0.2 otherwise).
	ValSplitGiven bool `json:"val_split_given,omitempty"`
	// FixedSplit: the images held out are drawn with SplitSeed, whatever
	// --seed, so that runs with different seeds validate on the same
	// images. Runs recorded before it existed drew them with --seed.
	FixedSplit bool `json:"fixed_split,omitempty"`
	// Images and TestImages are the checksums (cifar.Dataset.Checksum) of
	// the set the training and validation images were drawn from, and of
	// the test set where the run validates on it: a resume whose data
	// holds other images says so. Runs recorded before them have none.
	Images     string `json:"images,omitempty"`
	TestImages string `json:"test_images,omitempty"`
	// Fallback: where the download fails, train on the demo sample in the
	// binary instead of failing (make run's --auto-settings). Not recorded.
	Fallback bool `json:"-"`
}

// SplitSeed draws the validation images of a run with DataOptions.FixedSplit:
// 1, the default --seed, so that the split is the one such runs drew before.
const SplitSeed = 1

// SeedRecipe is the PyTorch tutorial's run: VGG16-BN at 224x224,
// RandomResizedCrop + flip, SGD lr 1e-3 momentum 0.9, StepLR 10/0.1,
// batch 64, 100 epochs.
func SeedRecipe() Options {
	return Options{
		Model: layers.DefaultConfig(), Epochs: 100, Batch: 64, LR: 1e-3, Momentum: 0.9,
		Schedule: "step", StepSize: 10, Gamma: 0.1, Augment: "seed", Seed: 1,
	}
}

// CIFARRecipe trains at CIFAR's native 32x32: pad-crop + flip, batch 256,
// nesterov SGD with weight decay 5e-4, linear warm-up to lr 0.05 then
// linear decay to zero.
func CIFARRecipe() Options {
	o := SeedRecipe()
	o.Model.ImageSize = 32
	o.Epochs, o.Batch, o.LR, o.WeightDecay, o.Nesterov = 30, 256, 0.05, 5e-4, true
	o.Schedule, o.Warmup, o.Augment = "onecycle", 2, "cifar"
	return o
}

// Validate names the option that is out of range.
func (o Options) Validate() error {
	if err := o.Model.Validate(); err != nil {
		return err
	}
	if o.Epochs < 1 {
		return fmt.Errorf("--epochs %d: need at least 1", o.Epochs)
	}
	if err := CheckBatch(o.Batch); err != nil {
		return err
	}
	switch {
	case !(o.LR > 0):
		return fmt.Errorf("--lr %g: must be positive", o.LR)
	case o.Momentum < 0 || o.Momentum >= 1:
		return fmt.Errorf("--momentum %g: must be in [0, 1)", o.Momentum)
	case o.WeightDecay < 0:
		return fmt.Errorf("--weight-decay %g: must not be negative", o.WeightDecay)
	case o.Nesterov && o.Momentum == 0:
		return fmt.Errorf("--nesterov needs --momentum > 0")
	case o.LabelSmoothing < 0 || o.LabelSmoothing > 1: // as nn.CrossEntropyLoss: 1 is legal, if useless
		return fmt.Errorf("--label-smoothing %g: must be in [0, 1]", o.LabelSmoothing)
	case o.Schedule == "step" && (o.StepSize < 1 || !(o.Gamma > 0)):
		return fmt.Errorf("--step-size %d / --gamma %g: StepLR needs a positive step and factor", o.StepSize, o.Gamma)
	case o.Warmup < 0:
		return fmt.Errorf("--warmup %g: must not be negative", o.Warmup)
	case o.Init != "" && o.Pretrained != "":
		return fmt.Errorf("--init and --pretrained: give one (--pretrained also replaces the last classifier layer)")
	}
	switch o.Schedule {
	case "step", "cosine", "onecycle", "constant":
	default:
		return fmt.Errorf("--schedule %q: want step, cosine, onecycle or constant", o.Schedule)
	}
	switch o.Augment {
	case "seed", "cifar", "none":
	default:
		return fmt.Errorf("--augment %q: want seed, cifar or none", o.Augment)
	}
	return nil
}

// SpansRun says whether the schedule is shaped by the run's length (and
// warms up, with Warmup): cosine and onecycle, not step or constant.
func (o Options) SpansRun() bool { return o.Schedule == "cosine" || o.Schedule == "onecycle" }

// LearningRate is the rate for the step-th batch (from 0) of a run with
// perEpoch batches per epoch. step is StepLR stepped once an epoch; after
// the warm-up (a straight rise, LR·(step+1)/(Warmup·perEpoch)), cosine is
// CosineAnnealingLR(T_max = the batches after the warm-up, eta_min 0)
// stepped every batch, and onecycle a straight fall to zero at the run's
// end: not torch's OneCycleLR (README says how they differ).
func (o Options) LearningRate(step, perEpoch int) float64 {
	epoch := float64(step) / float64(perEpoch) // fractional epochs done
	total := float64(o.Epochs)
	switch o.Schedule {
	case "step": // torch.optim.lr_scheduler.StepLR, stepped once per epoch
		return o.LR * math.Pow(o.Gamma, float64(step/perEpoch/o.StepSize))
	case "constant":
		return o.LR
	}
	if o.Warmup > 0 && epoch < o.Warmup {
		// Up to the peak, not past it where the warm-up ends inside a step.
		return o.LR * math.Min(1, (float64(step)+1)/(o.Warmup*float64(perEpoch)))
	}
	t := (epoch - o.Warmup) / math.Max(total-o.Warmup, 1e-9) // 0 → 1 after warm-up
	t = math.Min(math.Max(t, 0), 1)
	if o.Schedule == "cosine" {
		return o.LR * 0.5 * (1 + math.Cos(math.Pi*t))
	}
	return o.LR * (1 - t) // onecycle: linear decay to zero
}

// MaxBatch bounds --batch: far beyond any memory, and within what the
// buffers' sizes (batch × an image's elements) can count.
const MaxBatch = 1 << 20

// CheckBatch holds a --batch to 1 to MaxBatch, as every command that takes
// one does.
func CheckBatch(n int) error {
	switch {
	case n < 1:
		return fmt.Errorf("--batch %d: need at least 1", n)
	case n > MaxBatch:
		return fmt.Errorf("--batch %d: at most %d", n, MaxBatch)
	}
	return nil
}

// OptionsOf reads the options a run was started with from a checkpoint's
// metadata.
func OptionsOf(path string) (Options, error) {
	flags, err := checkpoint.ReadFlags(path) // the header only: the tensors are the resumed run's to read
	if err != nil {
		return Options{}, err
	}
	o, err := ParseOptions(flags)
	if err != nil {
		return o, fmt.Errorf("%s: the training options in its metadata: %w", path, err)
	}
	return o, nil
}

// ParseOptions reads the training options a checkpoint records as JSON
// (checkpoint.Info.Flags); an error where there are none, or they do not
// parse.
func ParseOptions(flags string) (Options, error) {
	var o Options
	err := json.Unmarshal([]byte(flags), &o)
	return o, err
}
