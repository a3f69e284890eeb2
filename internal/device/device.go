// Package device picks the backend a command runs on: the GPU when one is
// usable, else the CPU, and says why in one line.
package device

import (
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
	FusedBN    bool   // GPU: batch norm + ReLU as the project's fused kernels
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
	switch o.Kind {
	case "", "auto":
		be, err := openGPU(o)
		if err == nil {
			return be, "device: " + be.Name(), nil
		}
		c := cpu.New()
		return c, fmt.Sprintf("device: %s (no usable GPU: %s; vgg16 doctor tells more)%s", c.Name(), short(err), cpuPrecision(o)), nil
	case "cpu":
		c := cpu.New()
		return c, "device: " + c.Name() + cpuPrecision(o), nil
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

// cpuPrecision is the note a CPU's device line gets when another precision
// than float32 was asked for.
func cpuPrecision(o Options) string {
	if strings.EqualFold(o.Precision, "bf16") {
		return "; --precision bf16 applies to the GPU: the CPU computes in float32"
	}
	return ""
}
