package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/fixtures"
)

func sample() *File {
	return &File{
		Tensors: map[string]Tensor{
			"w":     F32([]int{2, 3}, []float32{1, -2, 3.5, float32(math.Inf(1)), 0, -0.25}),
			"d":     F64([]int{3}, []float64{math.Pi, -1e300, 5e-324}),
			"steps": I64([]int{}, []int64{-7}), // scalar
			"empty": F32([]int{0, 4}, nil),     // empty
			"ids":   I64([]int{2}, []int64{math.MaxInt64, math.MinInt64}),
		},
		Metadata: map[string]string{"format": "pt", "epoch": "3", "note": `quotes " and \ and ünïcode`},
	}
}

// sameFile compares tensors and metadata, treating nil and empty as equal
// (shapes [] and nil both mean a scalar; nil and empty data both mean none).
func sameFile(t *testing.T, got, want *File) {
	t.Helper()
	if !slices.Equal(got.Names(), want.Names()) {
		t.Fatalf("names = %v, want %v", got.Names(), want.Names())
	}
	for name, w := range want.Tensors {
		g := got.Tensors[name]
		if g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("tensor %q = %s%v (%d bytes), want %s%v (%d bytes)",
				name, g.DType, g.Shape, len(g.Data), w.DType, w.Shape, len(w.Data))
		}
	}
	if !maps.Equal(got.Metadata, want.Metadata) {
		t.Errorf("metadata = %v, want %v", got.Metadata, want.Metadata)
	}
}

func TestRoundTrip(t *testing.T) {
	f := sample()
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if (8+n)%8 != 0 {
		t.Errorf("data buffer starts at %d, not 8-byte aligned", 8+n)
	}
	g, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, g, f)

	again, err := Encode(g)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Error("Encode is not deterministic across a round trip")
	}

	// Same values back through the helpers.
	w, shape, err := g.Float32("w")
	if err != nil || !slices.Equal(shape, []int{2, 3}) ||
		!slices.Equal(w, []float32{1, -2, 3.5, float32(math.Inf(1)), 0, -0.25}) {
		t.Errorf("Float32(w) = %v %v %v", w, shape, err)
	}
	d, _, err := g.Float64("d")
	if err != nil || !slices.Equal(d, []float64{math.Pi, -1e300, 5e-324}) {
		t.Errorf("Float64(d) = %v %v", d, err)
	}
	s, shape, err := g.Int64("steps")
	if err != nil || len(shape) != 0 || !slices.Equal(s, []int64{-7}) {
		t.Errorf("Int64(steps) = %v %v %v", s, shape, err)
	}
	ids, _, err := g.Int64("ids")
	if err != nil || !slices.Equal(ids, []int64{math.MaxInt64, math.MinInt64}) {
		t.Errorf("Int64(ids) = %v %v", ids, err)
	}
	e, shape, err := g.Float32("empty")
	if err != nil || len(e) != 0 || !slices.Equal(shape, []int{0, 4}) {
		t.Errorf("Float32(empty) = %v %v %v", e, shape, err)
	}
	if sf, _, err := g.Float32("steps"); err != nil || !slices.Equal(sf, []float32{-7}) {
		t.Errorf("Float32(steps) = %v %v", sf, err)
	}

	// Errors name the tensor.
	if _, _, err := g.Float32("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor: err = %v", err)
	}
	if _, _, err := g.Int64("w"); err == nil || !strings.Contains(err.Error(), `"w"`) {
		t.Errorf("Int64 of F32: err = %v", err)
	}
}

func TestDecodeCopies(t *testing.T) {
	b, _ := Encode(sample())
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(f.Tensors["w"].Data)
	clear(b)
	if !bytes.Equal(f.Tensors["w"].Data, want) {
		t.Error("Decode's tensors alias the input buffer")
	}
}

func TestNoMetadata(t *testing.T) {
	f := &File{Tensors: map[string]Tensor{"x": F32([]int{1}, []float32{2})}}
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(metaKey)) {
		t.Error("empty metadata was written")
	}
	g, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, g, f)
}

func TestHalfFloats(t *testing.T) {
	le := binary.LittleEndian
	f16 := []uint16{0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0x8000, 0x3555}
	want16 := []float32{1, -2, 1.0 / (1 << 24), 65504, float32(math.Inf(1)), float32(math.Copysign(0, -1)), 0.33325195}
	bf16 := []uint16{0x3f80, 0xc040, 0x7f80}
	wantbf := []float32{1, -3, float32(math.Inf(1))}
	enc := func(v []uint16) []byte {
		b := make([]byte, 2*len(v))
		for i, x := range v {
			le.PutUint16(b[2*i:], x)
		}
		return b
	}
	f := &File{Tensors: map[string]Tensor{
		"h":   {DType: "F16", Shape: []int{len(f16)}, Data: enc(f16)},
		"b":   {DType: "BF16", Shape: []int{len(bf16)}, Data: enc(bf16)},
		"nan": {DType: "F16", Shape: []int{}, Data: enc([]uint16{0x7e00})},
	}}
	got, _, err := f.Float32("h")
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want16[i]) {
			t.Errorf("F16 %#04x = %v, want %v", f16[i], got[i], want16[i])
		}
	}
	if got, _, _ := f.Float32("b"); !slices.Equal(got, wantbf) {
		t.Errorf("BF16 = %v, want %v", got, wantbf)
	}
	if got, _, _ := f.Float64("nan"); !math.IsNaN(got[0]) {
		t.Errorf("F16 NaN = %v", got[0])
	}
}

// raw builds a file from a literal header and data buffer, unpadded.
func raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestDecodeErrors(t *testing.T) {
	huge := binary.LittleEndian.AppendUint64(nil, 200_000_000)
	huge = append(huge, "{}"...)
	long := binary.LittleEndian.AppendUint64(nil, 100)
	long = append(long, "{}"...)
	d8 := make([]byte, 8)
	for _, c := range []struct {
		name, want string
		b          []byte
	}{
		{"short file", "shorter than", []byte{1, 2, 3}},
		{"absurd header length", "over the", huge},
		{"header past end", "larger than", long},
		{"empty header", "not a JSON object", raw("", nil)},
		{"invalid JSON", "invalid JSON", raw(`{"a":{"dtype":"F32",}`, nil)},
		{"not an object", "not a JSON object", raw(`[1]`, nil)},
		{"truncated object", "invalid JSON", raw(`{"a":{}`, nil)},
		{"trailing garbage", "trailing", raw(`{} x`, nil)},
		{"unknown dtype", `tensor "a": unknown dtype "F31"`, raw(`{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}`, d8)},
		{"missing field", `tensor "a": needs`, raw(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, d8)},
		{"entry not object", `tensor "a"`, raw(`{"a":3}`, d8)},
		{"negative dim", `tensor "a": negative dimension`, raw(`{"a":{"dtype":"F32","shape":[-2,-1],"data_offsets":[0,8]}}`, d8)},
		{"fractional dim", `tensor "a"`, raw(`{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}`, d8)},
		{"shape overflow", `tensor "a": shape`, raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, d8)},
		{"byte size overflow", `tensor "a": shape`, raw(`{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}`, d8)},
		{"one offset", `tensor "a": data_offsets [0] is not`, raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, d8)},
		{"end before begin", `tensor "a": data_offsets [8, 0] are not a range`, raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, d8)},
		{"negative offset", `tensor "a"`, raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[-1,-1]}}`, d8)},
		{"past buffer", `file is truncated: 71 bytes, where its header places tensor data up to byte 79 (8 bytes missing)`, raw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, d8)},
		{"size mismatch", `tensor "a": data_offsets [0, 8] hold 8 bytes`, raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, d8)},
		{"scalar size", `tensor "a"`, raw(`{"a":{"dtype":"F32","shape":[],"data_offsets":[0,8]}}`, d8)},
		{"overlap", "overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8)},
		{"gap", "gap", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, d8)},
		{"leading gap", `tensor "a": data_offsets [4, 8] leave a gap`, raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8)},
		{"uncovered tail", "cover 4 bytes of the 8", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, d8)},
		{"duplicate name", `tensor "a": named twice`, raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"\u0061":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, d8)},
		{"metadata not object", metaKey, raw(`{"__metadata__":[1]}`, nil)},
		{"metadata non-string", metaKey, raw(`{"__metadata__":{"a":1}}`, nil)},
		{"metadata twice", metaKey, raw(`{"__metadata__":{},"__metadata__":{}}`, nil)},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := Decode(c.b)
			if err == nil {
				t.Fatalf("no error; got %d tensors", len(f.Tensors))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty file", raw(`{}`, nil)},
		{"padded header", raw(`{}      `, nil)},
		{"null metadata", raw(`{"__metadata__":null}`, nil)},
		{"zero dim beside huge", raw(`{"a":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}`, nil)},
		{"empty tensor inside", raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, make([]byte, 8))},
		{"out of order offsets", raw(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, make([]byte, 8))},
		{"unknown entry field", raw(`{"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1],"x":1}}`, make([]byte, 1))},
	} {
		_, err := Decode(c.b)
		if c.name == "zero dim beside huge" && strconv.IntSize == 32 {
			// A []int cannot hold the shape: refused, and said why.
			if err == nil || !strings.Contains(err.Error(), "beyond this build's 32-bit int") {
				t.Errorf("%s on a 32-bit build: %v", c.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	for name, f := range map[string]*File{
		"short data":    {Tensors: map[string]Tensor{"x": F32([]int{3}, []float32{1, 2})}},
		"unknown dtype": {Tensors: map[string]Tensor{"x": {DType: "Q4", Shape: []int{1}, Data: []byte{1}}}},
		"negative dim":  {Tensors: map[string]Tensor{"x": {DType: "U8", Shape: []int{-1}}}},
		"reserved name": {Tensors: map[string]Tensor{metaKey: F32([]int{1}, []float32{1})}},
	} {
		if _, err := Encode(f); err == nil {
			t.Errorf("%s: Encode succeeded", name)
		}
	}
}

func fixturePath(t *testing.T) string {
	dir := os.Getenv("VGG16_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "fixtures")
	}
	path := filepath.Join(dir, "vgg-small-32", "init.safetensors")
	if _, err := os.Stat(path); err != nil {
		fixtures.Missing(t, "PyTorch fixture %s not found (set VGG16_FIXTURES to the fixtures dir): %v", path, err)
	}
	return path
}

func TestPyTorchFixture(t *testing.T) {
	path := fixturePath(t)
	f, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		dtype DType
		shape []int
	}{
		{"features.0.weight", "F32", []int{8, 3, 3, 3}},
		{"features.1.num_batches_tracked", "I64", []int{}},
		{"classifier.6.weight", "F32", []int{10, 128}},
	} {
		tn, ok := f.Tensors[c.name]
		if !ok {
			t.Errorf("%s missing", c.name)
			continue
		}
		if tn.DType != c.dtype || !slices.Equal(tn.Shape, c.shape) {
			t.Errorf("%s = %s%v, want %s%v", c.name, tn.DType, tn.Shape, c.dtype, c.shape)
		}
	}
	w, _, err := f.Float32("features.0.weight")
	if err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for _, v := range w {
		if math.IsNaN(float64(v)) || math.Abs(float64(v)) > 10 {
			t.Fatalf("implausible initial weight %v", v)
		}
		if v != 0 {
			nonzero++
		}
	}
	if nonzero < len(w)/2 {
		t.Errorf("only %d of %d weights are nonzero", nonzero, len(w))
	}
	if n, _, err := f.Int64("features.1.num_batches_tracked"); err != nil || len(n) != 1 {
		t.Errorf("num_batches_tracked = %v %v", n, err)
	}

	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, g, f)
}

// TestTruncatedFile: a file cut short says so, with how much is missing,
// the same whichever of its tensors the header's map yields first.
func TestTruncatedFile(t *testing.T) {
	b, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "last.safetensors")
	if err := os.WriteFile(path, b[:len(b)-5], 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s: file is truncated: %d bytes, where its header places tensor data up to byte %d (5 bytes missing)", path, len(b)-5, len(b))
	for range 10 {
		if _, err := Read(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want %q", err, want)
		}
	}
}

func TestReadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(path, []byte{1, 2}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want it to name %s", err, path)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want ErrNotExist", err)
	}
}

// TestReadMetadata: the header alone gives the metadata Read gives, even
// where the tensors' bytes are cut short (they are not read); a header cut
// short, or longer than the file, is an error naming the file.
func TestReadMetadata(t *testing.T) {
	b, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.safetensors")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	md, err := ReadMetadata(path)
	if err != nil || len(md) == 0 || !maps.Equal(md, f.Metadata) {
		t.Errorf("ReadMetadata = %v, %v; Read's %v", md, err, f.Metadata)
	}
	n := 8 + int(binary.LittleEndian.Uint64(b))
	cut := filepath.Join(dir, "cut.safetensors")
	if err := os.WriteFile(cut, b[:n+1], 0o644); err != nil { // the header and one byte of data
		t.Fatal(err)
	}
	if md, err := ReadMetadata(cut); err != nil || !maps.Equal(md, f.Metadata) {
		t.Errorf("tensors cut short: %v, %v", md, err)
	}
	for _, size := range []int{4, n - 1} {
		if err := os.WriteFile(cut, b[:size], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadMetadata(cut); err == nil || !strings.Contains(err.Error(), cut) {
			t.Errorf("a file of %d bytes: %v, want an error naming it", size, err)
		}
	}
}

// failAfter passes n bytes through, then fails.
type failAfter struct {
	w io.Writer
	n int
}

var errInjected = errors.New("injected write failure")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k, _ := f.w.Write(p[:f.n])
		f.n = 0
		return k, errInjected
	}
	f.n -= len(p)
	return f.w.Write(p)
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.safetensors")
	old := sample()
	if err := Write(path, old); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", fi.Mode().Perm())
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, got, old)

	// A bigger replacement whose write dies halfway through.
	next := &File{Tensors: map[string]Tensor{"big": F32([]int{1000}, make([]float32, 1000))}}
	wrapWriter = func(w io.Writer) io.Writer { return &failAfter{w: w, n: 2000} }
	err = Write(path, next)
	wrapWriter = func(w io.Writer) io.Writer { return w }
	if !errors.Is(err, errInjected) {
		t.Fatalf("Write err = %v, want the injected failure", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, before) {
		t.Error("failed Write changed the existing file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "a.safetensors" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only a.safetensors", names)
	}

	// An invalid File fails before anything is created.
	bad := &File{Tensors: map[string]Tensor{"x": {DType: "F32", Shape: []int{2}}}}
	if err := Write(filepath.Join(dir, "b.safetensors"), bad); err == nil {
		t.Error("Write of an invalid File succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("invalid Write left %d entries", len(entries))
	}

	// And a good Write replaces the file.
	if err := Write(path, next); err != nil {
		t.Fatal(err)
	}
	got, err = Read(path)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, got, next)
}

func TestWriteMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "x.safetensors")
	if err := Write(path, sample()); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want an error naming %s", err, path)
	}
}

// TestByteOrder pins the format's little-endian bytes, written by hand
// (1.0f is 0x3f800000, −2.0f 0xc0000000; 1.0 as F64 0x3ff0000000000000,
// as BF16 0x3f80), against the writers and the reader: a round trip alone
// would pass with both sides big-endian.
func TestByteOrder(t *testing.T) {
	for name, f32 := range map[string]func([]int, []float32) Tensor{"F32": F32, "f32Copy": f32Copy} {
		if got := f32([]int{2}, []float32{1, -2}).Data; !bytes.Equal(got, []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0}) {
			t.Errorf("%s(1, -2) bytes % x", name, got)
		}
	}
	if got := I64(nil, []int64{258}).Data; !bytes.Equal(got, []byte{2, 1, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("I64(258) bytes % x", got)
	}
	f := &File{Tensors: map[string]Tensor{
		"f64":  {DType: "F64", Shape: []int{1}, Data: []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
		"bf16": {DType: "BF16", Shape: []int{1}, Data: []byte{0x80, 0x3f}},
		"f32":  {DType: "F32", Shape: []int{1}, Data: []byte{0, 0, 0, 0xc0}},
	}}
	for name, want := range map[string]float32{"f64": 1, "bf16": 1, "f32": -2} {
		if v, _, err := f.Float32(name); err != nil || len(v) != 1 || v[0] != want {
			t.Errorf("%s read as %v (%v), want %v", name, v, err, want)
		}
	}
}
