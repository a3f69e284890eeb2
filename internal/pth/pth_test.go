package pth

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFixtureMatchesSafetensors checks every tensor of the PyTorch-written
// init.pth bit for bit against the same tensors saved as safetensors.
func TestFixtureMatchesSafetensors(t *testing.T) {
	dir := filepath.Join(fixtureDir(t), "vgg-small-32")
	got, err := Read(filepath.Join(dir, "init.pth"))
	if err != nil {
		t.Fatal(err)
	}
	want := readSafetensors(t, filepath.Join(dir, "init.safetensors"))
	if len(got) != len(want) {
		t.Errorf("got %d tensors, safetensors has %d", len(got), len(want))
	}
	var floats, ints int
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		if !slices.Equal(g.Shape, w.shape) && !(len(g.Shape) == 0 && len(w.shape) == 0) {
			t.Errorf("%s: shape %v, want %v", name, g.Shape, w.shape)
			continue
		}
		switch w.dtype {
		case "F32":
			floats++
			if g.DType != "float32" || g.I64 != nil || len(g.F32)*4 != len(w.data) {
				t.Errorf("%s: dtype %s with %d floats, want float32 with %d", name, g.DType, len(g.F32), len(w.data)/4)
				continue
			}
			for i, v := range g.F32 {
				if math.Float32bits(v) != binary.LittleEndian.Uint32(w.data[4*i:]) {
					t.Errorf("%s[%d] = %v, want %v", name, i, v, math.Float32frombits(binary.LittleEndian.Uint32(w.data[4*i:])))
					break
				}
			}
		case "I64":
			ints++
			if g.DType != "int64" || g.F32 != nil || len(g.I64)*8 != len(w.data) {
				t.Errorf("%s: dtype %s with %d ints, want int64 with %d", name, g.DType, len(g.I64), len(w.data)/8)
				continue
			}
			for i, v := range g.I64 {
				if uint64(v) != binary.LittleEndian.Uint64(w.data[8*i:]) {
					t.Errorf("%s[%d] = %d, want %d", name, i, v, binary.LittleEndian.Uint64(w.data[8*i:]))
					break
				}
			}
		default:
			t.Fatalf("%s: fixture dtype %s not handled by the test", name, w.dtype)
		}
	}
	if floats == 0 || ints == 0 {
		t.Errorf("fixture compared %d float and %d int tensors; expected both kinds", floats, ints)
	}
	// Spot-check a layout detail: conv weights are OIHW.
	if s := got["features.0.weight"].Shape; !slices.Equal(s, []int{8, 3, 3, 3}) {
		t.Errorf("features.0.weight shape %v", s)
	}
}

// legacySpecs is a small state dict exercising views: a storage shared by a
// contiguous and a transposed tensor, a storage offset, a legacy storage
// view, a scalar int64, and a non-contiguous float16 tensor.
var legacySpecs = []tensorSpec{
	{name: "a.weight", storage: "FloatStorage", key: "100", numel: 6, size: []int64{2, 3}, stride: []int64{3, 1}},
	{name: "a.weight_t", storage: "FloatStorage", key: "100", numel: 6, size: []int64{3, 2}, stride: []int64{1, 3}},
	{name: "a.bias", storage: "FloatStorage", key: "200", numel: 5, offset: 2, size: []int64{3}, stride: []int64{1}},
	{name: "bn.num_batches_tracked", storage: "LongStorage", key: "300", numel: 1, size: []int64{}, stride: []int64{}},
	{name: "v", storage: "FloatStorage", key: "400", numel: 8, view: []any{"401", int64(2), int64(5)}, offset: 1, size: []int64{2}, stride: []int64{2}},
	{name: "h", storage: "HalfStorage", key: "500", numel: 4, size: []int64{2, 2}, stride: []int64{1, 2}},
}

func legacyStorages() (map[string][]byte, map[string]int) {
	half := binary.LittleEndian.AppendUint16(nil, 0x3c00) // 1.0
	half = binary.LittleEndian.AppendUint16(half, 0xc100) // -2.5
	half = binary.LittleEndian.AppendUint16(half, 0x7bff) // 65504
	half = binary.LittleEndian.AppendUint16(half, 0x0001) // 2^-24, subnormal
	return map[string][]byte{
			"100": f32bytes(0, 1, 2, 3, 4, 5),
			"200": f32bytes(10, 11, 12, 13, 14),
			"300": i64bytes(7),
			"400": f32bytes(20, 21, 22, 23, 24, 25, 26, 27),
			"500": half,
		}, map[string]int{
			"100": 4, "200": 4, "300": 8, "400": 4, "500": 2,
		}
}

func legacyBytes() []byte {
	st, es := legacyStorages()
	return legacyFile(stateDictPickle(legacySpecs, true), st, es)
}

func checkLegacyValues(t *testing.T, got map[string]Tensor) {
	t.Helper()
	wantF := map[string]struct {
		shape []int
		vals  []float32
		dtype string
	}{
		"a.weight":   {[]int{2, 3}, []float32{0, 1, 2, 3, 4, 5}, "float32"},
		"a.weight_t": {[]int{3, 2}, []float32{0, 3, 1, 4, 2, 5}, "float32"},
		"a.bias":     {[]int{3}, []float32{12, 13, 14}, "float32"},
		"v":          {[]int{2}, []float32{23, 25}, "float32"},
		"h":          {[]int{2, 2}, []float32{1, 65504, -2.5, float32(math.Ldexp(1, -24))}, "float16"},
	}
	if len(got) != len(wantF)+1 {
		t.Errorf("got %d tensors, want %d", len(got), len(wantF)+1)
	}
	for name, w := range wantF {
		g := got[name]
		if !slices.Equal(g.Shape, w.shape) || !slices.Equal(g.F32, w.vals) || g.DType != w.dtype || g.I64 != nil {
			t.Errorf("%s = %+v, want shape %v values %v dtype %s", name, g, w.shape, w.vals, w.dtype)
		}
	}
	n := got["bn.num_batches_tracked"]
	if len(n.Shape) != 0 || !slices.Equal(n.I64, []int64{7}) || n.DType != "int64" || n.F32 != nil {
		t.Errorf("bn.num_batches_tracked = %+v, want scalar int64 7", n)
	}
}

func TestLegacyFormat(t *testing.T) {
	b := legacyBytes()
	if p := os.Getenv("PTH_WRITE_LEGACY"); p != "" {
		// For checking the helper against Python's own unpickler.
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Decode(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	checkLegacyValues(t, got)

	// Read goes through a real file and must agree.
	path := filepath.Join(t.TempDir(), "legacy.pth")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = Read(path)
	if err != nil {
		t.Fatal(err)
	}
	checkLegacyValues(t, got)
}

// TestZipSynthetic covers dtypes and layouts the fixture lacks, in the zip
// format: the same state dict as the legacy test (without the legacy-only
// view), plus bfloat16, float64, int32, uint8 and bool storages.
func TestZipSynthetic(t *testing.T) {
	var specs []tensorSpec
	for _, s := range legacySpecs {
		if s.view == nil {
			specs = append(specs, s)
		}
	}
	specs = append(specs,
		tensorSpec{name: "bf", storage: "BFloat16Storage", key: "b", numel: 2, size: []int64{2}, stride: []int64{1}},
		tensorSpec{name: "d", storage: "DoubleStorage", key: "d", numel: 2, size: []int64{1, 2}, stride: []int64{2, 1}},
		tensorSpec{name: "i", storage: "IntStorage", key: "i", numel: 2, size: []int64{2}, stride: []int64{1}},
		tensorSpec{name: "u", storage: "ByteStorage", key: "u", numel: 3, size: []int64{3}, stride: []int64{1}},
		tensorSpec{name: "m", storage: "BoolStorage", key: "m", numel: 2, size: []int64{2}, stride: []int64{1}},
		tensorSpec{name: "s", storage: "ShortStorage", key: "s", numel: 2, size: []int64{2}, stride: []int64{1}},
		tensorSpec{name: "c", storage: "CharStorage", key: "c", numel: 2, size: []int64{2}, stride: []int64{1}},
		// Empty tensors: torch does not bound-check their offset.
		tensorSpec{name: "e", storage: "FloatStorage", key: "100", numel: 6, offset: 1000, size: []int64{0, 3}, stride: []int64{3, 1}},
	)
	st, _ := legacyStorages()
	st["b"] = binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 0x3f80), 0xc040) // 1, -3
	st["d"] = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.5)), math.Float64bits(-1e10))
	st["i"] = binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 5), uint32(0xfffffffe)) // 5, -2
	st["u"] = []byte{0, 200, 255}
	st["m"] = []byte{1, 0}
	st["s"] = binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 7), 0xfffd) // 7, -3
	st["c"] = []byte{0x80, 5}                                                                    // -128, 5
	b := zipFile(t, stateDictPickle(specs, false), st, nil)
	got, err := Decode(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		dtype string
		f     []float32
		i     []int64
	}{
		{"a.weight_t", "float32", []float32{0, 3, 1, 4, 2, 5}, nil},
		{"a.bias", "float32", []float32{12, 13, 14}, nil},
		{"h", "float16", []float32{1, 65504, -2.5, float32(math.Ldexp(1, -24))}, nil},
		{"bf", "bfloat16", []float32{1, -3}, nil},
		{"d", "float64", []float32{0.5, -1e10}, nil},
		{"i", "int32", nil, []int64{5, -2}},
		{"u", "uint8", nil, []int64{0, 200, 255}},
		{"m", "bool", nil, []int64{1, 0}},
		{"s", "int16", nil, []int64{7, -3}},
		{"c", "int8", nil, []int64{-128, 5}},
		{"bn.num_batches_tracked", "int64", nil, []int64{7}},
	} {
		g, ok := got[c.name]
		if !ok || g.DType != c.dtype || !slices.Equal(g.F32, c.f) || !slices.Equal(g.I64, c.i) {
			t.Errorf("%s = %+v, want %s %v %v", c.name, g, c.dtype, c.f, c.i)
		}
	}
	if e, ok := got["e"]; !ok || !slices.Equal(e.Shape, []int{0, 3}) || len(e.F32) != 0 || e.DType != "float32" {
		t.Errorf("empty tensor e = %+v", e)
	}
	if s := got["d"].Shape; !slices.Equal(s, []int{1, 2}) {
		t.Errorf("d shape %v", s)
	}

	// The same archive written by a big-endian machine.
	be := map[string][]byte{}
	sizes := map[string]int{"100": 4, "200": 4, "300": 8, "400": 4, "500": 2, "b": 2, "d": 8, "i": 4, "u": 1, "m": 1, "s": 2, "c": 1}
	for k, v := range st {
		c := slices.Clone(v)
		swapBytes(c, sizes[k])
		be[k] = c
	}
	b = zipFile(t, stateDictPickle(specs, false), be, map[string]string{"byteorder": "big"})
	got2, err := Decode(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for name, g := range got {
		if g2 := got2[name]; !slices.Equal(g.F32, g2.F32) || !slices.Equal(g.I64, g2.I64) {
			t.Errorf("%s: big-endian archive gave %+v, little-endian %+v", name, g2, g)
		}
	}
}

// TestNestedCheckpoint reads {"epoch": 3, "state_dict": {...}}.
func TestNestedCheckpoint(t *testing.T) {
	inner := stateDictPickle(legacySpecs[:1], false)
	// Splice the OrderedDict pickle (without PROTO and STOP) into a dict.
	var p pickler
	p.proto().op(opEmptyDict, opMark).str("epoch").int(3).str("state_dict")
	p.Write(inner[2 : len(inner)-1])
	p.op(opSetItems).stop()
	st, _ := legacyStorages()
	b := zipFile(t, p.Bytes(), map[string][]byte{"100": st["100"]}, nil)
	got, err := Decode(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !slices.Equal(got["a.weight"].F32, []float32{0, 1, 2, 3, 4, 5}) {
		t.Errorf("got %+v", got)
	}

	// Without a state_dict/model entry it is not a state dict.
	p.Reset()
	p.proto().op(opEmptyDict).str("epoch").int(3).op(opSetItem).stop()
	b = zipFile(t, p.Bytes(), nil, nil)
	if _, err := Decode(bytes.NewReader(b), int64(len(b))); err == nil || !strings.Contains(err.Error(), `"epoch"`) {
		t.Errorf("plain dict without tensors: err = %v", err)
	}
}

func TestCorruptInputs(t *testing.T) {
	st, _ := legacyStorages()
	good := zipFile(t, stateDictPickle(legacySpecs[:3], false), st, nil)
	if _, err := Decode(bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatalf("baseline archive: %v", err)
	}
	var evil pickler
	evil.proto().global("os", "system").str("echo pwned").op(opTuple1, opReduce).stop()

	small := slices.Clone(legacySpecs[:1])
	small[0].size = []int64{3, 3} // 9 elements from a 6-element storage

	badStride := slices.Clone(legacySpecs[:1])
	badStride[0].stride = []int64{1, 3} // (2,3) with stride (1,3) reaches element 7

	onePast := slices.Clone(legacySpecs[:1])
	onePast[0].offset = 1 // (2,3) from offset 1 ends at element 6 of 6

	badView := slices.Clone(legacySpecs[4:5])
	badView[0].view = []any{"401", int64(4), int64(5)} // 4+5 > 8 elements

	// Two tensors of 2^24 elements from one element each: each within the
	// bound on a tensor's broadcast, the two beyond the bound on them all;
	// a storage that claims more elements than its record holds (read
	// last, after the others are built) does not raise that bound.
	spread := []tensorSpec{legacySpecs[0], legacySpecs[0]}
	spread[1].name = "b.weight"
	for i := range spread {
		spread[i].size, spread[i].stride = []int64{1 << 24}, []int64{0}
	}
	claims := append(slices.Clone(spread[:1]), tensorSpec{name: "zzz.weight", storage: "FloatStorage", key: "999", numel: 1 << 40, size: []int64{1}, stride: []int64{1}})
	claimsStorages := map[string][]byte{"100": st["100"], "999": f32bytes(1)}

	// One storage of 10,000 floats viewed whole under three names: more
	// than twice the file (two names are torch.save({'a': t, 'b': t})).
	alias := func(names ...string) []byte {
		var specs []tensorSpec
		for _, n := range names {
			specs = append(specs, tensorSpec{name: n, storage: "FloatStorage", key: "big", numel: 10000, size: []int64{10000}, stride: []int64{1}})
		}
		return zipFile(t, stateDictPickle(specs, false), map[string][]byte{"big": f32bytes(make([]float32, 10000)...)}, nil)
	}
	two := alias("a", "b")
	if got, err := Decode(bytes.NewReader(two), int64(len(two))); err != nil || len(got) != 2 {
		t.Errorf("one storage under two names: %v", err)
	}

	st2, es2 := legacyStorages()
	legacy := legacyBytes()
	cases := []struct {
		name string
		data []byte
		want string // substring of the error
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte("this is not a pytorch file at all"), "not a PyTorch file"},
		{"truncated zip", good[:len(good)/2], "zip"},
		{"missing data file", zipFile(t, stateDictPickle(legacySpecs[:3], false), map[string][]byte{"100": st["100"]}, nil), "archive/data/200"},
		{"storage too small for size", zipFile(t, stateDictPickle(small, false), st, nil), `"a.weight"`},
		{"storage too small for stride", zipFile(t, stateDictPickle(badStride, false), st, nil), "needs element 7"},
		{"offset one past the end", zipFile(t, stateDictPickle(onePast, false), st, nil), "needs element 6"},
		{"broadcasts beyond the total", zipFile(t, stateDictPickle(spread, false), st, nil), "the tensors hold more than"},
		{"one storage under three names", alias("a", "b", "c"), "the tensors view more than twice the file's"},
		{"a claimed storage size", zipFile(t, stateDictPickle(append(claims, spread[1]), false), claimsStorages, nil), "the tensors hold more than"},
		{"legacy view outside storage", legacyFile(stateDictPickle(badView, true), map[string][]byte{"400": st2["400"]}, es2), "outside the 8-element storage"},
		{"legacy unused storage key", legacyFile(stateDictPickle(legacySpecs[:1], true), map[string][]byte{"100": st2["100"], "999": st2["100"]}, map[string]int{"100": 4, "999": 4}), `"999" is listed`},
		{"record shorter than storage", zipFile(t, stateDictPickle(legacySpecs[:1], false), map[string][]byte{"100": st["100"][:20]}, nil), "has 20 bytes"},
		{"unknown global os.system", zipFile(t, evil.Bytes(), nil, nil), "os.system"},
		{"unknown global in legacy", legacyFile(evil.Bytes(), nil, nil), "os.system"},
		{"truncated legacy", legacy[:len(legacy)-3], "file ends inside"},
		{"truncated legacy pickle", legacy[:200], "unexpected end"},
		{"bad magic", append([]byte{opProto, 2, opBinInt1, 1, opStop}, legacy[5:]...), "magic number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(bytes.NewReader(c.data), int64(len(c.data)))
			if err == nil {
				t.Fatalf("no error; got %d tensors", len(got))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "pth: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}

	// Read names the file.
	path := filepath.Join(t.TempDir(), "evil.pth")
	if err := os.WriteFile(path, zipFile(t, evil.Bytes(), nil, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "os.system") {
		t.Errorf("Read error %v should name %s and os.system", err, path)
	}
}

// TestFixtureTruncations cuts the real archive at many points: every cut
// must give an error, never a panic or a partial result.
func TestFixtureTruncations(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), "vgg-small-32", "init.pth"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 4, 100, len(b) / 3, len(b) / 2, len(b) - 100, len(b) - 1} {
		if _, err := Decode(bytes.NewReader(b[:n]), int64(n)); err == nil {
			t.Errorf("archive cut to %d of %d bytes decoded without error", n, len(b))
		}
	}
	// Flip a byte inside a storage record: the zip CRC must catch it.
	c := slices.Clone(b)
	i := bytes.Index(c, []byte("init/data/0"))
	if i < 0 {
		t.Fatal("record init/data/0 not found")
	}
	c[i+len("init/data/0")+100] ^= 0xff // well inside the record's data (header extra field is short)
	if _, err := Decode(bytes.NewReader(c), int64(len(c))); err == nil {
		t.Error("corrupted record decoded without error")
	}
}

func TestHalfToFloat(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float32
	}{
		{0x0000, 0}, {0x3c00, 1}, {0xbc00, -1}, {0x3555, 0.333251953125}, {0x7bff, 65504},
		{0x0400, float32(math.Ldexp(1, -14))}, {0x03ff, float32(math.Ldexp(1023, -24))},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	} {
		if got := halfToFloat(c.h); got != c.want {
			t.Errorf("halfToFloat(%#04x) = %v, want %v", c.h, got, c.want)
		}
	}
	if got := halfToFloat(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("halfToFloat(NaN) = %v", got)
	}
	if got := halfToFloat(0x8000); math.Float32bits(got) != 0x80000000 {
		t.Errorf("halfToFloat(-0) = %v", got)
	}
}
