package pth

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The testdata files were written by CPython's own pickler with a stub
// torch module (testdata/gen.py), so these tests do not depend on our
// pickle writer: memo GET/PUT, protocol 4/5 FRAME, MEMOIZE,
// SHORT_BINUNICODE and STACK_GLOBAL all appear.

var cpythonStorages = map[string][]byte{
	"0": f32bytes(0, 1, 2, 3, 4, 5),
	"1": i64bytes(7),
	"2": f32bytes(10, 11, 12, 13, 14),
}

func checkCPython(t *testing.T, got map[string]Tensor) {
	t.Helper()
	want := map[string]Tensor{
		"conv.weight":            {Shape: []int{2, 3}, F32: []float32{0, 1, 2, 3, 4, 5}, DType: "float32"},
		"conv.weight_t":          {Shape: []int{3, 2}, F32: []float32{0, 3, 1, 4, 2, 5}, DType: "float32"},
		"bn.num_batches_tracked": {Shape: []int{}, I64: []int64{7}, DType: "int64"},
		"conv.bias":              {Shape: []int{2, 2}, F32: []float32{11, 13, 12, 14}, DType: "float32"},
	}
	if len(got) != len(want) {
		t.Errorf("got %d tensors, want %d", len(got), len(want))
	}
	for name, w := range want {
		g := got[name]
		if !slices.Equal(g.Shape, w.Shape) || !slices.Equal(g.F32, w.F32) || !slices.Equal(g.I64, w.I64) || g.DType != w.DType {
			t.Errorf("%s = %+v, want %+v", name, g, w)
		}
	}
}

func TestCPythonZipProtocols(t *testing.T) {
	for _, proto := range []string{"2", "4", "5"} {
		t.Run("protocol"+proto, func(t *testing.T) {
			pkl, err := os.ReadFile(filepath.Join("testdata", "cpython_proto"+proto+".pkl"))
			if err != nil {
				t.Fatal(err)
			}
			b := zipFile(t, pkl, cpythonStorages, nil)
			got, err := Decode(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			checkCPython(t, got)
		})
	}
}

func TestCPythonLegacy(t *testing.T) {
	got, err := Read(filepath.Join("testdata", "cpython_legacy.pth"))
	if err != nil {
		t.Fatal(err)
	}
	checkCPython(t, got)
}
