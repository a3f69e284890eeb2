package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/vgg16/vgg16/internal/train"
)

// openPTY returns the terminal side of a new pseudo-terminal, cols wide,
// and what has been written to it so far.
func openPTY(t *testing.T, cols int) (*os.File, func() string) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to test with: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlocking a pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("naming a pseudo-terminal: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: uint16(cols)}); err != nil {
		t.Skipf("sizing a pseudo-terminal: %v", err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	go func() { // read all the time, so that writes never block
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return tty, func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
}

// TestTerminalThroughLock checks that the lock train puts around its
// output keeps a terminal a terminal: progress bars, not plain lines.
func TestTerminalThroughLock(t *testing.T) {
	tty, _ := openPTY(t, 80)
	if terminal(tty) != tty {
		t.Fatalf("terminal: %s is not a terminal", tty.Name())
	}
	if terminal(&lockedWriter{w: tty}) != tty {
		t.Error("terminal: a terminal behind lockedWriter is not a terminal")
	}
}

// TestDownloadSpinnerStops: on a terminal, a download of unknown size
// shows a spinner that redraws by itself. A failed download must stop it,
// or it draws over whatever runs next (the demo data's training, say).
func TestDownloadSpinnerStops(t *testing.T) {
	tty, _ := openPTY(t, 80)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 1<<16)) // no Content-Length: sent chunked, size unknown
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond) // a few of the spinner's turns
	}))
	defer srv.Close()
	err := download(context.Background(), tty, filepath.Join(t.TempDir(), "data"), "bin", srv.URL+"/cifar-10-binary.tar.gz")
	if err == nil {
		t.Fatal("a download of 64 KiB of zeros succeeded")
	}
	var stacks bytes.Buffer
	for range 40 { // the spinner looks every 100ms whether it is finished
		stacks.Reset()
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		if !strings.Contains(stacks.String(), "progressbar") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the progress bar's goroutine still runs 2s after the download failed (%v):\n%s", err, stacks.String())
}

// TestBarsFitTheTerminal draws an epoch's bar on an 80-column terminal
// through the lock train writes through: no line redrawn may be wider, or
// each redraw leaves a wrapped line behind.
func TestBarsFitTheTerminal(t *testing.T) {
	tty, written := openPTY(t, 80)
	r := newReporter(&lockedWriter{w: tty})
	r.EpochStart(100, 100, 781)
	for b := 1; b <= 781; b += 60 {
		r.Step(train.StepStats{Batch: b, Batches: 781, Loss: 2.3039, Acc: 0.9999, LR: 0.0179, ImagesPerSec: 41234})
		time.Sleep(110 * time.Millisecond) // past the bar's throttle: each step redraws
	}
	r.Validating(1, 10)
	r.EpochEnd(train.EpochMetrics{Epoch: 100, TrainLoss: 2.3, TrainAcc: 0.5, ValLoss: 2.2, ValAcc: 0.6, LR: 0.0179})
	var out string
	for range 100 {
		if out = written(); strings.Contains(out, "train loss") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out, "loss 2.30") {
		t.Fatalf("no bar drawn:\n%q", out)
	}
	for _, line := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if n := utf8.RuneCountInString(line); n > 80 && !strings.Contains(line, "train loss") { // a line to keep may wrap
			t.Errorf("a line of %d columns on an 80-column terminal: %q", n, line)
		}
	}
}
