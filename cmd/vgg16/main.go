// Command vgg16 trains and evaluates VGG networks on CIFAR-10, on an NVIDIA
// GPU or the CPU. The commands only parse flags and print; the work is in
// internal/.
package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vgg16/vgg16/internal/device"
	"github.com/vgg16/vgg16/internal/tensor"
)

func main() {
	if err := execute(newRoot(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vgg16:", err)
		os.Exit(exitCode(err))
	}
}

// stoppedError is train's error where a signal stopped the run after it
// saved a checkpoint that --resume continues from.
type stoppedError struct {
	sig syscall.Signal
	err error
}

func (e *stoppedError) Error() string { return e.err.Error() }
func (e *stoppedError) Unwrap() error { return e.err }

// exitCode is the process's exit status for a command's error: 128 + the
// signal's number where a signal stopped training (130 for SIGINT, 143 for
// SIGTERM, as a shell reports a process a signal ended), so that scripts
// and schedulers tell a run to resume from a failure, which is 1.
func exitCode(err error) int {
	if s := (*stoppedError)(nil); errors.As(err, &s) {
		return signalStatus(s.sig)
	}
	return 1
}

// quit ends the process at once with status code, deferred calls and
// all; a variable for the tests, which are the process.
var quit = os.Exit

// signalStatus is the exit status of a process that signal s stopped:
// 128 + its number, as exitCode gives it.
func signalStatus(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}

// execute runs the command tree on args. A backend reports a device
// failure (a failed CUDA call, out of memory) by panicking with an error
// value: it becomes the command's error, with the command's advice where
// the GPU ran out of memory. Programming errors still crash with a trace.
func execute(root *cobra.Command, args []string) (err error) {
	root.SetArgs(args)
	defer func() {
		if p := recover(); p != nil {
			if err = tensor.DeviceError(p); err == nil {
				panic(p)
			}
		}
		if cmd, _, ferr := root.Find(args); ferr == nil && device.OutOfMemory(err) {
			err = fmt.Errorf("%w; %s", err, memoryAdvice(cmd))
		}
	}()
	return root.Execute()
}

// memoryAdvice is what cmd's flags can do where the GPU ran out of memory.
func memoryAdvice(cmd *cobra.Command) string {
	const lighter = "--recompute-bn (batch-norm outputs recomputed, not kept) or --sgd-in-backward (each layer updated in the backward: no buffer for all the gradients)"
	switch cmd.Name() {
	case "train":
		if resume, _ := cmd.Flags().GetBool("resume"); resume {
			return "a resumed run keeps its --batch and --size: try " + lighter
		}
		return "try a smaller --batch (or --size), " + lighter
	case "bench":
		return "try a smaller --batch (or --size), " + lighter
	case "eval":
		return "try a smaller --batch, or --device cpu"
	}
	return "try --device cpu"
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "vgg16",
		Short: "Train and evaluate VGG networks on CIFAR-10",
		Long: `vgg16 trains VGG networks (VGG11/13/16/19 with batch norm, VGG11-LRN, VGG16-1,
or any torchvision-style layer list) on CIFAR-10 and evaluates them. Checkpoints
are safetensors files under torchvision's vgg16_bn key names.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(summaryCmd(), trainCmd(), evalCmd(), predictCmd(), dataCmd(), benchCmd(), doctorCmd(), convertCmd())
	root.SetFlagErrorFunc(flagValueError) // the subcommands inherit it
	// A result that could not be written (redirected to a full disk) fails
	// the command, not exit 0 with the result cut short. Not train's or the
	// download's output, a log of work whose result is in files.
	root.PersistentPreRun = func(cmd *cobra.Command, args []string) {
		if cmd.Name() != "train" && cmd.Name() != "download" {
			cmd.SetOut(&checkedWriter{w: cmd.OutOrStdout()})
		}
	}
	root.PersistentPostRunE = func(cmd *cobra.Command, args []string) error {
		if c, ok := cmd.OutOrStdout().(*checkedWriter); ok && c.err != nil {
			return fmt.Errorf("writing the output: %w", c.err)
		}
		return nil
	}
	return root
}

// checkedWriter keeps the first error of its writes, which fmt.Fprintf's
// callers do not look at.
type checkedWriter struct {
	w   io.Writer
	err error
}

func (c *checkedWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if c.err == nil {
		c.err = err
	}
	return n, err
}

// valueWanted names the kind of value each type of flag takes.
var valueWanted = map[string]string{"int": "an integer", "uint64": "a whole number, 0 or more",
	"float64": "a number", "bool": "true or false"}

// finite is a float64 flag that refuses NaN and ±Inf, which strconv
// parses: no option means anything at either, and JSON, in which a run
// records its options for --resume, cannot hold them.
type finite float64

var errNotFinite = errors.New("not a finite number")

// floatVar defines a float64 flag as pflag's Float64Var does, but finite.
func floatVar(fs *pflag.FlagSet, p *float64, name string, value float64, usage string) {
	*p = value
	fs.Var((*finite)(p), name, usage)
}

func (f *finite) String() string { return strconv.FormatFloat(float64(*f), 'g', -1, 64) }
func (f *finite) Type() string   { return "float64" }

func (f *finite) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
		err = errNotFinite
	}
	if err != nil {
		return err
	}
	*f = finite(v)
	return nil
}

// flagValueError says, for a flag value that does not parse, which flag
// and what it wants, instead of pflag's message, which quotes strconv
// ("strconv.ParseUint: parsing \"-1\": invalid syntax").
func flagValueError(cmd *cobra.Command, err error) error {
	var ie *pflag.InvalidValueError
	if !errors.As(err, &ie) {
		return err
	}
	want, ok := valueWanted[ie.GetFlag().Value.Type()]
	if !ok {
		return err
	}
	switch {
	case errors.Is(err, strconv.ErrRange):
		want += " within its type's range"
	case errors.Is(err, errNotFinite):
		want = "a finite number"
	}
	return fmt.Errorf("--%s %q: want %s (see %s --help)", ie.GetFlag().Name, ie.GetValue(), want, cmd.CommandPath())
}

// exactArgs is cobra.ExactArgs with a message that names the arguments
// the command wants, as its usage line does.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		return fmt.Errorf("%s takes %s, got %d argument%s (see %s --help)", cmd.CommandPath(), strings.Join(names, " "), len(args), plural(len(args)), cmd.CommandPath())
	}
}
