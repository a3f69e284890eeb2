package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/device"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/tensor"
	"github.com/vgg16/vgg16/internal/train"
)

// BenchResult is what vgg16 bench measures.
type BenchResult struct {
	Device    string  `json:"device"`
	Arch      string  `json:"arch"`
	Size      int     `json:"size"`
	Batch     int     `json:"batch"`
	Precision string  `json:"precision,omitempty"`
	StepMs    float64 `json:"step_ms"` // median training step
	// EnqueueMs is the median time the host takes to issue a step, before
	// waiting for its result: on a GPU, a step no longer than this is bound
	// by the host (launch overhead), not by the device.
	EnqueueMs   float64 `json:"enqueue_ms"`
	TrainImgSec float64 `json:"train_images_per_sec"`
	// TrainTFLOPs is the model's arithmetic a second at that rate: three
	// times a forward pass's multiply-adds (forward, backward-data,
	// backward-filter), two flops each, as Winograd or not. Against the
	// device's peak it says how far a step is from its compute bound.
	TrainTFLOPs float64 `json:"train_tflops"`
	// Data says where each step's batch comes from: none (one fixed
	// synthetic batch), gpu (the input pipeline on the device) or cpu (the
	// CPU loader, uploaded), both over synthetic uint8 images.
	Data string `json:"data"`
	// PipelinedMs is a step's share of steps issued back to back, the
	// host waiting only where the training loop does (staging buffers),
	// batches made as Data says: the training loop's rate.
	PipelinedMs     float64 `json:"pipelined_step_ms"`
	PipelinedImgSec float64 `json:"pipelined_images_per_sec"`
	EvalImgSec      float64 `json:"eval_images_per_sec"`
	FirstStepSec    float64 `json:"first_step_sec"` // includes setup, algorithm search, compilation
	PeakMiB         float64 `json:"peak_mib"`
	// StepPeakMiB is the peak of the timed training steps alone, after the
	// warm-up (engine timing and its scratch, graph capture) that PeakMiB
	// includes: what a long run holds.
	StepPeakMiB float64 `json:"step_peak_mib,omitempty"`
	// StepPeakParts is what StepPeakMiB was made of, in MiB (peakParts).
	StepPeakParts map[string]float64 `json:"step_peak_parts,omitempty"`
	CUDAGraphs    bool               `json:"cuda_graphs"`               // steps recorded and replayed as CUDA graphs
	CUDAGraphsOff string             `json:"cuda_graphs_off,omitempty"` // why a failed capture turned them off
	FusedBN       bool               `json:"fused_bn,omitempty"`        // batch norm + ReLU as vgg16's fused kernels
	RecomputeBN   bool               `json:"recompute_bn,omitempty"`    // batch-norm outputs recomputed in the backward
	UnfusedPool   bool               `json:"unfused_pool,omitempty"`    // --fused-pool=false: max-pools as separate ops
	Unpacked      bool               `json:"unpacked,omitempty"`        // --unpacked: a buffer per layer output, two for the gradients
	SGDInBackward bool               `json:"sgd_in_backward,omitempty"` // each layer updated in the backward, gradients shared
	// ConvEngines says, per convolution geometry and direction, which cuDNN
	// API and engine ran it (or why the graph API was not used).
	ConvEngines []string `json:"conv_engines,omitempty"`
	// EngineSearch is what choosing the convolution algorithms cost (most
	// of the first step on a GPU): directions searched, of them remembered
	// from an earlier run, plans built, seconds building and timing them.
	EngineSearch map[string]float64 `json:"engine_search,omitempty"`
	// With --profile: each op's GPU time in a step issued op by op, their
	// sum, and the GPU time of one replayed recorded step.
	Profile           []tensor.OpTime `json:"profile,omitempty"`
	ProfileGPUMs      float64         `json:"profile_gpu_ms,omitempty"`
	RecordedStepGPUMs float64         `json:"recorded_step_gpu_ms,omitempty"`
}

// peakParts is what the backend's peak memory was made of, in MiB, where
// it says (the GPU's PeakParts): the model's parameters, their gradients
// and the momentum taken out of the float32 tensors, the rest as the
// backend names it.
func peakParts(be tensor.Backend, m *layers.Model) map[string]float64 {
	p, ok := be.(interface{ PeakParts() map[string]int64 })
	if !ok {
		return nil
	}
	out := map[string]float64{}
	params := int64(4 * (2*m.FlatSize() + m.Grads().Size())) // the gradients may be one layer's (--sgd-in-backward)
	for k, v := range p.PeakParts() {
		if k == "float32 tensors" {
			out["parameters, gradients, momentum"] = float64(min(v, params)) / (1 << 20)
			v -= min(v, params)
			k = "other float32 tensors"
		}
		if v > 0 {
			out[k] = float64(v) / (1 << 20)
		}
	}
	return out
}

// peakReporter is implemented by backends that track their memory.
type peakReporter interface {
	PeakBytes() int64
	ResetPeak()
}

func benchCmd() *cobra.Command {
	var (
		mf           modelFlags
		dev          deviceFlags
		batch, steps int
		asJSON       bool
		profile      bool
		opt          benchOptions
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure training-step and evaluation throughput on synthetic data",
		Example: `  vgg16 bench --device cuda --size 32 --batch 128
  vgg16 bench --device cpu --size 32 --batch 64 --steps 5 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := mf.config()
			if err != nil {
				return err
			}
			if err := train.CheckBatch(batch); err != nil {
				return err
			}
			if steps < 1 {
				return fmt.Errorf("--steps %d: need at least 1", steps)
			}
			be, line, err := device.Open(dev.options())
			if err != nil {
				return err
			}
			defer be.Close()
			if err := fitsBackend(be, cfg); err != nil {
				return err
			}
			if _, onCPU := be.(*cpu.Backend); onCPU {
				o := train.Options{Model: cfg, Batch: batch, RecomputeBN: opt.recomputeBN, SGDInBackward: opt.sgdInBackward}
				if err := checkCPUMemoryOf(&o, false); err != nil {
					return err
				}
			}
			opt.batch, opt.steps, opt.profile = batch, steps, profile
			res, err := bench(be, cfg, opt)
			if err != nil {
				return err
			}
			// The CPU computes in fp32, whatever --precision asked; the GPU
			// options mean nothing there.
			res.Device, res.Precision = be.Name(), "fp32"
			if _, onCPU := be.(*cpu.Backend); !onCPU {
				res.Precision, res.UnfusedPool = dev.opt.Precision, !dev.fusedPool
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(res)
			}
			fmt.Fprintln(w, line)
			fmt.Fprintf(w, "%s at %dx%d, batch %d: training step %.2f ms (%.0f img/s, %.3g TFLOP/s of the model's arithmetic), evaluation %.0f img/s, first step %.2f s, peak %.0f MiB\n",
				res.Arch, res.Size, res.Size, res.Batch, res.StepMs, res.TrainImgSec, res.TrainTFLOPs, res.EvalImgSec, res.FirstStepSec, res.PeakMiB)
			from := "batches from " + res.Data
			if res.Data == "none" {
				from = "the same batch each step"
			}
			fmt.Fprintf(w, "steps back to back, %s: %.2f ms a step (%.0f img/s)\n", from, res.PipelinedMs, res.PipelinedImgSec)
			if res.StepPeakMiB > 0 {
				fmt.Fprintf(w, "peak memory of the timed steps alone (after engine timing and capture): %.0f MiB%s\n", res.StepPeakMiB, formatParts(res.StepPeakParts))
			}
			if n := len(res.ConvEngines); n > 0 {
				legacy := 0
				for _, e := range res.ConvEngines {
					if strings.Contains(e, ": legacy") {
						legacy++
					}
				}
				fmt.Fprintf(w, "convolutions: %d of %d directions through cuDNN's graph API (the rest legacy; --json lists each)\n", n-legacy, n)
			}
			if s := res.EngineSearch; s != nil {
				fmt.Fprintf(w, "choosing them: %.0f graph directions (%.0f remembered from an earlier run), %.0f plans built in %.2f s, timed in %.2f s; %.0f legacy searches, %.2f s\n",
					s["directions"], s["remembered"], s["plans"], s["build_s"], s["timing_s"], s["legacy"], s["legacy_s"])
			}
			if res.CUDAGraphsOff != "" {
				fmt.Fprintf(w, "CUDA graphs turned off: %s\n", res.CUDAGraphsOff)
			}
			if len(res.Profile) > 0 {
				replayed := "" // none where steps are not recorded (--no-cuda-graphs)
				if res.RecordedStepGPUMs > 0 {
					replayed = fmt.Sprintf("; a replayed recorded step: %.2f ms", res.RecordedStepGPUMs)
				}
				fmt.Fprintf(w, "GPU time of a step issued op by op: %.2f ms in all%s\n", res.ProfileGPUMs, replayed)
				fmt.Fprintf(w, "%-22s %6s %9s %6s\n", "op", "calls", "ms", "share")
				for _, r := range res.Profile {
					fmt.Fprintf(w, "%-22s %6d %9.3f %5.1f%%\n", r.Op, r.Calls, r.Ms, 100*r.Ms/res.ProfileGPUMs)
					for _, k := range r.Parts { // its kernels
						fmt.Fprintf(w, "  %-28s %6d %9.3f\n", k.Op, k.Calls, k.Ms)
					}
				}
			}
			return nil
		},
	}
	mf.register(cmd, 32)
	dev.register(cmd.Flags())
	cmd.Flags().IntVar(&batch, "batch", 128, "batch size")
	cmd.Flags().IntVar(&steps, "steps", 20, "timed steps (after 3 warm-up steps)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&profile, "profile", false, "GPU: also time each operation of a step on the GPU and print where the time goes")
	cmd.Flags().BoolVar(&opt.recomputeBN, recomputeBNFlag, false, recomputeBNUsage)
	cmd.Flags().BoolVar(&opt.sgdInBackward, sgdInBackwardFlag, false, sgdInBackwardUsage)
	cmd.Flags().BoolVar(&opt.unpacked, "unpacked", false, "give every layer's output a buffer of its own and the gradients two more, as before activations were packed (to measure what packing saves)")
	cmd.Flags().StringVar(&opt.data, "data", "none", "where each step's batch comes from: none (one fixed batch), gpu (augmented on the device from uint8 images it holds) or cpu (augmented by the CPU loader and uploaded)")
	return cmd
}

// recomputeBNFlag is train's and bench's flag for layers.Model.RecomputeBN.
const (
	recomputeBNFlag  = "recompute-bn"
	recomputeBNUsage = "keep one batch-norm output at a time and recompute the others in the backward, as PyTorch's compiled graphs do: less device memory (about 0.5 GB at 224x224, batch 64, bf16) for one more pass over each output"
	// sgdInBackwardFlag is train's and bench's flag for
	// layers.Model.BackwardUpdate with shared gradients.
	sgdInBackwardFlag  = "sgd-in-backward"
	sgdInBackwardUsage = "update each layer's parameters as soon as the backward has their gradients, a large Linear's weights a part of their rows at a time, so that VGG16's gradients take 16 MiB instead of 128 MiB at 32x32 and 512 MiB at 224x224; the same training, one SGD launch per layer or part instead of one per step"
)

// formatParts lists peak memory's parts, largest first: " = 1536 MiB
// parameters, gradients, momentum + …".
func formatParts(parts map[string]float64) string {
	keys := slices.Collect(maps.Keys(parts))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(parts[b], parts[a]) })
	var b strings.Builder
	for i, k := range keys {
		sep := " + "
		if i == 0 {
			sep = " = "
		}
		prec := 0
		if parts[k] < 10 {
			prec = 2
		}
		fmt.Fprintf(&b, "%s%.*f MiB %s", sep, prec, parts[k], k)
	}
	return b.String()
}

// benchOptions are what bench measures, from the flags.
type benchOptions struct {
	batch, steps         int
	profile, recomputeBN bool
	sgdInBackward        bool   // layers.Model.BackwardUpdate, gradients shared
	unpacked             bool   // layers.Model.PackActivations(false)
	data                 string // where each step's batch comes from: none, gpu or cpu
}

func bench(be tensor.Backend, cfg layers.Config, opt benchOptions) (*BenchResult, error) {
	batch, steps, profile, recomputeBN, data := opt.batch, opt.steps, opt.profile, opt.recomputeBN, opt.data
	switch data {
	case "none", "gpu", "cpu":
	default:
		return nil, fmt.Errorf("--data %q: want none, gpu or cpu", data)
	}
	if _, ok := be.(tensor.Profiler); opt.profile && !ok {
		return nil, fmt.Errorf("--profile: the %s backend has no op profiler (the GPU has)", kind(be)) // before the timed steps, not after
	}
	m, err := layers.New(be, cfg)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	m.Init(1)
	m.RecomputeBN(recomputeBN)
	m.PackActivations(!opt.unpacked)
	m.ShareGradients(opt.sgdInBackward)
	rng := rand.New(rand.NewPCG(1, 2))
	s := cfg.ImageSize
	xh := make([]float32, batch*3*s*s)
	for i := range xh {
		xh[i] = float32(rng.NormFloat64())
	}
	yh := make([]float32, batch)
	for i := range yh {
		yh[i] = float32(rng.IntN(cfg.Classes))
	}
	x, y, loss, dl, mom := tensor.NewActivation(be, batch, 3, s, s), be.New(batch), be.New(1), tensor.NewActivation(be, batch, cfg.Classes), be.New(m.FlatSize())
	defer func() {
		for _, t := range []*tensor.Tensor{x, y, loss, dl, mom} {
			be.Free(t)
		}
	}()
	be.Upload(x, xh)
	be.Upload(y, yh)
	feed, closeFeed, err := benchFeed(be, data, x, y, cfg.ImageSize, batch, rng)
	if err != nil {
		return nil, err
	}
	defer closeFeed()
	host := make([]float32, 1)
	h := tensor.SGD{LR: 1e-3, Momentum: 0.9, WeightDecay: 5e-4}
	var issued time.Time
	opByOp := false
	// issue queues one training step (its batch first, as --data says);
	// step also waits for it. Recorded for backends that record steps,
	// after the first, whose SGD fills the momentum.
	var issue func(first bool)
	step := func(first bool) {
		issue(first)
		be.Download(host, loss) // waits for the step
	}
	issue = func(first bool) {
		feed()
		work := func() {
			logits := m.Forward(x, true)
			be.SoftmaxCrossEntropy(loss, dl, logits, y, 0)
			m.BackwardSGD(dl, mom, h, first)
		}
		if first || opByOp {
			work()
		} else {
			tensor.Step(be, "bench", work)
		}
		issued = time.Now()
	}
	t0 := time.Now()
	step(true)
	first := time.Since(t0).Seconds()
	for i := 0; i < 2; i++ {
		step(false)
	}
	peaks, _ := be.(peakReporter)
	var warmPeak int64
	if peaks != nil {
		warmPeak = peaks.PeakBytes()
		peaks.ResetPeak()
	}
	times, enqueue := make([]float64, steps), make([]float64, steps)
	for i := range times {
		t := time.Now()
		step(false)
		times[i], enqueue[i] = time.Since(t).Seconds(), issued.Sub(t).Seconds()
	}
	med, enq := median(times), median(enqueue)
	// The same steps back to back, as the training loop issues them.
	t1 := time.Now()
	for range steps {
		issue(false)
	}
	be.Download(host, loss)
	pipe := time.Since(t1).Seconds() / float64(steps)
	var stepPeak int64
	var stepParts map[string]float64
	if peaks != nil {
		stepPeak = peaks.PeakBytes()
		stepParts = peakParts(be, m)
	}
	out := make([]float32, batch*cfg.Classes)
	evalSteps := max(steps, 3)
	t := time.Now()
	for i := 0; i < evalSteps; i++ {
		var o *tensor.Tensor
		tensor.Step(be, "bench-eval", func() { o = m.Forward(x, false) })
		be.Download(out, o)
	}
	evalSec := time.Since(t).Seconds()
	res := &BenchResult{Arch: cfg.Arch, Size: s, Batch: batch, RecomputeBN: recomputeBN, Unpacked: opt.unpacked, SGDInBackward: opt.sgdInBackward, StepMs: 1e3 * med, EnqueueMs: 1e3 * enq, TrainImgSec: float64(batch) / med,
		EvalImgSec: float64(batch*evalSteps) / evalSec, FirstStepSec: first,
		Data: data, PipelinedMs: 1e3 * pipe, PipelinedImgSec: float64(batch) / pipe}
	res.TrainTFLOPs = 3 * 2 * float64(forwardMACs(m.Summary())) * res.TrainImgSec / 1e12
	if profile {
		p := be.(tensor.Profiler) // checked before the steps
		// Steps issued op by op, each op timed on the GPU; then recorded
		// steps, whose replays show as EndStep.
		const n = 5
		for _, byOp := range []bool{true, false} {
			opByOp = byOp
			p.Profile(true)
			for i := 0; i < n; i++ {
				step(false)
			}
			rows, err := p.ProfileReport()
			if err != nil {
				return nil, err
			}
			p.Profile(false)
			for _, r := range rows { // per step, the op's kernels too
				r.Calls /= n
				r.Ms /= n
				for i := range r.Parts {
					r.Parts[i].Calls /= n
					r.Parts[i].Ms /= n
				}
				if byOp {
					res.Profile = append(res.Profile, r)
					res.ProfileGPUMs += r.Ms
				} else if r.Op == "EndStep" {
					res.RecordedStepGPUMs = r.Ms
				}
			}
		}
		opByOp = false
	}
	if g, ok := be.(interface {
		Graphs() bool
		GraphsOff() error
	}); ok {
		res.CUDAGraphs = g.Graphs()
		if err := g.GraphsOff(); err != nil {
			res.CUDAGraphsOff = err.Error()
		}
	}
	if f, ok := be.(interface{ FusedBN() bool }); ok {
		res.FusedBN = f.FusedBN()
	}
	if c, ok := be.(interface{ ConvEngines() []string }); ok {
		res.ConvEngines = c.ConvEngines()
	}
	if c, ok := be.(interface{ EngineSearch() map[string]float64 }); ok {
		res.EngineSearch = c.EngineSearch()
	}
	if peaks != nil {
		res.PeakMiB = float64(max(warmPeak, peaks.PeakBytes())) / (1 << 20)
		res.StepPeakMiB = float64(stepPeak) / (1 << 20)
		res.StepPeakParts = stepParts
	} else {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		res.PeakMiB = float64(ms.Sys) / (1 << 20)
	}
	return res, nil
}

// median sorts v and returns its middle element.
func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// benchFeed returns what makes each bench step's batch in x [B,3,S,S] and y
// [B]: nothing for data "none" (the fixed batch already uploaded), else
// the training loop's batch source over synthetic uint8 images, augmented
// as the recipe for size S does (pad-crop at 32, RandomResizedCrop
// otherwise), on the device (gpu) or by the CPU loader (cpu).
func benchFeed(be tensor.Backend, data string, x, y *tensor.Tensor, s, batch int, rng *rand.Rand) (feed func(), done func(), err error) {
	if data == "none" {
		return func() {}, func() {}, nil
	}
	n := max(8*batch, 1024)
	ds := &cifar.Dataset{Images: make([]byte, n*cifar.ImageBytes), Labels: make([]uint8, n), Classes: cifar.ClassNames}
	for i := range ds.Images {
		ds.Images[i] = byte(rng.Uint32())
	}
	for i := range ds.Labels {
		ds.Labels[i] = uint8(i % cifar.NumClasses)
	}
	var set tensor.ImageSet
	if data == "gpu" {
		if set = train.UploadImages(be, ds); set == nil {
			return nil, nil, fmt.Errorf("--data gpu: the %s backend cannot hold the images (the GPU can); use --data cpu", kind(be))
		}
	}
	var tf cifar.Transform = cifar.SeedTransform{Size: s}
	if s == cifar.Side {
		tf = cifar.CIFARTransform{}
	}
	epoch := 0
	var src train.Source
	open := func() error {
		var err error
		src, err = train.NewSource(be, ds, set, cifar.LoaderOptions{Batch: batch, Shuffle: true, DropLast: true, Transform: tf, Seed: 1, Epoch: epoch})
		epoch++
		return err
	}
	if err := open(); err != nil {
		return nil, nil, err
	}
	feed = func() {
		if _, _, ok := src.Next(x, y); !ok { // the epoch is over: the next one
			src.Close()
			if err := open(); err != nil {
				panic(err)
			}
			src.Next(x, y)
		}
	}
	done = func() {
		src.Close()
		if set != nil {
			set.Free()
		}
	}
	return feed, done, nil
}

// kind is the first part of a backend's name: "cpu", or the GPU's "cuda:0 …".
func kind(be tensor.Backend) string {
	k, _, _ := strings.Cut(be.Name(), ",")
	return k
}
