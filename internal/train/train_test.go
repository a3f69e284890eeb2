package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/safetensors"
	"github.com/vgg16/vgg16/internal/tensor"
)

// synthetic makes n 32x32 images of 4 classes that a small network can
// tell apart: each class brightens one colour channel (or all three), with
// noise and a random bright square.
func synthetic(n int, seed uint64) *cifar.Dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	ds := &cifar.Dataset{Images: make([]byte, n*3072), Labels: make([]uint8, n), Classes: []string{"red", "green", "blue", "white"}}
	for i := 0; i < n; i++ {
		c := i % 4
		ds.Labels[i] = uint8(c)
		img := ds.Images[i*3072 : (i+1)*3072]
		sx, sy := rng.IntN(24), rng.IntN(24)
		for ch := 0; ch < 3; ch++ {
			for p := 0; p < 1024; p++ {
				v := 60 + rng.IntN(60)
				if ch == c || c == 3 {
					v += 70
				}
				if x, y := p%32, p/32; x >= sx && x < sx+8 && y >= sy && y < sy+8 {
					v += 40
				}
				img[ch*1024+p] = byte(min(v, 255))
			}
		}
	}
	return ds
}

func smallOptions() Options {
	cfg, _ := layers.ParseCfg("8,M,16,M,16,M,16,M,16,M")
	o := CIFARRecipe()
	o.Model = layers.Config{Arch: "test", Cfg: cfg, BatchNorm: true, ImageSize: 32, Hidden: 64, Classes: 4, Dropout: 0.5}
	o.Epochs, o.Batch, o.LR, o.Warmup, o.Workers = 3, 16, 0.1, 0.5, 2
	return o
}

type quiet struct {
	step       func(StepStats)
	note       func(string)
	validating func(done, total int)
}

func (q *quiet) EpochStart(epoch, epochs, batches int) {}
func (q *quiet) Step(s StepStats) {
	if q.step != nil {
		q.step(s)
	}
}
func (q *quiet) EpochEnd(m EpochMetrics) {}
func (q *quiet) Validating(done, total int) {
	if q.validating != nil {
		q.validating(done, total)
	}
}
func (q *quiet) Note(s string) {
	if q.note != nil {
		q.note(s)
	}
}

func newRun(t *testing.T, dir string, o Options, rep Reporter) *Run {
	t.Helper()
	return &Run{Dir: dir, Opt: o, Classes: []string{"red", "green", "blue", "white"}, Train: synthetic(256, 1), Val: synthetic(64, 2), Backend: cpu.New(), Report: rep}
}

func TestLearningRate(t *testing.T) {
	o := SeedRecipe()
	for _, c := range []struct {
		step int
		want float64
	}{{0, 1e-3}, {10*100 - 1, 1e-3}, {10 * 100, 1e-4}, {25 * 100, 1e-5}} {
		if got := o.LearningRate(c.step, 100); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("StepLR at step %d: %g, want %g", c.step, got, c.want)
		}
	}
	o = CIFARRecipe() // 30 epochs, 2 of warm-up, peak 0.05
	if got := o.LearningRate(0, 100); math.Abs(got-0.05/200) > 1e-12 {
		t.Errorf("first warm-up step: %g", got)
	}
	if got := o.LearningRate(199, 100); math.Abs(got-0.05) > 1e-12 {
		t.Errorf("end of warm-up: %g", got)
	}
	if got := o.LearningRate(1600, 100); math.Abs(got-0.025) > 1e-12 {
		t.Errorf("half-way through the decay: %g, want 0.025", got)
	}
	// A quarter of the way (epoch 9: 7 of the 28 after warm-up) tells a
	// straight fall from a cosine, which agree half-way: 0.05·(1 − 1/4);
	// and the end is 0.
	if got := o.LearningRate(900, 100); math.Abs(got-0.0375) > 1e-12 {
		t.Errorf("onecycle a quarter through the decay: %g, want 0.0375", got)
	}
	if got := o.LearningRate(3000, 100); got != 0 {
		t.Errorf("onecycle at the end: %g, want 0", got)
	}
	// A warm-up that ends inside a step (0.2 epochs of 3 batches, or 2.5 of
	// 7) rises to the peak, never past it.
	for _, c := range []struct {
		warmup   float64
		perEpoch int
	}{{0.2, 3}, {2.5, 7}, {0.5, 781}} {
		w := o
		w.Warmup = c.warmup
		for step := range 3 * c.perEpoch {
			if got := w.LearningRate(step, c.perEpoch); got > w.LR {
				t.Fatalf("warm-up %g of %d batches: step %d at %g, past the peak %g", c.warmup, c.perEpoch, step, got, w.LR)
			}
		}
	}
	o.Schedule = "cosine"
	if got := o.LearningRate(1600, 100); math.Abs(got-0.025) > 1e-12 {
		t.Errorf("cosine half-way: %g, want 0.025", got)
	}
	// 0.05·(1 + cos(π/4))/2 = 0.025·(1 + √2/2) a quarter of the way.
	if got, want := o.LearningRate(900, 100), 0.025*(1+math.Sqrt2/2); math.Abs(got-want) > 1e-12 {
		t.Errorf("cosine a quarter through the decay: %g, want %g", got, want)
	}
	if got := o.LearningRate(3000, 100); math.Abs(got) > 1e-18 {
		t.Errorf("cosine at the end: %g, want 0", got)
	}
}

func TestTrainLearnsAndSaves(t *testing.T) {
	dir := t.TempDir()
	o := smallOptions()
	o.Epochs, o.Model.Dropout = 10, 0
	r := newRun(t, dir, o, &quiet{})
	hist, err := r.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 10 {
		t.Fatalf("%d epochs of metrics", len(hist))
	}
	last := hist[len(hist)-1]
	if last.ValAcc < 0.8 || last.TrainLoss >= hist[0].TrainLoss {
		t.Errorf("did not learn: %+v", hist)
	}
	for _, f := range []string{BestFile, LastFile, MetricsFile, PlotFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	got, err := ReadMetrics(filepath.Join(dir, MetricsFile))
	if err != nil || len(got) != 10 || got[9].ValAcc != last.ValAcc {
		t.Errorf("metrics.jsonl: %v %+v", err, got)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, BestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Info.Config.Cfg.String() != r.Opt.Model.Cfg.String() || len(ck.Info.Classes) != 4 {
		t.Errorf("best checkpoint info: %+v", ck.Info)
	}
	// The best checkpoint evaluates to the accuracy recorded for it.
	m, _ := layers.New(cpu.New(), ck.Info.Config)
	if err := m.LoadState(ck.State); err != nil {
		t.Fatal(err)
	}
	ev, err := Evaluate(m, r.Val, EvalTransformFor("cifar", 32), 16, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Acc != ck.Info.ValAcc || ev.Images != 64 {
		t.Errorf("best checkpoint evaluates to %g on %d images, recorded %g", ev.Acc, ev.Images, ck.Info.ValAcc)
	}
	if _, err := PrepareDir(dir, false); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("an existing run directory was accepted: %v", err)
	}

	// A crash while saving the first epoch leaves best without last: resume
	// says so; and a resume clears what interrupted atomic writes left.
	crashed := t.TempDir()
	data, err := os.ReadFile(filepath.Join(dir, BestFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crashed, BestFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PrepareDir(crashed, true); err == nil || !strings.Contains(err.Error(), "stopped while saving its first epoch") {
		t.Errorf("resuming a run without %s: %v", LastFile, err)
	}
	// A checkpoint given as the run: not "has no last.safetensors".
	if _, err := PrepareDir(filepath.Join(crashed, BestFile), true); err == nil || !strings.Contains(err.Error(), "a file, not a directory: --resume takes the run's directory") {
		t.Errorf("resuming a file: %v", err)
	}
	tmp := filepath.Join(dir, "."+LastFile+".tmp123")
	if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	claim, err := PrepareDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("resume left %s: %v", tmp, err)
	}
	// While a run trains, a second resume of it is refused, and removes
	// none of the files that the first is writing.
	if err := os.WriteFile(tmp, []byte("being written"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := PrepareDir(dir, true); !errors.Is(err, ErrDirInUse) || !strings.Contains(err.Error(), dir) {
		t.Errorf("a second resume of a run in use: %v, want ErrDirInUse naming %s", err, dir)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("a refused resume removed %s: %v", tmp, err)
	}
	claim.Release()
	claim, err = PrepareDir(dir, true)
	if err != nil {
		t.Fatalf("resume after the first let go: %v", err)
	}
	claim.Release()
	if _, err := os.Stat(dir); err != nil { // not made by the claim: kept, empty or not
		t.Errorf("releasing a resumed run's directory: %v", err)
	}
}

// TestCheckWritable: a run directory that takes no files is refused before
// any training, naming it, for a new run and a resumed one.
func TestCheckWritable(t *testing.T) {
	if err := checkWritable(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// A directory that cannot be made is named as the run's.
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(file, "sub")
	if _, err := PrepareDir(d, false); err == nil || !strings.HasPrefix(err.Error(), "run directory "+d+": ") {
		t.Errorf("PrepareDir under a file: %v", err)
	}
	if _, err := NewDir(d); err == nil || !strings.HasPrefix(err.Error(), "run directory "+d+": ") {
		t.Errorf("NewDir under a file: %v", err)
	}
	if runtime.GOOS == "linux" { // not even root creates files there
		if err := checkWritable("/proc/self"); err == nil || !strings.Contains(err.Error(), "run directory /proc/self cannot take") {
			t.Errorf("/proc/self: %v", err)
		}
	}
	if os.Geteuid() == 0 || runtime.GOOS == "windows" {
		t.Skip("a read-only directory is writable by root (and has no mode bits on Windows)")
	}
	dir, run := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(run, LastFile), []byte("a run"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, run} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(d, 0o755)
	}
	if _, err := PrepareDir(dir, false); err == nil || !strings.Contains(err.Error(), "run directory "+dir+" cannot take the run's files") {
		t.Errorf("a new run in a read-only directory: %v", err)
	}
	if _, err := PrepareDir(run, true); err == nil || !strings.Contains(err.Error(), "run directory "+run+" cannot take the run's files") {
		t.Errorf("resuming a run in a read-only directory: %v", err)
	}
}

// TestLockDir: a directory is one process's at a time, a new run's too, and
// free again once released; nothing of the lock stays behind, and a new
// run's directory that stayed empty goes with its claim.
func TestLockDir(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" && runtime.GOOS != "windows" {
		t.Skipf("no directory locks on %s", runtime.GOOS)
	}
	dir := filepath.Join(t.TempDir(), "run")
	claim, err := PrepareDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if claim.Note != "" {
		t.Errorf("not locked: %s", claim.Note)
	}
	if _, err := LockDir(dir); !errors.Is(err, ErrDirInUse) {
		t.Errorf("a second lock of a new run: %v, want ErrDirInUse", err)
	}
	if _, err := PrepareDir(dir, false); !errors.Is(err, ErrDirInUse) {
		t.Errorf("a second new run in the same directory: %v, want ErrDirInUse", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("a refused second run removed the first's directory: %v", err)
	}
	claim.Release()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the directory a new run made and left empty is still there: %v", err)
	}

	// A directory that was there before the run is kept, and holds nothing
	// of the lock once released.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if claim, err = PrepareDir(dir, false); err != nil {
		t.Fatal(err)
	}
	claim.Release()
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("the lock left %v in %s (%v)", entries, dir, err)
	}
	claim, err = LockDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	claim.Release()
	if _, err := LockDir(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("locking a directory that is not there: %v", err)
	}

	// NewDir's directory goes with its claim where nothing was written.
	claim, err = NewDir(filepath.Join(dir, "named"))
	if err != nil {
		t.Fatal(err)
	}
	claim.Release()
	if _, err := os.Stat(claim.Dir); !os.IsNotExist(err) {
		t.Errorf("NewDir's empty directory is still there: %v", err)
	}
}

// TestResumeReproduces interrupts a run in the middle of its second epoch,
// resumes it, and expects the same weights and validation losses as an
// uninterrupted run.
func TestResumeReproduces(t *testing.T) {
	t.Run("loader", func(t *testing.T) { testResume(t, func() tensor.Backend { return cpu.New() }) })
	t.Run("device-batches", func(t *testing.T) { testResume(t, newImagesCPU) })
}

func testResume(t *testing.T, backend func() tensor.Backend) {
	o := smallOptions()
	newRun := func(t *testing.T, dir string, o Options, rep Reporter) *Run {
		r := newRun(t, dir, o, rep)
		r.Backend = backend()
		return r
	}
	full := newRun(t, t.TempDir(), o, &quiet{})
	want, err := full.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// Interrupted in epoch 2 after 3 of its 16 batches, or while validating
	// epoch 2 (the epoch's training is saved whole; resuming validates it).
	// And mid-epoch from a checkpoint of an earlier version, whose tally has
	// no time and learning rate.
	for _, c := range []struct {
		name         string
		duringVal    bool
		batch        int
		said, resume string
		oldTally     bool
	}{
		{"mid-epoch", false, 3, "interrupted in epoch 2 after 3 of its 16 batches", "resuming %s in epoch 2 after 3 of its 16 batches", false},
		{"validating", true, 16, "interrupted after training epoch 2, before its validation", "resuming %s after training epoch 2, before its validation", false},
		{"mid-epoch-old-tally", false, 3, "interrupted in epoch 2 after 3 of its 16 batches", "resuming %s in epoch 2 after 3 of its 16 batches", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			testResumeAt(t, newRun, o, want, full.Dir, c.duringVal, c.batch, c.said, c.resume, c.oldTally)
		})
	}
}

func testResumeAt(t *testing.T, newRun func(*testing.T, string, Options, Reporter) *Run, o Options, want []EpochMetrics, fullDir string, duringVal bool, batch int, said, resumeNote string, oldTally bool) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	epoch := 0
	var notes []string
	rep := &quiet{step: func(s StepStats) {
		if s.Batch == 1 {
			epoch++
		}
		if !duringVal && epoch == 2 && s.Batch == 3 {
			cancel()
		}
	}, validating: func(done, total int) {
		if duringVal && epoch == 2 {
			cancel()
		}
	}, note: func(s string) { notes = append(notes, s) }}
	_, err := newRun(t, dir, o, rep).Execute(ctx)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run returned %v", err)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, LastFile))
	if err != nil || ck.Info.Epoch != 1 || ck.Info.Batch != batch {
		t.Fatalf("interruption checkpoint: %v %+v, want epoch 1 batch %d", err, ck.Info, batch)
	}
	if len(notes) == 0 || !strings.HasPrefix(notes[len(notes)-1], said) {
		t.Errorf("interruption said %q, want %q…", notes, said)
	}
	if oldTally {
		paths, _ := filepath.Glob(filepath.Join(dir, optimPrefix+"*.safetensors"))
		if len(paths) != 1 {
			t.Fatalf("optimizer files %v", paths)
		}
		f, err := safetensors.Read(paths[0])
		if err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(f.Metadata[keyTally])
		f.Metadata[keyTally] = strings.Join(fields[:3], " ")
		if err := safetensors.Write(paths[0], f); err != nil {
			t.Fatal(err)
		}
	}
	notes = nil
	resumed := newRun(t, dir, o, &quiet{note: func(s string) { notes = append(notes, s) }})
	resumed.Resume = true
	got, err := resumed.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(resumeNote, dir); !slices.ContainsFunc(notes, func(s string) bool { return strings.HasPrefix(s, want) }) {
		t.Errorf("resuming said %q, want %q…", notes, want)
	}
	if len(got) != 3 {
		t.Fatalf("resumed history has %d epochs", len(got))
	}
	for i := range want {
		// The interrupted epoch's time and rate count the run before the
		// interruption too (after a whole epoch's training, nothing else).
		if !(got[i].Seconds > 0) || !(got[i].ImagesPerSec > 0) || math.IsInf(got[i].ImagesPerSec, 0) {
			t.Errorf("epoch %d: resumed %g s, %g img/s", i+1, got[i].Seconds, got[i].ImagesPerSec)
		}
		if got[i].LR != want[i].LR {
			t.Errorf("epoch %d: resumed lr %v, uninterrupted %v", i+1, got[i].LR, want[i].LR)
		}
		if got[i].ValLoss != want[i].ValLoss || got[i].ValAcc != want[i].ValAcc {
			t.Errorf("epoch %d: resumed val loss %v acc %v, uninterrupted %v %v", i+1, got[i].ValLoss, got[i].ValAcc, want[i].ValLoss, want[i].ValAcc)
		}
		// The interrupted epoch's training metrics count its batches from
		// before the interruption too.
		if math.Abs(got[i].TrainLoss-want[i].TrainLoss) > 1e-9 || got[i].TrainAcc != want[i].TrainAcc {
			t.Errorf("epoch %d: resumed train loss %v acc %v, uninterrupted %v %v", i+1, got[i].TrainLoss, got[i].TrainAcc, want[i].TrainLoss, want[i].TrainAcc)
		}
	}
	a, _ := checkpoint.Load(filepath.Join(dir, LastFile))
	b, _ := checkpoint.Load(filepath.Join(fullDir, LastFile))
	for name, tb := range b.State.Floats {
		ta := a.State.Floats[name]
		for i := range tb.Data {
			if ta.Data[i] != tb.Data[i] {
				t.Fatalf("%s[%d]: resumed %g, uninterrupted %g", name, i, ta.Data[i], tb.Data[i])
			}
		}
	}
	// The batch norms' counts too: each the steps of the whole run.
	if len(b.State.Counts) == 0 || !maps.Equal(a.State.Counts, b.State.Counts) {
		t.Errorf("num_batches_tracked: resumed %v, uninterrupted %v", a.State.Counts, b.State.Counts)
	}
}

// epochEnds is quiet with a hook at the end of each epoch, after its
// checkpoints are written.
type epochEnds struct {
	quiet
	end func(EpochMetrics)
}

func (e *epochEnds) EpochEnd(m EpochMetrics) { e.end(m) }

// TestInterruptBetweenEpochs: a signal while an epoch's checkpoints are
// written stops the run before the next epoch's first batch without
// writing last.safetensors and its momentum again (as long again for
// `docker stop` to wait, at 224x224), and the run resumes from them.
func TestInterruptBetweenEpochs(t *testing.T) {
	o := smallOptions()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var saved os.FileInfo
	var notes []string
	rep := &epochEnds{quiet: quiet{note: func(s string) { notes = append(notes, s) }}, end: func(m EpochMetrics) {
		if m.Epoch == 1 {
			saved, _ = os.Stat(filepath.Join(dir, LastFile))
			cancel()
		}
	}}
	_, err := newRun(t, dir, o, rep).Execute(ctx)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run returned %v", err)
	}
	now, err := os.Stat(filepath.Join(dir, LastFile))
	if err != nil || saved == nil || !os.SameFile(saved, now) {
		t.Errorf("%s was written again at the interruption (%v)", LastFile, err)
	}
	if want := "interrupted in epoch 2 after 0 of its 16 batches: saved " + filepath.Join(dir, LastFile); len(notes) == 0 || !strings.HasPrefix(notes[len(notes)-1], want) {
		t.Errorf("interruption said %q, want %q…", notes, want)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, LastFile))
	if err != nil || ck.Info.Epoch != 1 || ck.Info.Batch != 0 {
		t.Fatalf("checkpoint: %v %+v, want epoch 1 batch 0", err, ck.Info)
	}
	resumed := newRun(t, dir, o, &quiet{})
	resumed.Resume = true
	if got, err := resumed.Execute(context.Background()); err != nil || len(got) != o.Epochs {
		t.Fatalf("resumed: %d epochs, %v", len(got), err)
	}
}

// TestResumeWithoutMomentum: a run whose optimizer file is lost resumes,
// says so, keeps its place in the schedule, and starts the momentum again
// as torch's SGD does without state: with momentum 0, where the momentum
// plays no part, it is the uninterrupted run to the bit; with momentum, it
// differs from it.
func TestResumeWithoutMomentum(t *testing.T) {
	for _, momentum := range []float64{0, 0.9} {
		o := smallOptions()
		o.Epochs, o.Momentum, o.Nesterov, o.Model.Dropout = 2, momentum, false, 0
		copyDir, fullDir := t.TempDir(), t.TempDir()
		epoch := 0
		full := newRun(t, fullDir, o, &quiet{step: func(s StepStats) {
			if s.Batch == 1 {
				epoch++
			}
			if epoch == 2 && s.Batch == 1 { // the first epoch's checkpoint, without its optimizer file
				for _, name := range []string{LastFile, BestFile, MetricsFile} {
					b, err := os.ReadFile(filepath.Join(fullDir, name))
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(copyDir, name), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}})
		want, err := full.Execute(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var notes []string
		resumed := newRun(t, copyDir, o, &quiet{note: func(s string) { notes = append(notes, s) }})
		resumed.Resume = true
		got, err := resumed.Execute(context.Background())
		if err != nil {
			t.Fatalf("momentum %g: resuming without the optimizer file: %v", momentum, err)
		}
		if !slices.ContainsFunc(notes, func(s string) bool {
			return strings.Contains(s, "is missing: the run goes on with the momentum started again")
		}) {
			t.Errorf("momentum %g: resuming without the optimizer file said %q", momentum, notes)
		}
		if len(got) != 2 || got[1].LR != want[1].LR {
			t.Fatalf("momentum %g: resumed history %+v, uninterrupted %+v", momentum, got, want)
		}
		a, _ := checkpoint.Load(filepath.Join(copyDir, LastFile))
		b, _ := checkpoint.Load(filepath.Join(full.Dir, LastFile))
		same := true
		for name, tb := range b.State.Floats {
			same = same && slices.Equal(a.State.Floats[name].Data, tb.Data)
		}
		if momentum == 0 && (!same || got[1].ValLoss != want[1].ValLoss) {
			t.Errorf("momentum 0: resumed without the optimizer file, the run differs from the uninterrupted one (val loss %v, %v)", got[1].ValLoss, want[1].ValLoss)
		}
		if momentum != 0 && same {
			t.Errorf("momentum %g: resumed with the momentum started again, yet the weights are the uninterrupted run's", momentum)
		}
	}
}

// TestResumeMetricsNotes: a run resumed in its first epoch, which has no
// metrics.jsonl yet, says nothing of it; one whose file was cut short
// says so, keeps what it read, and reports the checkpoint's best.
func TestResumeMetricsNotes(t *testing.T) {
	o := smallOptions()
	o.Epochs = 2
	resume := func(dir string, o Options) (notes []string, r *Run) {
		t.Helper()
		r = newRun(t, dir, o, &quiet{note: func(s string) { notes = append(notes, s) }})
		r.Resume = true
		if _, err := r.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		return notes, r
	}
	mentions := func(notes []string) bool {
		return slices.ContainsFunc(notes, func(s string) bool { return strings.Contains(s, MetricsFile) })
	}

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	first := newRun(t, dir, o, &quiet{step: func(s StepStats) {
		if s.Batch == 3 {
			cancel()
		}
	}})
	if _, err := first.Execute(ctx); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run returned %v", err)
	}
	if notes, _ := resume(dir, o); mentions(notes) {
		t.Errorf("resumed in its first epoch, the run said %q", notes)
	}

	path := filepath.Join(dir, MetricsFile)
	if err := os.WriteFile(path, []byte(`{"epoch":1,"lr":0.0`), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Epochs = 3
	notes, r := resume(dir, o)
	if !slices.ContainsFunc(notes, func(s string) bool {
		return strings.HasPrefix(s, "the run has done 2 epochs and "+path+" has 0 readable lines (then ")
	}) {
		t.Errorf("resumed with a damaged %s, the run said %q", MetricsFile, notes)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, BestFile))
	if err != nil || r.Best() != ck.Info.BestAcc || !(r.Best() > 0) {
		t.Errorf("Best() %v, best checkpoint's %v (%v)", r.Best(), ck.Info.BestAcc, err)
	}
	if hist, err := ReadMetrics(path); err != nil || len(hist) != 1 || hist[0].Epoch != 3 {
		t.Errorf("%s after the resumed epoch: %+v %v", MetricsFile, hist, err)
	}
}

// TestNaNStopsAndKeepsBest poisons the weights in the second epoch: the
// run must stop with a clear error and leave epoch 1's best checkpoint.
func TestNaNStopsAndKeepsBest(t *testing.T) {
	dir := t.TempDir()
	var r *Run
	epoch := 0
	r = newRun(t, dir, smallOptions(), &quiet{step: func(s StepStats) {
		if s.Batch == 1 {
			epoch++
		}
		if epoch == 2 && s.Batch == 2 {
			r.Backend.Fill(r.Model().Weights(), float32(math.NaN()))
		}
	}})
	_, err := r.Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "loss is NaN") || !strings.Contains(err.Error(), "epoch 2") {
		t.Fatalf("want a NaN error in epoch 2, got %v", err)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, BestFile))
	if err != nil || ck.Info.Epoch != 1 {
		t.Fatalf("best checkpoint after the NaN: %v %+v", err, ck)
	}
	for name, v := range ck.State.Floats {
		for _, x := range v.Data {
			if math.IsNaN(float64(x)) {
				t.Fatalf("best checkpoint holds NaN in %s", name)
			}
		}
	}
}

// TestFailedSaveLeavesNoOrphan: where the weights cannot be written after
// their optimizer state was (a full disk; here a directory in the way), the
// run fails naming the file, and leaves no optimizer state that belongs to
// no checkpoint.
func TestFailedSaveLeavesNoOrphan(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, LastFile, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := smallOptions()
	o.Epochs = 1
	_, err := newRun(t, dir, o, &quiet{}).Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "saving "+filepath.Join(dir, LastFile)) {
		t.Fatalf("want an error saving %s, got %v", LastFile, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, optimPrefix+"*")); len(left) > 0 {
		t.Errorf("left %v", left)
	}
}

// TestCrashDuringCheckpoint kills a training process (SIGKILL) at random
// moments, mostly while it writes checkpoints, and checks that the run
// directory always holds a loadable, resumable checkpoint.
func TestCrashDuringCheckpoint(t *testing.T) {
	if os.Getenv("VGG16_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	if testing.Short() {
		t.Skip("short mode")
	}
	dir := t.TempDir()
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDuringCheckpoint$")
		cmd.Env = append(os.Environ(), "VGG16_CRASH_CHILD="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until a first checkpoint exists, then a little more.
		deadline := time.Now().Add(60 * time.Second)
		for !checkpoint.Exists(filepath.Join(dir, LastFile)) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Duration(50+round*137) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()

		ck, err := checkpoint.Load(filepath.Join(dir, LastFile))
		if err != nil {
			t.Fatalf("round %d: last checkpoint unreadable after a kill: %v", round, err)
		}
		of, err := safetensors.Read(OptimPath(dir, ck.Info.ID))
		if err != nil {
			t.Fatalf("round %d: no optimizer state for checkpoint %s: %v", round, ck.Info.ID, err)
		}
		if of.Metadata["vgg16.id"] != ck.Info.ID {
			t.Fatalf("round %d: optimizer state of %s holds id %s", round, ck.Info.ID, of.Metadata["vgg16.id"])
		}
	}
}

// crashChild trains forever, resuming when the directory has a run.
func crashChild() {
	dir := os.Getenv("VGG16_CRASH_CHILD")
	o := smallOptions()
	o.Epochs = 1000
	o.Batch = 64
	r := &Run{Dir: dir, Opt: o, Train: synthetic(128, 1), Val: synthetic(32, 2), Backend: cpu.New(), Report: &quiet{},
		Resume: checkpoint.Exists(filepath.Join(dir, LastFile))}
	r.Execute(context.Background())
}

// recordingCPU is the CPU backend posing as one that records steps (and so
// may run ahead of the host), as the GPU does: the loop then reads its
// metrics every tallyEvery steps instead of after each.
type recordingCPU struct{ *cpu.Backend }

func (recordingCPU) Step(_ string, f func()) { f() }

// failedCaptureCPU is the CPU backend posing as a GPU whose capture of a
// step fails once it has run the step's Go code (gpu.Backend.Step: the
// graph does not instantiate), and which then runs the step again op by op.
type failedCaptureCPU struct {
	*cpu.Backend
	failed *bool
}

func (b failedCaptureCPU) Step(_ string, f func()) {
	if !*b.failed {
		*b.failed = true
		f() // (a real capture records the ops without running them)
	}
	f()
}

// TestNumBatchesTrackedAfterFailedCapture: a step run again after a failed
// capture is one batch in num_batches_tracked, which counts the training
// batches as PyTorch's BatchNorm2d does.
func TestNumBatchesTrackedAfterFailedCapture(t *testing.T) {
	o := smallOptions()
	o.Epochs = 2
	r := newRun(t, t.TempDir(), o, &quiet{})
	failed := false
	r.Backend = failedCaptureCPU{cpu.New(), &failed}
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !failed {
		t.Fatal("no step was recorded")
	}
	ck, err := checkpoint.Load(filepath.Join(r.Dir, LastFile))
	if err != nil {
		t.Fatal(err)
	}
	want := int64(2 * 256 / 16) // two epochs of 256 images in batches of 16
	if len(ck.State.Counts) != 5 {
		t.Fatalf("%d num_batches_tracked in the checkpoint, want 5", len(ck.State.Counts))
	}
	for k, v := range ck.State.Counts {
		if v != want {
			t.Errorf("%s = %d after %d training batches", k, v, want)
		}
	}
}

// On a backend that runs ahead, the metrics reach the host every
// tallyEvery steps and at the epoch's end, and are those of the plain
// run; a NaN loss still stops the run, naming the batches it came from.
func TestTallyCadence(t *testing.T) {
	o := smallOptions()
	o.Epochs = 2
	plain, err := newRun(t, t.TempDir(), o, &quiet{}).Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var batches []int
	r := newRun(t, t.TempDir(), o, &quiet{step: func(s StepStats) { batches = append(batches, s.Batch) }})
	r.Backend = recordingCPU{cpu.New()}
	got, err := r.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{8, 16, 8, 16}; !slices.Equal(batches, want) {
		t.Errorf("progress reported after batches %v, want %v", batches, want)
	}
	for i := range plain {
		g, p := got[i], plain[i]
		if g.TrainAcc != p.TrainAcc || g.ValLoss != p.ValLoss || math.Abs(g.TrainLoss-p.TrainLoss) > 1e-6*p.TrainLoss {
			t.Errorf("epoch %d: tallied every %d steps %+v, every step %+v", i+1, tallyEvery, g, p)
		}
	}

	epoch := 0
	r = newRun(t, t.TempDir(), o, &quiet{step: func(s StepStats) {
		if s.Batch == 8 {
			epoch++
		}
		if epoch == 2 && s.Batch == 8 {
			r.Backend.Fill(r.Model().Weights(), float32(math.NaN()))
		}
	}})
	r.Backend = recordingCPU{cpu.New()}
	if _, err := r.Execute(context.Background()); err == nil || !strings.Contains(err.Error(), "epoch 2, batches 9-16: the loss is NaN") {
		t.Fatalf("want a NaN error naming epoch 2, batches 9-16; got %v", err)
	}
}

// imagesCPU is the CPU backend holding the image set itself
// (tensor.Images), so that runs take the device's batch path — a
// cifar.Plan and CropResize — on the CPU, where cifar.ApplyCrop does the
// pixel work.
type imagesCPU struct{ *cpu.Backend }

func newImagesCPU() tensor.Backend { return imagesCPU{cpu.New()} }

type hostSet struct{ pix []byte }

func (s *hostSet) Len() int { return len(s.pix) / cifar.ImageBytes }
func (s *hostSet) Free()    {}

func (imagesCPU) UploadImages(pix []byte, side int) tensor.ImageSet {
	return &hostSet{pix: append([]byte(nil), pix...)}
}

func (imagesCPU) CropResize(dst *tensor.Tensor, set tensor.ImageSet, crops []tensor.Crop, table *[3][256]float32) {
	pix, s := set.(*hostSet).pix, dst.Shape[2]
	d := cpu.Data(dst)
	for k, c := range crops {
		img := pix[c.Image*cifar.ImageBytes : (c.Image+1)*cifar.ImageBytes]
		cifar.ApplyCrop(d[k*3*s*s:(k+1)*3*s*s], img, cifar.Crop{Top: c.Top, Left: c.Left, H: c.H, W: c.W, Flip: c.Flip}, s, (*cifar.Table)(table))
	}
}

// A run whose batches come from the epoch's plan gives the loader's run
// bit for bit: the same metrics and the same weights.
func TestDeviceBatchesAreTheLoaders(t *testing.T) {
	o := smallOptions()
	o.Epochs = 2
	var notes []string
	runs := make([]*Run, 2)
	hist := make([][]EpochMetrics, 2)
	for i, be := range []tensor.Backend{cpu.New(), newImagesCPU()} {
		runs[i] = newRun(t, t.TempDir(), o, &quiet{note: func(s string) { notes = append(notes, s) }})
		runs[i].Backend = be
		h, err := runs[i].Execute(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		hist[i] = h
	}
	if !slices.ContainsFunc(notes, func(s string) bool { return strings.HasPrefix(s, "augmenting on the device: 256 training images") }) {
		t.Errorf("the run with an image-holding backend did not take the device path; notes %q", notes)
	}
	for e := range hist[0] {
		a, b := hist[0][e], hist[1][e]
		if a.TrainLoss != b.TrainLoss || a.TrainAcc != b.TrainAcc || a.ValLoss != b.ValLoss || a.ValAcc != b.ValAcc {
			t.Errorf("epoch %d: loader %+v, device batches %+v", e+1, a, b)
		}
	}
	x, _ := checkpoint.Load(filepath.Join(runs[0].Dir, LastFile))
	y, _ := checkpoint.Load(filepath.Join(runs[1].Dir, LastFile))
	for name, tx := range x.State.Floats {
		if !slices.Equal(tx.Data, y.State.Floats[name].Data) {
			t.Fatalf("%s differs between the two runs", name)
		}
	}
}

// TestSGDInBackward checks that updating each layer in the backward
// (Options.SGDInBackward: gradients in one layer's buffer) trains exactly
// as the step after the backward: the same metrics every epoch and the
// same weights, statistics and momentum at the end, bit for bit, with the
// features trained and frozen.
func TestSGDInBackward(t *testing.T) {
	for _, freeze := range []bool{false, true} {
		o := smallOptions()
		o.Epochs, o.FreezeFeatures = 2, freeze
		var runs [2]*Run
		var hist [2][]EpochMetrics
		for i, in := range []bool{false, true} {
			o.SGDInBackward = in
			runs[i] = newRun(t, t.TempDir(), o, &quiet{})
			h, err := runs[i].Execute(context.Background())
			if err != nil {
				t.Fatalf("freeze %v, sgd in backward %v: %v", freeze, in, err)
			}
			hist[i] = h
		}
		for e := range hist[0] {
			a, b := hist[0][e], hist[1][e]
			if a.TrainLoss != b.TrainLoss || a.ValLoss != b.ValLoss || a.ValAcc != b.ValAcc {
				t.Errorf("freeze %v, epoch %d: train loss %v, val %v %v with SGD in the backward; %v, %v %v after it", freeze, e+1, b.TrainLoss, b.ValLoss, b.ValAcc, a.TrainLoss, a.ValLoss, a.ValAcc)
			}
		}
		want, err := checkpoint.Load(filepath.Join(runs[0].Dir, LastFile))
		if err != nil {
			t.Fatal(err)
		}
		got, err := checkpoint.Load(filepath.Join(runs[1].Dir, LastFile))
		if err != nil {
			t.Fatal(err)
		}
		for name, tw := range want.State.Floats {
			tg := got.State.Floats[name]
			for i := range tw.Data {
				if math.Float32bits(tg.Data[i]) != math.Float32bits(tw.Data[i]) {
					t.Fatalf("freeze %v: %s[%d] = %g with SGD in the backward, %g after it", freeze, name, i, tg.Data[i], tw.Data[i])
				}
			}
		}
		moms := [2][]float32{}
		for i, ck := range []*checkpoint.Checkpoint{want, got} {
			f, err := safetensors.Read(OptimPath(runs[i].Dir, ck.Info.ID))
			if err != nil {
				t.Fatal(err)
			}
			if moms[i], _, err = f.Float32("momentum"); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(moms[0], moms[1]) || len(moms[0]) == 0 {
			t.Errorf("freeze %v: momentum differs (%d and %d elements)", freeze, len(moms[0]), len(moms[1]))
		}
	}
}

// TestNewDirNeverShares starts runs named in the same second: each gets a
// directory of its own (the name, then the name with -2, -3, …), and a
// name that is a file is passed over too.
func TestNewDirNeverShares(t *testing.T) {
	base := filepath.Join(t.TempDir(), "runs", "20261207-012552-vgg16-32")
	const runs = 8
	dirs := make(chan string, runs)
	errs := make(chan error, runs)
	for range runs {
		go func() {
			var d string
			c, err := NewDir(base)
			if err == nil {
				d = c.Dir
				os.WriteFile(filepath.Join(d, MetricsFile), nil, 0o644) // not empty: kept on release
				defer c.Release()
			}
			dirs <- d
			errs <- err
		}()
	}
	seen := map[string]bool{}
	for range runs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		d := <-dirs
		if seen[d] {
			t.Errorf("two runs got %s", d)
		}
		seen[d] = true
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	for i := 2; i <= runs; i++ {
		if !seen[fmt.Sprintf("%s-%d", base, i)] {
			t.Errorf("no run got %s-%d: %v", base, i, seen)
		}
	}
	if err := os.WriteFile(base+"-9", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := NewDir(base); err != nil || c.Dir != base+"-10" {
		t.Errorf("NewDir with -9 a file: %+v %v, want %s-10", c, err, base)
	}
}

// TestParseTally reads what String writes, and the three fields that
// checkpoints of earlier versions hold.
func TestParseTally(t *testing.T) {
	in := epochTally{loss: 12.5, correct: 7, seen: 32, seconds: 1.25, lr: 0.003, timed: true}
	if got := parseTally(in.String()); got != in {
		t.Errorf("round trip: %+v, want %+v", got, in)
	}
	if got, want := parseTally("12.5 7 32"), (epochTally{loss: 12.5, correct: 7, seen: 32}); got != want {
		t.Errorf("three fields: %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "1 2", "x 1 2", "1 9 2", "1 2 3 4", "1 2 3 -1 0.1", "1 2 3 +Inf 0.1", "1 2 3 1 NaN", "1 2 3 1 -0.1"} {
		if got := parseTally(bad); got.timed || got.seen < got.correct {
			t.Errorf("%q: %+v", bad, got)
		}
	}
}

// TestOptionsThatCannotBeRecorded: an option JSON cannot hold (a NaN
// --gamma, which a constant schedule never reads) fails the run at its
// start, not its resume, where the checkpoint's options would not parse.
func TestOptionsThatCannotBeRecorded(t *testing.T) {
	o := smallOptions()
	o.Schedule, o.Gamma = "constant", math.NaN()
	dir := t.TempDir()
	_, err := newRun(t, dir, o, &quiet{}).Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "recording the training options") {
		t.Fatalf("err = %v, want the options named as unrecordable", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("the refused run wrote %d files into its directory", len(entries))
	}
}

// TestValidationLossNaN: weights that diverge in the last batch of an
// epoch give a finite training loss but a NaN validation loss. The run
// stops there, as for a NaN training loss, and best.safetensors stays the
// earlier epoch's: NaN outputs predict one class for every image, whose
// share of the held-out set would otherwise count as its accuracy.
func TestValidationLossNaN(t *testing.T) {
	o := smallOptions()
	dir, ended := t.TempDir(), 0
	var r *Run
	r = newRun(t, dir, o, &quiet{step: func(s StepStats) {
		if s.Batch == s.Batches {
			if ended++; ended == 2 {
				r.Backend.Fill(r.Model().Weights(), float32(math.NaN()))
			}
		}
	}})
	hist, err := r.Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "epoch 2: the validation loss is NaN; stopping") || !strings.Contains(err.Error(), BestFile+" is untouched") {
		t.Fatalf("want the NaN validation loss of epoch 2 to stop the run; got %v", err)
	}
	if len(hist) != 1 {
		t.Errorf("%d epochs in the history, want 1", len(hist))
	}
	ck, err := checkpoint.Load(filepath.Join(dir, BestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Info.Epoch != 1 {
		t.Errorf("best.safetensors is epoch %d's, want epoch 1's", ck.Info.Epoch)
	}
	// Resumed, it keeps its --lr: the remedy is a new run from its weights.
	r = newRun(t, dir, o, &quiet{step: func(s StepStats) { r.Backend.Fill(r.Model().Weights(), float32(math.NaN())) }})
	r.Resume = true
	_, err = r.Execute(context.Background())
	if want := "a resume keeps the run's: start a new run from its weights with --init " + filepath.Join(dir, LastFile) + " and a lower --lr"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a resumed run's NaN loss: %v, want %q", err, want)
	}
}

// TestResumeOtherBatchCount: a resume whose data makes another number of
// batches an epoch is refused before it trains. Its schedule was computed
// from the run's step against the new count: a cosine run resumed on a
// tenth of its data trained its remaining epochs at a rate of 0.
func TestResumeOtherBatchCount(t *testing.T) {
	o := smallOptions()
	o.Schedule, o.Epochs = "cosine", 3
	dir := t.TempDir()
	o1 := o
	o1.Epochs = 1
	if _, err := newRun(t, dir, o1, &quiet{}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := filepath.Join(dir, LastFile)
	before, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	r := newRun(t, dir, o, &quiet{note: func(s string) { notes = append(notes, s) }})
	r.Resume, r.Train = true, synthetic(64, 1) // 4 batches of 16 an epoch, not 16
	_, err = r.Execute(context.Background())
	if len(notes) > 0 {
		t.Errorf("the refused resume said first: %q", notes)
	}
	if err == nil || !strings.Contains(err.Error(), "the run trained 16 batches an epoch; its data now makes 4 an epoch: resume with the --data, --limit and --val-split it trained with") {
		t.Fatalf("resuming on a quarter of the data: %v", err)
	}
	if after, _ := os.ReadFile(last); !bytes.Equal(before, after) {
		t.Error("the refused resume changed last.safetensors")
	}
	// The same number of batches (other images) is the user's to choose.
	r = newRun(t, dir, o, &quiet{})
	r.Resume, r.Train = true, synthetic(260, 5)
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatalf("resuming on 260 other images, 16 batches an epoch as before: %v", err)
	}
}

// TestInterruptKeepsFiniteCheckpoint: weights that went NaN in an epoch's
// last step are found by its validation, unless an interruption comes
// first, whose save then refuses them: last.safetensors stays the epoch
// before's, which --resume can continue from.
func TestInterruptKeepsFiniteCheckpoint(t *testing.T) {
	o := smallOptions()
	dir, ended := t.TempDir(), 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var r *Run
	r = newRun(t, dir, o, &quiet{
		step: func(s StepStats) {
			if s.Batch == s.Batches {
				if ended++; ended == 2 {
					r.Backend.Fill(r.Model().Weights(), float32(math.NaN()))
				}
			}
		},
		validating: func(done, total int) {
			if ended == 2 {
				cancel()
			}
		},
	})
	_, err := r.Execute(ctx)
	if err == nil || !strings.Contains(err.Error(), "weights that are not numbers (a diverged run's?): ") || !strings.HasSuffix(err.Error(), "; the file is left as it was") {
		t.Fatalf("interrupted with NaN weights: %v", err)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, LastFile))
	if err != nil {
		t.Fatalf("last.safetensors after the refused save: %v", err)
	}
	if ck.Info.Epoch != 1 || ck.Info.Batch != 0 {
		t.Errorf("last.safetensors is at epoch %d batch %d, want the end of epoch 1", ck.Info.Epoch, ck.Info.Batch)
	}
}

// TestResumeDamagedPlace: a last.safetensors whose recorded place was
// damaged (or edited) is refused with its value named, never a panic or a
// message that blames the data.
func TestResumeDamagedPlace(t *testing.T) {
	o := smallOptions()
	o.Epochs = 1
	dir := t.TempDir()
	if _, err := newRun(t, dir, o, &quiet{}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := filepath.Join(dir, LastFile)
	good, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	o.Epochs = 2
	for key, c := range map[string]struct{ value, want string }{
		"vgg16.epoch": {"-1", `metadata vgg16.epoch "-1": want a whole number, 0 or more`},
		"vgg16.batch": {"999999", "records epoch 1, batch 999999 and step 16, which no number of batches an epoch gives"},
		"vgg16.id":    {"x", `metadata vgg16.id "x": want <run id>-<step>`},
		// Fewer steps than epochs: no metrics note first, no blame on the data.
		"vgg16.epoch ": {"1000000", "records epoch 1000000, batch 0 and step 16, which no number of batches an epoch gives"},
	} {
		f, err := safetensors.Read(last)
		if err != nil {
			t.Fatal(err)
		}
		f.Metadata[strings.TrimSpace(key)] = c.value
		if err := safetensors.Write(last, f); err != nil {
			t.Fatal(err)
		}
		var notes []string
		r := newRun(t, dir, o, &quiet{note: func(s string) { notes = append(notes, s) }})
		r.Resume = true
		if _, err := r.Execute(context.Background()); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), last) {
			t.Errorf("%s %q: %v; want %q", key, c.value, err, c.want)
		}
		if len(notes) > 0 {
			t.Errorf("%s %q: said before the refusal: %q", key, c.value, notes)
		}
		if err := os.WriteFile(last, good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A damaged file says what can still be done, which no retry would.
	if err := os.WriteFile(last, good[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRun(t, dir, o, &quiet{})
	r.Resume = true
	if _, err := r.Execute(context.Background()); err == nil || !strings.Contains(err.Error(), "(the run cannot be resumed from it; a new run can start from the run's best weights: --init "+filepath.Join(dir, BestFile)) {
		t.Errorf("a truncated last checkpoint: %v", err)
	}
}

// TestBestKeepsFirstOfTies: best.safetensors is replaced only by a strictly
// better validation accuracy (the tutorial's `if acc > best_acc`), so an
// epoch that ties the best keeps the earlier epoch's weights. With a
// learning rate far below float32's resolution of the weights, and no
// batch norm whose running statistics would move, every epoch predicts
// the same and so ties.
func TestBestKeepsFirstOfTies(t *testing.T) {
	o := smallOptions()
	o.Epochs, o.Model.BatchNorm, o.Model.Dropout = 3, false, 0
	o.LR, o.Schedule, o.Warmup, o.Momentum, o.Nesterov, o.WeightDecay = 1e-30, "constant", 0, 0, false, 0
	dir := t.TempDir()
	r := newRun(t, dir, o, &quiet{})
	r.Train = synthetic(32, 1)
	hist, err := r.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 || hist[1].ValAcc != hist[0].ValAcc || hist[2].ValAcc != hist[0].ValAcc {
		t.Fatalf("the set-up should tie every epoch's validation accuracy: %+v", hist)
	}
	for i, want := range []bool{true, false, false} {
		if hist[i].Best != want {
			t.Errorf("epoch %d (val acc %g, tying epoch 1's) marked best %v, want %v", i+1, hist[i].ValAcc, hist[i].Best, want)
		}
	}
	ck, err := checkpoint.Load(filepath.Join(dir, BestFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Info.Epoch != 1 {
		t.Errorf("%s is epoch %d's, want epoch 1's: a tie must not replace the best", BestFile, ck.Info.Epoch)
	}
}

// TestWeightDecayEveryParameter: the run's --weight-decay reaches the SGD
// step, for every parameter as torch.optim.SGD applies it (convolution
// and Linear weights, biases, batch-norm weights and biases). One step
// of plain SGD (momentum 0, constant lr) from the same initial weights p0
// on the same batch gives p0 - lr·(g + wd·p0) with weight decay and
// p0 - lr·g without: the two differ by exactly -lr·wd·p0.
func TestWeightDecayEveryParameter(t *testing.T) {
	const lr, wd = 0.1, 0.5
	o := smallOptions()
	o.Epochs, o.Batch, o.Model.Dropout = 1, 16, 0
	o.LR, o.Schedule, o.Warmup, o.Momentum, o.Nesterov = lr, "constant", 0, 0, false
	weights := func(decay float64) map[string]layers.HostTensor {
		o := o
		o.WeightDecay = decay
		dir := t.TempDir()
		r := newRun(t, dir, o, &quiet{})
		r.Train, r.Val = synthetic(16, 1), nil // one batch: one step
		if _, err := r.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		ck, err := checkpoint.Load(filepath.Join(dir, LastFile))
		if err != nil {
			t.Fatal(err)
		}
		return ck.State.Floats
	}
	with, without := weights(wd), weights(0)
	m, err := layers.New(cpu.New(), o.Model)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(o.Seed) // the runs' initial weights
	p0 := m.State().Floats
	for _, p := range m.Params() {
		a, b, w0 := with[p.Name].Data, without[p.Name].Data, p0[p.Name].Data
		if len(a) != len(w0) || len(b) != len(w0) {
			t.Fatalf("%s: %d and %d values, want %d", p.Name, len(a), len(b), len(w0))
		}
		for i := range w0 {
			want := -lr * wd * float64(w0[i])
			if got := float64(a[i]) - float64(b[i]); math.Abs(got-want) > 1e-5 {
				t.Fatalf("%s[%d]: the step with weight decay %g differs from the one without by %g, want -lr·wd·p0 = %g (p0 %g)", p.Name, i, wd, got, want, w0[i])
			}
		}
	}
}

// TestLabelSmoothingTrainsTheLoss: --label-smoothing reaches the training
// loss. One epoch of one batch (the whole set, no augmentation, no
// dropout) reports the loss of the initial weights on it, which is
// CrossEntropyLoss(label_smoothing=ε): (1−ε)·(−log p_label) + ε·(the mean
// over the classes of −log p), averaged over the images; worked out here
// in float64 from the initial model's logits on the same images.
func TestLabelSmoothingTrainsTheLoss(t *testing.T) {
	const eps = 0.3
	o := smallOptions()
	o.Epochs, o.Batch, o.Model.Dropout, o.Augment, o.LabelSmoothing = 1, 32, 0, "none", eps
	train := synthetic(32, 1)
	be := cpu.New()
	m, err := layers.New(be, o.Model)
	if err != nil {
		t.Fatal(err)
	}
	// The initial weights, with the Linear layers' scaled up from
	// normal(0, 0.01) to normal(0, 0.2) so that the logits differ by units
	// and the smoothed loss from the plain one: --init starts the run from
	// them.
	m.Init(o.Seed)
	st := m.State()
	for _, p := range m.Params() {
		if len(p.W.Shape) == 2 {
			for i := range st.Floats[p.Name].Data {
				st.Floats[p.Name].Data[i] *= 20
			}
		}
	}
	if err := m.LoadState(st); err != nil {
		t.Fatal(err)
	}
	o.Init = filepath.Join(t.TempDir(), "init.safetensors")
	if err := checkpoint.Save(o.Init, m, checkpoint.Info{Config: o.Model, Classes: train.Classes}); err != nil {
		t.Fatal(err)
	}
	r := newRun(t, t.TempDir(), o, &quiet{})
	r.Train, r.Val = train, nil
	hist, err := r.Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	n, c := train.Len(), o.Model.Classes
	x := be.New(n, 3, 32, 32)
	host := make([]float32, x.Size())
	tr := EvalTransformFor("none", 32)
	for i := range n {
		tr.Apply(host[i*3*32*32:(i+1)*3*32*32], train.Image(i), nil)
	}
	be.Upload(x, host)
	logits := make([]float32, n*c)
	be.Download(logits, m.Forward(x, true)) // training mode: batch statistics
	var plain float64
	var want float64
	for i := range n {
		row := logits[i*c : (i+1)*c]
		z := 0.0
		for _, v := range row {
			z += math.Exp(float64(v))
		}
		var nll, mean float64
		for j, v := range row {
			l := math.Log(z) - float64(v)
			mean += l / float64(c)
			if j == int(train.Labels[i]) {
				nll = l
			}
		}
		want += ((1-eps)*nll + eps*mean) / float64(n)
		plain += nll / float64(n)
	}
	if math.Abs(want-plain) < 0.05 {
		t.Fatalf("the set-up should make the smoothed loss (%g) differ from the plain one (%g)", want, plain)
	}
	if got := hist[0].TrainLoss; math.Abs(got-want) > 1e-5 {
		t.Errorf("training loss with --label-smoothing %g: %.7g, want %.7g", eps, got, want)
	}
}

// TestSavesLeaveNoCopy: a run saves from the one host buffer it keeps,
// so that a save leaves no model's worth of garbage (a copy of the
// weights, of the momentum, and of each as bytes: 4 GB a save for
// VGG16-BN before) for the collector, which let a CPU run's memory grow
// to twice the estimate that --batch is checked against.
func TestSavesLeaveNoCopy(t *testing.T) {
	o := smallOptions()
	o.Epochs, o.Model.Hidden = 1, 2048 // 4.2 M parameters: 17 MB
	var r *Run
	var model, allocated int64
	rep := &epochEnd{f: func() { // the model is still there: save again
		model = int64(4 * r.model.StateSize())
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := r.saveLast(1, 0, 0.5); err != nil {
			t.Fatal(err)
		}
		if err := r.save(BestFile, 1, 0, 0.5); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		allocated = int64(after.TotalAlloc - before.TotalAlloc)
		ck, err := checkpoint.Load(filepath.Join(r.Dir, BestFile))
		if err != nil {
			t.Fatal(err)
		}
		for name, h := range r.model.State().Floats {
			if !slices.Equal(ck.State.Floats[name].Data, h.Data) {
				t.Fatalf("%s saved from the kept buffer differs from the model's", name)
			}
		}
	}}
	r = newRun(t, t.TempDir(), o, rep)
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	if model == 0 || allocated > model/4 { // each file written has a buffer of 1 MB
		t.Errorf("two saves allocated %d bytes, a model is %d", allocated, model)
	}
}

// epochEnd is a quiet Reporter that calls f at the end of each epoch.
type epochEnd struct {
	quiet
	f func()
}

func (e *epochEnd) EpochEnd(EpochMetrics) { e.f() }

// TestMetricsNeverBehindCheckpoint: where metrics.jsonl cannot be written at
// the end of an epoch (a full disk; a crash between the two writes leaves the
// same), last.safetensors must not hold that epoch already: the resumed run
// would have no line for it. It trains the epoch again instead, and its
// metrics are the uninterrupted run's, every epoch's line there.
func TestMetricsNeverBehindCheckpoint(t *testing.T) {
	o := smallOptions()
	want, err := newRun(t, t.TempDir(), o, &quiet{}).Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, MetricsFile)
	var kept []byte
	epoch := 0
	rep := &quiet{step: func(s StepStats) {
		if s.Batch == 1 {
			epoch++
		}
		if epoch == 2 && s.Batch == 1 {
			// A non-empty directory where epoch 2's metrics.jsonl would be renamed to.
			var err error
			if kept, err = os.ReadFile(path); err != nil {
				t.Error(err)
			}
			if err := errors.Join(os.Remove(path), os.MkdirAll(filepath.Join(path, "x"), 0o755)); err != nil {
				t.Error(err)
			}
		}
	}}
	if _, err := newRun(t, dir, o, rep).Execute(context.Background()); err == nil || !strings.Contains(err.Error(), MetricsFile) {
		t.Fatalf("want the metrics write of epoch 2 to fail, got %v", err)
	}
	if ck, err := checkpoint.Load(filepath.Join(dir, LastFile)); err != nil {
		t.Error(err)
	} else if ck.Info.Epoch != 1 {
		t.Errorf("%s holds epoch %d after epoch 2's metrics failed, want 1", LastFile, ck.Info.Epoch)
	}
	if err := errors.Join(os.RemoveAll(path), os.WriteFile(path, kept, 0o644)); err != nil {
		t.Fatal(err)
	}
	var notes []string
	r := newRun(t, dir, o, &quiet{note: func(s string) { notes = append(notes, s) }})
	r.Resume = true
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(notes, func(s string) bool { return strings.Contains(s, MetricsFile) }); i >= 0 {
		t.Errorf("resume said %q", notes[i])
	}
	got, err := ReadMetrics(path)
	if err != nil || len(got) != len(want) {
		t.Fatalf("%s after the resume: %d lines (%v), want %d", MetricsFile, len(got), err, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		g.Seconds, g.ImagesPerSec, w.Seconds, w.ImagesPerSec = 0, 0, 0, 0
		if g != w {
			t.Errorf("epoch %d: %+v, the uninterrupted run's %+v", i+1, g, w)
		}
	}
}

// TestStartAgainAfterFirstSaveFailed: a run whose first last.safetensors
// could not be written (here a directory in its way; a kill at that moment
// leaves the same) leaves what it wrote before it: the best checkpoint, the
// first epoch's metrics and plot. --auto-resume (StartAgain) must take them
// for the unsaved run's, remove them and start again, not refuse the
// directory as holding something else for ever.
func TestStartAgainAfterFirstSaveFailed(t *testing.T) {
	dir := t.TempDir()
	obstacle := filepath.Join(dir, LastFile)
	if err := os.MkdirAll(filepath.Join(obstacle, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := smallOptions()
	o.Epochs = 1
	if _, err := newRun(t, dir, o, &quiet{}).Execute(context.Background()); err == nil {
		t.Fatal("want the first save to fail")
	}
	if err := os.RemoveAll(obstacle); err != nil {
		t.Fatal(err)
	}
	c, removed, err := StartAgain(dir)
	if err != nil {
		t.Fatalf("StartAgain after a failed first save: %v", err)
	}
	defer c.Release()
	if !slices.Contains(removed, BestFile) {
		t.Errorf("removed %q, want %s among them", removed, BestFile)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("left %v", entries)
	}
}

// TestStartAgainKeepsASavedRunsMetrics: a directory whose metrics.jsonl holds
// more than the first epoch is a run that saved its checkpoints (here its
// last.safetensors moved away to save space, best.safetensors kept with the
// curves): --auto-resume must refuse it, never remove the run's best
// checkpoint and metrics as an unsaved run's leftovers.
func TestStartAgainKeepsASavedRunsMetrics(t *testing.T) {
	o := smallOptions()
	dir := t.TempDir()
	if _, err := newRun(t, dir, o, &quiet{}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, optimPrefix+"*"))
	for _, p := range append(old, filepath.Join(dir, LastFile)) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	c, removed, err := StartAgain(dir)
	if err == nil {
		c.Release()
	}
	if err == nil || len(removed) > 0 {
		t.Errorf("StartAgain of a run with %d epochs of metrics: removed %q (err %v)", o.Epochs, removed, err)
	}
	for _, name := range []string{BestFile, MetricsFile, PlotFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestResumeDropsLinesPastCheckpoint: a line of metrics.jsonl past
// last.safetensors's epoch (a crash after an epoch's line, before its
// checkpoint) leaves the file and the plot when the run resumes, not only
// the resumed run's memory: a resume that trains nothing, or is stopped
// before its first epoch ends, would show that epoch otherwise.
func TestResumeDropsLinesPastCheckpoint(t *testing.T) {
	o := smallOptions()
	o.Epochs = 1
	dir := t.TempDir()
	if _, err := newRun(t, dir, o, &quiet{}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, MetricsFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	extra := strings.Replace(string(b), `"epoch":1,`, `"epoch":2,`, 1)
	if extra == string(b) {
		t.Fatalf("no epoch key in %s", b)
	}
	if err := os.WriteFile(path, append(b, extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRun(t, dir, o, &quiet{}) // --epochs 1, done: nothing to train
	r.Resume = true
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(b) {
		t.Errorf("%s after the resume (%v):\n%s\nwant the checkpoint's epoch alone:\n%s", MetricsFile, err, got, b)
	}
}

// TestStartAgainKeepsALaterBest: a best checkpoint alone is an unsaved
// run's only where it is epoch 1's (saved before that epoch's
// last.safetensors); a later epoch's is a saved run's, whose other files
// went, and StartAgain leaves it.
func TestStartAgainKeepsALaterBest(t *testing.T) {
	o := smallOptions()
	m, err := layers.New(cpu.New(), o.Model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	for _, c := range []struct {
		epoch int
		kept  bool
	}{{1, false}, {3, true}} {
		dir := t.TempDir()
		if err := checkpoint.Save(filepath.Join(dir, BestFile), m, checkpoint.Info{Config: o.Model, Epoch: c.epoch}); err != nil {
			t.Fatal(err)
		}
		claim, removed, err := StartAgain(dir)
		if err == nil {
			claim.Release()
		}
		if _, statErr := os.Stat(filepath.Join(dir, BestFile)); (statErr == nil) != c.kept || c.kept && (err == nil || len(removed) > 0) {
			t.Errorf("a best checkpoint of epoch %d alone: removed %q (err %v), kept %v, want kept %v", c.epoch, removed, err, statErr == nil, c.kept)
		}
	}
}
