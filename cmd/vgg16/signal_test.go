//go:build unix

package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vgg16/vgg16/internal/checkpoint"
)

// signalingServer serves the first 64 KiB of a 170 MB download, then sends
// the process sig, caught by the command while it downloads, and sends
// nothing more until the test ends.
func signalingServer(t *testing.T, sig syscall.Signal) *httptest.Server {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "170000000")
		w.Write(make([]byte, 1<<16))
		w.(http.Flusher).Flush()
		syscall.Kill(os.Getpid(), sig)
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // first: Close waits for the handler
	return srv
}

// TestDataDownloadInterrupted sends the process SIGINT mid-transfer: the
// download stops, says so, and leaves nothing behind.
func TestDataDownloadInterrupted(t *testing.T) {
	srv := signalingServer(t, syscall.SIGINT)
	dir := filepath.Join(t.TempDir(), "data")
	out, err := run(t, "data", "download", "--dir", dir, "--url", srv.URL+"/cifar-10-binary.tar.gz")
	if err == nil || !strings.Contains(err.Error(), "download interrupted") {
		t.Fatalf("want the interruption said, got %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(dir)
		t.Errorf("an interrupted download left %s behind (%v, %d entries)", dir, err, len(entries))
	}
}

// signalOnce sends the process sig the first time the output holds after.
type signalOnce struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	after string
	sig   syscall.Signal
	sent  bool
	again string // where set: the output after which to send sig a second time
	twice bool
	// quitted, where set, is closed once the second signal has been acted
	// on: the write that sent it (the command's line that it was
	// interrupted, written before it cancels the run) waits for it, so that
	// the run cannot end before the signal reaches the command.
	quitted <-chan struct{}
}

func (w *signalOnce) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if !w.sent && strings.Contains(w.buf.String(), w.after) {
		w.sent = true
		syscall.Kill(os.Getpid(), w.sig) // caught by the command while it trains
	}
	if w.sent && w.again != "" && !w.twice && strings.Contains(w.buf.String(), w.again) {
		w.twice = true
		syscall.Kill(os.Getpid(), w.sig)
		if w.quitted != nil {
			select {
			case <-w.quitted:
			case <-time.After(30 * time.Second):
			}
		}
	}
	return n, err
}

// TestTrainStoppedBySignal: SIGTERM (docker stop) or SIGINT mid-epoch saves
// a checkpoint and ends with 128 + the signal's number, as a shell reports
// a process a signal ended, so that a script or scheduler tells a run to
// resume from a failure (exit status 1).
func TestTrainStoppedBySignal(t *testing.T) {
	data := t.TempDir()
	writeCIFAR(t, data, 40)
	for _, c := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		runDir := filepath.Join(t.TempDir(), "run")
		w := &signalOnce{after: "batch 1/", sig: c.sig}
		root := newRoot()
		root.SetOut(w)
		root.SetErr(w)
		root.SetArgs(append([]string{"train", "--data", data, "--epochs", "2", "--run-dir", runDir}, tiny...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "continue with: vgg16 train --resume") {
			t.Fatalf("%v: train returned %v\n%s", c.sig, err, w.buf.String())
		}
		if got := exitCode(err); got != c.want {
			t.Errorf("%v: exit status %d, want %d", c.sig, got, c.want)
		}
		if ck, err := checkpoint.Load(filepath.Join(runDir, "last.safetensors")); err != nil || ck.Info.Epoch != 0 || ck.Info.Batch == 0 {
			t.Errorf("%v: the checkpoint the signal saved: %v %+v", c.sig, err, ck.Info)
		}
	}
	if got := exitCode(errors.New("a failure")); got != 1 {
		t.Errorf("exit status of a failure: %d, want 1", got)
	}
}

// rewriteHost sends every request to the test server at host.
type rewriteHost string

func (h rewriteHost) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = "http", string(h)
	return http.DefaultTransport.RoundTrip(r)
}

// TestTrainStoppedDuringDownload: SIGTERM while train downloads CIFAR-10
// (docker stop in a fresh container) ends with 143 too, a stop to run
// again, not a failure.
func TestTrainStoppedDuringDownload(t *testing.T) {
	srv := signalingServer(t, syscall.SIGTERM)
	saved := httpClient
	httpClient = &http.Client{Transport: rewriteHost(strings.TrimPrefix(srv.URL, "http://"))}
	defer func() { httpClient = saved }()
	data := filepath.Join(t.TempDir(), "data")
	// tiny's small model, so that no memory check stops the run first
	withDownload := slices.DeleteFunc(slices.Clone(tiny), func(a string) bool { return a == "--download=false" })
	out, err := run(t, append([]string{"train", "--data", data, "--epochs", "1", "--run-dir", filepath.Join(t.TempDir(), "run")}, withDownload...)...)
	if err == nil {
		t.Fatalf("train went on after SIGTERM mid-download:\n%s", out)
	}
	if got := exitCode(err); got != 143 {
		t.Errorf("exit status %d after SIGTERM mid-download (%v), want 143", got, err)
	}
}

// TestTrainSecondSignalQuits: a second signal quits at once with 128 + its
// number, through the command's own handler. It was left to the signal's
// disposition before the command's (signal.Stop): the default one kills
// the process (this test's, which fails), and one inherited as ignored, in
// a script's background job, did nothing. The ignored case is not set up
// here: signal.Ignore would leave SIGINT ignored for the tests after.
func TestTrainSecondSignalQuits(t *testing.T) {
	data := t.TempDir()
	writeCIFAR(t, data, 40)
	quits, quitted := make(chan int, 2), make(chan struct{})
	var once sync.Once
	quit = func(code int) { quits <- code; once.Do(func() { close(quitted) }) }
	defer func() { quit = os.Exit }()
	w := &signalOnce{after: "batch 1/", sig: syscall.SIGINT, again: "interrupted: saving", quitted: quitted}
	root := newRoot()
	root.SetOut(w)
	root.SetErr(w)
	// Epochs enough for the first signal to arrive on a loaded machine:
	// it stops the run, so they cost nothing.
	root.SetArgs(append([]string{"train", "--data", data, "--epochs", "50", "--run-dir", filepath.Join(t.TempDir(), "run")}, tiny...))
	root.Execute() // goes on here, where quit returns
	select {
	case code := <-quits:
		if code != 130 {
			t.Errorf("the second SIGINT quit with %d, want 130", code)
		}
	default:
		t.Errorf("the second SIGINT did not quit\n%s", w.buf.String())
	}
}
