package pth

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode: it may fail but never panic,
// and whatever it returns must be self-consistent.
func FuzzDecode(f *testing.F) {
	dir := os.Getenv("VGG16_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "fixtures")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "vgg-small-32", "init.pth")); err == nil {
		f.Add(b)
	}
	f.Add(legacyBytes())
	st, _ := legacyStorages()
	var specs []tensorSpec
	for _, s := range legacySpecs {
		if s.view == nil {
			specs = append(specs, s)
		}
	}
	f.Add(zipFile(f, stateDictPickle(specs, false), st, nil))
	f.Add(stateDictPickle(legacySpecs, true))
	if b, err := os.ReadFile(filepath.Join("testdata", "cpython_legacy.pth")); err == nil {
		f.Add(b)
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "cpython_proto4.pkl")); err == nil {
		f.Add(zipFile(f, b, cpythonStorages, nil))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for name, ts := range m {
			n := 1
			for _, d := range ts.Shape {
				n *= d
			}
			if len(ts.F32)+len(ts.I64) != n || (ts.F32 != nil && ts.I64 != nil) {
				t.Fatalf("%q: shape %v but %d floats and %d ints", name, ts.Shape, len(ts.F32), len(ts.I64))
			}
		}
	})
}

// FuzzPickle mutates only data.pkl and wraps it in a valid archive, so the
// zip CRC does not stop mutations from reaching the pickle machine and the
// tensor builder.
func FuzzPickle(f *testing.F) {
	for _, p := range []string{"2", "4", "5"} {
		if b, err := os.ReadFile(filepath.Join("testdata", "cpython_proto"+p+".pkl")); err == nil {
			f.Add(b)
		}
	}
	var specs []tensorSpec
	for _, s := range legacySpecs {
		if s.view == nil {
			specs = append(specs, s)
		}
	}
	f.Add(stateDictPickle(specs, false))
	st, _ := legacyStorages()
	for k, v := range cpythonStorages {
		st[k] = v
	}
	f.Fuzz(func(t *testing.T, pkl []byte) {
		b := zipFile(t, pkl, st, nil)
		m, err := Decode(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for name, ts := range m {
			n := 1
			for _, d := range ts.Shape {
				n *= d
			}
			if len(ts.F32)+len(ts.I64) != n {
				t.Fatalf("%q: shape %v but %d values", name, ts.Shape, len(ts.F32)+len(ts.I64))
			}
		}
	})
}
