package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/train"
)

// modelFlags are the flags that describe a network.
type modelFlags struct {
	arch      string
	size      int
	classes   int
	hidden    int
	dropout   float64
	batchNorm bool
}

func (f *modelFlags) register(cmd *cobra.Command, size int) {
	cmd.Flags().StringVar(&f.arch, "arch", "vgg16", "architecture: "+strings.Join(layers.Archs(), ", ")+", or a layer list such as \"64,M,128,M,256,256,M\"")
	cmd.Flags().IntVar(&f.size, "size", size, "input image size: a multiple of 32 (of 2^k for a layer list with k max-pools)")
	cmd.Flags().IntVar(&f.classes, "classes", 10, "number of classes")
	cmd.Flags().IntVar(&f.hidden, "hidden", 4096, "width of the two hidden fully connected layers")
	floatVar(cmd.Flags(), &f.dropout, "dropout", 0.5, "dropout probability in the classifier")
	cmd.Flags().BoolVar(&f.batchNorm, "batch-norm", true, "batch norm after every convolution")
}

func (f *modelFlags) config() (layers.Config, error) {
	c, err := layers.Arch(f.arch)
	if err != nil {
		return layers.Config{}, fmt.Errorf("--arch: %w", err)
	}
	cfg := layers.Config{Arch: c.Name(), Cfg: c, BatchNorm: f.batchNorm, ImageSize: f.size, Hidden: f.hidden, Classes: f.classes, Dropout: f.dropout}
	return cfg, withFlags(cfg.Validate())
}

// modelFlag is the flag that sets each field of layers.Config (the
// batch norm's eps and momentum have none).
var modelFlag = map[string]string{"Cfg": "--arch", "ImageSize": "--size", "Hidden": "--hidden",
	"Classes": "--classes", "Dropout": "--dropout"}

// withFlags names, after a model's error, the flags that can put it right.
func withFlags(err error) error {
	var ce *layers.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	var flags []string
	for _, f := range ce.Fields {
		if flag, ok := modelFlag[f]; ok {
			flags = append(flags, flag)
		}
	}
	switch len(flags) {
	case 0:
		return err
	case 1:
		return fmt.Errorf("%w (flag %s)", err, flags[0])
	}
	return fmt.Errorf("%w (flags %s)", err, strings.Join(flags, ", "))
}

func summaryCmd() *cobra.Command {
	var (
		mf                         modelFlags
		batch                      int
		recomputeBN, sgdInBackward bool
	)
	cmd := &cobra.Command{
		Use:   "summary [CHECKPOINT]",
		Short: "Print the layer table of a network: shapes, parameters, multiply-adds, memory",
		Long: `Print the layer table of a network: each module's input shape, kernel, output shape and
parameters, the multiply-adds of a forward pass, and the memory training and evaluation take on
the CPU at --batch. The network is the model flags', or a checkpoint's (a vgg16 checkpoint, or a
PyTorch state dict, as eval reads it).`,
		Example: `  vgg16 summary                       # VGG16-BN at 224x224, 10 classes
  vgg16 summary --arch vgg19 --size 32
  vgg16 summary --arch "64,M,128,M,256,256,M,512,512,M,512,512,M" --hidden 512
  vgg16 summary runs/x/best.safetensors --batch 128`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := mf.config()
			if len(args) == 1 {
				for _, name := range []string{"arch", "size", "classes", "hidden", "dropout", "batch-norm"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s with a checkpoint: the network is %s's", name, args[0])
					}
				}
				var ck *checkpoint.Checkpoint
				if ck, err = checkpoint.Load(args[0]); err == nil {
					cfg = ck.Info.Config
					// The estimate is of the run as it trained, unless told otherwise.
					if o, err := train.ParseOptions(ck.Info.Flags); err == nil {
						fs := cmd.Flags()
						if !fs.Changed("batch") && o.Batch > 0 {
							batch = o.Batch
							if o.Data != nil && o.Data.Limit > 0 { // as train's memory check counts it
								batch = min(batch, o.Data.Limit)
							}
						}
						if !fs.Changed("recompute-bn") {
							recomputeBN = o.RecomputeBN
						}
						if !fs.Changed("sgd-in-backward") {
							sgdInBackward = o.SGDInBackward
						}
					}
				}
			}
			if err != nil {
				return err
			}
			if err := train.CheckBatch(batch); err != nil {
				return err
			}
			rows, total, err := layers.Describe(cfg)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			printSummary(w, cfg, rows, total)
			trainBytes, err := estimateBytes(&train.Options{Model: cfg, Batch: batch, RecomputeBN: recomputeBN, SGDInBackward: sgdInBackward})
			if err != nil {
				return err
			}
			evalBytes, err := estimateEvalBytes(cfg, batch)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "memory on the CPU at batch %d: about %.1f GB to train, %.1f GB to evaluate\n", batch, float64(trainBytes)/1e9, float64(evalBytes)/1e9)
			return nil
		},
	}
	mf.register(cmd, 224)
	cmd.Flags().IntVar(&batch, "batch", 64, "batch size for the memory estimate")
	cmd.Flags().BoolVar(&recomputeBN, recomputeBNFlag, false, "the training estimate with "+recomputeBNFlag+", as train would run")
	cmd.Flags().BoolVar(&sgdInBackward, sgdInBackwardFlag, false, "the training estimate with "+sgdInBackwardFlag+", as train would run")
	return cmd
}

func printSummary(w io.Writer, cfg layers.Config, rows []layers.Row, total int) {
	bn := "BN"
	if !cfg.BatchNorm {
		bn = "no BN"
	}
	fmt.Fprintf(w, "%s (%s), input 3x%dx%d, %d classes\n\n", cfg.Arch, bn, cfg.ImageSize, cfg.ImageSize, cfg.Classes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\ttype\tinput\tkernel\toutput\tparameters\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, r.Kind, shape(r.In), r.Kernel, shape(r.Out), group(r.Params))
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntotal parameters: %s (%.1f MB as float32)\n", group(total), float64(total)*4/1e6)
	fmt.Fprintf(w, "multiply-adds of a forward pass: %.2f G an image (a training step: about 3x)\n", float64(forwardMACs(rows))/1e9)
}

// forwardMACs is the multiply-adds of one image's forward pass.
func forwardMACs(rows []layers.Row) int64 {
	var n int64
	for _, r := range rows {
		n += r.MACs
	}
	return n
}

func shape(s []int) string {
	p := make([]string, len(s))
	for i, d := range s {
		p[i] = fmt.Sprint(d)
	}
	return strings.Join(p, "x")
}

// group writes n with thousands separators: 134,309,962.
func group(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// configOver applies the model flags that were given to base.
func (f *modelFlags) configOver(base layers.Config, fs *pflag.FlagSet) (layers.Config, error) {
	cfg := base
	if fs.Changed("arch") {
		c, err := layers.Arch(f.arch)
		if err != nil {
			return cfg, fmt.Errorf("--arch: %w", err)
		}
		cfg.Arch, cfg.Cfg = c.Name(), c
	}
	if fs.Changed("size") {
		cfg.ImageSize = f.size
	}
	if fs.Changed("hidden") {
		cfg.Hidden = f.hidden
	}
	if fs.Changed("dropout") {
		cfg.Dropout = f.dropout
	}
	if fs.Changed("batch-norm") {
		cfg.BatchNorm = f.batchNorm
	}
	if fs.Changed("classes") {
		cfg.Classes = f.classes
	}
	return cfg, withFlags(cfg.Validate())
}
