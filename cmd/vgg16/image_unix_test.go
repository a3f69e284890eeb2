//go:build linux || darwin

package main

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadImageFromPipe: an image read from a pipe (a FIFO here, as
// /dev/stdin or a shell's <(…) give) decodes as from a file: the header
// check reads on, it does not seek back.
func TestReadImageFromPipe(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 13)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file, fifo := filepath.Join(dir, "a.png"), filepath.Join(dir, "pipe")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFO here: %v", err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.Write(buf.Bytes())
		f.Close()
	}()
	got, err := readImage(fifo)
	want, werr := readImage(file)
	if err != nil || werr != nil || !bytes.Equal(got, want) {
		t.Errorf("from a pipe: %v; from the file: %v; same pixels: %v", err, werr, bytes.Equal(got, want))
	}
}
