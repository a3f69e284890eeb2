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

// terminal is the interactive terminal w writes to, or nil. Progress bars
// write to it directly, not through a lockedWriter (an *os.File is safe
// for concurrent writes), so that they can fit its width.
func terminal(w io.Writer) *os.File {
	for {
		switch v := w.(type) {
		case *lockedWriter:
			w = v.w
		case *checkedWriter:
			w = v.w
		case *os.File:
			if term.IsTerminal(int(v.Fd())) {
				return v
			}
			return nil
		default:
			return nil
		}
	}
}

// columns is the width of terminal f, or 80 where it cannot say.
func columns(f *os.File) int {
	if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
		return w
	}
	return 80
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
	tty     *os.File // the terminal w is, or nil
	bar     *progressbar.ProgressBar
	epoch   int
	epochs  int
	batches int
	lastPct int
	// validating is set while the validation pass of an epoch runs.
	validating bool
}

func newReporter(w io.Writer) *reporter { return &reporter{w: w, tty: terminal(w)} }

func (r *reporter) EpochStart(epoch, epochs, batches int) {
	r.epoch, r.epochs, r.batches, r.lastPct, r.validating = epoch, epochs, batches, 0, false
	if r.tty != nil {
		r.bar = newBar(r.tty, batches, fmt.Sprintf("epoch %d/%d", epoch, epochs))
	}
}

func (r *reporter) Step(s train.StepStats) {
	desc := fmt.Sprintf("epoch %d/%d loss %.4f acc %5.2f%% lr %.3g %.0f img/s", r.epoch, r.epochs, s.Loss, 100*s.Acc, s.LR, s.ImagesPerSec)
	if r.bar != nil {
		// The bar's counts and times take ~40 columns; a line wider than
		// the terminal wraps, and each redraw then leaves a line behind.
		if len(desc)+barStats+minBar > columns(r.tty) {
			desc = fmt.Sprintf("%d/%d loss %.3f acc %.1f%%", r.epoch, r.epochs, s.Loss, 100*s.Acc)
		}
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
	if r.tty == nil {
		return
	}
	if !r.validating { // the epoch's bar gives way to the validation's
		if r.bar != nil {
			r.bar.Finish()
		}
		r.bar, r.validating = newBar(r.tty, total, "validating"), true
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

// barStats is about the widest a bar's percentage, count and times
// ("100% || (50000/50000) [10m10s:12m25s]") are, and minBar the fewest
// columns of bar worth drawing.
const barStats, minBar = 40, 10

// newBar is a progress bar of total steps that clears itself when done,
// on the terminal w; progressbar narrows the bar to fit the terminal.
func newBar(w *os.File, total int, desc string) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionUseANSICodes(ansiConsole(w)), // Windows: else a shorter redraw leaves the end of the last
	)
}

// evalProgress draws a bar for vgg16 eval on a terminal (nothing otherwise:
// the result follows within seconds to minutes).
func evalProgress(w io.Writer) func(done, total int) {
	tty := terminal(w)
	if tty == nil {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = newBar(tty, total, "evaluating")
		}
		bar.Set(done)
		if done >= total {
			bar.Finish()
		}
	}
}
