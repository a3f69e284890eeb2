// Package device picks the backend a command runs on: the GPU when one is
// usable, else the CPU, and says why in one line.
package device

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Options select a backend.
type Options struct {
	Kind       string // "auto", "cpu" or "cuda"
	GPU        int    // device index for cuda
	Precision  string // "tf32" (default), "fp32" or "bf16" on the GPU
	NoGraphs   bool   // GPU: issue every step's operations instead of replaying a CUDA graph
	UnfusedBN  bool   // GPU: cuDNN's batch norm and a separate ReLU instead of the project's fused kernels
	Workspace  int    // GPU: MiB one cuDNN convolution algorithm may use, 0 for the default
	TF32Linear bool   // GPU: TF32 tensor cores for Linear too
	ConvAPI    string // GPU: "graph" (default) or "legacy", how convolutions reach cuDNN
	// ChannelsLast: GPU, tf32: activation images stored NHWC, as bf16's are
	ChannelsLast bool
	// UnfusedPool: GPU: the max-pool after a batch norm a separate op
	UnfusedPool bool
}

// Open returns the backend, a line that says what was chosen (and, for
// auto, why not the GPU), or an error naming what is missing.
func Open(o Options) (tensor.Backend, string, error) {
	switch strings.ToLower(o.Precision) {
	case "", "tf32", "fp32", "bf16":
	default:
		return nil, "", fmt.Errorf("--precision %q: want tf32, fp32 or bf16", o.Precision)
	}
	switch strings.ToLower(o.ConvAPI) {
	case "", "graph", "legacy":
	default:
		return nil, "", fmt.Errorf("--cudnn-api %q: want graph or legacy", o.ConvAPI)
	}
	// Checked here, whatever the device: under auto, a GPU refusing a value
	// would otherwise send a run to the CPU with only a note.
	switch {
	case o.GPU < 0:
		return nil, "", fmt.Errorf("--gpu %d: want a GPU index, 0 or more", o.GPU)
	case o.Workspace < 0:
		return nil, "", fmt.Errorf("--cudnn-workspace %d: want 0 (the default, up to 4 GiB) or more MiB", o.Workspace)
	case o.ChannelsLast && strings.EqualFold(o.Precision, "fp32"):
		return nil, "", fmt.Errorf("--channels-last with --precision fp32: channels-last images are for tf32 (bf16 always has them)")
	case o.TF32Linear && (strings.EqualFold(o.Precision, "fp32") || strings.EqualFold(o.Precision, "bf16")):
		return nil, "", fmt.Errorf("--tf32-linear with --precision %s: TF32 Linear layers are for tf32 (fp32 has none, bf16 runs them in bf16)", strings.ToLower(o.Precision))
	}
	switch o.Kind {
	case "", "auto":
		be, err := openGPU(o)
		if err == nil {
			return be, "device: " + be.Name(), nil
		}
		var fe flagError
		if errors.As(err, &fe) {
			return nil, "", err
		}
		c := cpu.New()
		return c, fmt.Sprintf("device: %s (no usable GPU: %s; vgg16 doctor tells more)%s", c.Name(), short(err), cpuNotes(o)), nil
	case "cpu":
		c := cpu.New()
		return c, "device: " + c.Name() + cpuNotes(o), nil
	case "cuda", "gpu":
		be, err := openGPU(o)
		if err != nil {
			return nil, "", fmt.Errorf("--device cuda: %w", err)
		}
		return be, "device: " + be.Name(), nil
	}
	return nil, "", fmt.Errorf("--device %q: want auto, cpu or cuda", o.Kind)
}

// short is the first line of err without the places searched.
func short(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if i := strings.Index(s, " (looked in"); i > 0 {
		s = s[:i]
	}
	return s
}

// flagError is a GPU's refusal of a flag's value (an index beyond its
// GPUs): an error under auto too, not a reason to take the CPU.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

// cpuNotes is the note a CPU's device line gets for the GPU's flags that
// were set away from their defaults: the CPU ignores them.
func cpuNotes(o Options) string {
	var gpuOnly []string
	for _, f := range []struct {
		set  bool
		flag string
	}{
		{o.GPU != 0, fmt.Sprintf("--gpu %d", o.GPU)},
		{o.ChannelsLast, "--channels-last"},
		{o.TF32Linear, "--tf32-linear"},
		{o.Workspace != 0, "--cudnn-workspace"},
		{strings.EqualFold(o.ConvAPI, "legacy"), "--cudnn-api legacy"},
		{o.NoGraphs, "--no-cuda-graphs"},
		{o.UnfusedBN, "--fused-bn=false"},
		{o.UnfusedPool, "--fused-pool=false"},
	} {
		if f.set {
			gpuOnly = append(gpuOnly, f.flag)
		}
	}
	note := ""
	if strings.EqualFold(o.Precision, "bf16") {
		note = "; --precision bf16 applies to the GPU: the CPU computes in float32"
	}
	if len(gpuOnly) == 1 {
		note += "; " + gpuOnly[0] + " applies to the GPU: ignored"
	} else if len(gpuOnly) > 1 {
		note += "; " + strings.Join(gpuOnly, ", ") + " apply to the GPU: ignored"
	}
	return note
}
