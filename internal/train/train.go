package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/safetensors"
	"github.com/vgg16/vgg16/internal/shell"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Files in a run directory.
const (
	BestFile = "best.safetensors" // best validation accuracy so far
	LastFile = "last.safetensors" // the latest epoch (or interruption)
	// The optimizer state of LastFile is in optim.<id>.safetensors, named
	// by the ID that LastFile's metadata carries: the new one is written
	// before LastFile and the old one removed after, so a crash at any
	// point leaves a matching pair.
	optimPrefix = "optim."
	MetricsFile = "metrics.jsonl" // one JSON line per epoch
	PlotFile    = "curves.png"    // loss and accuracy curves
)

// ErrInterrupted is returned when the context was cancelled: the run saved
// a resumable checkpoint first.
var ErrInterrupted = errors.New("interrupted")

// Reporter receives progress; the CLI draws it.
type Reporter interface {
	EpochStart(epoch, epochs, batches int)
	Step(s StepStats)
	// Validating reports the validation pass after each batch.
	Validating(done, total int)
	EpochEnd(m EpochMetrics)
	Note(msg string)
}

// StepStats is the running state of the current epoch after a batch.
type StepStats struct {
	Batch, Batches int
	Loss, Acc      float64 // means over the epoch so far
	LR             float64
	ImagesPerSec   float64
}

// EpochMetrics is one line of metrics.jsonl.
type EpochMetrics struct {
	Epoch        int     `json:"epoch"` // 1-based
	LR           float64 `json:"lr"`
	TrainLoss    float64 `json:"train_loss"`
	TrainAcc     float64 `json:"train_acc"`
	ValLoss      float64 `json:"val_loss"`
	ValAcc       float64 `json:"val_acc"`
	Best         bool    `json:"best"`
	Seconds      float64 `json:"seconds"`
	ImagesPerSec float64 `json:"images_per_sec"`
}

// Run is one training run.
type Run struct {
	Dir     string // run directory: checkpoints, metrics, plot
	Opt     Options
	Classes []string
	Train   *cifar.Dataset
	Val     *cifar.Dataset // may be nil: no validation, best = last
	Backend tensor.Backend
	Report  Reporter
	Resume  bool // continue from Dir/last.safetensors

	model *layers.Model
	mom   *tensor.Tensor // [FlatSize] momentum
	// host is the saves' copy of the momentum, then of the state, one at a
	// time ([max(FlatSize, StateSize)]): kept, so that no save leaves a
	// model's worth of garbage (1 GB for VGG16-BN's two) to be collected.
	host []float32
	// The datasets on the backend, when it makes the batches itself
	// (tensor.Images; nil otherwise or with Options.CPUAugment).
	trainSet, valSet tensor.ImageSet
	step             int     // optimizer steps done
	epoch            int     // epochs done
	best             float64 // best validation accuracy
	id               string
	flags            string // Opt as JSON, for the checkpoints
	// partial is the training tally of the epoch an interruption stopped
	// in (all of it, once its training is done: an interruption during the
	// validation), saved with its checkpoint and carried into the resumed
	// epoch, so that the epoch's metrics count every batch.
	partial epochTally
	// freshMomentum: the next step fills the momentum as a run's first
	// does (torch's SGD with no state yet), where a resume found no
	// optimizer state.
	freshMomentum bool
	history       []EpochMetrics
	// savedStep is the step last.safetensors was written at by this
	// process (-1: not yet).
	savedStep int
}

// lowerLR is the remedy a diverged loss suggests. A resume keeps the
// run's --lr: a lower one takes a new run, which can start from the
// weights before the divergence.
func (r *Run) lowerLR() string {
	if last := filepath.Join(r.Dir, LastFile); checkpoint.Exists(last) {
		return "lower --lr? a resume keeps the run's: start a new run from its weights with --init " + shell.Quote(last) + " and a lower --lr"
	}
	return "lower --lr?"
}

// loaderOptions are how the epoch's batches are drawn: whole batches
// (drop_last), except where the set is smaller than one.
func (r *Run) loaderOptions() cifar.LoaderOptions {
	return cifar.LoaderOptions{
		Batch: r.Opt.Batch, Shuffle: true, DropLast: r.Train.Len() >= r.Opt.Batch, Transform: r.transform(),
		Seed: r.Opt.Seed, Epoch: r.epoch, Workers: r.Opt.Workers,
	}
}

// checkPlace checks a resumed run's step and place in its epoch (skip
// batches done) against the batches its data now makes an epoch. The
// schedule and the place are counted in batches: data that makes another
// number of them (another --limit, --val-split or --data) would put the
// run elsewhere in both.
func (r *Run) checkPlace(skip int) error {
	lo := r.loaderOptions()
	perEpoch := lo.Batches(r.Train.Len())
	if skip <= perEpoch && r.step == r.epoch*perEpoch+skip {
		return nil
	}
	if r.step < skip || r.epoch == 0 && r.step != skip || r.epoch > 0 && r.step-skip < r.epoch { // every epoch trains a batch at least
		// No epoch length fits: the file's own figures disagree. (Steps
		// that no whole number of batches an epoch gives may be a run an
		// older vgg16 resumed on other data: the message below.)
		last := filepath.Join(r.Dir, LastFile)
		return fmt.Errorf("%s records epoch %d, batch %d and step %d, which no number of batches an epoch gives (damaged? a new run can start from its weights: --init %s)", last, r.epoch, skip, r.step, shell.Quote(last))
	}
	had := fmt.Sprintf("%d batches of its first epoch", skip)
	if r.epoch > 0 {
		had = fmt.Sprintf("%d batches an epoch", (r.step-skip)/r.epoch)
	}
	return fmt.Errorf("the run trained %s; its data now makes %d an epoch: "+
		"resume with the --data, --limit and --val-split it trained with, or start a new run from its weights with --init %s",
		had, perEpoch, shell.Quote(filepath.Join(r.Dir, LastFile)))
}

// LastUnreadable is err, the failure to read the last checkpoint of the
// run in dir for a resume, with what can still be done: every retry of
// the resume would fail the same way.
func LastUnreadable(dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	hint := "move it away to start the run again"
	if best := filepath.Join(dir, BestFile); checkpoint.Exists(best) {
		hint = "a new run can start from the run's best weights: --init " + shell.Quote(best)
	}
	return fmt.Errorf("%w (the run cannot be resumed from it; %s)", err, hint)
}

// keptNote says what a run stopped by a diverged loss leaves.
func (r *Run) keptNote() string {
	if best := filepath.Join(r.Dir, BestFile); checkpoint.Exists(best) {
		return best + " is untouched"
	}
	return "no checkpoint was written"
}

// Best is the best validation accuracy so far (the training accuracy
// where the run has no validation set): that of best.safetensors, or -1
// before the first epoch ends.
func (r *Run) Best() float64 { return r.best }

// Model is the model being trained (after Execute started).
func (r *Run) Model() *layers.Model { return r.model }

// Execute trains until the last epoch, an error, a non-finite loss, or
// cancellation of ctx (which saves a resumable checkpoint and returns
// ErrInterrupted).
func (r *Run) Execute(ctx context.Context) (hist []EpochMetrics, err error) {
	// A backend reports device failures (out of memory, a failed CUDA
	// call) by panicking with an error value; the run ends with it as an
	// error, its checkpoints as they were. Programming errors still crash.
	defer func() {
		if p := recover(); p != nil {
			e := tensor.DeviceError(p)
			if e == nil {
				panic(p)
			}
			hist, err = r.history, fmt.Errorf("epoch %d: %w", r.epoch+1, e)
		}
	}()
	if err := r.Opt.Validate(); err != nil {
		return nil, err
	}
	// Recorded in every checkpoint for --resume, so it must encode: a NaN
	// or ±Inf option would be found only by the resume.
	flags, err := json.Marshal(r.Opt)
	if err != nil {
		return nil, fmt.Errorf("recording the training options: %w", err)
	}
	r.flags = string(flags)
	r.savedStep = -1
	be := r.Backend
	m, err := layers.New(be, r.Opt.Model)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	r.model = m
	m.Seed = r.Opt.Seed
	m.FreezeFeatures(r.Opt.FreezeFeatures)
	m.RecomputeBN(r.Opt.RecomputeBN)
	m.ShareGradients(r.Opt.SGDInBackward)
	r.mom = be.New(m.FlatSize())
	defer be.Free(r.mom)
	skip := 0
	if r.Resume {
		if skip, err = r.restore(); err != nil {
			return nil, err
		}
		if skip == 0 { // else trainEpoch says where in the epoch
			r.Report.Note(r.resuming(fmt.Sprintf("after epoch %d", r.epoch)))
		}
		if r.epoch >= r.Opt.Epochs {
			more := ""
			if skip > 0 {
				more = fmt.Sprintf(" and %d batches of epoch %d, which this leaves out of the best checkpoint", skip, r.epoch+1)
			}
			r.Report.Note(fmt.Sprintf("the run has done %d epochs%s, --epochs %d: nothing to train (a larger --epochs continues it)", r.epoch, more, r.Opt.Epochs))
		}
	} else {
		m.Init(r.Opt.Seed)
		if r.Opt.Init != "" {
			if err := r.initFrom(r.Opt.Init, false); err != nil {
				return nil, err
			}
		}
		if r.Opt.Pretrained != "" {
			if err := r.initFrom(r.Opt.Pretrained, true); err != nil {
				return nil, err
			}
		}
		r.id = strconv.FormatInt(time.Now().UnixNano(), 36)
		r.best = -1
	}

	if !r.Opt.CPUAugment {
		if r.trainSet = UploadImages(be, r.Train); r.trainSet != nil {
			defer r.trainSet.Free()
			r.Report.Note(fmt.Sprintf("augmenting on the device: %d training images uploaded once (%.0f MB)", r.Train.Len(), float64(len(r.Train.Images))/1e6))
		}
		if r.valSet = UploadImages(be, r.Val); r.valSet != nil {
			defer r.valSet.Free()
		}
	}
	// No batch holds more images than the training set: one of all of
	// them where it is smaller than --batch.
	size, bs, classes := r.Opt.Model.ImageSize, max(1, min(r.Opt.Batch, r.Train.Len())), r.Opt.Model.Classes
	st := &stepBuffers{
		x: tensor.NewActivation(be, bs, 3, size, size), y: be.New(bs), loss: be.New(1), dlogits: tensor.NewActivation(be, bs, classes),
		acc: be.New(2), accHost: make([]float32, 2),
	}
	defer func() {
		for _, t := range []*tensor.Tensor{st.x, st.y, st.loss, st.dlogits, st.acc} {
			be.Free(t)
		}
	}()

	var evalBufs *evalBuffers // made at the first validation, kept for the run
	for ; r.epoch < r.Opt.Epochs; r.epoch++ {
		em, batches, err := r.trainEpoch(ctx, skip, st)
		if err != nil {
			return r.history, err
		}
		skip = 0
		em.ValLoss, em.ValAcc = math.NaN(), math.NaN()
		if r.Val != nil && r.Val.Len() > 0 {
			if evalBufs == nil {
				evalBufs = newEvalBuffers(m, min(r.Opt.Batch, r.Val.Len())) // --batch, as the training's, bounded by the set as Evaluate's
				defer evalBufs.free()
			}
			ev, err := evaluate(ctx, m, r.Val, r.valSet, r.evalTransform(), evalBufs, r.Opt.Workers, r.Report.Validating)
			if err != nil && ctx.Err() != nil {
				// Interrupted while validating: the epoch's training is
				// saved whole, and resuming validates it.
				return r.history, r.interrupt(batches, batches)
			}
			if err != nil {
				return r.history, err
			}
			if !ev.Loss.Finite() {
				// Diverged weights predict one class for every image, whose
				// share of the held-out set could otherwise make them best.
				return r.history, fmt.Errorf("epoch %d: the validation loss is %v; stopping (%s). %s", r.epoch+1, ev.Loss, r.lowerLR(), r.keptNote())
			}
			em.ValLoss, em.ValAcc = float64(ev.Loss), ev.Acc
		}
		score := em.ValAcc
		if math.IsNaN(score) {
			score = em.TrainAcc
		}
		if score > r.best {
			r.best, em.Best = score, true
			if err := r.save(BestFile, r.epoch+1, 0, em.ValAcc); err != nil {
				return r.history, err
			}
		}
		// The metrics before last.safetensors: a crash or a failed write
		// between the two then leaves a line past the checkpoint's epoch,
		// which the resumed run trains again (restore drops the line), never
		// a checkpoint past the metrics, whose epoch would have no line.
		r.history = append(r.history, em)
		if err := r.writeMetrics(); err != nil {
			return r.history[:len(r.history)-1], fmt.Errorf("epoch %d: %w", r.epoch+1, err)
		}
		if err := r.saveLast(r.epoch+1, 0, em.ValAcc); err != nil {
			return r.history[:len(r.history)-1], err
		}
		r.Report.EpochEnd(em)
	}
	return r.history, nil
}

// stepBuffers are the tensors a training step needs besides the model's,
// allocated once per run.
type stepBuffers struct {
	x, y, loss, dlogits *tensor.Tensor // [B,3,S,S], [B], [1], [B,C]
	acc                 *tensor.Tensor // [2] running loss sum and correct count (Tally)
	accHost             []float32      // [2] its host copy
}

// tallyEvery is how many steps' metrics the device sums before the host
// reads them (and waits for the GPU to catch up).
const tallyEvery = 8

// trainEpoch trains one epoch, skipping its first skip batches (done before
// an interruption), and returns its training metrics and number of batches.
// Its tally stays in r.partial, for an interruption during validation.
func (r *Run) trainEpoch(ctx context.Context, skip int, st *stepBuffers) (EpochMetrics, int, error) {
	be, m := r.Backend, r.model
	size, classes := r.Opt.Model.ImageSize, r.Opt.Model.Classes
	src, err := NewSource(be, r.Train, r.trainSet, r.loaderOptions())
	if err != nil {
		return EpochMetrics{}, 0, err
	}
	defer src.Close()
	perEpoch := src.Batches()
	if skip > 0 {
		r.Report.Note(r.resuming(r.position(skip, perEpoch)))
	}
	r.Report.EpochStart(r.epoch+1, r.Opt.Epochs, perEpoch)
	start := time.Now()
	var sumLoss, before float64 // before: seconds the interrupted run trained this epoch
	var seen, correct int
	lr := 0.0
	if skip > 0 { // resumed mid-epoch: the batches before the interruption count too
		sumLoss, correct, seen, before, lr = r.partial.loss, r.partial.correct, r.partial.seen, r.partial.seconds, r.partial.lr
	}
	untimed := skip > 0 && !r.partial.timed // a tally of an earlier version: no time, no rate
	r.partial = epochTally{}
	tally := func() epochTally {
		return epochTally{loss: sumLoss, correct: correct, seen: seen, seconds: before + time.Since(start).Seconds(), lr: lr, timed: true}
	}
	seenBefore := seen       // images tallied by the run that was interrupted
	pending, done := 0, skip // images trained on but not yet tallied on the host; batches done
	// The loss and the correct predictions add up on the device (Tally) and
	// come to the host every tallyEvery steps on a backend that records
	// steps (the GPU): a step does not wait for the one before it, so the
	// GPU is not idle while the host prepares the next. from is the first
	// batch of the tally not yet read.
	be.Fill(st.acc, 0)
	from, every := skip, 1
	if _, ok := be.(tensor.StepRecorder); ok { // a backend that runs ahead of the host
		every = tallyEvery
	}
	flush := func(b int) error { // b: the batches done
		if pending == 0 {
			return nil
		}
		be.Download(st.accHost, st.acc)
		be.Fill(st.acc, 0)
		l := float64(st.accHost[0])
		if math.IsNaN(l) || math.IsInf(l, 0) {
			which := fmt.Sprintf("batch %d", b)
			if b > from+1 {
				which = fmt.Sprintf("batches %d-%d", from+1, b)
			}
			return fmt.Errorf("epoch %d, %s: the loss is %v; stopping (%s). %s", r.epoch+1, which, l, r.lowerLR(), r.keptNote())
		}
		sumLoss += l
		correct += int(st.accHost[1])
		seen += pending
		pending, from = 0, b
		r.Report.Step(StepStats{Batch: b, Batches: perEpoch, Loss: sumLoss / float64(seen), Acc: float64(correct) / float64(seen), LR: lr, ImagesPerSec: float64(seen-seenBefore) / time.Since(start).Seconds()})
		return nil
	}
	for b := 0; b < perEpoch; b++ {
		if b == skip && skip > 0 {
			start = time.Now() // making the skipped batches is not training time
		}
		if b < skip { // resuming mid-epoch: these batches were trained on
			if skip < perEpoch && !src.skip() { // (all of them: nothing to make)
				break
			}
			continue
		}
		if ctx.Err() != nil {
			if err := flush(b); err != nil { // no NaN weights in the checkpoint
				return EpochMetrics{}, 0, err
			}
			r.partial = tally()
			return EpochMetrics{}, 0, r.interrupt(b, perEpoch)
		}
		n, _, ok := src.Next(st.x, st.y)
		if !ok {
			break
		}
		xb, yb, db := st.x.View(0, n, 3, size, size), st.y.View(0, n), st.dlogits.View(0, n, classes)

		// One step, recorded by backends that can (a CUDA graph): steps of the
		// same batch size repeat the same work.
		lr = r.Opt.LearningRate(r.step, perEpoch)
		first := r.step == 0 || r.freshMomentum
		r.freshMomentum = false
		modelStep := m.Step()
		h := tensor.SGD{LR: lr, Momentum: r.Opt.Momentum, WeightDecay: r.Opt.WeightDecay, Nesterov: r.Opt.Nesterov}
		step := func() {
			m.SetStep(modelStep) // the same dropout masks if it runs twice
			logits := m.Forward(xb, true)
			be.SoftmaxCrossEntropy(st.loss, db, logits, yb, r.Opt.LabelSmoothing)
			be.Tally(st.acc, st.loss, logits, yb)
			m.BackwardSGD(db, r.mom, h, first) // all parameters, or the classifier's; in the backward with SGDInBackward
		}
		if first { // its SGD differs from the others' (it fills the momentum)
			step()
		} else {
			tensor.Step(be, stepKey(n), step)
		}
		r.step++
		pending, done = pending+n, b+1
		if done-from >= every || done == perEpoch {
			if err := flush(done); err != nil {
				return EpochMetrics{}, 0, err
			}
		}
	}
	if err := flush(done); err != nil { // the source ended early
		return EpochMetrics{}, 0, err
	}
	if lr == 0 && r.step > 0 { // nothing trained here, and no rate saved
		lr = r.Opt.LearningRate(r.step-1, perEpoch)
	}
	r.partial = tally()
	em := EpochMetrics{Epoch: r.epoch + 1, LR: lr, Seconds: r.partial.seconds}
	if seen > 0 {
		em.TrainLoss, em.TrainAcc = sumLoss/float64(seen), float64(correct)/float64(seen)
	}
	counted := seen
	if untimed {
		counted -= seenBefore // this session's images, over this session's time
	}
	if em.Seconds > 0 {
		em.ImagesPerSec = float64(counted) / em.Seconds
	}
	return em, perEpoch, nil
}

// initFrom loads the matching tensors of a weights file; newHead leaves
// the classifier's last Linear as initialised (--pretrained).
func (r *Run) initFrom(path string, newHead bool) error {
	flag := "--init"
	if newHead {
		flag = "--pretrained"
	}
	s, err := checkpoint.ReadWeights(path)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	var head string
	if newHead {
		last := r.model.Params()[len(r.model.Params())-1].Name // classifier.6.bias
		head = last[:strings.LastIndex(last, ".")+1]
		for name := range s.Floats {
			if strings.HasPrefix(name, head) {
				delete(s.Floats, name)
			}
		}
	}
	skipped, unused, err := r.model.LoadMatching(s)
	if err != nil {
		// The likeliest mismatch said outright: the whole list of missing
		// tensors does not show it.
		switch hasBN := s.HasBatchNorm(); {
		case hasBN && !r.Opt.Model.BatchNorm:
			err = fmt.Errorf("%w (the file's network has batch norm, this one not: leave out --batch-norm=false)", err)
		case !hasBN && r.Opt.Model.BatchNorm:
			err = fmt.Errorf("%w (the file's network has no batch norm, this one has: --batch-norm=false)", err)
		}
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	msg := fmt.Sprintf("initialised from %s", path)
	if newHead {
		skipped = slices.DeleteFunc(skipped, func(s string) bool { return strings.HasPrefix(s, head) })
		msg += fmt.Sprintf("; the last layer (%s) new, for %d classes", strings.TrimSuffix(head, "."), r.Opt.Model.Classes)
	}
	if len(skipped) > 0 {
		msg += "; kept freshly initialised: " + strings.Join(skipped, ", ")
	}
	if len(unused) > 0 {
		msg += "; not in the model, so unused: " + layers.Few(unused, ", ")
	}
	r.Report.Note(msg)
	return nil
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func (r *Run) transform() cifar.Transform {
	size := r.Opt.Model.ImageSize
	switch r.Opt.Augment {
	case "seed":
		return cifar.SeedTransform{Size: size}
	case "cifar":
		return cifar.CIFARTransform{Size: size}
	}
	return r.evalTransform()
}

// evalTransform is deterministic: resize to the model's size and the
// normalisation that training used.
func (r *Run) evalTransform() cifar.EvalTransform {
	return EvalTransformFor(r.Opt.Augment, r.Opt.Model.ImageSize)
}

// EvalTransformFor is the evaluation transform matching an augmentation.
func EvalTransformFor(augment string, size int) cifar.EvalTransform {
	norm := cifar.CIFARNorm
	if augment == "seed" {
		norm = cifar.ImageNetNorm
	}
	return cifar.EvalTransform{Size: size, Norm: norm}
}

func (r *Run) info(epoch, batch int, valAcc float64) checkpoint.Info {
	return checkpoint.Info{Config: r.Opt.Model, Classes: r.Classes, Epoch: epoch, Batch: batch, Step: r.model.Step(),
		BestAcc: r.best, ValAcc: valAcc, Flags: r.flags, ID: r.id + "-" + strconv.Itoa(r.step)}
}

func (r *Run) save(name string, epoch, batch int, valAcc float64) error {
	path := filepath.Join(r.Dir, name)
	if err := checkpoint.SaveState(path, r.model.StateIn(r.hostBuffer()), r.info(epoch, batch, valAcc)); err != nil {
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return nil
}

// hostBuffer is r.host, made at the first save.
func (r *Run) hostBuffer() []float32 {
	if r.host == nil {
		r.host = make([]float32, max(r.mom.Size(), r.model.StateSize()))
	}
	return r.host
}

// OptimPath is the optimizer state that belongs to the checkpoint with id.
func OptimPath(dir, id string) string {
	return filepath.Join(dir, optimPrefix+id+".safetensors")
}

// saveLast writes the optimizer state, then the weights, each atomically,
// then removes the optimizer states of older checkpoints.
func (r *Run) saveLast(epoch, batch int, valAcc float64) error {
	host := r.hostBuffer()[:r.mom.Size()]
	r.Backend.Download(host, r.mom)
	info := r.info(epoch, batch, valAcc)
	f := &safetensors.File{
		Tensors:  map[string]safetensors.Tensor{"momentum": safetensors.F32([]int{len(host)}, host)},
		Metadata: map[string]string{"vgg16.id": info.ID, "vgg16.step": strconv.Itoa(r.step)},
	}
	if batch > 0 { // mid-epoch: the epoch's training tally so far
		f.Metadata[keyTally] = r.partial.String()
	}
	optPath := OptimPath(r.Dir, info.ID)
	// A save at the step of the last one (an interruption before a resumed
	// run's first step) rewrites the state that LastFile names already.
	_, statErr := os.Stat(optPath)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	if err := safetensors.Write(optPath, f); err != nil {
		return fmt.Errorf("saving optimizer state: %w", err)
	}
	if err := checkpoint.SaveState(filepath.Join(r.Dir, LastFile), r.model.StateIn(r.hostBuffer()), info); err != nil {
		if fresh {
			os.Remove(optPath) // belongs to no checkpoint (say, the disk filled up between the two)
		}
		return fmt.Errorf("saving %s: %w", filepath.Join(r.Dir, LastFile), err)
	}
	old, _ := filepath.Glob(filepath.Join(r.Dir, optimPrefix+"*.safetensors"))
	for _, p := range old {
		if p != optPath {
			os.Remove(p)
		}
	}
	r.savedStep = r.step
	return nil
}

// interrupt saves a checkpoint that resumes after batch b of the current
// epoch's perEpoch (all of them: interrupted while validating). Before an
// epoch's first batch, where the signal came while the last epoch's
// checkpoints were written, last.safetensors holds this very step already:
// writing it again (a gigabyte with its momentum at 224x224) would only
// keep a `docker stop` waiting as long again.
func (r *Run) interrupt(b, perEpoch int) error {
	if r.savedStep != r.step {
		if err := r.saveLast(r.epoch, b, math.NaN()); err != nil {
			return err
		}
	}
	r.Report.Note(fmt.Sprintf("interrupted %s: saved %s; continue with --resume --run-dir %s", r.position(b, perEpoch), filepath.Join(r.Dir, LastFile), shell.Quote(r.Dir)))
	return ErrInterrupted
}

// resuming is the note that the run goes on from where (a position).
func (r *Run) resuming(where string) string {
	best := "no validation yet"
	if r.best >= 0 {
		best = fmt.Sprintf("best val acc %.2f%%", 100*r.best)
	}
	return fmt.Sprintf("resuming %s %s (step %d, %s)", r.Dir, where, r.step, best)
}

// position says where in the run batch b of the current epoch is, as the
// interruption and the resumption say it.
func (r *Run) position(b, perEpoch int) string {
	if b >= perEpoch {
		return fmt.Sprintf("after training epoch %d, before its validation", r.epoch+1)
	}
	return fmt.Sprintf("in epoch %d after %d of its %d batches", r.epoch+1, b, perEpoch)
}

// restore loads the last checkpoint and its optimizer state, returning the
// number of batches of the current epoch already done.
func (r *Run) restore() (int, error) {
	lastPath := filepath.Join(r.Dir, LastFile)
	ck, err := checkpoint.Load(lastPath)
	if err == nil {
		err = ck.Info.Damaged
	}
	if err != nil {
		return 0, LastUnreadable(r.Dir, err)
	}
	if err := r.model.LoadState(ck.State); err != nil {
		return 0, fmt.Errorf("%s: %w", lastPath, err)
	}
	// The ID is "<run id>-<step>": the step, which the optimizer file,
	// checked below to hold the same ID, records too.
	i := strings.LastIndexByte(ck.Info.ID, '-')
	step, err := strconv.Atoi(ck.Info.ID[i+1:])
	if i < 1 || err != nil || step < 0 {
		return 0, fmt.Errorf("%s: metadata vgg16.id %q: want <run id>-<step> (damaged? a new run can start from its weights: --init %s)", lastPath, ck.Info.ID, shell.Quote(lastPath))
	}
	r.id, r.step = ck.Info.ID[:i], step
	optPath := OptimPath(r.Dir, ck.Info.ID)
	of, err := safetensors.Read(optPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Lost (deleted by hand, or not copied with the run): the weights
		// are whole, and torch's SGD without its state starts the momentum
		// again from the next gradient.
		r.freshMomentum = true
		lost := ""
		if ck.Info.Batch > 0 { // the tally of the epoch so far was in it too
			lost = "; this epoch's training loss and accuracy count only its batches from here"
		}
		differs := "so it will differ a little from the run uninterrupted"
		if r.Opt.Momentum == 0 {
			differs = "which with momentum 0 changes nothing"
		}
		r.Report.Note(fmt.Sprintf("%s, the momentum of %s, is missing: the run goes on with the momentum started again from the next step, %s%s", optPath, LastFile, differs, lost))
	case err != nil:
		return 0, fmt.Errorf("resume needs the optimizer state (the momentum) of %s: %w (move it away to go on without: the momentum then starts again)", lastPath, err)
	default:
		if of.Metadata["vgg16.id"] != ck.Info.ID {
			return 0, fmt.Errorf("%s belongs to another checkpoint than %s (ids %q and %q)", optPath, lastPath, of.Metadata["vgg16.id"], ck.Info.ID)
		}
		mom, shape, err := of.Float32("momentum")
		if err != nil {
			return 0, fmt.Errorf("%s: %w", optPath, err)
		}
		if len(mom) != r.mom.Size() {
			return 0, fmt.Errorf("%s: momentum has shape %v, the model wants [%d] (written by another version of vgg16? resume from best.safetensors with --init instead)", optPath, shape, r.mom.Size())
		}
		r.Backend.Upload(r.mom, mom)
		r.partial = parseTally(of.Metadata[keyTally]) // zero when absent (older versions, or between epochs)
	}
	r.model.SetStep(ck.Info.Step)
	r.epoch, r.best = ck.Info.Epoch, ck.Info.BestAcc
	// The place checked before anything is said of the metrics it implies.
	if err := r.checkPlace(ck.Info.Batch); err != nil {
		return 0, err
	}
	path := filepath.Join(r.Dir, MetricsFile)
	hist, err := ReadMetrics(path)
	// Lines past the checkpoint's epoch are epochs trained after it (a
	// crash between the two writes): the resumed run trains them again,
	// and the file and plot lose them now, not at the next epoch's end.
	past := len(hist) > r.epoch
	hist = hist[:min(len(hist), r.epoch)]
	if len(hist) < r.epoch || err != nil && !(r.epoch == 0 && os.IsNotExist(err)) { // none before the first epoch ends
		what := fmt.Sprintf("%s holds %d", path, len(hist))
		switch {
		case os.IsNotExist(err):
			what = path + " is missing"
		case err != nil:
			what = fmt.Sprintf("%s has %d readable lines (then %v)", path, len(hist), err)
		}
		lost := ""
		if len(hist) < r.epoch {
			lost = fmt.Sprintf("; the metrics of the other %d are lost", r.epoch-len(hist))
		}
		kept := fmt.Sprintf("the %d epochs it holds and ", len(hist))
		if len(hist) == 0 {
			kept = ""
		}
		r.Report.Note(fmt.Sprintf("the run has done %d epochs and %s: it is written again with %sthe epochs to come%s (the checkpoints are not affected)", r.epoch, what, kept, lost))
	}
	r.history = hist
	if past {
		if err := r.writeMetrics(); err != nil {
			return 0, fmt.Errorf("dropping the epochs past %s from %s: %w", LastFile, path, err)
		}
	}
	return ck.Info.Batch, nil
}

// epochTally is an epoch's training metrics so far: the loss summed over
// images, the correct predictions and the images.
type epochTally struct {
	loss          float64
	correct, seen int
	seconds, lr   float64 // the epoch's training time so far, and its last step's learning rate
	timed         bool    // seconds and lr were saved (not by versions before them)
}

// keyTally is the optimizer file's metadata key of a mid-epoch
// checkpoint's epochTally.
const keyTally = "vgg16.epoch_tally"

func (t epochTally) String() string {
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return g(t.loss) + " " + strconv.Itoa(t.correct) + " " + strconv.Itoa(t.seen) + " " + g(t.seconds) + " " + g(t.lr)
}

// parseTally reads String's form, or the three fields (loss, correct,
// seen) that versions before the time and rate wrote.
func parseTally(s string) epochTally {
	var t epochTally
	f := strings.Fields(s)
	if len(f) != 3 && len(f) != 5 {
		return t
	}
	loss, err1 := strconv.ParseFloat(f[0], 64)
	correct, err2 := strconv.Atoi(f[1])
	seen, err3 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || err3 != nil || correct < 0 || seen < correct {
		return t
	}
	t = epochTally{loss: loss, correct: correct, seen: seen}
	if len(f) == 5 {
		secs, err1 := strconv.ParseFloat(f[3], 64)
		lr, err2 := strconv.ParseFloat(f[4], 64)
		finite := !math.IsInf(secs, 0) && !math.IsNaN(secs) && !math.IsInf(lr, 0) && !math.IsNaN(lr)
		if err1 == nil && err2 == nil && finite && secs >= 0 && lr >= 0 {
			t.seconds, t.lr, t.timed = secs, lr, true
		}
	}
	return t
}

// stepKey names a training step's shape for tensor.Step.
func stepKey(batch int) string { return "train/" + strconv.Itoa(batch) }
