// Package pth reads PyTorch state dict files (torch.save(model.state_dict()),
// torchvision's pretrained *.pth) as data, without executing anything.
//
// Both formats torch.load accepts for such files are read: the zip archive
// written by torch >= 1.6 and the legacy stream of consecutive pickles
// written by older versions (torchvision's model-zoo files). The pickles are
// run on a small machine that only builds dicts, lists, tuples and scalars;
// the only GLOBALs it accepts are collections.OrderedDict, torch's
// _rebuild_tensor/_rebuild_parameter helpers and the storage types. Any
// other GLOBAL is an error, as it would be code to run in Python.
package pth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Tensor is one entry of a state dict. Float dtypes (float32, float16,
// bfloat16, float64) are converted to float32 in F32; integer and bool
// dtypes to int64 in I64. Elements are row-major in Shape order, whatever
// the stored strides; Shape is empty for a scalar.
type Tensor struct {
	Shape []int
	F32   []float32
	I64   []int64
	DType string // the stored dtype: "float32", "float16", "int64", ...
}

// Read reads the state dict in the file at path. Errors name the file.
func Read(path string) (map[string]Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pth: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pth: %w", err)
	}
	m, err := decode(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("pth: %s: %w", path, err)
	}
	return m, nil
}

// Decode reads a state dict from size bytes of r, telling the format from
// the content. A training checkpoint whose "state_dict" or "model" entry is
// the dict of tensors yields that inner dict.
func Decode(r io.ReaderAt, size int64) (map[string]Tensor, error) {
	m, err := decode(r, size)
	if err != nil {
		return nil, fmt.Errorf("pth: %w", err)
	}
	return m, nil
}

func decode(r io.ReaderAt, size int64) (map[string]Tensor, error) {
	if size < 0 {
		return nil, errors.New("negative size")
	}
	head := make([]byte, min(size, 512))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return decodeZip(r, size)
	case len(head) >= 2 && (head[0] == opProto || head[0] == opLong):
		// The magic number pickle: PROTO 2 (or a protocol-0/1 LONG).
		return decodeLegacy(r, size)
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return nil, errors.New("tar-based files from torch < 0.4 are not supported; re-save with a newer torch")
	case size == 0:
		return nil, errors.New("empty file")
	}
	return nil, ErrNotPyTorch
}

// ErrNotPyTorch is Read's and Decode's error for a file that is neither
// format torch.save writes.
var ErrNotPyTorch = errors.New("not a PyTorch file (neither a zip archive nor a pickle)")
