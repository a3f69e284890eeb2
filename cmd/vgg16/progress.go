package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/vgg16/vgg16/internal/train"
)

// isTerminal reports whether w is an interactive terminal.
func isTerminal(w io.Writer) bool {
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lockedWriter serialises writes to w from goroutines that share it: a
// run and its signal handler.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// reporter draws training progress: a bar per epoch on a terminal, plain
// lines (about ten per epoch) otherwise.
type reporter struct {
	w       io.Writer
	tty     bool
	bar     *progressbar.ProgressBar
	epoch   int
	epochs  int
	batches int
	lastPct int
	// validating is set while the validation pass of an epoch runs.
	validating bool
}

func newReporter(w io.Writer) *reporter { return &reporter{w: w, tty: isTerminal(w)} }

func (r *reporter) EpochStart(epoch, epochs, batches int) {
	r.epoch, r.epochs, r.batches, r.lastPct, r.validating = epoch, epochs, batches, 0, false
	if r.tty {
		r.bar = newBar(r.w, batches, fmt.Sprintf("epoch %d/%d", epoch, epochs))
	}
}

func (r *reporter) Step(s train.StepStats) {
	desc := fmt.Sprintf("epoch %d/%d loss %.4f acc %5.2f%% lr %.3g %.0f img/s", r.epoch, r.epochs, s.Loss, 100*s.Acc, s.LR, s.ImagesPerSec)
	if r.bar != nil {
		r.bar.Describe(desc)
		r.bar.Set(s.Batch)
		return
	}
	if pct := 10 * s.Batch / max(s.Batches, 1); pct > r.lastPct || s.Batch == 1 {
		r.lastPct = pct
		fmt.Fprintf(r.w, "%s  batch %d/%d\n", desc, s.Batch, s.Batches)
	}
}

func (r *reporter) Validating(done, total int) {
	if !r.tty {
		return
	}
	if !r.validating { // the epoch's bar gives way to the validation's
		if r.bar != nil {
			r.bar.Finish()
		}
		r.bar, r.validating = newBar(r.w, total, "validating"), true
	}
	r.bar.Set(done)
}

func (r *reporter) EpochEnd(m train.EpochMetrics) {
	if r.bar != nil {
		r.bar.Finish()
		r.bar = nil
	}
	best := ""
	if m.Best {
		best = "  * best"
	}
	val := "val -"
	if !math.IsNaN(m.ValAcc) {
		val = fmt.Sprintf("val loss %.4f acc %5.2f%%", m.ValLoss, 100*m.ValAcc)
	}
	fmt.Fprintf(r.w, "epoch %d/%d  train loss %.4f acc %5.2f%%  %s  lr %.3g  %.0fs  %.0f img/s%s\n",
		m.Epoch, r.epochs, m.TrainLoss, 100*m.TrainAcc, val, m.LR, m.Seconds, m.ImagesPerSec, best)
}

func (r *reporter) Note(msg string) { fmt.Fprintln(r.w, msg) }

// newBar is a progress bar of total steps that clears itself when done.
func newBar(w io.Writer, total int, desc string) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100_000_000),
	)
}

// evalProgress draws a bar for vgg16 eval on a terminal (nothing otherwise:
// the result follows within seconds to minutes).
func evalProgress(w io.Writer) func(done, total int) {
	if !isTerminal(w) {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = newBar(w, total, "evaluating")
		}
		bar.Set(done)
		if done >= total {
			bar.Finish()
		}
	}
}
