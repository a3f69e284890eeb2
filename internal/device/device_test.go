package device

import (
	"context"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/gpu/gputest"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/train"
)

func TestOpenCPUAndBadKind(t *testing.T) {
	be, line, err := Open(Options{Kind: "cpu"})
	if err != nil || !strings.HasPrefix(line, "device: cpu") {
		t.Fatalf("cpu: %v %q", err, line)
	}
	be.Close()
	if _, _, err := Open(Options{Kind: "tpu"}); err == nil || !strings.Contains(err.Error(), "--device") {
		t.Fatalf("--device tpu: %v", err)
	}
}

// TestOpenRefusesBadGPUFlags: a GPU flag's bad value is an error naming
// the flag on every device, auto included (where it once sent the run to
// the CPU with a note), and the CPU's line names the GPU flags it ignores.
func TestOpenRefusesBadGPUFlags(t *testing.T) {
	for _, kind := range []string{"auto", "cpu", "cuda"} {
		for _, c := range []struct {
			o    Options
			want string
		}{
			{Options{GPU: -1}, "--gpu -1: want a GPU index"},
			{Options{Workspace: -5}, "--cudnn-workspace -5: want 0"},
			{Options{ChannelsLast: true, Precision: "fp32"}, "--channels-last with --precision fp32"},
			{Options{TF32Linear: true, Precision: "fp32"}, "--tf32-linear with --precision fp32: TF32 Linear layers are for tf32"},
			{Options{TF32Linear: true, Precision: "BF16"}, "--tf32-linear with --precision bf16"},
		} {
			c.o.Kind = kind
			if _, _, err := Open(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("--device %s, %+v: %v, want %q", kind, c.o, err, c.want)
			}
		}
	}
	be, line, err := Open(Options{Kind: "cpu", Precision: "bf16", GPU: 1, ChannelsLast: true, NoGraphs: true, UnfusedBN: true})
	if err != nil {
		t.Fatal(err)
	}
	be.Close()
	if want := "the CPU computes in float32; --gpu 1, --channels-last, --no-cuda-graphs, --fused-bn=false apply to the GPU: ignored"; !strings.HasSuffix(line, want) {
		t.Errorf("device line %q, want it to end %q", line, want)
	}
	be, line, err = Open(Options{Kind: "cpu", TF32Linear: true})
	if err != nil {
		t.Fatal(err)
	}
	be.Close()
	if want := "; --tf32-linear applies to the GPU: ignored"; !strings.HasSuffix(line, want) {
		t.Errorf("device line %q, want it to end %q", line, want)
	}
}

// TestTrainOnStandInGPU builds the stand-in CUDA libraries (gputest: they
// compute on the host and run the real kernels.cu), points
// VGG16_CUDA_PATH at them, and trains through the same path the CLI takes:
// --device cuda picks the GPU backend, and a short run matches the CPU's.
func TestTrainOnStandInGPU(t *testing.T) {
	dir := gputest.BuildFakeCUDA(t)
	t.Setenv("VGG16_CUDA_PATH", dir)

	gpuBE, line, err := Open(Options{Kind: "cuda", Precision: "fp32"})
	if err != nil {
		t.Fatalf("--device cuda on the stand-in: %v", err)
	}
	defer gpuBE.Close()
	if !strings.Contains(line, "cuda:0") {
		t.Errorf("device line %q", line)
	}
	auto, line, err := Open(Options{Kind: "auto"})
	if err != nil || !strings.Contains(line, "cuda:0") {
		t.Errorf("--device auto did not pick the GPU: %q %v", line, err)
	}
	if auto != nil {
		auto.Close()
	}
	// An index beyond the GPUs is the user's to correct, under auto too.
	for _, kind := range []string{"auto", "cuda"} {
		if _, _, err := Open(Options{Kind: kind, GPU: 7}); err == nil || !strings.Contains(err.Error(), "--gpu 7: GPU 7 requested, but this machine has 1") {
			t.Errorf("--device %s --gpu 7 on one GPU: %v", kind, err)
		}
	}
	// A driver that sees no GPU is no usable GPU: auto takes the CPU, and
	// no flag is blamed.
	t.Setenv("FAKECUDA_DEVICES", "0")
	if be, line, err := Open(Options{Kind: "auto"}); err != nil || !strings.Contains(line, "device: cpu") || !strings.Contains(line, "no usable GPU: the CUDA driver found no GPU") {
		t.Errorf("--device auto, no GPU: %q %v", line, err)
	} else {
		be.Close()
	}
	if _, _, err := Open(Options{Kind: "cuda"}); err == nil || !strings.Contains(err.Error(), "--device cuda: the CUDA driver found no GPU") {
		t.Errorf("--device cuda, no GPU: %v", err)
	}
	os.Unsetenv("FAKECUDA_DEVICES")

	cfg, _ := layers.ParseCfg("16,M,16,M,16,M,16,M,16,M")
	o := train.CIFARRecipe()
	o.Model = layers.Config{Arch: "t", Cfg: cfg, BatchNorm: true, ImageSize: 32, Hidden: 32, Classes: 10, Dropout: 0.5}
	o.Epochs, o.Batch, o.Workers = 2, 16, 2
	// Three classes a small network can learn in two epochs: each
	// brightens one colour channel, over a pattern shared by all.
	ds := &cifar.Dataset{Images: make([]byte, 96*3072), Labels: make([]uint8, 96), Classes: cifar.ClassNames}
	for i := range ds.Images {
		ds.Images[i] = byte(i * 7 % 151)
	}
	for i := range ds.Labels {
		c := i % 3
		ds.Labels[i] = uint8(c)
		plane := ds.Images[i*3072+c*1024 : i*3072+(c+1)*1024]
		for p := range plane {
			plane[p] += 100
		}
	}
	tr, val := ds.Split(0.25, 1)
	run := func(be interface{ Name() string }, r *train.Run) []train.EpochMetrics {
		h, err := r.Execute(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", be.Name(), err)
		}
		return h
	}
	notes := &noteReport{}
	g := &train.Run{Dir: t.TempDir(), Opt: o, Classes: cifar.ClassNames, Train: tr, Val: val, Backend: gpuBE, Report: notes}
	c := &train.Run{Dir: t.TempDir(), Opt: o, Classes: cifar.ClassNames, Train: tr, Val: val, Backend: cpu.New(), Report: nopReport{}}
	hg, hc := run(gpuBE, g), run(c.Backend, c)
	if !strings.Contains(strings.Join(notes.notes, "\n"), "augmenting on the device: 72 training images") {
		t.Errorf("the GPU run did not make its batches on the device; notes: %q", notes.notes)
	}
	// In bf16 (activations rounded at every layer) the run learns as the
	// float32 one does, within bf16's noise.
	bf, line, err := Open(Options{Kind: "cuda", Precision: "bf16"})
	if err != nil {
		t.Fatalf("--precision bf16 on the stand-in: %v", err)
	}
	defer bf.Close()
	if !strings.Contains(line, "precision bf16") {
		t.Errorf("device line %q", line)
	}
	hb := run(bf, &train.Run{Dir: t.TempDir(), Opt: o, Classes: cifar.ClassNames, Train: tr, Val: val, Backend: bf, Report: nopReport{}})
	for i := range hc {
		t.Logf("epoch %d: bf16 train/val loss %.6f/%.6f, float32 %.6f/%.6f", i+1, hb[i].TrainLoss, hb[i].ValLoss, hc[i].TrainLoss, hc[i].ValLoss)
		if d := math.Abs(hb[i].TrainLoss - hc[i].TrainLoss); !(d <= bf16LossTol*hc[i].TrainLoss) {
			t.Errorf("epoch %d: bf16 train loss %.5f, float32 %.5f", i+1, hb[i].TrainLoss, hc[i].TrainLoss)
		}
		if d := math.Abs(hb[i].ValLoss - hc[i].ValLoss); !(d <= bf16LossTol*hc[i].ValLoss) {
			t.Errorf("epoch %d: bf16 val loss %.5f, float32 %.5f", i+1, hb[i].ValLoss, hc[i].ValLoss)
		}
	}

	// The same run with the CPU loader's batches: the same numbers exactly,
	// since the device makes the loader's batches bit for bit.
	o.CPUAugment = true
	h := &train.Run{Dir: t.TempDir(), Opt: o, Classes: cifar.ClassNames, Train: tr, Val: val, Backend: gpuBE, Report: nopReport{}}
	for i, m := range run(gpuBE, h) {
		if m.TrainLoss != hg[i].TrainLoss || m.ValLoss != hg[i].ValLoss || m.ValAcc != hg[i].ValAcc {
			t.Errorf("epoch %d: batches from the CPU loader give train/val loss %.9g/%.9g, from the device %.9g/%.9g", i+1, m.TrainLoss, m.ValLoss, hg[i].TrainLoss, hg[i].ValLoss)
		}
	}
	// Each layer updated in the backward, in recorded steps: the same
	// training exactly.
	o.CPUAugment, o.SGDInBackward = false, true
	h = &train.Run{Dir: t.TempDir(), Opt: o, Classes: cifar.ClassNames, Train: tr, Val: val, Backend: gpuBE, Report: nopReport{}}
	for i, m := range run(gpuBE, h) {
		if m.TrainLoss != hg[i].TrainLoss || m.ValLoss != hg[i].ValLoss || m.ValAcc != hg[i].ValAcc {
			t.Errorf("epoch %d: SGD in the backward gives train/val loss %.9g/%.9g, after it %.9g/%.9g", i+1, m.TrainLoss, m.ValLoss, hg[i].TrainLoss, hg[i].ValLoss)
		}
	}
	for i := range hc {
		if d := math.Abs(hg[i].TrainLoss - hc[i].TrainLoss); d > 1e-4*math.Abs(hc[i].TrainLoss) {
			t.Errorf("epoch %d: train loss %.7f on the stand-in GPU, %.7f on the CPU", i+1, hg[i].TrainLoss, hc[i].TrainLoss)
		}
		if d := math.Abs(hg[i].ValLoss - hc[i].ValLoss); d > 1e-4*math.Abs(hc[i].ValLoss) {
			t.Errorf("epoch %d: val loss %.7f on the stand-in GPU, %.7f on the CPU", i+1, hg[i].ValLoss, hc[i].ValLoss)
		}
	}
}

// bf16LossTol is how far a bf16 run's mean losses may be from the float32
// run's (relative; measured on the stand-in: 1e-4, while the validation
// loss falls from 2.25 to 2.07 over the two epochs).
const bf16LossTol = 0.01

type nopReport struct{}

func (nopReport) EpochStart(int, int, int)    {}
func (nopReport) Step(train.StepStats)        {}
func (nopReport) Validating(int, int)         {}
func (nopReport) EpochEnd(train.EpochMetrics) {}
func (nopReport) Note(string)                 {}

type noteReport struct {
	nopReport
	notes []string
}

func (r *noteReport) Note(s string) { r.notes = append(r.notes, s) }

func TestOpenRejectsUnknownPrecision(t *testing.T) {
	if _, _, err := Open(Options{Kind: "auto", Precision: "fp16"}); err == nil || !strings.Contains(err.Error(), "--precision \"fp16\": want tf32, fp32 or bf16") {
		t.Fatalf("--precision fp16: %v", err)
	}
}

func TestCPUSaysPrecisionIsFloat32(t *testing.T) {
	be, line, err := Open(Options{Kind: "cpu", Precision: "bf16"})
	if err != nil || !strings.Contains(line, "--precision bf16 applies to the GPU") {
		t.Fatalf("--device cpu --precision bf16: %q %v", line, err)
	}
	be.Close()
}
