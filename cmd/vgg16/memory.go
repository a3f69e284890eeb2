package main

import (
	"fmt"

	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/train"
)

// estimateBytes is roughly what training cfg at batch size takes on the
// CPU: the parameters, their gradients and momentum, the backend's scratch
// space, and the buffer that packs every module's output (ReLU works in
// place, Flatten is a view) and the gradients passed between them
// (internal/layers/activations.go): backward, the gradients of a module's
// output and input go above the outputs up to that module. With
// --recompute-bn the batch norms' outputs share one buffer instead; with
// --sgd-in-backward the gradients take one layer's size (a part of a large
// Linear's).
func estimateBytes(o *train.Options) (int64, error) { return estimate(o, true) }

// estimate is estimateBytes, of a training run where run is set (the
// saves' buffer, the loader's batches and the dataset around the step),
// else of the step alone, as bench takes it.
func estimate(o *train.Options, run bool) (int64, error) {
	cfg, batch, recompute := o.Model, o.Batch, o.RecomputeBN
	rows, params, err := layers.Describe(cfg)
	if err != nil {
		return 0, err
	}
	grads := params
	if o.SGDInBackward {
		if grads, err = layers.SharedGradients(cfg); err != nil {
			return 0, err
		}
	}
	var below, need, prev, shared int64 // per sample: outputs so far, the most the stack holds, the last output's size, the shared batch-norm output
	for _, r := range rows {
		n := int64(1)
		for _, d := range r.Out {
			n *= int64(d)
		}
		switch {
		case recompute && r.Kind == "BatchNorm2d":
			shared = max(shared, n)
		case r.Kind != "ReLU" && r.Kind != "Flatten":
			below += n
		}
		need = max(need, below, below+n+prev)
		prev = n
	}
	need += need/20 + shared // the stack places some gradients higher than this reckons: up to 2% (VGG16 at 224x224)
	// Around the step: the saves' copy of the state (train.Run's host
	// buffer), the loader's batches (two queued, one in the making, one in
	// use) and the dataset itself.
	image := 3 * float64(cfg.ImageSize) * float64(cfg.ImageSize)
	around := float64(params) + 4*float64(batch)*image + cifarBytes/4
	if !run {
		around = 0
	}
	return bytesOf(float64(need)*float64(batch) + 2*float64(params) + float64(grads) + around), nil
}

// cifarBytes is CIFAR-10 in memory: 60,000 images of 3,072 bytes and their
// labels. A run holds at most its training and validation sets.
const cifarBytes = 60_000 * 3_073

// bytesOf is the bytes of floats float32s and the CPU's scratch, counted in
// float64 so that no product of a batch and a layer's size wraps around
// to a small or negative estimate; beyond int64's range it saturates.
func bytesOf(floats float64) int64 {
	return int64(min(4*floats+cpuScratch, 1<<62))
}

// cpuScratch is the CPU backend's im2col, Winograd and GEMM buffers,
// bounded per call.
const cpuScratch = 3 * 32 << 20

// estimateEvalBytes is roughly what evaluating cfg at batch size takes on
// the CPU: the parameters and the checkpoint's copy of them, the backend's
// scratch space, and the outputs, of which an evaluation keeps only the
// last two or three (internal/layers/activations.go), planned without
// allocating (layers.EvalActivations).
func estimateEvalBytes(cfg layers.Config, batch int) (int64, error) {
	_, params, err := layers.Describe(cfg)
	if err != nil {
		return 0, err
	}
	// One image's plan times the batch, in int64: the batch's own plan can
	// overflow int on 32-bit builds (VGG16 at 224x224 from 335 images).
	acts, err := layers.EvalActivations(cfg, 1)
	if err != nil {
		return 0, err
	}
	return bytesOf(float64(acts)*float64(batch) + 2*float64(params)), nil
}

// checkCPUMemory refuses a run that cannot fit in the machine's memory,
// before it allocates and dies.
func checkCPUMemory(o *train.Options) error { return checkCPUMemoryOf(o, true) }

// checkCPUMemoryOf is checkCPUMemory of a training run (run), or of bench's
// steps alone: bench saves nothing and holds no CIFAR-10.
func checkCPUMemoryOf(o *train.Options, run bool) error {
	est := *o
	if o.Data != nil && o.Data.Limit > 0 { // no batch holds more images than the run trains on
		est.Batch = min(est.Batch, o.Data.Limit)
	}
	need, err := estimate(&est, run)
	if err != nil {
		return err
	}
	return fits(need, "", o.Batch, o.Model.ImageSize, "lower --batch or --size (or --recompute-bn, --sgd-in-backward)")
}

// checkCPUEvalMemory is checkCPUMemory for an evaluation.
func checkCPUEvalMemory(cfg layers.Config, batch int) error {
	need, err := estimateEvalBytes(cfg, batch)
	if err != nil {
		return err
	}
	return fits(need, " to evaluate", batch, cfg.ImageSize, "lower --batch")
}

// fits says what to do where need bytes (for what, at batch and size) are
// more than the machine has available.
func fits(need int64, what string, batch, size int, hint string) error {
	if have, kind := availableBytes(); have > 0 && need > have {
		return fmt.Errorf("--batch %d at %dx%d needs about %.1f GB on the CPU%s, this machine has %.1f GB %s: %s",
			batch, size, size, float64(need)/1e9, what, float64(have)/1e9, kind, hint)
	}
	return nil
}
