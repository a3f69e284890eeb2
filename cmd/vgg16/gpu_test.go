package main

// The GPU flags and the GPU paths of the commands, on the stand-in CUDA
// libraries where a GPU runs.

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/gpu/gputest"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/tensor"
)

// TestCuDNNAPIFlag: --cudnn-api takes graph or legacy, and every command
// that opens a device refuses another value, naming it and the choices,
// before it touches a device or data (here on the CPU, where the flag
// would not matter).
func TestCuDNNAPIFlag(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--device", "cpu", "--cudnn-api", "fast"},
		{"train", "--device", "cpu", "--data", "demo", "--cudnn-api", "fast", "--epochs", "1"},
	} {
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), `--cudnn-api "fast": want graph or legacy`) {
			t.Errorf("%s: %v", strings.Join(args, " "), err)
		}
	}
}

// layoutBackend is the CPU backend claiming a GPU's precision and layout.
type layoutBackend struct {
	tensor.Backend
	bf16, nhwc bool
}

func (b layoutBackend) BF16() bool { return b.bf16 }
func (b layoutBackend) NHWC() bool { return b.nhwc }

// TestFitsBackend: a model with LRN is refused, naming the flag, on a
// backend that runs bf16 or channels-last images (cuDNN's LRN takes
// float32 NCHW only), before anything runs; other models pass.
func TestFitsBackend(t *testing.T) {
	lrn, err := layers.Arch("vgg11-lrn")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := layers.Arch("vgg11")
	if err != nil {
		t.Fatal(err)
	}
	cpuBE := cpu.New()
	for _, c := range []struct {
		bf16, nhwc bool
		cfg        layers.Cfg
		want       string
	}{
		{false, false, lrn, ""},
		{true, true, lrn, "--precision bf16: vgg11-lrn has a local response normalisation layer"},
		{false, true, lrn, "--channels-last: vgg11-lrn has a local response normalisation layer"},
		{true, true, plain, ""},
	} {
		err := fitsBackend(layoutBackend{cpuBE, c.bf16, c.nhwc}, layers.Config{Arch: "vgg11-lrn", Cfg: c.cfg})
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("bf16 %v, channels-last %v, %d layers: %v, want %q", c.bf16, c.nhwc, len(c.cfg), err, c.want)
		}
	}
}

// TestLRNRefusedOnChannelsLast: eval and predict refuse an LRN checkpoint
// on channels-last images (bf16, --channels-last) before anything runs, as
// train and bench do: on the stand-in CUDA, where the layer would
// otherwise fail mid-way.
func TestLRNRefusedOnChannelsLast(t *testing.T) {
	t.Setenv("VGG16_CUDA_PATH", gputest.BuildFakeCUDA(t))
	path := writeCheckpoint(t, "vgg11-lrn", 16)
	for _, args := range [][]string{
		{"eval", path, "--data", "demo", "--device", "cuda", "--channels-last"},
		{"eval", path, "--data", "demo", "--device", "cuda", "--precision", "bf16"},
		{"predict", "--checkpoint", path, "--device", "cuda", "--channels-last", "x.png"},
	} {
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), path+": --") || !strings.Contains(err.Error(), "vgg11-lrn has a local response normalisation layer") {
			t.Errorf("%s: %v", strings.Join(args, " "), err)
		}
	}
}

// TestResumeKeepsPrecision: a run resumed without --precision continues in
// the precision it trained in (bf16 here, on the stand-in CUDA), saying so;
// one given another says that it changes.
func TestResumeKeepsPrecision(t *testing.T) {
	t.Setenv("VGG16_CUDA_PATH", gputest.BuildFakeCUDA(t))
	dir := filepath.Join(t.TempDir(), "r")
	args := []string{"--data", "demo", "--limit", "40", "--recipe", "cifar", "--arch", "8,M,M,M,M,M", "--hidden", "16", "--batch", "20", "--run-dir", dir, "--device", "cuda"}
	if out, err := run(t, append([]string{"train", "--epochs", "1", "--precision", "bf16"}, args...)...); err != nil {
		t.Fatalf("train bf16: %v\n%s", err, out)
	}
	out, err := run(t, "train", "--resume", "--run-dir", dir, "--device", "cuda", "--epochs", "2")
	if err != nil || !strings.Contains(out, "note: resuming in the run's precision, bf16 (--precision sets another)") || !strings.Contains(out, "precision bf16") {
		t.Errorf("resume without --precision: %v\n%s", err, out)
	}
	out, err = run(t, "train", "--resume", "--run-dir", dir, "--device", "cuda", "--epochs", "3", "--precision", "tf32")
	if err != nil || !strings.Contains(out, "note: the run trained in precision bf16; it continues in tf32") || !strings.Contains(out, "precision tf32") {
		t.Errorf("resume with --precision tf32: %v\n%s", err, out)
	}
	// That run now trains in tf32; one resumed on the CPU keeps its GPU's
	// precision for the next resume on a GPU.
	if out, err := run(t, "train", "--resume", "--run-dir", dir, "--device", "cpu", "--epochs", "4"); err != nil {
		t.Fatalf("resume on the CPU: %v\n%s", err, out)
	}
	out, err = run(t, "train", "--resume", "--run-dir", dir, "--device", "cuda", "--epochs", "5", "--precision", "bf16")
	if err != nil || !strings.Contains(out, "note: the run trained in precision tf32; it continues in bf16") {
		t.Errorf("resume on the GPU after the CPU: %v\n%s", err, out)
	}
	// A flag that only tf32 takes asks for tf32, said as such.
	out, err = run(t, "train", "--resume", "--run-dir", dir, "--device", "cuda", "--epochs", "6", "--tf32-linear")
	if err != nil || !strings.Contains(out, "note: the run trained in precision bf16; --tf32-linear asks for tf32, in which it continues") {
		t.Errorf("resume with --tf32-linear: %v\n%s", err, out)
	}
	// A GPU without bf16 (compute capability 7.5) resumes a bf16 run in the
	// flags' precision, not on the CPU.
	if out, err := run(t, "train", "--resume", "--run-dir", dir, "--device", "cuda", "--epochs", "7", "--precision", "bf16"); err != nil {
		t.Fatalf("resume in bf16: %v\n%s", err, out)
	}
	t.Setenv("FAKECUDA_SM", "75")
	out, err = run(t, "train", "--resume", "--run-dir", dir, "--epochs", "8")
	if err != nil || !strings.Contains(out, "note: the run trained in precision bf16, which this GPU cannot run") || !strings.Contains(out, "it continues in tf32") || !strings.Contains(out, "device: cuda:0") {
		t.Errorf("resume of a bf16 run on a GPU without bf16: %v\n%s", err, out)
	}
}

// TestOutOfMemoryAdvice: where the GPU runs out of memory (the stand-in
// given 57 MiB), the error says how much there is and what the command's
// own flags can do: train and bench name --batch, --size, --recompute-bn
// and --sgd-in-backward; eval its --batch.
func TestOutOfMemoryAdvice(t *testing.T) {
	t.Setenv("VGG16_CUDA_PATH", gputest.BuildFakeCUDA(t))
	ckpt := writeCheckpoint(t, "16,M,32,M,32,M,32,M,32,M", 64)
	t.Setenv("FAKECUDA_TOTAL_MEM", "60000000")
	model := []string{"--arch", "16,M,32,M,32,M,32,M,32,M", "--hidden", "64", "--size", "32"}
	for _, c := range []struct {
		args []string
		says string
	}{
		{append([]string{"train", "--device", "cuda", "--data", "demo", "--limit", "400", "--recipe", "cifar", "--epochs", "1", "--batch", "2000", "--run-dir", filepath.Join(t.TempDir(), "r")}, model...),
			"; try a smaller --batch (or --size), --recompute-bn"},
		{append([]string{"bench", "--device", "cuda", "--batch", "2000", "--steps", "1"}, model...), "; try a smaller --batch (or --size), --recompute-bn"},
		{[]string{"eval", ckpt, "--device", "cuda", "--data", "demo", "--batch", "2000"}, "; try a smaller --batch, or --device cpu"},
	} {
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := execute(root, c.args)
		if err == nil || !strings.Contains(err.Error(), "held by this program"+c.says) {
			t.Errorf("%s: %v, want it to say %q", strings.Join(c.args, " "), err, c.says)
		}
	}
}

// writeCheckpoint saves a freshly initialised 10-class model of arch (a
// name or a layer list) at 32x32 with a hidden width, and returns its path.
func writeCheckpoint(t *testing.T, arch string, hidden int) string {
	t.Helper()
	c, err := layers.Arch(arch)
	if err != nil {
		t.Fatal(err)
	}
	cfg := layers.Config{Arch: arch, Cfg: c, BatchNorm: true, ImageSize: 32, Hidden: hidden, Classes: 10, Dropout: 0.5}
	m, err := layers.New(cpu.New(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.Init(1)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	if err := checkpoint.Save(path, m, checkpoint.Info{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	return path
}
