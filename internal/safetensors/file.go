package safetensors

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vgg16/vgg16/internal/robust"
)

// Read loads and validates the whole file at path. Tensors' Data share the
// one buffer the file was read into.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := decode(b, false) // b is ours alone, so no copy is needed
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return f, nil
}

// ReadMetadata reads only the header of the file at path and returns its
// __metadata__ (nil where it has none): what a checkpoint says of itself,
// without reading its tensors (half a gigabyte for VGG16 at 224x224).
func ReadMetadata(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var first [8]byte
	if _, err := io.ReadFull(f, first[:]); err != nil && st.Size() >= 8 { // shorter: headerLen says so
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	size, err := headerLen(first[:], st.Size())
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	h := make([]byte, size)
	if _, err := io.ReadFull(f, h); err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	_, meta, err := parseHeader(h)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return meta, nil
}

// wrapWriter lets tests make the write to the temporary file fail midway.
var wrapWriter = func(w io.Writer) io.Writer { return w }

// Write saves f to path atomically: readers see either the old file or the
// complete new one, never a partial write, even across a crash. On error the
// temporary file is removed and an existing file at path is left as it was.
func Write(path string, f *File) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("safetensors: write %s: %w", path, err)
		}
	}()
	// Validate before touching the disk, so a bad File leaves nothing behind.
	hdr, _, err := header(f)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close() // may already be closed; that error is of no interest
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(wrapWriter(tmp), 1<<20)
	if err = writeTo(w, f, hdr); err != nil {
		return err
	}
	if err = w.Flush(); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; a checkpoint is ordinary data.
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = robust.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable: it is, only once the directory
// entry is on disk. Windows has no such call (FlushFileBuffers on a
// directory fails with "Access is denied"); NTFS journals the rename.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err = d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
