package safetensors

import (
	"bytes"
	"maps"
	"slices"
	"testing"
)

func FuzzDecode(f *testing.F) {
	valid, err := Encode(sample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(raw(`{}`, nil))
	f.Add(raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		first, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := Encode(first)
		if err != nil {
			t.Fatalf("Encode of a decoded file failed: %v", err)
		}
		second, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode of re-encoded file failed: %v", err)
		}
		if !slices.Equal(first.Names(), second.Names()) {
			t.Fatalf("names %v became %v", first.Names(), second.Names())
		}
		for name, a := range first.Tensors {
			b := second.Tensors[name]
			if a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
				t.Fatalf("tensor %q changed in the round trip", name)
			}
		}
		if !maps.Equal(first.Metadata, second.Metadata) {
			t.Fatalf("metadata %v became %v", first.Metadata, second.Metadata)
		}
		// The converters must cope with whatever Decode accepts.
		for _, name := range first.Names() {
			first.Float32(name)
			first.Float64(name)
			first.Int64(name)
		}
	})
}
