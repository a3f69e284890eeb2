package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns the terminal side of a new pseudo-terminal, with what is
// written to it read and dropped so that writes never block.
func openPTY(t *testing.T) *os.File {
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
	go io.Copy(io.Discard, ptmx)
	return tty
}

// TestIsTerminalThroughLock checks that the lock train puts around its
// output keeps a terminal a terminal: progress bars, not plain lines.
func TestIsTerminalThroughLock(t *testing.T) {
	tty := openPTY(t)
	if !isTerminal(tty) {
		t.Fatalf("isTerminal: %s is not a terminal", tty.Name())
	}
	if !isTerminal(&lockedWriter{w: tty}) {
		t.Error("isTerminal: a terminal behind lockedWriter is not a terminal")
	}
}

// TestDownloadSpinnerStops: on a terminal, a download of unknown size
// shows a spinner that redraws by itself. A failed download must stop it,
// or it draws over whatever runs next (the demo data's training, say).
func TestDownloadSpinnerStops(t *testing.T) {
	tty := openPTY(t)
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
