package pth

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vgg16/vgg16/internal/fixtures"
)

// fixtureDir locates the shared fixtures: $VGG16_FIXTURES, or
// ../../../shared/fixtures from this package.
func fixtureDir(t testing.TB) string {
	dir := os.Getenv("VGG16_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "fixtures")
	}
	if _, err := os.Stat(filepath.Join(dir, "vgg-small-32", "init.pth")); err != nil {
		fixtures.Missing(t, "fixtures not found at %s (set VGG16_FIXTURES): %v", dir, err)
	}
	return dir
}

// stTensor is one tensor of a safetensors file, kept as raw bytes.
type stTensor struct {
	dtype string
	shape []int
	data  []byte
}

// readSafetensors is a deliberately tiny, independent reader: 8-byte
// little-endian header length, JSON header, data buffer.
func readSafetensors(t testing.TB, path string) map[string]stTensor {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 {
		t.Fatalf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		t.Fatalf("%s: header length %d past end", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	data := b[8+n:]
	out := map[string]stTensor{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string   `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: entry %q: %v", path, name, err)
		}
		if e.Offsets[0] < 0 || e.Offsets[0] > e.Offsets[1] || e.Offsets[1] > int64(len(data)) {
			t.Fatalf("%s: entry %q: bad offsets %v", path, name, e.Offsets)
		}
		out[name] = stTensor{e.DType, e.Shape, data[e.Offsets[0]:e.Offsets[1]]}
	}
	return out
}

// pickler writes protocol-2 pickles the way CPython does for the values a
// state dict uses, memoising nothing (memo use is tested with the fixture).
type pickler struct{ bytes.Buffer }

func (p *pickler) op(b ...byte) *pickler { p.Write(b); return p }

func (p *pickler) proto() *pickler { return p.op(opProto, 2) }

func (p *pickler) stop() *pickler { return p.op(opStop) }

func (p *pickler) int(v int64) *pickler {
	switch {
	case v >= 0 && v < 256:
		return p.op(opBinInt1, byte(v))
	case v >= 0 && v < 65536:
		return p.op(opBinInt2, byte(v), byte(v>>8))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.op(opBinInt)
		return p.op(binary.LittleEndian.AppendUint32(nil, uint32(v))...)
	}
	return p.long(big.NewInt(v))
}

// long writes LONG1 with a little-endian two's-complement body.
func (p *pickler) long(z *big.Int) *pickler {
	if z.Sign() < 0 {
		panic("negative longs not needed")
	}
	be := z.Bytes()
	if len(be) > 0 && be[0]&0x80 != 0 {
		be = append([]byte{0}, be...)
	}
	slices.Reverse(be)
	p.op(opLong1, byte(len(be)))
	return p.op(be...)
}

func (p *pickler) str(s string) *pickler {
	p.op(opBinUnicode)
	p.op(binary.LittleEndian.AppendUint32(nil, uint32(len(s)))...)
	p.WriteString(s)
	return p
}

// py2str writes a Python 2 byte string, as old torch on Python 2 did.
func (p *pickler) py2str(s string) *pickler {
	p.op(opShortBinString, byte(len(s)))
	p.WriteString(s)
	return p
}

func (p *pickler) global(mod, name string) *pickler {
	p.op(opGlobal)
	p.WriteString(mod + "\n" + name + "\n")
	return p
}

func (p *pickler) bool(b bool) *pickler {
	if b {
		return p.op(opNewTrue)
	}
	return p.op(opNewFalse)
}

func (p *pickler) ints(v ...int64) *pickler {
	p.op(opMark)
	for _, x := range v {
		p.int(x)
	}
	return p.op(opTuple)
}

// tensorSpec describes one tensor entry of a synthetic state dict.
type tensorSpec struct {
	name    string
	storage string // storage type GLOBAL name, e.g. FloatStorage
	key     string
	numel   int64 // root storage numel
	view    []any // legacy view metadata (key, offset, size) or nil
	offset  int64
	size    []int64
	stride  []int64
}

// stateDictPickle writes the main pickle as torch.save does: an OrderedDict
// of _rebuild_tensor_v2 calls whose storages are BINPERSID ids, with a
// _metadata attribute set through BUILD. legacy selects the 6-field
// persistent id of torch < 1.6.
func stateDictPickle(specs []tensorSpec, legacy bool) []byte {
	var p pickler
	p.proto()
	p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce)
	p.op(opMark)
	for _, s := range specs {
		p.str(s.name)
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.op(opMark)
		// persistent id
		p.op(opMark).str("storage").global("torch", s.storage).str(s.key).str("cpu").int(s.numel)
		if legacy {
			if s.view == nil {
				p.op(opNone)
			} else {
				p.str(s.view[0].(string)).int(s.view[1].(int64)).int(s.view[2].(int64)).op(opTuple3)
			}
		}
		p.op(opTuple, opBinPersID)
		p.int(s.offset).ints(s.size...).ints(s.stride...).bool(false)
		p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce)
		p.op(opTuple, opReduce)
	}
	p.op(opSetItems)
	// state: {'_metadata': OrderedDict([('', {'version': 1})])}
	p.op(opEmptyDict).str("_metadata")
	p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce)
	p.str("").op(opEmptyDict).str("version").int(1).op(opSetItem, opSetItem)
	p.op(opSetItem, opBuild)
	return p.stop().Bytes()
}

// legacyFile produces a torch < 1.6 file: magic, protocol and sys_info
// pickles, the main pickle, the sorted storage keys, then each storage as an
// int64 element count and its raw bytes.
func legacyFile(main []byte, storages map[string][]byte, elemSize map[string]int) []byte {
	var out bytes.Buffer
	var p pickler
	magic, _ := new(big.Int).SetString("1950a86a20f9469cfc6c", 16)
	out.Write(p.proto().long(magic).stop().Bytes())
	p.Reset()
	out.Write(p.proto().int(1001).stop().Bytes())
	p.Reset()
	// sys_info = {'protocol_version': 1001, 'little_endian': True,
	//             'type_sizes': {'short': 2, 'int': 4, 'long': 8}}
	p.proto().op(opEmptyDict, opMark)
	p.py2str("protocol_version").int(1001)
	p.py2str("little_endian").bool(true)
	p.py2str("type_sizes").op(opEmptyDict, opMark).str("short").int(2).str("int").int(4).str("long").int(8).op(opSetItems)
	out.Write(p.op(opSetItems).stop().Bytes())
	out.Write(main)
	keys := make([]string, 0, len(storages))
	for k := range storages {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	p.Reset()
	p.proto().op(opEmptyList, opMark)
	for _, k := range keys {
		p.str(k)
	}
	out.Write(p.op(opAppends).stop().Bytes())
	for _, k := range keys {
		out.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(storages[k])/elemSize[k])))
		out.Write(storages[k])
	}
	return out.Bytes()
}

// zipFile produces a torch >= 1.6 archive under prefix "archive/".
func zipFile(t testing.TB, main []byte, storages map[string][]byte, extra map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	add := func(name string, b []byte) {
		f, err := w.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	add("data.pkl", main)
	if _, ok := extra["byteorder"]; !ok {
		add("byteorder", []byte("little"))
	}
	for k, v := range extra {
		add(k, []byte(v))
	}
	keys := make([]string, 0, len(storages))
	for k := range storages {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add("data/"+k, storages[k])
	}
	add("version", []byte("3\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func f32bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func i64bytes(v ...int64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}
