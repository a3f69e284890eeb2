package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/fixtures"
	"github.com/vgg16/vgg16/internal/gpu/gputest"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/safetensors"
	"github.com/vgg16/vgg16/internal/shell"
	"github.com/vgg16/vgg16/internal/train"
)

// run executes the CLI with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// writeCIFAR writes a tiny CIFAR-10 binary version into dir: per records
// images in each of the six files, coloured by class so that a small
// network can learn them.
func writeCIFAR(t *testing.T, dir string, per int) {
	t.Helper()
	bin := filepath.Join(dir, cifar.BinFolder)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"}
	for f, name := range names {
		var b bytes.Buffer
		for i := 0; i < per; i++ {
			label := (i + f) % 10
			b.WriteByte(byte(label))
			for ch := 0; ch < 3; ch++ {
				for p := 0; p < 1024; p++ {
					v := 40 + (p*7+i*13)%50
					if (label>>ch)&1 == 1 {
						v += 120
					}
					if label >= 8 && p%32 < 16 {
						v += 60
					}
					b.WriteByte(byte(min(v, 255)))
				}
			}
		}
		if err := os.WriteFile(filepath.Join(bin, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(bin, "batches.meta.txt"), []byte(strings.Join(cifar.ClassNames, "\n")+"\n"), 0o644)
}

var tiny = []string{"--device", "cpu", "--download=false", "--recipe", "cifar", "--arch", "8,M,16,M,16,M,16,M,16,M", "--hidden", "32", "--batch", "20", "--workers", "2"}

// TestTrainEvalPredict runs the whole user path on a tiny dataset.
func TestTrainEvalPredict(t *testing.T) {
	data, runDir := t.TempDir(), filepath.Join(t.TempDir(), "my run")
	writeCIFAR(t, data, 40)
	out, err := run(t, append([]string{"train", "--data", data, "--epochs", "2", "--run-dir", runDir}, tiny...)...)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	// The command it suggests pastes into a shell as it is.
	evalHint := fmt.Sprintf("evaluate it on the test set with: vgg16 eval %s --data %s\n", shell.Quote(filepath.Join(runDir, "best.safetensors")), shell.Quote(data))
	if !strings.Contains(evalHint, `"`) && !strings.Contains(evalHint, "'") {
		t.Fatalf("the run directory %q is not quoted: %s", runDir, evalHint)
	}
	for _, want := range []string{"device: cpu", "training 8,M,16,M,16,M,16,M,16,M at ", "epoch 2/2", "best validation accuracy", evalHint} {
		if !strings.Contains(out, want) {
			t.Errorf("train output lacks %q:\n%s", want, out)
		}
	}
	best := filepath.Join(runDir, "best.safetensors")

	out, err = run(t, "eval", best, "--data", data, "--device", "cpu", "--json")
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, out)
	}
	var res struct {
		Data      string    `json:"data"`
		Split     string    `json:"split"`
		Images    int       `json:"images"`
		Accuracy  float64   `json:"accuracy"`
		Confusion [][]int   `json:"confusion"`
		PerClass  []float64 `json:"per_class_accuracy"`
		Classes   []string  `json:"classes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("eval --json: %v\n%s", err, out)
	}
	total, diag := 0, 0
	for i, row := range res.Confusion {
		for j, v := range row {
			total += v
			if i == j {
				diag += v
			}
		}
	}
	if res.Images != 40 || total != 40 || float64(diag)/40 != res.Accuracy || len(res.Classes) != 10 || res.Classes[3] != "cat" || res.Data != data || res.Split != "test" {
		t.Errorf("eval result inconsistent: %+v", res)
	}
	// Five images leave classes without any: their accuracy is null, not
	// a NaN that JSON cannot hold.
	out, err = run(t, "eval", best, "--data", data, "--device", "cpu", "--json", "--limit", "5")
	var few struct {
		PerClass []*float64 `json:"per_class_accuracy"`
		Limit    int        `json:"limit"`
	}
	if err == nil {
		err = json.Unmarshal([]byte(out), &few)
	}
	nulls := 0
	for _, a := range few.PerClass {
		if a == nil {
			nulls++
		}
	}
	if err != nil || len(few.PerClass) != 10 || nulls < 5 || few.Limit != 5 {
		t.Errorf("eval --json --limit 5: %v, per class %v\n%s", err, few.PerClass, out)
	}
	out, err = run(t, "eval", best, "--data", data, "--device", "cpu")
	if err != nil || !strings.Contains(out, "true \\ predicted") || !strings.Contains(out, "airplane") {
		t.Errorf("eval table: %v\n%s", err, out)
	}

	img := filepath.Join(t.TempDir(), "red.png")
	writePNG(t, img, 64, 48, color.RGBA{220, 30, 30, 255})
	out, err = run(t, "predict", "--checkpoint", best, "--device", "cpu", "--top", "2", img)
	if err != nil || !strings.HasPrefix(out, img+": ") || strings.Count(out, "%") != 2 {
		t.Errorf("predict: %v\n%s", err, out)
	}
	// An image that cannot be read does not stop the others: they are
	// predicted, and the command fails after, counting it.
	missingImg := filepath.Join(t.TempDir(), "gone.png")
	if o, err := run(t, "predict", "--checkpoint", best, "--device", "cpu", "--top", "2", missingImg, img); err == nil ||
		!strings.Contains(err.Error(), "1 of 2 images have no prediction") || !strings.Contains(o, out) {
		t.Errorf("predict of a missing and a good image: %v\n%s", err, o)
	}
	// The same on the stand-in GPU in every precision: the same top class.
	t.Setenv("VGG16_CUDA_PATH", gputest.BuildFakeCUDA(t))
	top := strings.Fields(strings.TrimPrefix(out, img+": "))[0]
	for _, prec := range []string{"tf32", "bf16"} {
		g, err := run(t, "predict", "--checkpoint", best, "--device", "cuda", "--precision", prec, "--top", "2", img)
		if err != nil || !strings.HasPrefix(g, img+": "+top) {
			t.Errorf("predict --precision %s on the stand-in GPU: %v\n%s (the CPU: %s)", prec, err, g, out)
		}
	}
	if _, err := run(t, "bench", "--device", "cuda", "--precision", "bf16", "--arch", "vgg11-lrn"); err == nil || !strings.Contains(err.Error(), "local response normalisation layer") {
		t.Errorf("bench of vgg11-lrn in bf16: %v", err)
	}
	// bench with each step's batch from the input pipeline: on the device
	// (stand-in GPU, bf16) and by the CPU loader.
	for _, c := range []struct{ device, data string }{{"cuda", "gpu"}, {"cpu", "cpu"}} {
		js, err := run(t, "bench", "--device", c.device, "--precision", "bf16", "--data", c.data, "--arch", "8,M,M,M,M,M", "--hidden", "16",
			"--batch", "4", "--steps", "2", "--json")
		var r BenchResult
		if err == nil {
			err = json.Unmarshal([]byte(js), &r)
		}
		if err != nil || r.Data != c.data || !(r.PipelinedMs > 0) || !(r.PipelinedImgSec > 0) {
			t.Errorf("bench --device %s --data %s: %v %+v\n%s", c.device, c.data, err, r, js)
		}
		// The model's arithmetic: a 3x3 convolution 3→8 at 32x32 and Linear
		// layers 8→16→16→10, a forward pass's multiply-adds three times a
		// step, two flops each.
		const macs = 32*32*8*3*9 + 8*16 + 16*16 + 16*10
		if want := 6 * macs * r.TrainImgSec / 1e12; !(want > 0) || math.Abs(r.TrainTFLOPs-want) > 1e-9*want {
			t.Errorf("bench --device %s: %g TFLOP/s at %g img/s, want %g", c.device, r.TrainTFLOPs, r.TrainImgSec, want)
		}
		// The GPU tracks its memory: the timed steps' peak is part of the whole run's.
		if c.device == "cuda" && !(r.StepPeakMiB > 0 && r.StepPeakMiB <= r.PeakMiB) {
			t.Errorf("bench --device cuda: step peak %g MiB, whole run's %g MiB", r.StepPeakMiB, r.PeakMiB)
		}
	}
	// --profile: each op's GPU time a step, split among its kernels, whose
	// calls are a step's too (the ops of this model launch each of their
	// kernels once a call).
	if out, err := run(t, "bench", "--device", "cuda", "--precision", "bf16", "--arch", "8,M,M,M,M,M", "--hidden", "16",
		"--batch", "4", "--steps", "2", "--profile"); err != nil || !strings.Contains(out, "SGDStep") || !strings.Contains(out, "  sgd_step") {
		t.Errorf("bench --profile: %v\n%s", err, out)
	}
	out, err = run(t, "bench", "--device", "cuda", "--arch", "8,M,M,M,M,M", "--hidden", "16", "--batch", "4", "--steps", "2", "--profile", "--json")
	var prof BenchResult
	if err == nil {
		err = json.Unmarshal([]byte(out), &prof)
	}
	if err != nil || len(prof.Profile) == 0 {
		t.Errorf("bench --profile --json: %v\n%s", err, out)
	}
	for _, r := range prof.Profile {
		for _, k := range r.Parts {
			if k.Calls > r.Calls {
				t.Errorf("profile row %s: %d calls a step, its kernel %s %d", r.Op, r.Calls, k.Op, k.Calls)
			}
		}
	}
	// The CPU has no profiler: said (before any step runs).
	if _, err := run(t, "bench", "--device", "cpu", "--arch", "8,M,M,M,M,M", "--hidden", "16", "--batch", "4", "--steps", "2", "--profile"); err == nil || !strings.Contains(err.Error(), "--profile: the cpu backend has no op profiler") {
		t.Errorf("bench --device cpu --profile: %v", err)
	}
	// On the CPU, --precision asks for nothing: the JSON says what ran.
	out, err = run(t, "bench", "--device", "cpu", "--arch", "8,M,M,M,M,M", "--hidden", "16", "--batch", "4", "--steps", "2", "--precision", "bf16", "--json")
	if err != nil || !strings.Contains(out, `"precision":"fp32"`) {
		t.Errorf("bench --device cpu --precision bf16 --json: %v\n%s", err, out)
	}
	// Recomputing the batch-norm outputs lowers the steps' peak memory, and
	// so does pooling in the batch norm (the default), which stores no
	// output for the batch norm before a pool, and packing the activations
	// (the default: --unpacked gives the gradients buffers of their own),
	// and updating in the backward (the gradients take the largest layer's
	// memory: the last convolution's with its batch norm's here).
	// Each run reports what its engine search cost.
	var peaks [5]float64
	for i, flag := range []string{"--fused-pool=false", "--recompute-bn=false", "--recompute-bn", "--unpacked", "--sgd-in-backward"} {
		js, err := run(t, "bench", "--device", "cuda", "--precision", "bf16", "--arch", "8,8,M,16,16,M,32,32,M,M,M", "--hidden", "16",
			"--batch", "4", "--steps", "2", "--json", flag)
		var r BenchResult
		if err == nil {
			err = json.Unmarshal([]byte(js), &r)
		}
		if err != nil || r.RecomputeBN != (i == 2) || r.UnfusedPool != (i == 0) || r.Unpacked != (i == 3) || r.SGDInBackward != (i == 4) {
			t.Fatalf("bench %s: %v %+v", flag, err, r)
		}
		if s := r.EngineSearch; !(s["directions"] > 0 && s["plans"] >= s["directions"]) {
			t.Errorf("bench %s: engine search %v", flag, s)
		}
		// The steps' peak, part by part: bf16 activations, the float32
		// parameters' state, the scratch buffers, summing to the peak.
		var sum float64
		for _, v := range r.StepPeakParts {
			sum += v
		}
		if p := r.StepPeakParts; !(p["bf16 tensors"] > 0 && p["parameters, gradients, momentum"] > 0 && p["the cuBLAS workspace"] == 32 && math.Abs(sum-r.StepPeakMiB) < 1e-6) {
			t.Errorf("bench %s: steps' peak %g MiB, parts %v (sum %g)", flag, r.StepPeakMiB, p, sum)
		}
		peaks[i] = r.StepPeakMiB
	}
	t.Logf("steps' peak on the stand-in GPU: %.4f MiB with the pools apart, %.4f MiB pooled in the batch norm, %.4f MiB recomputing the batch-norm outputs, %.4f MiB unpacked, %.4f MiB with SGD in the backward", peaks[0], peaks[1], peaks[2], peaks[3], peaks[4])
	if !(peaks[4] < peaks[1]) {
		t.Errorf("steps' peak %.4f MiB with SGD in the backward, %.4f MiB after it", peaks[4], peaks[1])
	}
	if !(peaks[1] < peaks[0]) {
		t.Errorf("steps' peak %.4f MiB pooling in the batch norm, %.4f MiB with the pools apart", peaks[1], peaks[0])
	}
	if !(peaks[2] < peaks[1]) {
		t.Errorf("steps' peak %.4f MiB recomputing the batch-norm outputs, %.4f MiB keeping them", peaks[2], peaks[1])
	}
	if !(peaks[1] < peaks[3]) {
		t.Errorf("steps' peak %.4f MiB packed, %.4f MiB unpacked", peaks[1], peaks[3])
	}
	if _, err := run(t, "bench", "--device", "cpu", "--data", "disk"); err == nil || !strings.Contains(err.Error(), `--data "disk": want none, gpu or cpu`) {
		t.Errorf("bench --data disk: %v", err)
	}

	// The run directory is never overwritten; --resume continues it.
	if _, err := run(t, append([]string{"train", "--data", data, "--epochs", "2", "--run-dir", runDir}, tiny...)...); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("training into an existing run: %v", err)
	}
	out, err = run(t, append([]string{"train", "--data", data, "--epochs", "3", "--run-dir", runDir, "--resume"}, tiny...)...)
	if err != nil || !strings.Contains(out, "resuming") || !strings.Contains(out, "epoch 3/3") || strings.Contains(out, "epoch 1/3") {
		t.Errorf("resume: %v\n%s", err, out)
	}

	// A run that another process is training is not resumed.
	claim, err := train.LockDir(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, append([]string{"train", "--data", data, "--epochs", "4", "--run-dir", runDir, "--resume"}, tiny...)...); !errors.Is(err, train.ErrDirInUse) {
		t.Errorf("resuming a run in use: %v, want %v", err, train.ErrDirInUse)
	}
	claim.Release()

	// A resumed run trains on the images it started on (its checkpoint
	// records the data flags) and says which given flags it ignores.
	limited := filepath.Join(t.TempDir(), "limited")
	if out, err := run(t, append([]string{"train", "--data", data, "--limit", "40", "--val-split", "0.25", "--epochs", "1", "--run-dir", limited}, tiny...)...); err != nil || !strings.Contains(out, "on 40 images") {
		t.Fatalf("train --limit 40: %v\n%s", err, out)
	}
	out, err = run(t, "train", "--resume", "--run-dir", limited, "--epochs", "2", "--device", "cpu", "--download=false", "--lr", "0.3")
	if err != nil || !strings.Contains(out, "on 40 images") || !strings.Contains(out, "--lr ignored") || !strings.Contains(out, "epoch 2/2") {
		t.Errorf("resume without the data flags: %v\n%s", err, out)
	}
	// Without its metrics.jsonl a run resumes with a note, and its best
	// accuracy is still the checkpoint's.
	os.Remove(filepath.Join(limited, train.MetricsFile))
	out, err = run(t, "train", "--resume", "--run-dir", limited, "--epochs", "3", "--device", "cpu", "--download=false")
	ck, ckErr := checkpoint.Load(filepath.Join(limited, train.BestFile))
	if err != nil || ckErr != nil || !strings.Contains(out, "the run has done 2 epochs and "+filepath.Join(limited, train.MetricsFile)+" is missing") ||
		!strings.Contains(out, fmt.Sprintf("done: best validation accuracy %.2f%%", 100*ck.Info.BestAcc)) {
		t.Errorf("resume without metrics.jsonl: %v %v\n%s", err, ckErr, out)
	}
	if hist, err := train.ReadMetrics(filepath.Join(limited, train.MetricsFile)); err != nil || len(hist) != 1 || hist[0].Epoch != 3 {
		t.Errorf("metrics.jsonl after resuming without it: %v %+v", err, hist)
	}
	// The same data by another path (a link, the folder of the batches)
	// is not said to be other data.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(data, link); err != nil {
		t.Fatal(err)
	}
	for i, same := range []string{link, filepath.Join(data, "cifar-10-batches-bin")} {
		out, err = run(t, "train", "--resume", "--run-dir", limited, "--epochs", strconv.Itoa(4+i), "--device", "cpu", "--download=false", "--data", same)
		if err != nil || strings.Contains(out, "now says") || !strings.Contains(out, fmt.Sprintf("epoch %d/%d", 4+i, 4+i)) {
			t.Errorf("resume with --data %s, the run's data: %v\n%s", same, err, out)
		}
	}

	// Messages for a run directory given to eval, a batch file not there,
	// a file given as the run directory; notes for a warm-up the schedule
	// does not use and for the images a short last batch leaves out.
	if _, err := run(t, "eval", runDir, "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "is a run directory: evaluate its checkpoint, "+best) {
		t.Errorf("eval of a run directory: %v", err)
	}
	// A batch larger than the data is the data: not refused, not allocated.
	if out, err := run(t, "eval", best, "--data", data, "--device", "cpu", "--batch", "1000000000"); err != nil || !strings.Contains(out, "accuracy") {
		t.Errorf("eval with a batch larger than the data: %v\n%s", err, out)
	}
	gone := filepath.Join(t.TempDir(), "data_batch_9.bin")
	if _, err := run(t, "eval", best, "--data", gone, "--device", "cpu"); err == nil || !strings.Contains(err.Error(), gone+": no such file") {
		t.Errorf("eval of a missing batch file: %v", err)
	}
	if _, err := run(t, append([]string{"train", "--data", gone, "--epochs", "1", "--run-dir", filepath.Join(t.TempDir(), "g")}, tiny...)...); err == nil || !strings.Contains(err.Error(), gone+": no such file") {
		t.Errorf("train on a missing batch file: %v", err)
	}
	if _, err := run(t, append([]string{"train", "--data", data, "--epochs", "1", "--run-dir", best}, tiny...)...); err == nil || !strings.Contains(err.Error(), "--run-dir "+best+": a file") {
		t.Errorf("train into a file: %v", err)
	}
	out, err = run(t, append([]string{"train", "--data", data, "--limit", "30", "--epochs", "1", "--schedule", "step", "--warmup", "1", "--val-split", "0", "--run-dir", filepath.Join(t.TempDir(), "w")}, tiny...)...)
	if err != nil || !strings.Contains(out, "--warmup applies to the cosine and onecycle schedules, not step: ignored") ||
		!strings.Contains(out, "test images (--val-split 0: the best checkpoint is the best on the test set)") ||
		!strings.Contains(out, "each epoch trains on 20 of them: the last 10 of each epoch's shuffle do not fill a batch of 20 and are left out of that epoch") {
		t.Errorf("train --schedule step --warmup 1 --limit 30: %v\n%s", err, out)
	}
	out, err = run(t, append([]string{"train", "--data", data, "--limit", "30", "--epochs", "1", "--schedule", "constant", "--gamma", "0.5", "--run-dir", filepath.Join(t.TempDir(), "g")}, tiny...)...)
	if err != nil || !strings.Contains(out, "note: --gamma applies to the step schedule, not constant: ignored") || strings.Contains(out, "warm-up is") {
		t.Errorf("train --schedule constant --gamma 0.5 (no warm-up to shorten): %v\n%s", err, out)
	}
	// A batch larger than the training set is one batch of all of it: said.
	out, err = run(t, append(append([]string{"train", "--data", data, "--limit", "15", "--epochs", "1", "--run-dir", filepath.Join(t.TempDir(), "b")}, tiny...), "--batch", "16")...)
	if err != nil || !strings.Contains(out, "note: 15 training images, fewer than --batch 16: each epoch is one batch of all of them") {
		t.Errorf("train --limit 15 --batch 16: %v\n%s", err, out)
	}
	// A negative --epochs is its error alone, with no note on a warm-up of
	// -0.2 epochs before it.
	if out, err := run(t, append([]string{"train", "--data", data, "--epochs", "-1"}, tiny...)...); err == nil || err.Error() != "--epochs -1: need at least 1" || strings.Contains(out, "warm-up") {
		t.Errorf("train --epochs -1: %v\n%s", err, out)
	}
	// The cifar recipe's Nesterov momentum goes with --momentum 0: plain
	// SGD, as asked; asked for, Nesterov without momentum is an error.
	out, err = run(t, append([]string{"train", "--data", data, "--limit", "20", "--epochs", "1", "--momentum", "0", "--run-dir", filepath.Join(t.TempDir(), "m")}, tiny...)...)
	if err != nil || !strings.Contains(out, "epoch 1/1") {
		t.Errorf("train --recipe cifar --momentum 0: %v\n%s", err, out)
	}
	if _, err := run(t, append([]string{"train", "--data", data, "--epochs", "1", "--momentum", "0", "--nesterov"}, tiny...)...); err == nil || !strings.Contains(err.Error(), "--nesterov needs --momentum > 0") {
		t.Errorf("train --nesterov --momentum 0: %v", err)
	}

	// A run on a batch file that has moved since says so on resume.
	moved := filepath.Join(t.TempDir(), "data_batch_1.bin")
	src, err := os.ReadFile(filepath.Join(data, "cifar-10-batches-bin", "data_batch_1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(moved, src, 0o644); err != nil {
		t.Fatal(err)
	}
	movedRun := filepath.Join(t.TempDir(), "moved")
	if out, err := run(t, append([]string{"train", "--data", moved, "--epochs", "1", "--run-dir", movedRun}, tiny...)...); err != nil {
		t.Fatalf("train on a batch file: %v\n%s", err, out)
	} else if !strings.Contains(out, "note: the recipe's 2-epoch warm-up is 0.2 epochs in a 1-epoch run (--warmup sets it)") || strings.Contains(out, "covers the whole") {
		t.Errorf("the cifar recipe's warm-up in a 1-epoch run: not shortened\n%s", out)
	}
	os.Remove(moved)
	if _, err := run(t, "train", "--resume", "--run-dir", movedRun, "--epochs", "2", "--device", "cpu"); err == nil ||
		!strings.Contains(err.Error(), "the run trained on "+moved+", which is not there any more") {
		t.Errorf("resume after its batch file moved: %v", err)
	}

	// Transfer: the features load, a classifier of another width does not.
	args := append([]string{"train", "--data", data, "--epochs", "1", "--run-dir", filepath.Join(t.TempDir(), "ft"), "--init", best}, tiny...)
	out, err = run(t, append(args, "--hidden", "48")...)
	if err != nil || !strings.Contains(out, "initialised from "+best) || !strings.Contains(out, "classifier.0.weight ([32 16] in the file, model [48 16])") {
		t.Errorf("--init: %v\n%s", err, out)
	}
	args = append([]string{"train", "--data", data, "--epochs", "1", "--run-dir", filepath.Join(t.TempDir(), "ft2"), "--init", best}, tiny...)
	if _, err = run(t, append(args, "--arch", "8,M,8,M,16,M,16,M,16,M")...); err == nil || !strings.Contains(err.Error(), "features.4.weight: have [16 8 3 3], model wants [8 8 3 3]") {
		t.Errorf("--init into another architecture: %v", err)
	}
}

func writePNG(t *testing.T, path string, w, h int, c color.Color) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, c)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

// TestAutoResume: one command starts a run, and continues it when run again.
func TestAutoResume(t *testing.T) {
	data, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeCIFAR(t, data, 40)
	args := func(epochs string) []string {
		return append([]string{"train", "--auto-resume", "--data", data, "--epochs", epochs, "--run-dir", runDir}, tiny...)
	}
	out, err := run(t, args("1")...)
	if err != nil || strings.Contains(out, "resuming") || !strings.Contains(out, "epoch 1/1") {
		t.Fatalf("--auto-resume into a new directory: %v\n%s", err, out)
	}
	out, err = run(t, args("2")...)
	if err != nil || !strings.Contains(out, "resuming") || !strings.Contains(out, "epoch 2/2") || strings.Contains(out, "epoch 1/2") {
		t.Errorf("--auto-resume of a run: %v\n%s", err, out)
	}
	// The same command again gives the run's own settings: none is said
	// to be ignored (it named every flag of tiny's), but one that differs is.
	if strings.Contains(out, "ignored") {
		t.Errorf("--auto-resume with the run's own flags says some are ignored:\n%s", out)
	}
	out, err = run(t, append(args("3"), "--lr", "0.3", "--classes", "7", "--arch", "8, M, 16, M, 16, M, 16, M, 16, M")...)
	if err != nil || !strings.Contains(out, "note: resuming keeps the run's own settings: --classes, --lr ignored") || !strings.Contains(out, "epoch 3/3") {
		t.Errorf("--auto-resume with another --lr and --classes: %v\n%s", err, out)
	}
	// Fine-tuning: --pretrained given again is the run's own too.
	ft := filepath.Join(t.TempDir(), "ft")
	for _, epochs := range []string{"1", "2"} {
		out, err = run(t, "train", "--auto-resume", "--data", data, "--epochs", epochs, "--run-dir", ft, "--pretrained", filepath.Join(runDir, train.BestFile),
			"--device", "cpu", "--download=false", "--recipe", "cifar", "--batch", "20", "--workers", "2")
		if err != nil || strings.Contains(out, "ignored") || !strings.Contains(out, "epoch "+epochs+"/"+epochs) {
			t.Errorf("--auto-resume --pretrained, --epochs %s: %v\n%s", epochs, err, out)
		}
	}
	// A run killed while saving its first epoch left files but no
	// last.safetensors: the same command starts it again, where a run
	// given the directory would refuse it for ever.
	killed := filepath.Join(t.TempDir(), "killed")
	if err := os.Mkdir(killed, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"optim.abc-2.safetensors", ".last.safetensors.tmp123"} {
		if err := os.WriteFile(filepath.Join(killed, name), []byte("left"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The first epoch's best checkpoint, written before its last (its header is what counts).
	if err := safetensors.Write(filepath.Join(killed, "best.safetensors"), &safetensors.File{Metadata: map[string]string{"vgg16.epoch": "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, append([]string{"train", "--data", data, "--epochs", "1", "--run-dir", killed}, tiny...)...); err == nil {
		t.Error("a new run took a directory with another run's files")
	}
	out, err = run(t, append([]string{"train", "--auto-resume", "--data", data, "--epochs", "1", "--run-dir", killed}, tiny...)...)
	if err != nil || !strings.Contains(out, "stopped before its first checkpoint: it starts again (removed what it left: .last.safetensors.tmp123, best.safetensors, optim.abc-2.safetensors)") || !strings.Contains(out, "epoch 1/1") {
		t.Errorf("--auto-resume of a run killed before its first checkpoint: %v\n%s", err, out)
	}
	// Anything else in the directory is the user's: refused, nothing removed.
	mine := filepath.Join(t.TempDir(), "mine")
	os.Mkdir(mine, 0o755)
	os.WriteFile(filepath.Join(mine, "best.safetensors"), []byte("left"), 0o644)
	os.WriteFile(filepath.Join(mine, "notes.txt"), []byte("mine"), 0o644)
	if _, err := run(t, append([]string{"train", "--auto-resume", "--data", data, "--epochs", "1", "--run-dir", mine}, tiny...)...); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("--auto-resume in a directory with other files: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mine, "best.safetensors")); err != nil {
		t.Errorf("--auto-resume removed a file from a directory it refused: %v", err)
	}
	if _, err := run(t, "train", "--auto-resume", "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "--auto-resume needs --run-dir") {
		t.Errorf("--auto-resume without --run-dir: %v", err)
	}
	if _, err := run(t, "train", "--auto-resume", "--resume", "--run-dir", runDir, "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "give one") {
		t.Errorf("--auto-resume with --resume: %v", err)
	}
}

func TestSummaryTotals(t *testing.T) {
	for args, want := range map[string]string{
		"--arch vgg16":            "total parameters: 134,309,962",
		"--arch vgg16 --size 32":  "total parameters: 33,646,666",
		"--arch vgg19":            "total parameters: 139,622,218",
		"--arch vgg16-1":          "total parameters: 129,591,370",
		"--arch vgg11 --size 224": "total parameters: 128,812,810",
		// torchvision's model table: parameters and GFLOPS (multiply-adds)
		// of vgg16_bn, vgg19_bn and vgg11 for ImageNet's 1000 classes.
		"--classes 1000":                                 "total parameters: 138,365,992 (553.5 MB as float32)\nmultiply-adds of a forward pass: 15.47 G",
		"--arch vgg19 --classes 1000":                    "total parameters: 143,678,248 (574.7 MB as float32)\nmultiply-adds of a forward pass: 19.63 G",
		"--arch vgg11 --classes 1000 --batch-norm=false": "total parameters: 132,863,336 (531.5 MB as float32)\nmultiply-adds of a forward pass: 7.61 G",
	} {
		out, err := run(t, append([]string{"summary"}, strings.Fields(args)...)...)
		if err != nil || !strings.Contains(out, want) || !strings.Contains(out, "memory on the CPU at batch 64: about ") {
			t.Errorf("summary %s: %v\n%s", args, err, out)
		}
	}
}

// TestErrorsNameTheInput checks that bad input fails with a message that
// names the flag or file.
func TestErrorsNameTheInput(t *testing.T) {
	data := t.TempDir()
	writeCIFAR(t, data, 10)
	missing := filepath.Join(t.TempDir(), "nope.safetensors")
	notData := t.TempDir()
	failedRun := filepath.Join(t.TempDir(), "failed")
	type errCase struct {
		args []string
		want string
	}
	cases := []errCase{
		{[]string{"train", "--data", data, "--epochs", "0", "--device", "cpu"}, "--epochs"},
		{[]string{"train", "--data", data, "--lr", "-1", "--device", "cpu"}, "--lr"},
		{[]string{"train", "--data", data, "--size", "48", "--device", "cpu"}, "multiple of 32"},
		{[]string{"train", "--data", data, "--arch", "vgg17", "--device", "cpu"}, "--arch"},
		{[]string{"train", "--data", data, "--device", "tpu"}, "--device"},
		{[]string{"train", "--data", notData, "--download=false", "--device", "cpu", "--size", "32"}, notData},
		{[]string{"train", "--resume", "--device", "cpu"}, "--run-dir"},
		{[]string{"train", "--data", data, "--classes", "5", "--download=false", "--device", "cpu", "--size", "32", "--run-dir", filepath.Join(t.TempDir(), "c")}, "--classes 5: the data has 10 classes"},
		{[]string{"eval", missing, "--device", "cpu"}, missing},
		{[]string{"predict", "--checkpoint", missing, "--device", "cpu", "x.png"}, missing},
		{[]string{"predict", "x.png"}, "--checkpoint"},
		{[]string{"data", "download", "--format", "zip"}, "--format"},
		{[]string{"summary", "--arch", "64,Q"}, "--arch"},
		// A value that does not parse: the flag and the kind of value wanted.
		{[]string{"train", "--seed", "-1"}, `--seed "-1": want a whole number, 0 or more (see vgg16 train --help)`},
		{[]string{"eval", "--batch", "x", "c.safetensors"}, `--batch "x": want an integer (see vgg16 eval --help)`},
		{[]string{"train", "--lr", "fast"}, `--lr "fast": want a number`},
		{[]string{"bench", "--json=perhaps"}, `--json "perhaps": want true or false`},
		// NaN and ±Inf parse as floats, but no option means anything at them.
		{[]string{"train", "--gamma", "Inf"}, `--gamma "Inf": want a finite number (see vgg16 train --help)`},
		{[]string{"train", "--val-split", "NaN"}, `--val-split "NaN": want a finite number`},
		{[]string{"summary", "--dropout", "-inf"}, `--dropout "-inf": want a finite number (see vgg16 summary --help)`},
		// A model's error names the flags that can put it right.
		{[]string{"train", "--data", data, "--classes", "1", "--device", "cpu"}, "1 classes: want 2 to 65536 (flag --classes)"},
		{[]string{"summary", "--arch", "64,M,M,M,M,M,M", "--size", "32"}, "multiple of 64 (the layer list has 6 max-pools): 64, say (flags --size, --arch)"},
		{[]string{"summary", "--hidden", "0"}, "hidden width 0: want 1 to 65536 (flag --hidden)"},
		{[]string{"train", "--data", data, "--pretrained", missing, "--device", "cpu", "--size", "32"}, missing},
		{[]string{"train", "--data", data, "--init", missing, "--device", "cpu", "--size", "32", "--run-dir", failedRun}, missing},
		{[]string{"convert", missing, filepath.Join(t.TempDir(), "o.safetensors")}, missing},
		{[]string{"convert", "a.pth", filepath.Join(t.TempDir(), "no", "o.safetensors")}, filepath.Join("no", "o.safetensors") + ": the folder "},
		{[]string{"convert", "a.pth"}, "vgg16 convert takes IN.pth OUT.safetensors, got 1 argument"},
		{[]string{"eval"}, "vgg16 eval takes CHECKPOINT, got 0 arguments"},
		{[]string{"train", "--data", data, "--freeze-features", "--device", "cpu"}, "--freeze-features trains the classifier over features that --pretrained or --init loads"},
		{[]string{"bench", "--device", "cpu", "--data", "gpu"}, "--data gpu: the cpu backend cannot hold the images"},
	}
	if strconv.IntSize == 64 { // numbers that overflow int before they reach the checks on 32-bit builds
		cases = append(cases,
			errCase{[]string{"train", "--data", data, "--arch", "99999999999999", "--device", "cpu"}, "channels: want 1 to 16384"},
			errCase{[]string{"summary", "--size", "99999999999968"}, "image size 99999999999968: want 1 to 4096"})
	}
	if have, _ := availableBytes(); have > 0 { // where the memory is known (Linux, macOS, Windows): else these would try to allocate it
		cases = append(cases,
			errCase{[]string{"train", "--data", data, "--batch", "100000", "--device", "cpu"}, "--batch 100000 at 224x224 needs about"},
			errCase{[]string{"bench", "--device", "cpu", "--size", "224", "--batch", "100000"}, "--batch 100000 at 224x224 needs about"})
	}
	for _, c := range cases {
		_, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error naming %q, got %v", c.args, c.want, err)
		}
	}
	if _, err := os.Stat(failedRun); !os.IsNotExist(err) {
		t.Errorf("a run that failed before writing anything left its run directory %s behind (stat: %v)", failedRun, err)
	}
}

// TestDataDownloadBadArchive serves something that is not the CIFAR-10
// archive: the command fails naming the checksum and leaves no dataset.
func TestDataDownloadBadArchive(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("not a tarball "), 1000))
	}))
	defer srv.Close()
	dir := t.TempDir()
	out, err := run(t, "data", "download", "--dir", dir, "--url", srv.URL+"/cifar-10-binary.tar.gz")
	if err == nil || !strings.Contains(err.Error(), "MD5 mismatch") || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("want an MD5 error naming the URL, got %v\n%s", err, out)
	}
	if cifar.Exists(dir) {
		t.Fatal("a failed download left a dataset that looks complete")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

// TestDataDownloadLongerThanDeclared: a server that sends more than its
// Content-Length fails the MD5 check, and the surplus is not dumped on
// stderr by net/http's "Unsolicited response received on idle HTTP
// channel" log (a kept-alive connection is peeked after the body).
func TestDataDownloadLongerThanDeclared(t *testing.T) {
	var logged bytes.Buffer
	var mu sync.Mutex
	log.SetOutput(writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logged.Write(b) }))
	defer log.SetOutput(os.Stderr)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n%s", bytes.Repeat([]byte("surplus "), 500))
		bw.Flush()
		time.Sleep(100 * time.Millisecond)
	}))
	defer srv.Close()
	out, err := run(t, "data", "download", "--dir", t.TempDir(), "--url", srv.URL+"/cifar-10-binary.tar.gz")
	if err == nil || !strings.Contains(err.Error(), "MD5 mismatch") || !strings.Contains(err.Error(), "(10 bytes)") {
		t.Fatalf("want an MD5 error on the 10 declared bytes, got %v\n%s", err, out)
	}
	for range 20 { // net/http logs from its connection's goroutine, after the body is read
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		got := logged.String()
		mu.Unlock()
		if got != "" {
			t.Fatalf("logged: %.200s", got)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestDataDownloadEmptyDir: --dir "" is the flag's error before anything
// is fetched (it was the library's "download: no destination folder",
// after a "downloading CIFAR-10 … into " line).
func TestDataDownloadEmptyDir(t *testing.T) {
	out, err := run(t, "data", "download", "--dir", "", "--url", "http://127.0.0.1:1/unused")
	if err == nil || !strings.HasPrefix(err.Error(), `--dir "": `) || out != "" {
		t.Fatalf("err = %v, printed %q", err, out)
	}
}

// TestDataDownloadKeepsDanglingLink: --dir a link to nowhere (a drive not
// mounted) fails naming it and is not removed as a folder the download
// made.
func TestDataDownloadKeepsDanglingLink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Symlink(filepath.Join(t.TempDir(), "unmounted"), dir); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	out, err := run(t, "data", "download", "--dir", dir, "--url", "http://127.0.0.1:1/unused")
	if err == nil || !strings.Contains(err.Error(), dir+" is a link to ") {
		t.Errorf("err = %v\n%s", err, out)
	}
	if _, err := os.Readlink(dir); err != nil {
		t.Errorf("the link is gone: %v", err)
	}
}

// TestInitFromPTH fine-tunes from a PyTorch-written torch.save file: every
// tensor of the fixture's state dict fits the same layer list.
func TestInitFromPTH(t *testing.T) {
	pth := fixture(t, "init.pth")
	data := t.TempDir()
	writeCIFAR(t, data, 20)
	out, err := run(t, "train", "--device", "cpu", "--download=false", "--data", data, "--recipe", "cifar", "--epochs", "1", "--batch", "16",
		"--arch", "8,8,M,16,16,M,32,32,32,M,64,64,64,M,64,64,64,M", "--hidden", "128", "--init", pth, "--run-dir", filepath.Join(t.TempDir(), "r"))
	if err != nil || !strings.Contains(out, "initialised from "+pth+"\n") {
		t.Fatalf("--init %s: %v\n%s", pth, err, out)
	}
	// eval takes the .pth itself: its configuration comes from the shapes.
	out, err = run(t, "eval", pth, "--data", data, "--device", "cpu", "--json")
	if err != nil || !strings.Contains(out, `"images": 20`) {
		t.Fatalf("eval %s: %v\n%s", pth, err, out)
	}
}

// TestPretrainedFreezeFeatures is the seed's transfer learning on the
// fixture's torch.save file: the layers come from the file, its last
// classifier layer is replaced, and with --freeze-features every feature
// weight stays bit for bit the file's while the head trains. A plain VGG
// state dict (no batch norm, like torchvision's vgg16) works the same way.
func TestPretrainedFreezeFeatures(t *testing.T) {
	pth := fixture(t, "init.pth")
	data := t.TempDir()
	writeCIFAR(t, data, 20)
	plain := writePlainVGG(t)
	for _, c := range []struct {
		file, says string
		head       []int
		size       string // --size, where not the recipe's 32
	}{
		{pth, "with batch norm, 128-wide classifier, trained for 10 classes at 32x32; its last layer is replaced\n", []int{10, 128}, ""},
		{plain, "without batch norm, 32-wide classifier, trained for 1000 classes at 32x32; its last layer is replaced\n", []int{10, 32}, ""},
		// A run at another size than the file's says what that costs.
		{plain, "trained for 1000 classes at 32x32; its last layer is replaced; at this run's 64x64 the first classifier layer's input differs, so it starts fresh too (--size 32 keeps it)\n", []int{10, 32}, "64"},
	} {
		dir := filepath.Join(t.TempDir(), "r")
		args := []string{"train", "--device", "cpu", "--download=false", "--data", data, "--recipe", "cifar", "--epochs", "2", "--batch", "16",
			"--pretrained", c.file, "--freeze-features", "--run-dir", dir}
		if c.size != "" {
			args = append(args, "--size", c.size)
		}
		out, err := run(t, args...)
		if err != nil || !strings.Contains(out, c.says) || !strings.Contains(out, "; the last layer (classifier.6) new, for 10 classes") || strings.Contains(out, "absent") {
			t.Fatalf("--pretrained %s: %v\n%s", c.file, err, out)
		}
		before, err := checkpoint.ReadWeights(c.file)
		if err != nil {
			t.Fatal(err)
		}
		after, err := checkpoint.ReadWeights(filepath.Join(dir, "last.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		features := 0
		for name, w := range before.Floats {
			a, ok := after.Floats[name]
			switch {
			case strings.HasPrefix(name, "features.") && !strings.Contains(name, "running_"):
				features++
				if !ok || !slices.Equal(a.Data, w.Data) {
					t.Errorf("%s: frozen feature tensor %s changed", c.file, name)
				}
			case strings.HasPrefix(name, "classifier.3.weight"):
				if slices.Equal(a.Data, w.Data) {
					t.Errorf("%s: %s did not train", c.file, name)
				}
			}
		}
		if features == 0 {
			t.Errorf("%s: no feature tensors compared", c.file)
		}
		if h := after.Floats["classifier.6.weight"]; !slices.Equal(h.Shape, c.head) {
			t.Errorf("%s: new head %v, want %v", c.file, h.Shape, c.head)
		}
	}
	if _, err := run(t, "train", "--device", "cpu", "--download=false", "--data", data, "--pretrained", pth, "--arch", "vgg11"); err == nil ||
		!strings.Contains(err.Error(), "--arch with --pretrained: the architecture is the weight file's") {
		t.Errorf("--arch with --pretrained: %v", err)
	}
	if _, err := run(t, "train", "--device", "cpu", "--download=false", "--data", data, "--pretrained", pth, "--init", pth); err == nil ||
		!strings.Contains(err.Error(), "--init and --pretrained: give one") {
		t.Errorf("--init with --pretrained: %v", err)
	}
}

// TestConvert: the fixture's torch.save file becomes exactly the tensors
// PyTorch saved beside it as safetensors; other directions are refused.
func TestConvert(t *testing.T) {
	dir := filepath.Dir(fixture(t, "init.pth"))
	out := filepath.Join(t.TempDir(), "init.safetensors")
	if s, err := run(t, "convert", filepath.Join(dir, "init.pth"), out); err != nil || !strings.Contains(s, "wrote 97 tensors to "+out) {
		t.Fatalf("convert: %v\n%s", err, s)
	}
	got, err := safetensors.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := safetensors.Read(filepath.Join(dir, "init.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Names(), want.Names()) {
		t.Fatalf("names %v, want %v", got.Names(), want.Names())
	}
	for _, name := range want.Names() {
		g, w := got.Tensors[name], want.Tensors[name]
		if g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s: %s %v (%d bytes), PyTorch wrote %s %v (%d bytes)", name, g.DType, g.Shape, len(g.Data), w.DType, w.Shape, len(w.Data))
		}
	}
	// An existing output is kept, unless --force.
	kept := filepath.Join(t.TempDir(), "trained.safetensors")
	if err := os.WriteFile(kept, []byte("a trained model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "convert", filepath.Join(dir, "init.pth"), kept); err == nil || !strings.Contains(err.Error(), kept+" exists") {
		t.Errorf("convert onto an existing file: %v, want an error naming it", err)
	}
	if b, _ := os.ReadFile(kept); string(b) != "a trained model" {
		t.Errorf("convert without --force changed %s", kept)
	}
	if _, err := run(t, "convert", "--force", filepath.Join(dir, "init.pth"), kept); err != nil {
		t.Errorf("convert --force: %v", err)
	} else if f, err := safetensors.Read(kept); err != nil || len(f.Names()) != 97 {
		t.Errorf("convert --force wrote %v", err)
	}
	for _, c := range []struct{ in, out, says string }{
		{filepath.Join(dir, "init.pth"), filepath.Join(t.TempDir(), "x.pth"), "vgg16 writes safetensors only"},
		{out, filepath.Join(t.TempDir(), "y.safetensors"), "is a safetensors file already"},
		{filepath.Join(dir, "meta.json"), filepath.Join(t.TempDir(), "z.safetensors"), "meta.json"},
	} {
		if _, err := run(t, "convert", c.in, c.out); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("convert %s %s: %v, want an error saying %q", c.in, c.out, err, c.says)
		}
	}
}

// fixture is the path of a file of the vgg-small-32 PyTorch fixture
// ($VGG16_FIXTURES, else ../shared/fixtures); it skips the test when the
// fixtures are not there.
func fixture(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("VGG16_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "fixtures")
	}
	path := filepath.Join(dir, "vgg-small-32", name)
	if _, err := os.Stat(path); err != nil {
		fixtures.Missing(t, "fixture not found: %v (set VGG16_FIXTURES)", err)
	}
	return path
}

// TestSameDataFolderCase: the folder of batches named in another case is
// the directory's where the file system takes the two names for one folder
// (macOS, Windows; a link stands in for that here), and not where they are
// two (Linux).
func TestSameDataFolderCase(t *testing.T) {
	dir := t.TempDir()
	upper := filepath.Join(dir, strings.ToUpper(cifar.BinFolder))
	if err := os.Mkdir(upper, 0o755); err != nil {
		t.Fatal(err)
	}
	if sameData(upper, dir) {
		t.Errorf("%s: another folder than %s's %s, on a file system that tells case", upper, dir, cifar.BinFolder)
	}
	if err := os.Symlink(upper, filepath.Join(dir, cifar.BinFolder)); err != nil {
		t.Skip(err) // no symbolic links here
	}
	if !sameData(upper, dir) || !sameData(dir, upper) {
		t.Errorf("%s: not taken for %s's %s", upper, dir, cifar.BinFolder)
	}
	if sameData(upper, t.TempDir()) {
		t.Error("another directory")
	}
}

// TestTrainedOn: eval notes when its images are the ones a checkpoint
// trained on (the same batch file, the demo sample, a directory's
// training set), not a directory's test set or other data.
func TestTrainedOn(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data_batch_1.bin")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, cifar.BinFolder), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "batch.bin")
	if err := os.Symlink(file, link); err != nil {
		t.Skip(err) // no symbolic links here
	}
	for _, c := range []struct {
		ran         string
		data, split string
		want        bool
	}{
		{file, file, "test", true},
		{file, filepath.Join(dir, "other.bin"), "test", false},
		{dir, dir, "test", false},
		{dir, dir, "train", true},
		{dir, filepath.Join(dir, cifar.BinFolder), "train", true}, // the folder of batches in it
		{dir, filepath.Join(dir, cifar.BinFolder), "test", false},
		{"demo", "demo", "test", true},
		{"demo", file, "test", false},
		{file, link, "test", true}, // another path to the same file
		// Not there (any more): the same path however written, not another.
		{filepath.Join(dir, "gone.bin"), dir + string(filepath.Separator) + "." + string(filepath.Separator) + "gone.bin", "test", true},
		{filepath.Join(dir, "gone.bin"), filepath.Join(dir, "gone2.bin"), "test", false},
	} {
		if got := trainedOn(&train.DataOptions{Dir: c.ran}, c.data, c.split); got != c.want {
			t.Errorf("trained on %s, eval on %s (%s): %v, want %v", c.ran, c.data, c.split, got, c.want)
		}
	}
	if trainedOn(nil, file, "test") {
		t.Error("a checkpoint that records no data")
	}
	// The note says how much of the set the run trained on.
	for _, c := range []struct {
		data train.DataOptions
		says string
	}{
		{train.DataOptions{Dir: dir, Limit: 500}, "c trained on 500 images of d (--limit 500): this accuracy is partly on training images"},
		{train.DataOptions{Dir: dir, ValSplit: 0.2}, "c trained on d but for the 0.2 it held out: this accuracy is mostly on training images"},
		{train.DataOptions{Dir: dir}, "c trained on all of d: this accuracy is on training images"},
		// A limit beyond the part not held out (make run's 5,000 of the
		// 2,000-image demo) cut nothing.
		{train.DataOptions{Dir: "demo", Limit: 5000, ValSplit: 0.2}, "c trained on d but for the 0.2 it held out: this accuracy is mostly on training images"},
		{train.DataOptions{Dir: dir, Limit: 1600, ValSplit: 0.2}, "c trained on d but for the 0.2 it held out: this accuracy is mostly on training images"},
		{train.DataOptions{Dir: dir, Limit: 1599, ValSplit: 0.2}, "c trained on 1599 images of d (--limit 1599): this accuracy is partly on training images"},
	} {
		if got := trainedNote("c", "d", &c.data, 2000); got != "note: "+c.says {
			t.Errorf("%+v: %q, want %q", c.data, got, "note: "+c.says)
		}
	}
}

// TestReadImageDropsAlpha: a half-transparent image reads as its colours,
// as PIL's convert("RGB") gives them, not darkened by the alpha.
func TestReadImageDropsAlpha(t *testing.T) {
	dir := t.TempDir()
	opaque, clear := filepath.Join(dir, "opaque.png"), filepath.Join(dir, "clear.png")
	invisible := filepath.Join(dir, "invisible.png")
	for path, alpha := range map[string]uint8{opaque: 255, clear: 100, invisible: 0} {
		img := image.NewNRGBA(image.Rect(0, 0, 40, 40)) // stored as given, not premultiplied
		for i := 0; i < len(img.Pix); i += 4 {
			copy(img.Pix[i:], []byte{220, 30, 90, alpha})
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, err1 := readImage(opaque)
	b, err2 := readImage(clear)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) || a[0] != 220 {
		t.Errorf("opaque %v %v…, half-transparent %v %v…", err1, a[:2], err2, b[:2])
	}
	if c, err := readImage(invisible); err != nil || !bytes.Equal(a, c) {
		t.Errorf("opaque %v…, fully transparent %v %v…", a[:2], err, c[:2])
	}
}

// TestReadImageCells: each of the 32x32 cells averages the pixels it
// covers, as a direct sum over each cell finds, for images wider, narrower,
// taller and shorter than 32, down to one pixel across.
func TestReadImageCells(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, sz := range [][2]int{{64, 64}, {1, 100}, {100, 1}, {7, 45}, {33, 31}, {1, 1}, {95, 47}} {
		w, h := sz[0], sz[1]
		img := image.NewNRGBA(image.Rect(0, 0, w, h))
		for i := range img.Pix {
			img.Pix[i] = byte(r.IntN(256))
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		got, err := decodeImage("x.png", &buf)
		if err != nil {
			t.Fatal(err)
		}
		span := func(o, n int) (int, int) { return o * n / 32, max((o+1)*n/32, o*n/32+1) }
		for oy := range 32 {
			y0, y1 := span(oy, h)
			for ox := range 32 {
				x0, x1 := span(ox, w)
				for ch := range 3 {
					var sum, n int
					for y := y0; y < y1; y++ {
						for x := x0; x < x1; x++ {
							sum += int(img.Pix[img.PixOffset(x, y)+ch]) * 0x101
							n++
						}
					}
					if want := byte(sum / n >> 8); got[ch*1024+oy*32+ox] != want {
						t.Fatalf("%dx%d: cell (%d, %d) channel %d is %d, want %d", w, h, ox, oy, ch, got[ch*1024+oy*32+ox], want)
					}
				}
			}
		}
	}
}

// TestReadImageEmpty: an empty file (a failed download or copy) is named
// empty, not "not a PNG or JPEG image", which sends one looking at its
// format.
func TestReadImageEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cat.png")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readImage(path); err == nil || err.Error() != path+": empty file, not an image" {
		t.Errorf("readImage of an empty file: %v", err)
	}
}

// TestReadImageBounded: an image whose header declares more pixels than
// predict reads is refused by its header, naming the file and its size,
// before any pixel is decoded (this one has none).
func TestReadImageBounded(t *testing.T) {
	ihdr := make([]byte, 17)
	copy(ihdr, "IHDR")
	binary.BigEndian.PutUint32(ihdr[4:], 12000) // width: 144 megapixels, which a 32-bit int still holds as 4 bytes each
	binary.BigEndian.PutUint32(ihdr[8:], 12000) // height
	copy(ihdr[12:], []byte{8, 2, 0, 0, 0})      // 8-bit RGB
	chunk := binary.BigEndian.AppendUint32(nil, 13)
	chunk = append(chunk, ihdr...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(ihdr))
	path := filepath.Join(t.TempDir(), "huge.png")
	if err := os.WriteFile(path, append([]byte("\x89PNG\r\n\x1a\n"), chunk...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := readImage(path)
	if want := path + ": 12000x12000 pixels, more than predict reads (100 megapixels)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("readImage of a 144-megapixel header: %v, want %q", err, want)
	}
}

// TestEstimateBytes: the CPU memory check's estimate for VGG16-BN at
// 224x224, batch 64: the float32 parameters, gradients and momentum (1.6
// GB), the saves' copy of the state (0.5 GB), the packed activations
// (about 7.4 GB planned), the loader's batches and the dataset (0.3 GB):
// 10.3 GB, where the run's peak resident memory was 9.9 GB (2026-12-07).
// Less with the batch-norm outputs recomputed, and by all the gradients
// but a part of the second Linear's with SGD in the backward.
func TestEstimateBytes(t *testing.T) {
	o := train.Options{Model: layers.DefaultConfig(), Batch: 64}
	plain, err1 := estimateBytes(&o)
	o.RecomputeBN = true
	recompute, err2 := estimateBytes(&o)
	o.RecomputeBN, o.SGDInBackward = false, true
	inBackward, err3 := estimateBytes(&o)
	if err1 != nil || err2 != nil || err3 != nil || plain < 10.0e9 || plain > 10.6e9 || !(recompute < plain-2e9) {
		t.Errorf("estimate %.2f GB, %.2f GB recomputing (%v, %v, %v)", float64(plain)/1e9, float64(recompute)/1e9, err1, err2, err3)
	}
	if got, want := plain-inBackward, int64(4*(134_309_962-1024*4096)); got != want {
		t.Errorf("--sgd-in-backward saves %d bytes, want %d (the gradients of all but 1024 rows of the second Linear)", got, want)
	}
	// Evaluating VGG16 at 224x224, batch 100, kept 4.1 GB resident on the
	// build machine (2026-12-07); training at that batch needs ~14.
	o = train.Options{Model: layers.DefaultConfig(), Batch: 100}
	trainBytes, err1 := estimateBytes(&o)
	evalBytes, err2 := estimateEvalBytes(o.Model, 100)
	if err1 != nil || err2 != nil || evalBytes < 3.5e9 || evalBytes > 4.5e9 || evalBytes > trainBytes/3 {
		t.Errorf("evaluation estimate %.2f GB, training's %.2f GB (%v, %v)", float64(evalBytes)/1e9, float64(trainBytes)/1e9, err1, err2)
	}
	if have, _ := availableBytes(); have > 0 {
		if err := checkCPUEvalMemory(o.Model, 1000000); err == nil || !strings.Contains(err.Error(), "--batch 1000000 at 224x224 needs about") || !strings.Contains(err.Error(), "to evaluate") {
			t.Errorf("evaluating a batch of a million at 224x224: %v", err)
		}
	}
}

// TestRunsInTheSameSecond starts two runs whose default directory names
// fall in the same second: the second takes the suffix -2.
func TestRunsInTheSameSecond(t *testing.T) {
	data := t.TempDir()
	writeCIFAR(t, data, 10)
	t.Chdir(t.TempDir())
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.Local)
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return at }
	args := append([]string{"train", "--data", data, "--epochs", "1", "--limit", "20"}, tiny...)
	base := filepath.Join("runs", "20261207-060000-8_M_16_M_16_M_16_M_16_M-32")
	for i, dir := range []string{base, base + "-2"} {
		out, err := run(t, args...)
		if err != nil || !strings.Contains(out, "run directory: "+dir+"\n") || !checkpoint.Exists(filepath.Join(dir, train.BestFile)) {
			t.Fatalf("run %d: %v\n%s", i+1, err, out)
		}
	}
}

// writePlainVGG writes a VGG without batch norm for 1000 classes, as
// torchvision's vgg16 is, and returns its path.
func writePlainVGG(t *testing.T) string {
	t.Helper()
	plain := filepath.Join(t.TempDir(), "plain.safetensors")
	cfg, err := layers.ParseCfg("8,M,8,M,16,M,16,M,16,M")
	if err != nil {
		t.Fatal(err)
	}
	m, err := layers.New(cpu.New(), layers.Config{Arch: "plain", Cfg: cfg, ImageSize: 32, Hidden: 32, Classes: 1000, Dropout: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.Init(7)
	if err := checkpoint.SaveState(plain, m.State(), checkpoint.Info{Config: m.Config}); err != nil {
		t.Fatal(err)
	}
	return plain
}

// TestOtherClasses: a 1000-class model is not evaluated on CIFAR-10's 10
// classes; one unreadable image is predict's error, said once; several
// unreadable ones are not said to be predicted.
func TestOtherClasses(t *testing.T) {
	data := t.TempDir()
	writeCIFAR(t, data, 10)
	plain := writePlainVGG(t)
	if _, err := run(t, "eval", plain, "--data", data, "--device", "cpu"); err == nil || !strings.Contains(err.Error(), plain+" classifies 1000 classes, "+data+" has 10") {
		t.Errorf("eval of a 1000-class model on CIFAR-10: %v", err)
	}
	notImage := filepath.Join(t.TempDir(), "x.png")
	os.WriteFile(notImage, []byte("text"), 0o644)
	if out, err := run(t, "predict", "--checkpoint", plain, "--device", "cpu", notImage); err == nil || !strings.Contains(err.Error(), notImage) || strings.Contains(out, notImage) {
		t.Errorf("predict of one unreadable image: %v, printed %q", err, out)
	}
	if _, err := run(t, "predict", "--checkpoint", plain, "--device", "cpu", notImage, notImage); err == nil || err.Error() != "none of the 2 images has a prediction" {
		t.Errorf("predict of two unreadable images: %v", err)
	}
}

// TestPredictBatches predicts 35 images (a full batch of 32, then the
// rest, one unreadable among them) in one call: each gets what it gets
// alone, and the unreadable one its error.
func TestPredictBatches(t *testing.T) {
	plain := writePlainVGG(t)
	dir := t.TempDir()
	var paths []string
	for i := range 35 {
		p := filepath.Join(dir, fmt.Sprintf("%02d.png", i))
		if i == 20 {
			os.WriteFile(p, []byte("not an image"), 0o644)
		} else {
			writePNG(t, p, 20+i, 30, color.RGBA{uint8(7 * i), uint8(255 - 5*i), uint8(40 + 3*i), 255})
		}
		paths = append(paths, p)
	}
	predictJSON := func(paths ...string) []Prediction {
		t.Helper()
		out, err := run(t, append([]string{"predict", "--checkpoint", plain, "--device", "cpu", "--json", "--top", "5"}, paths...)...)
		if err != nil && len(paths) == 1 {
			t.Fatalf("%v\n%s", err, out)
		}
		var p []Prediction
		if err := json.Unmarshal([]byte(out[:strings.LastIndexByte(out, ']')+1]), &p); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return p
	}
	all := predictJSON(paths...)
	if len(all) != len(paths) {
		t.Fatalf("%d predictions for %d images", len(all), len(paths))
	}
	for i, p := range paths {
		if i == 20 {
			if all[i].Error == "" || all[i].Top != nil {
				t.Errorf("the unreadable image: %+v", all[i])
			}
			continue
		}
		alone := predictJSON(p)[0]
		if all[i].Image != p || len(all[i].Top) != 5 {
			t.Fatalf("image %d: %+v", i, all[i])
		}
		for k, s := range alone.Top {
			if g := all[i].Top[k]; g.Class != s.Class || math.Abs(g.Prob-s.Prob) > 1e-6*s.Prob {
				t.Errorf("image %d, class %d: %s %g in a batch, %s %g alone", i, k, g.Class, g.Prob, s.Class, s.Prob)
			}
		}
	}
}

// TestDoctor: doctor gives one verdict on the GPU, where no CUDA library
// is found (or none in VGG16_CUDA_PATH, and on the system path) and on
// the stand-in CUDA libraries (usable), and names the CPU's SGEMM.
func TestDoctor(t *testing.T) {
	verdicts := func(out string) int {
		n := 0
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "GPU") {
				n++
			}
		}
		return n
	}
	t.Setenv("VGG16_CUDA_PATH", t.TempDir())
	out, err := run(t, "doctor")
	if err != nil || !strings.Contains(out, "CPU: cpu, ") || verdicts(out) != 1 {
		t.Errorf("doctor: %v\n%s", err, out)
	}
	t.Setenv("VGG16_CUDA_PATH", gputest.BuildFakeCUDA(t))
	out, err = run(t, "doctor")
	if err != nil || !strings.Contains(out, "gpu 0    Fake GPU") || verdicts(out) != 1 || !strings.Contains(out, "\nGPU: usable (--device auto picks it)\n") {
		t.Errorf("doctor on the stand-in: %v\n%s", err, out)
	}
}

// TestPredictStdin: "-" reads the image from standard input, as from its
// file, and a second "-" is that image's error, not a silent empty read.
func TestPredictStdin(t *testing.T) {
	plain := writePlainVGG(t)
	path := filepath.Join(t.TempDir(), "a.png")
	writePNG(t, path, 40, 30, color.RGBA{200, 60, 20, 255})
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	predictJSON := func(args ...string) ([]Prediction, error) {
		t.Helper()
		root := newRoot()
		var out, errOut bytes.Buffer
		root.SetIn(bytes.NewReader(img))
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(append([]string{"predict", "--checkpoint", plain, "--device", "cpu", "--json"}, args...))
		err := root.Execute()
		var p []Prediction
		if jerr := json.Unmarshal(out.Bytes(), &p); jerr != nil {
			t.Fatalf("%v: %v\n%s%s", args, jerr, out.String(), errOut.String())
		}
		return p, err
	}
	want, err := predictJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := predictJSON("-", "-")
	if err == nil || len(got) != 2 || got[0].Image != "-" || got[0].Error != "" || fmt.Sprint(got[0].Top) != fmt.Sprint(want[0].Top) {
		t.Fatalf("predict - -: %v\n%+v\nwant the first as %+v", err, got, want[0])
	}
	if !strings.Contains(got[1].Error, "standard input is read once") {
		t.Errorf("the second -: %+v", got[1])
	}
}

// TestOverflowingModel: finite weights whose outputs overflow to ±Inf
// give no probabilities. predict says so for each image instead of
// ranking NaNs, and eval --json writes its NaN loss as null: JSON has no
// NaN, and the encoder failed, printing nothing.
func TestOverflowingModel(t *testing.T) {
	dir := t.TempDir()
	data, ck, img := filepath.Join(dir, "data"), filepath.Join(dir, "huge.safetensors"), filepath.Join(dir, "cat.png")
	writeCIFAR(t, data, 10)
	writePNG(t, img, 32, 32, color.RGBA{200, 100, 50, 255})
	cfg, err := layers.ParseCfg("8,M,8,M,16,M,16,M,16,M")
	if err != nil {
		t.Fatal(err)
	}
	m, err := layers.New(cpu.New(), layers.Config{Arch: "huge", Cfg: cfg, BatchNorm: true, ImageSize: 32, Hidden: 32, Classes: 10, Dropout: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.Init(7)
	st := m.State()
	for name, v := range map[string]float32{"classifier.3.weight": 0, "classifier.3.bias": 1, // hidden outputs of 1
		"classifier.6.weight": 3e38, "classifier.6.bias": 3e38} { // whose sum overflows
		w := st.Floats[name]
		w.Data = slices.Repeat([]float32{v}, len(w.Data))
		st.Floats[name] = w
	}
	if err := checkpoint.SaveState(ck, st, checkpoint.Info{Config: m.Config, Classes: slices.Clone(cifar.ClassNames[:])}); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "predict", "--checkpoint", ck, "--device", "cpu", "--json", img)
	if err == nil || !strings.Contains(out, `"error": "`+img+`: the model's output for class airplane is +Inf: no prediction"`) {
		t.Errorf("predict on overflowing outputs: %v\n%s", err, out)
	}
	out, err = run(t, "eval", ck, "--data", data, "--device", "cpu", "--json")
	if err != nil || !strings.Contains(out, `"loss": null,`) {
		t.Errorf("eval --json on overflowing outputs: %v\n%s", err, out)
	}
}

// TestOutputNotWritten: a result that cannot be written (stdout redirected
// to a full disk) fails the command instead of exiting 0 cut short.
func TestOutputNotWritten(t *testing.T) {
	root := newRoot()
	root.SetOut(writerFunc(func([]byte) (int, error) { return 0, syscall.ENOSPC }))
	root.SetErr(io.Discard)
	root.SetArgs([]string{"summary", "--size", "32"})
	if err := root.Execute(); err == nil || err.Error() != "writing the output: no space left on device" {
		t.Errorf("summary into a full disk: %v", err)
	}
}

// TestResumeKnowsEveryFlag: every flag of train is one a resume applies,
// a device flag, or one whose option it can compare with the run's own;
// a flag missing from all three is named as ignored on every resume.
func TestResumeKnowsEveryFlag(t *testing.T) {
	trainCmd().Flags().VisitAll(func(f *pflag.Flag) {
		_, compared := runSetting[f.Name]
		if !resumeApplies[f.Name] && !isDeviceFlag(f.Name) && !compared && f.Name != "recipe" && f.Name != "auto-settings" {
			t.Errorf("--%s: not known to runFlagsIgnored (resumeApplies or runSetting)", f.Name)
		}
	})
}

// TestBatchBounds: a --batch beyond any memory is refused by every
// command that takes one, before its estimate (which wrapped around to a
// negative size and let train and bench panic allocating) or its buffers
// (2e9: an int on 32-bit builds too).
func TestBatchBounds(t *testing.T) {
	for _, args := range [][]string{
		{"summary", "--arch", "8,M", "--size", "32", "--hidden", "16"},
		{"bench", "--device", "cpu", "--arch", "8,M", "--size", "32", "--hidden", "16", "--steps", "1"},
		{"train", "--device", "cpu", "--data", "demo", "--arch", "8,M", "--size", "32", "--hidden", "16", "--epochs", "1", "--run-dir", filepath.Join(t.TempDir(), "r")},
	} {
		if _, err := run(t, append(args, "--batch", "2000000000")...); err == nil || !strings.Contains(err.Error(), "--batch 2000000000: at most 1048576") {
			t.Errorf("%s --batch 2000000000: %v", args[0], err)
		}
		if _, err := run(t, append(args, "--batch", "0")...); err == nil || !strings.Contains(err.Error(), "--batch 0: need at least 1") {
			t.Errorf("%s --batch 0: %v", args[0], err)
		}
	}
	// A batch larger than the images trained on is one batch of them all,
	// and counted so (27.6 GB for --batch 200000 here, refused before).
	out, err := run(t, "train", "--device", "cpu", "--data", "demo", "--limit", "200", "--arch", "8,M", "--size", "32", "--hidden", "16",
		"--epochs", "1", "--batch", "200000", "--run-dir", filepath.Join(t.TempDir(), "big"))
	if err != nil || !strings.Contains(out, "fewer than --batch 200000: each epoch is one batch of all of them") {
		t.Errorf("--limit 200 --batch 200000: %v\n%s", err, out)
	}
	if got := bytesOf(1e30); got != 1<<62 {
		t.Errorf("bytesOf(1e30) = %d, want it saturated", got)
	}
	if got := bytesOf(10); got != 40+cpuScratch {
		t.Errorf("bytesOf(10) = %d", got)
	}
}

// TestSummaryOfCheckpoint: summary describes a checkpoint's network, and
// refuses model flags beside it; its training estimate follows the flags
// that train would run with.
func TestSummaryOfCheckpoint(t *testing.T) {
	cfg := layers.Config{Arch: "8,M,16,M", BatchNorm: true, ImageSize: 32, Hidden: 16, Classes: 10, Dropout: 0.5}
	cfg.Cfg, _ = layers.ParseCfg(cfg.Arch)
	m, err := layers.New(cpu.New(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := checkpoint.Save(path, m, checkpoint.Info{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "summary", path)
	if want := fmt.Sprintf("total parameters: %s", group(m.NumParams())); err != nil || !strings.HasPrefix(out, "8,M,16,M (BN), input 3x32x32, 10 classes") || !strings.Contains(out, want) {
		t.Errorf("summary of a checkpoint: %v\n%s\nwant %q", err, out, want)
	}
	// A run's batch, cut to its --limit as train's memory check counts it.
	limited := filepath.Join(t.TempDir(), "m.safetensors")
	if err := checkpoint.Save(limited, m, checkpoint.Info{Config: cfg, Flags: `{"batch":64,"data":{"dir":"demo","limit":10}}`}); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "summary", limited); err != nil || !strings.Contains(out, "at batch 10:") {
		t.Errorf("summary of a run with --batch 64 --limit 10: %v\n%s", err, out)
	}
	if _, err := run(t, "summary", path, "--size", "64"); err == nil || !strings.Contains(err.Error(), "--size with a checkpoint") {
		t.Errorf("summary of a checkpoint --size 64: %v", err)
	}
	plain, err1 := run(t, "summary", "--batch", "64")
	lean, err2 := run(t, "summary", "--batch", "64", "--recompute-bn", "--sgd-in-backward")
	if err1 != nil || err2 != nil || plain == lean {
		t.Errorf("summary's estimate with --recompute-bn --sgd-in-backward is the plain one's: %v %v", err1, err2)
	}
}

// TestEvalSplitVal: eval --split val scores the images the run validated
// on, so that it gives the run's recorded val_acc and val_loss, to the bit;
// and summary of the run's checkpoint estimates memory at the run's --batch.
func TestEvalSplitVal(t *testing.T) {
	dir := t.TempDir()
	run1 := filepath.Join(dir, "r")
	if out, err := run(t, append(append([]string{"train"}, tiny...), "--data", "demo", "--limit", "200", "--epochs", "1", "--run-dir", run1)...); err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	hist, err := train.ReadMetrics(filepath.Join(run1, train.MetricsFile))
	if err != nil || len(hist) != 1 {
		t.Fatalf("metrics: %v %v", hist, err)
	}
	js, err := run(t, "eval", filepath.Join(run1, train.BestFile), "--split", "val", "--device", "cpu", "--json")
	var r struct {
		Split    string  `json:"split"`
		Images   int     `json:"images"`
		Loss     float64 `json:"loss"`
		Accuracy float64 `json:"accuracy"`
	}
	if err != nil || json.Unmarshal([]byte(js), &r) != nil {
		t.Fatalf("eval --split val: %v\n%s", err, js)
	}
	if r.Split != "val" || r.Images != 100 || r.Accuracy != hist[0].ValAcc || r.Loss != hist[0].ValLoss {
		t.Errorf("eval --split val: %+v, the run validated to val_acc %v val_loss %v on 100 images", r, hist[0].ValAcc, hist[0].ValLoss)
	}
	for _, c := range []struct {
		args []string
		want string
	}{{nil, "at batch 20:"}, {[]string{"--batch", "7"}, "at batch 7:"}} {
		if out, err := run(t, append([]string{"summary", filepath.Join(run1, train.BestFile)}, c.args...)...); err != nil || !strings.Contains(out, c.want) {
			t.Errorf("summary of the run's checkpoint %v: %v, want %q in\n%s", c.args, err, c.want, out)
		}
	}
	// Data with other images than the run's: said, since the score is then
	// not the run's val_acc.
	data := t.TempDir()
	writeCIFAR(t, data, 20)
	run2 := filepath.Join(dir, "r2")
	if out, err := run(t, append(append([]string{"train"}, tiny...), "--data", data, "--epochs", "1", "--run-dir", run2)...); err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	const other = "holds other images than those the run drew its validation images from"
	if out, err := run(t, "eval", filepath.Join(run2, train.BestFile), "--split", "val", "--device", "cpu"); err != nil || strings.Contains(out, other) {
		t.Errorf("eval --split val on the run's own data: %v\n%s", err, out)
	}
	writeCIFAR(t, data, 21)
	if out, err := run(t, "eval", filepath.Join(run2, train.BestFile), "--split", "val", "--device", "cpu"); err != nil || !strings.Contains(out, other) {
		t.Errorf("eval --split val on other images: %v\n%s", err, out)
	}
	// The run's data gone: say where it was and what to give.
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "eval", filepath.Join(run2, train.BestFile), "--split", "val", "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "--split val: the run's data, "+data) || !strings.Contains(err.Error(), "give --data where it is now") {
		t.Errorf("eval --split val without the run's data: %v", err)
	}
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "eval", filepath.Join(run2, train.BestFile), "--split", "val", "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "--split val: no CIFAR-10 in "+data) {
		t.Errorf("eval --split val with the run's data folder empty: %v", err)
	}
	// Part of CIFAR-10 there: which part is missing, as train says it.
	if err := os.Mkdir(filepath.Join(data, cifar.BinFolder), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, cifar.BinFolder, "data_batch_1.bin"), make([]byte, cifar.RecordBytes), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "eval", filepath.Join(run2, train.BestFile), "--split", "val", "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "holds part of CIFAR-10") {
		t.Errorf("eval --split val with part of the run's data: %v", err)
	}
	// A state dict records no run: nothing held out to score.
	plain := writePlainVGG(t)
	if _, err := run(t, "eval", plain, "--split", "val", "--device", "cpu"); err == nil || !strings.Contains(err.Error(), "records no training data") {
		t.Errorf("eval --split val of a bare state dict: %v", err)
	}
}

// TestResumeOnOtherImages: a resumed run holds its data against the
// checksums its checkpoint records, whatever path the data has now: a
// copy is the same images, a changed file is said.
func TestResumeOnOtherImages(t *testing.T) {
	data, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeCIFAR(t, data, 20)
	if out, err := run(t, append(append([]string{"train"}, tiny...), "--data", data, "--epochs", "1", "--run-dir", runDir)...); err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	const other = "holds other images than those the run trained on before"
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(data, moved); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "train", "--resume", "--run-dir", runDir, "--epochs", "2", "--data", moved, "--device", "cpu"); err != nil || strings.Contains(out, other) {
		t.Errorf("resumed on the data moved: %v\n%s", err, out)
	}
	writeCIFAR(t, moved, 21)
	if out, err := run(t, "train", "--resume", "--run-dir", runDir, "--epochs", "3", "--data", moved, "--device", "cpu"); err != nil || !strings.Contains(out, moved+"'s training set "+other) {
		t.Errorf("resumed on other images: %v\n%s", err, out)
	}
}

// TestTopClassesLargeLogits: predict's probabilities are a softmax that
// holds for logits far beyond exp's float64 range (a model's outputs can be
// in the thousands): logits 1000, 999 and 990 are the probabilities of 0,
// -1 and -10, 1/(1+e^-1+e^-10) and so on, most probable first, summing to 1.
func TestTopClassesLargeLogits(t *testing.T) {
	s := topClasses([]float32{999, 1000, 990}, []string{"a", "b", "c"}, 3)
	z := 1 + math.Exp(-1) + math.Exp(-10)
	want := []Score{{"b", 1 / z}, {"a", math.Exp(-1) / z}, {"c", math.Exp(-10) / z}}
	if len(s) != len(want) {
		t.Fatalf("topClasses = %v, want %v", s, want)
	}
	sum := 0.0
	for i, w := range want {
		if s[i].Class != w.Class || math.Abs(s[i].Prob-w.Prob) > 1e-12 {
			t.Errorf("topClasses[%d] = %+v, want %+v", i, s[i], w)
		}
		sum += s[i].Prob
	}
	if math.Abs(sum-1) > 1e-12 {
		t.Errorf("probabilities sum to %v, want 1", sum)
	}
}

// TestEvalSplitValOnTheTestSet: a run with --val-split 0 validated on the
// test set: eval --split val on data whose training images changed but
// whose test set did not scores the run's own validation images, and must
// not say that it does not.
func TestEvalSplitValOnTheTestSet(t *testing.T) {
	data, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeCIFAR(t, data, 20)
	if out, err := run(t, append(append([]string{"train"}, tiny...), "--data", data, "--val-split", "0", "--epochs", "1", "--run-dir", runDir)...); err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	hist, err := train.ReadMetrics(filepath.Join(runDir, train.MetricsFile))
	if err != nil || len(hist) != 1 {
		t.Fatalf("metrics: %v %v", hist, err)
	}
	batch := filepath.Join(data, cifar.BinFolder, "data_batch_1.bin")
	b, err := os.ReadFile(batch)
	if err != nil {
		t.Fatal(err)
	}
	b[1] ^= 0xff // another training image; the test set as it was
	if err := os.WriteFile(batch, b, 0o644); err != nil {
		t.Fatal(err)
	}
	const other = "holds other images than those the run drew its validation images from"
	out, err := run(t, "eval", filepath.Join(runDir, train.BestFile), "--split", "val", "--device", "cpu", "--json")
	if err != nil || strings.Contains(out, other) {
		t.Errorf("eval --split val of a run validated on the unchanged test set: %v\n%s", err, out)
	}
}

// TestBenchEstimateIsTheStep: bench saves no checkpoint and holds no
// CIFAR-10 (its data is synthetic, or none), so the memory it is held to
// is the step's, not a training run's with the saves' copy of the state
// and the dataset: else a bench that fits is refused.
func TestBenchEstimateIsTheStep(t *testing.T) {
	o := train.Options{Model: layers.DefaultConfig(), Batch: 64}
	run, err1 := estimate(&o, true)
	step, err2 := estimate(&o, false)
	_, params, err3 := layers.Describe(o.Model)
	if err1 != nil || err2 != nil || err3 != nil || run-step < int64(4*params)+cifarBytes {
		t.Errorf("bench's estimate %.2f GB, a run's %.2f GB: want the run's less the state's copy and CIFAR-10 (%v %v %v)", float64(step)/1e9, float64(run)/1e9, err1, err2, err3)
	}
}
