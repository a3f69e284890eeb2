//go:build unix

package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDataDownloadInterrupted sends the process SIGINT mid-transfer: the
// download stops, says so, and leaves nothing behind.
func TestDataDownloadInterrupted(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "170000000")
		w.Write(make([]byte, 1<<16))
		w.(http.Flusher).Flush()
		syscall.Kill(os.Getpid(), syscall.SIGINT) // caught by the command while it downloads
		<-release
	}))
	defer srv.Close()
	defer close(release)
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
