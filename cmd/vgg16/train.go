package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/vgg16/vgg16/internal/checkpoint"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/device"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/shell"
	"github.com/vgg16/vgg16/internal/tensor"
	"github.com/vgg16/vgg16/internal/train"
)

// deviceFlags choose the backend.
type deviceFlags struct {
	opt                device.Options
	fusedBN, fusedPool bool
}

// options are the device options the flags gave.
func (d *deviceFlags) options() device.Options {
	o := d.opt
	o.UnfusedBN, o.UnfusedPool = !d.fusedBN, !d.fusedPool
	return o
}

func (d *deviceFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&d.opt.Kind, "device", "auto", "auto (the GPU when usable, else the CPU), cpu or cuda")
	fs.IntVar(&d.opt.GPU, "gpu", 0, "GPU index with --device cuda/auto")
	fs.StringVar(&d.opt.Precision, "precision", "tf32", "GPU math: tf32 (TF32 convolutions, like PyTorch), fp32, or bf16 (bfloat16 activations, convolutions and Linear, float32 weights: PyTorch's autocast; Ampere or newer)")
	fs.BoolVar(&d.fusedBN, "fused-bn", true, "GPU: batch norm + ReLU in vgg16's own fused kernels (measured faster on an H200: 18% at 224x224, 6% at 32x32); --fused-bn=false takes cuDNN's batch norm and a separate ReLU (bf16 and --channels-last always run the fused kernels)")
	fs.BoolVar(&d.opt.TF32Linear, "tf32-linear", false, "GPU, with --precision tf32: TF32 tensor cores for the Linear layers too (PyTorch's matmul.allow_tf32; off by default, as in PyTorch)")
	fs.IntVar(&d.opt.Workspace, "cudnn-workspace", 0, "GPU: MiB of workspace one cuDNN convolution algorithm may use (0 = up to 4 GiB); lower trades speed for memory")
	fs.StringVar(&d.opt.ConvAPI, "cudnn-api", "graph", "GPU: how convolutions reach cuDNN: graph (its backend API where it builds a plan, as PyTorch; the legacy API otherwise) or legacy (cudnnFindConvolution* only); --precision fp32 always takes legacy")
	fs.BoolVar(&d.opt.ChannelsLast, "channels-last", false, "GPU, with --precision tf32: store activation images channels-last (NHWC, PyTorch's channels_last), as bf16 always does, for cuDNN's NHWC convolutions (not with vgg11-lrn)")
	fs.BoolVar(&d.fusedPool, "fused-pool", true, "GPU: the 2x2 max-pool after a block's last batch norm + ReLU runs in the batch norm's kernels, whose output is then never stored (channels-last images: bf16, --channels-last); --fused-pool=false runs it separately, for comparison")
	fs.BoolVar(&d.opt.NoGraphs, "no-cuda-graphs", false, "GPU: issue every step's operations (training or evaluation) one by one instead of replaying a recorded CUDA graph (slower; for comparison and debugging)")
}

// dataFlags choose the dataset.
type dataFlags struct {
	dir        string
	download   bool
	limit      int
	valSplit   float64
	splitGiven bool // --val-split was given
	seedSplit  bool // a resumed run from before DataOptions.FixedSplit: its split came from --seed
	// A resumed run's checksums of its images (DataOptions.Images and
	// TestImages), which OpenData holds the data against.
	images, testImages string
}

func (d *dataFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&d.dir, "data", "./data", "CIFAR-10 directory (binary or python version), one batch file (e.g. data_batch_1.bin), or \"demo\" for the sample embedded in the binary")
	fs.BoolVar(&d.download, "download", true, "download CIFAR-10 into --data when it is missing")
	fs.IntVar(&d.limit, "limit", 0, "use only the first N training images (and N/5 of the validation images, at least 100 where there are as many); 0 = all")
	floatVar(fs, &d.valSplit, "val-split", 0.1, "hold out this fraction of the training set for validation; 0 validates on the test set, as the seed's script does (a single batch file or the demo sample, which have none, hold out 0.2 unless given and not 0)")
}

// check validates the data flags before anything is read or downloaded.
func (d *dataFlags) check() error {
	switch {
	case d.limit < 0:
		return fmt.Errorf("--limit %d: must not be negative", d.limit)
	case d.valSplit < 0 || d.valSplit >= 1:
		return fmt.Errorf("--val-split %g: must be in [0, 1)", d.valSplit)
	}
	return nil
}

// options records the data flags for a run's checkpoints (train.Options.Data).
func (d *dataFlags) options() *train.DataOptions {
	dir := d.dir
	if dir != "demo" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	return &train.DataOptions{Dir: dir, Limit: d.limit, ValSplit: d.valSplit, ValSplitGiven: d.splitGiven, FixedSplit: !d.seedSplit,
		Images: d.images, TestImages: d.testImages}
}

func trainCmd() *cobra.Command {
	var (
		recipe, runDir      string
		namedDir            bool // runDir is the default name, not --run-dir
		resume, auto        bool
		autoResume          bool
		mf                  modelFlags
		df                  dataFlags
		dev                 deviceFlags
		epochs, batch, step int
		lr, mom, wd, gamma  float64
		warmup, smoothing   float64
		nesterov            bool
		schedule, augment   string
		seed                uint64
		workers             int
		initFrom            string
		pretrained          string
		freeze, cpuAugment  bool
		recomputeBN         bool
		sgdInBackward       bool
	)
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a VGG network on CIFAR-10",
		Long: `Train a VGG network on CIFAR-10, validating every epoch and keeping the best
checkpoint by validation accuracy (best.safetensors) and the latest (last.safetensors)
in the run directory, with metrics.jsonl and curves.png.

The defaults are the PyTorch tutorial's recipe (--recipe seed): VGG16-BN at 224x224,
RandomResizedCrop + flip, SGD lr 1e-3 momentum 0.9, StepLR 10/0.1, batch 64, 100 epochs.
--recipe cifar trains at CIFAR's native 32x32 (pad-crop + flip, batch 256, nesterov,
weight decay 5e-4, warm-up to lr 0.05 then linear decay, 30 epochs). Any flag given
overrides the recipe. Ctrl-C saves a checkpoint that --resume continues.`,
		Example: `  vgg16 train --device cuda                          # the seed's 100-epoch run
  vgg16 train --recipe cifar --device cuda           # native 32x32 recipe
  vgg16 train --device cpu --recipe cifar --epochs 1 --limit 2000
  vgg16 train --resume --run-dir runs/20261126-181800-vgg16-224
  vgg16 train --auto-resume --run-dir /runs/seed --device cuda   # the same command starts the run and continues it
  vgg16 train --pretrained vgg16-397923af.pth --freeze-features --epochs 10   # the seed's transfer learning
  vgg16 train --init vgg16_bn-6c64b313.pth --epochs 10   # fine-tune torchvision's ImageNet weights`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The signal handler below prints while the run does.
			w := &lockedWriter{w: cmd.OutOrStdout()}
			df.splitGiven = cmd.Flags().Changed("val-split")
			if err := df.check(); err != nil {
				return err
			}
			if workers < 0 {
				return fmt.Errorf("--workers %d: must not be negative (0 = one per core)", workers)
			}
			// A resumed run's own options, read once: its precision is needed
			// before the device opens, the rest below.
			var (
				prev                 train.Options
				resumeNote, fallback string
			)
			if autoResume {
				if resume {
					return fmt.Errorf("--resume and --auto-resume: give one (--auto-resume resumes where there is a run to resume)")
				}
				if runDir == "" {
					return fmt.Errorf("--auto-resume needs --run-dir: the run directory to continue, or to start the run in")
				}
				// A run there to continue (what a scheduler's retry of the
				// same command finds), else a new one.
				resume = checkpoint.Exists(filepath.Join(runDir, train.LastFile))
			}
			if resume && runDir == "" {
				return fmt.Errorf("--resume needs --run-dir: the run directory to continue")
			}
			if resume {
				// Claimed first: a run that another process is training
				// is refused before the device opens.
				claim, err := train.PrepareDir(runDir, true)
				if err != nil {
					return err // before its options' error: says why there is nothing to resume
				}
				defer claim.Release()
				if claim.Note != "" {
					fmt.Fprintln(w, "note:", claim.Note)
				}
				if prev, err = resumeOptions(runDir); err != nil {
					return err
				}
				resumeNote, fallback = resumePrecision(cmd.Flags(), prev.Precision, &dev)
			}
			be, line, note, err := openDevice(&dev, fallback)
			if note != "" {
				resumeNote = note
			}
			if err != nil {
				return err
			}
			defer be.Close()
			fmt.Fprintln(w, line)
			_, onCPU := be.(*cpu.Backend)
			if !onCPU {
				fmt.Fprint(w, resumeNote) // on the CPU the device line says bf16 does not apply
			}

			var o train.Options
			switch recipe {
			case "seed":
				o = train.SeedRecipe()
			case "cifar":
				o = train.CIFARRecipe()
			default:
				return fmt.Errorf("--recipe %q: want seed or cifar", recipe)
			}
			quick := auto && onCPU && !cmd.Flags().Changed("recipe")
			if quick {
				o = cpuQuickRecipe(&df, cmd.Flags())
			}
			fs := cmd.Flags()
			set := func(name string, apply func()) {
				if fs.Changed(name) {
					apply()
				}
			}
			set("epochs", func() { o.Epochs = epochs })
			set("batch", func() { o.Batch = batch })
			set("lr", func() { o.LR = lr })
			set("momentum", func() { o.Momentum = mom })
			set("weight-decay", func() { o.WeightDecay = wd })
			set("nesterov", func() { o.Nesterov = nesterov })
			if fs.Changed("momentum") && mom == 0 && !fs.Changed("nesterov") && o.Nesterov {
				o.Nesterov = false // the recipe's Nesterov momentum, with none: plain SGD, as asked
			}
			set("schedule", func() { o.Schedule = schedule })
			set("step-size", func() { o.StepSize = step })
			set("gamma", func() { o.Gamma = gamma })
			set("warmup", func() { o.Warmup = warmup })
			set("label-smoothing", func() { o.LabelSmoothing = smoothing })
			set("augment", func() { o.Augment = augment })
			set("seed", func() { o.Seed = seed })
			set("init", func() { o.Init = initFrom })
			set("freeze-features", func() { o.FreezeFeatures = freeze })
			// A shorter run than the recipe's warms up for less: at most a fifth
			// of it, where the recipe's warm-up would take all of it (the cifar
			// recipe's 2 epochs in a 1-epoch run). Not on resume, which keeps
			// the run's own, nor for a schedule without a warm-up.
			if short := float64(o.Epochs) / 5; !resume && o.Epochs >= 1 && o.SpansRun() && !fs.Changed("warmup") && o.Warmup > short {
				if !quick {
					fmt.Fprintf(w, "note: the recipe's %g-epoch warm-up is %g epochs in a %d-epoch run (--warmup sets it)\n", o.Warmup, short, o.Epochs)
				}
				o.Warmup = short
			}
			if quick { // said once the flags are applied
				fmt.Fprintf(w, "no GPU: a short CPU run (VGG16-BN at 32x32, %d epoch%s on up to %d images, batch %d).\n", o.Epochs, plural(o.Epochs), df.limit, o.Batch)
				fmt.Fprintln(w, "the seed's full recipe (224x224, 100 epochs) needs a GPU: vgg16 train --device cuda")
			}
			if o.FreezeFeatures && !resume && o.Init == "" && pretrained == "" {
				return fmt.Errorf("--freeze-features trains the classifier over features that --pretrained or --init loads: give one of them")
			}
			o.Workers, o.CPUAugment, o.RecomputeBN, o.SGDInBackward = workers, cpuAugment, recomputeBN, sgdInBackward
			for _, name := range []string{"arch", "size", "hidden", "dropout", "batch-norm", "classes"} {
				if fs.Changed(name) {
					cfg, err := mf.configOver(o.Model, fs)
					if err != nil {
						return err
					}
					o.Model = cfg
					break
				}
			}

			if pretrained != "" && !resume {
				if err := usePretrained(w, &o, pretrained, fs); err != nil {
					return err
				}
			}
			if runDir == "" {
				runDir = filepath.Join("runs", fmt.Sprintf("%s-%s-%d", now().Format("20060102-150405"), sanitize(o.Model.Arch), o.Model.ImageSize))
				namedDir = true
			}
			if resume {
				// The run's own options win over the recipe; explicit flags
				// (say, more --epochs) still apply.
				prev.Workers, prev.CPUAugment, prev.RecomputeBN, prev.SGDInBackward = o.Workers, o.CPUAugment, o.RecomputeBN, o.SGDInBackward
				set("epochs", func() {
					if epochs != prev.Epochs && prev.SpansRun() {
						fmt.Fprintf(w, "note: the run's %s schedule spanned %d epoch%s, now %d: the learning rate follows the new schedule from here, not the old one's\n", prev.Schedule, prev.Epochs, plural(prev.Epochs), epochs)
					}
					prev.Epochs = epochs
				})
				asGiven := o
				asGiven.Pretrained = pretrained // not loaded on resume
				o = prev
				resumeData(w, &df, o.Data, fs)
				if err := df.check(); err != nil {
					return err
				}
				if !fs.Changed("data") && df.dir != "demo" && train.MissingFile(df.dir) {
					return fmt.Errorf("the run trained on %s, which is not there any more: give --data where that file is now", df.dir)
				}
				if ignored := runFlagsIgnored(fs, asGiven, o); len(ignored) > 0 {
					fmt.Fprintf(w, "note: resuming keeps the run's own settings: %s ignored (what a resume applies: --epochs, the data and device flags, --workers, --cpu-augment, --recompute-bn, --sgd-in-backward)\n", strings.Join(ignored, ", "))
				}
			} else if !namedDir && !autoResume { // --auto-resume: train.StartAgain checks it
				if err := train.CheckNewDir(runDir); err != nil {
					return err // said before any download
				}
			} // a name made here takes a suffix where it is taken (train.NewDir)
			o.Data = df.options()
			if !onCPU { // the CPU has none: a run resumed there keeps its GPU's
				o.Precision = strings.ToLower(dev.opt.Precision)
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if fs.Changed("warmup") && o.Warmup > 0 && !o.SpansRun() {
				fmt.Fprintf(w, "note: --warmup applies to the cosine and onecycle schedules, not %s: ignored\n", o.Schedule)
			}
			for _, name := range []string{"step-size", "gamma"} {
				if fs.Changed(name) && o.Schedule != "step" {
					fmt.Fprintf(w, "note: --%s applies to the step schedule, not %s: ignored\n", name, o.Schedule)
				}
			}
			if o.Warmup >= float64(o.Epochs) && o.SpansRun() {
				fmt.Fprintf(w, "note: the %g-epoch warm-up covers the whole %d-epoch run: the rate only rises (lower --warmup)\n", o.Warmup, o.Epochs)
			}
			if err := fitsBackend(be, o.Model); err != nil {
				return err
			}
			if onCPU {
				if err := checkCPUMemory(&o); err != nil {
					return err
				}
			}
			if onCPU && o.Model.ImageSize >= 128 {
				fmt.Fprintf(w, "note: %dx%d on a CPU is ~%dx the work of 32x32; --recipe cifar trains at 32x32\n",
					o.Model.ImageSize, o.Model.ImageSize, o.Model.ImageSize*o.Model.ImageSize/1024)
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			sigs, stoppedBy := make(chan os.Signal, 1), make(chan os.Signal, 1)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			handled, finished := make(chan struct{}), make(chan struct{})
			exit := quit
			go func() {
				defer close(handled)
				select {
				case s := <-sigs:
					stoppedBy <- s // before cancel: the run's end sees it
					// A second signal quits at once: checkpoints are written
					// atomically, so the last good one survives. Not by
					// signal.Stop, which would give the signal back to the
					// disposition the process started with: ignored, in a
					// script's background job, where Ctrl-C again did nothing.
					go func() {
						select {
						case s := <-sigs:
							exit(signalStatus(s))
						case <-finished:
						}
					}()
					fmt.Fprintln(w, "\ninterrupted: saving a checkpoint after this batch, or at once if validating (Ctrl-C again to quit at once)")
					cancel()
				case <-ctx.Done():
				}
			}()
			// A signal as the run ends: its line is printed before train returns.
			defer func() { cancel(); <-handled; close(finished) }()
			o.Data.Fallback = auto
			// stopped is err as a signal's stop where one came: the exit
			// status says so (128 + its number), for a script to run the
			// command again.
			stopped := func(err error) error {
				select {
				case s := <-stoppedBy:
					if sig, ok := s.(syscall.Signal); ok {
						return &stoppedError{sig, err}
					}
				default:
				}
				return err
			}
			trainSet, valSet, classes, fromDir, err := loadData(ctx, w, o.Data, df.download, o.Seed)
			if err != nil {
				return stopped(err) // a download cut short by docker stop, say
			}
			if fs.Changed("classes") && !resume && mf.classes != len(classes) { // a resume keeps its own, said above
				return fmt.Errorf("--classes %d: the data has %d classes", mf.classes, len(classes))
			}
			o.Model.Classes = len(classes)
			if !resume { // a resumed run's directory is already claimed
				var claim *train.Claim
				if namedDir {
					// Named here: another run may have taken the name since.
					claim, err = train.NewDir(runDir)
				} else if autoResume {
					var removed []string
					claim, removed, err = train.StartAgain(runDir)
					if len(removed) > 0 {
						fmt.Fprintf(w, "note: the run in %s stopped before its first checkpoint: it starts again (removed what it left: %s)\n", runDir, strings.Join(removed, ", "))
					}
				} else {
					claim, err = train.PrepareDir(runDir, false)
				}
				if err != nil {
					return err
				}
				// A run that fails before writing anything (a bad --init, no
				// device memory) leaves no empty directory of its making.
				defer claim.Release()
				runDir = claim.Dir
				if claim.Note != "" {
					fmt.Fprintln(w, "note:", claim.Note)
				}
			}
			val := fmt.Sprintf("%d validation images", valSet.Len())
			if fromDir && o.Data.ValSplit == 0 {
				val = fmt.Sprintf("validating on %d test images (--val-split 0: the best checkpoint is the best on the test set)", valSet.Len())
			}
			fmt.Fprintf(w, "training %s at %dx%d on %d images, %s; batch %d, %d epoch%s, lr %g (%s), augment %s\n",
				o.Model.Label(), o.Model.ImageSize, o.Model.ImageSize, trainSet.Len(), val, o.Batch, o.Epochs, plural(o.Epochs), o.LR, o.Schedule, o.Augment)
			if n := trainSet.Len(); n < o.Batch {
				fmt.Fprintf(w, "note: %d training images, fewer than --batch %d: each epoch is one batch of all of them\n", n, o.Batch)
			}
			if n := trainSet.Len(); n > o.Batch && n%o.Batch != 0 {
				fmt.Fprintf(w, "each epoch trains on %d of them: the last %d of each epoch's shuffle do not fill a batch of %d and are left out of that epoch (as DataLoader(drop_last=True))\n", n-n%o.Batch, n%o.Batch, o.Batch)
			}
			fmt.Fprintf(w, "run directory: %s\n", runDir)

			run := &train.Run{Dir: runDir, Opt: o, Classes: classes, Train: trainSet, Val: valSet, Backend: be, Report: newReporter(w), Resume: resume}
			_, err = run.Execute(ctx)
			if g, ok := be.(interface{ GraphsOff() error }); ok && g.GraphsOff() != nil {
				fmt.Fprintf(w, "note: CUDA graphs were turned off during the run (steps issued op by op, slower): %v\n", g.GraphsOff())
			}
			if errors.Is(err, train.ErrInterrupted) {
				return stopped(fmt.Errorf("stopped by a signal; continue with: vgg16 train --resume --run-dir %s", shell.Quote(runDir)))
			}
			if err != nil {
				return err
			}
			what := "validation"
			if valSet.Len() == 0 {
				what = "training" // no validation set: the best is by training accuracy
			}
			fmt.Fprintf(w, "done: best %s accuracy %.2f%%, saved as %s\n", what, 100*max(run.Best(), 0), filepath.Join(runDir, train.BestFile))
			if fromDir {
				fmt.Fprintf(w, "evaluate it on the test set with: vgg16 eval %s --data %s\n", shell.Quote(filepath.Join(runDir, train.BestFile)), shell.Quote(df.dir))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&recipe, "recipe", "seed", "seed (224x224, the PyTorch tutorial's) or cifar (native 32x32)")
	fs.BoolVar(&auto, "auto-settings", false, "on a CPU, pick a short run that finishes an epoch in minutes (make run)")
	fs.StringVar(&runDir, "run-dir", "", "run directory (default runs/<time>-<arch>-<size>); an existing run is never overwritten")
	fs.BoolVar(&resume, "resume", false, "continue the run in --run-dir from its last checkpoint")
	fs.BoolVar(&autoResume, "auto-resume", false, "continue the run in --run-dir where it has a checkpoint, else start it there: one command for a scheduler to run again after a stop (exit status 143) or a crash")
	mf.register(cmd, 224)
	df.register(fs)
	dev.register(fs)
	fs.IntVar(&epochs, "epochs", 100, "epochs to train")
	fs.IntVar(&batch, "batch", 64, "batch size")
	floatVar(fs, &lr, "lr", 1e-3, "learning rate (peak rate for onecycle)")
	floatVar(fs, &mom, "momentum", 0.9, "SGD momentum")
	floatVar(fs, &wd, "weight-decay", 0, "weight decay (L2), applied to every parameter as torch.optim.SGD does")
	fs.BoolVar(&nesterov, "nesterov", false, "Nesterov momentum")
	fs.StringVar(&schedule, "schedule", "step", "learning-rate schedule: step (StepLR), cosine, onecycle (warm-up then linear decay) or constant")
	fs.IntVar(&step, "step-size", 10, "StepLR: epochs between decays")
	floatVar(fs, &gamma, "gamma", 0.1, "StepLR: decay factor")
	floatVar(fs, &warmup, "warmup", 0, "epochs of linear warm-up (cosine, onecycle)")
	floatVar(fs, &smoothing, "label-smoothing", 0, "label smoothing of the cross-entropy")
	fs.StringVar(&augment, "augment", "seed", "seed (RandomResizedCrop + flip, ImageNet normalisation), cifar (pad-crop + flip) or none")
	fs.Uint64Var(&seed, "seed", 1, "seed of initialisation, shuffling, augmentation and dropout")
	fs.IntVar(&workers, "workers", 0, "data-loading goroutines (0 = one per core)")
	fs.BoolVar(&cpuAugment, "cpu-augment", false, "GPU: make the batches on the CPU (--workers goroutines) and upload them, instead of uploading the dataset once and augmenting on the GPU (the same batches either way)")
	fs.BoolVar(&recomputeBN, recomputeBNFlag, false, recomputeBNUsage)
	fs.BoolVar(&sgdInBackward, sgdInBackwardFlag, false, sgdInBackwardUsage)
	fs.StringVar(&pretrained, "pretrained", "", "transfer learning as in the seed's second example: start from these weights (torchvision's vgg16-*.pth or vgg16_bn-*.pth, any VGG state dict), whose layers the model takes, with a fresh last classifier layer for the data's classes")
	fs.BoolVar(&freeze, "freeze-features", false, "train the classifier only: the feature extractor gets no gradient and no update (faster)")
	fs.StringVar(&initFrom, "init", "", "start from these weights (transfer learning): torchvision's vgg16_bn-*.pth, any torch.save'd or safetensors state dict, or a vgg16 checkpoint; classifier layers of another shape keep a fresh initialisation")
	return cmd
}

// now names default run directories (a test stops the clock).
var now = time.Now

// cpuQuickRecipe is make run's choice on a CPU: the native 32x32 recipe on
// a slice of the data, sized so that an epoch takes minutes.
func cpuQuickRecipe(df *dataFlags, fs *pflag.FlagSet) train.Options {
	o := train.CIFARRecipe()
	o.Epochs, o.Batch, o.Warmup = 5, 64, 1
	limit := 5000
	if !cpu.FastSGEMM() {
		o.Epochs, limit = 2, 1000
	}
	if !fs.Changed("limit") {
		df.limit = limit
	}
	return o
}

// resumeData gives the data flags the run's own settings (prev, from its
// checkpoint; nil for a checkpoint of an older version) where the command
// line does not set them, and says where it changes them.
func resumeData(w io.Writer, df *dataFlags, prev *train.DataOptions, fs *pflag.FlagSet) {
	if prev == nil {
		df.seedSplit = true
		return
	}
	df.seedSplit = !prev.FixedSplit // the same images held out as before
	df.images, df.testImages = prev.Images, prev.TestImages
	if fs.Changed("data") {
		if now := df.options().Dir; !sameData(now, prev.Dir) {
			fmt.Fprintf(w, "note: the run trained on %s; --data now says %s\n", prev.Dir, now)
		}
	} else {
		df.dir = prev.Dir
	}
	if fs.Changed("limit") {
		if df.limit != prev.Limit {
			fmt.Fprintf(w, "note: the run used --limit %d; now %d (a different training set)\n", prev.Limit, df.limit)
		}
	} else {
		df.limit = prev.Limit
	}
	if fs.Changed("val-split") {
		if df.valSplit != prev.ValSplit {
			fmt.Fprintf(w, "note: the run held out %g of its images for validation; --val-split now says %g (a different training and validation set)\n", prev.ValSplit, df.valSplit)
		}
	} else {
		df.valSplit, df.splitGiven = prev.ValSplit, prev.ValSplitGiven
	}
}

// sameData says whether --data paths a and b name the same data: the same
// path, the same directory by another path (a link), or a CIFAR-10
// directory and the folder of it that holds the batches.
func sameData(a, b string) bool {
	if a == b {
		return true
	}
	return samePath(dataDir(a), dataDir(b))
}

// dataDir is the CIFAR-10 directory that p is the folder of batches of,
// else p. The folder is known by its name, or by that name in another case
// where the file system takes the two for one folder (macOS's and
// Windows's ignore case: --data C:\Data\CIFAR-10-BATCHES-BIN names it).
func dataDir(p string) string {
	base, parent := filepath.Base(p), filepath.Dir(p)
	for _, f := range []string{cifar.BinFolder, cifar.PyFolder} {
		if base == f || strings.EqualFold(base, f) && samePath(p, filepath.Join(parent, f)) {
			return parent
		}
	}
	return p
}

// samePath says whether paths a and b name the same file or directory.
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// resumeApplies are the flags a resumed run applies: --epochs, the data
// flags and how batches are made (the device flags too).
var resumeApplies = map[string]bool{"resume": true, "auto-resume": true, "run-dir": true, "epochs": true, "data": true, "download": true, "limit": true,
	"val-split": true, "workers": true, "cpu-augment": true, recomputeBNFlag: true, sgdInBackwardFlag: true}

// runSetting reads the option each flag that --resume ignores sets, to
// tell a flag given again with the run's own value from a conflicting one
// (--recipe and --auto-settings: the options a recipe sets).
var runSetting = map[string]func(o train.Options) any{
	"batch": func(o train.Options) any { return o.Batch }, "lr": func(o train.Options) any { return o.LR },
	"momentum": func(o train.Options) any { return o.Momentum }, "weight-decay": func(o train.Options) any { return o.WeightDecay },
	"nesterov": func(o train.Options) any { return o.Nesterov }, "schedule": func(o train.Options) any { return o.Schedule },
	"step-size": func(o train.Options) any { return o.StepSize }, "gamma": func(o train.Options) any { return o.Gamma },
	"warmup": func(o train.Options) any { return o.Warmup }, "label-smoothing": func(o train.Options) any { return o.LabelSmoothing },
	"augment": func(o train.Options) any { return o.Augment }, "seed": func(o train.Options) any { return o.Seed },
	"init": func(o train.Options) any { return o.Init }, "pretrained": func(o train.Options) any { return o.Pretrained },
	"freeze-features": func(o train.Options) any { return o.FreezeFeatures },
	"arch":            func(o train.Options) any { return o.Model.Cfg.String() }, // the layers, not how they were named
	"size":            func(o train.Options) any { return o.Model.ImageSize }, "hidden": func(o train.Options) any { return o.Model.Hidden },
	"dropout": func(o train.Options) any { return o.Model.Dropout }, "batch-norm": func(o train.Options) any { return o.Model.BatchNorm },
	"classes": func(o train.Options) any { return o.Model.Classes },
}

// runFlagsIgnored are the flags given that --resume ignores and that ask
// for something other than the run's own settings (run; given: what the
// recipe and flags make): those that the checkpoint settles (all but
// --epochs, the data and device flags, and how batches are made). A flag
// given again with the run's own value (the same command run again, as
// --auto-resume is) is not named.
func runFlagsIgnored(fs *pflag.FlagSet, given, run train.Options) []string {
	// A recipe is the run's own where what it sets and no flag given
	// overrides is; but --epochs, and the warm-up, which a short run cuts.
	recipe := func(o train.Options) any {
		var v []any
		for _, name := range []string{"batch", "lr", "momentum", "weight-decay", "nesterov", "schedule", "step-size", "gamma", "label-smoothing", "augment", "size"} {
			if !fs.Changed(name) {
				v = append(v, runSetting[name](o))
			}
		}
		return fmt.Sprint(v...)
	}
	setting := func(name string) (func(train.Options) any, bool) {
		if name == "recipe" || name == "auto-settings" {
			return recipe, true
		}
		f, ok := runSetting[name]
		return f, ok
	}
	var ignored []string
	fs.Visit(func(f *pflag.Flag) {
		if resumeApplies[f.Name] || isDeviceFlag(f.Name) {
			return
		}
		if value, ok := setting(f.Name); ok {
			a, b := value(given), value(run)
			if pa, ok := a.(string); a == b || ok && pa != "" && samePath(pa, b.(string)) { // a weight file by another path
				return
			}
		}
		ignored = append(ignored, "--"+f.Name)
	})
	return ignored
}

// isDeviceFlag says whether name is one of deviceFlags'.
func isDeviceFlag(name string) bool {
	var d deviceFlags
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	d.register(fs)
	return fs.Lookup(name) != nil
}

// resumePrecision gives dev the precision a resumed run trained in (prev;
// "" where it trained on the CPU only, or in an older version) unless a
// flag asks for another: --precision, or one that only another precision
// takes (--tf32-linear, tf32's; --channels-last, not fp32's). It returns the
// note to print on a GPU and, where it took the run's, the precision the
// flags alone give, for a GPU that cannot run the run's (bf16 before Ampere).
func resumePrecision(fs *pflag.FlagSet, prev string, dev *deviceFlags) (note, fallback string) {
	now := strings.ToLower(dev.opt.Precision)
	if prev == "" || prev == now {
		return "", ""
	}
	if fs.Changed("precision") {
		return fmt.Sprintf("note: the run trained in precision %s; it continues in %s\n", prev, now), ""
	}
	for _, f := range []struct {
		set  bool
		flag string
	}{{dev.opt.TF32Linear, "--tf32-linear"}, {dev.opt.ChannelsLast && prev == "fp32", "--channels-last"}} {
		if f.set {
			return fmt.Sprintf("note: the run trained in precision %s; %s asks for %s, in which it continues\n", prev, f.flag, now), ""
		}
	}
	dev.opt.Precision = prev
	return fmt.Sprintf("note: resuming in the run's precision, %s (--precision sets another)\n", prev), now
}

// openDevice opens the backend dev's flags choose. Where dev carries a
// resumed run's precision that this GPU cannot run (bf16 before Ampere) and
// fallback is the flags' own, it opens the GPU in that instead of taking
// the CPU, and returns the note that says so.
func openDevice(dev *deviceFlags, fallback string) (be tensor.Backend, line, note string, err error) {
	be, line, err = device.Open(dev.options())
	if fallback == "" || err == nil && !isCPU(be) {
		return be, line, "", err
	}
	alt := dev.options()
	alt.Precision = fallback
	be2, line2, err2 := device.Open(alt)
	if err2 != nil || isCPU(be2) {
		if be2 != nil {
			be2.Close()
		}
		return be, line, "", err
	}
	if be != nil {
		be.Close()
	}
	why := line
	if err != nil {
		why = err.Error()
	}
	note = fmt.Sprintf("note: the run trained in precision %s, which this GPU cannot run (%s): it continues in %s\n", dev.opt.Precision, why, fallback)
	dev.opt.Precision = fallback
	return be2, line2, note, nil
}

// isCPU says whether be is the CPU backend (false for none).
func isCPU(be tensor.Backend) bool {
	_, ok := be.(*cpu.Backend)
	return ok
}

// resumeOptions reads the options a run was started with.
func resumeOptions(dir string) (train.Options, error) {
	o, err := train.OptionsOf(filepath.Join(dir, train.LastFile))
	if err != nil {
		err = train.LastUnreadable(dir, err)
	}
	return o, err
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
	if len(s) > 24 {
		s = "custom"
	}
	return s
}

// loadData opens the data d names (train.OpenData, which leaves in d what
// it opened), downloading CIFAR-10 with a progress bar where it is missing
// if allowed.
func loadData(ctx context.Context, w io.Writer, d *train.DataOptions, allowDownload bool, seed uint64) (trainSet, valSet *cifar.Dataset, classes []string, fromDir bool, err error) {
	fetch := func(ctx context.Context, dir string) error { return download(ctx, w, dir, "bin", "") }
	if !allowDownload {
		fetch = nil
	}
	return train.OpenData(ctx, w, d, seed, fetch)
}

// usePretrained gives o the layers of the weights file path (torchvision's
// vgg16 has no batch norm, vgg16_bn has) and names it for the run; the run
// loads it with a fresh last classifier layer.
func usePretrained(w io.Writer, o *train.Options, path string, fs *pflag.FlagSet) error {
	for _, name := range []string{"arch", "batch-norm", "hidden"} {
		if fs.Changed(name) {
			return fmt.Errorf("--%s with --pretrained: the architecture is the weight file's", name)
		}
	}
	// The layers the shapes imply; the image size a vgg16 checkpoint's own,
	// another state dict's as its first Linear implies (torchvision's: 224).
	_, cfg, err := checkpoint.ReadPretrained(path)
	if err != nil {
		return fmt.Errorf("--pretrained: %w", err)
	}
	o.Model.Arch, o.Model.Cfg, o.Model.BatchNorm, o.Model.Hidden = cfg.Arch, cfg.Cfg, cfg.BatchNorm, cfg.Hidden
	o.Pretrained = path
	bn := "without batch norm"
	if cfg.BatchNorm {
		bn = "with batch norm"
	}
	name := cfg.Arch
	if name == cfg.Cfg.String() { // InferConfig's name for a layer list that is no named variant
		name = fmt.Sprintf("a VGG (%s)", cfg.Cfg)
	}
	size := ""
	if run := o.Model.ImageSize; run != cfg.ImageSize {
		// The run's size is the recipe's or --size, not the file's: say what
		// that costs, and how to keep the layer.
		size = fmt.Sprintf("; at this run's %dx%d the first classifier layer's input differs, so it starts fresh too (--size %d keeps it)", run, run, cfg.ImageSize)
	}
	fmt.Fprintf(w, "pretrained: %s is %s %s, %d-wide classifier, trained for %d classes at %dx%d; its last layer is replaced%s\n",
		path, name, bn, cfg.Hidden, cfg.Classes, cfg.ImageSize, cfg.ImageSize, size)
	return nil
}

// fitsBackend refuses, before any data is read, a model that the
// backend's precision or layout cannot run: LRN has no bf16 version, and
// cuDNN's takes NCHW images only.
func fitsBackend(be tensor.Backend, cfg layers.Config) error {
	if cfg.Cfg.Count(layers.LRN) == 0 {
		return nil
	}
	if h, ok := be.(interface{ BF16() bool }); ok && h.BF16() {
		return fmt.Errorf("--precision bf16: %s has a local response normalisation layer, which runs in float32 only: use --precision tf32 or fp32", cfg.Arch)
	}
	if h, ok := be.(interface{ NHWC() bool }); ok && h.NHWC() {
		return fmt.Errorf("--channels-last: %s has a local response normalisation layer, which cuDNN runs on NCHW images only: leave --channels-last off", cfg.Arch)
	}
	return nil
}

// plural is "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
