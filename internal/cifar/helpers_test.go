package cifar

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// synth makes n images with random pixels whose first 4 bytes encode
// base+i, so that every image can be told apart, and labels (base+i)%10.
func synth(n, base int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 99))
	ds := &Dataset{Images: make([]byte, n*ImageBytes), Labels: make([]uint8, n), Classes: ClassNames}
	for i := range ds.Images {
		ds.Images[i] = byte(rng.Uint32())
	}
	for i := range n {
		binary.LittleEndian.PutUint32(ds.Images[i*ImageBytes:], uint32(base+i))
		ds.Labels[i] = uint8((base + i) % NumClasses)
	}
	return ds
}

// imageID reads back the identity synth wrote into an image.
func imageID(img []byte) int { return int(binary.LittleEndian.Uint32(img)) }

// binBytes encodes ds in the binary version's record format.
func binBytes(ds *Dataset) []byte {
	var b bytes.Buffer
	for i := range ds.Len() {
		b.WriteByte(ds.Labels[i])
		b.Write(ds.Image(i))
	}
	return b.Bytes()
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pickler writes pickles the way the real CIFAR-10 python files were
// written: Python 2 cPickle, protocol 2 (py3 mode: Python 3, protocol 4).
type pickler struct {
	b    bytes.Buffer
	py3  bool
	memo int
	seen map[string]int // strings already memoized, reused through BINGET
}

func newPickler(py3 bool) *pickler {
	p := &pickler{py3: py3, seen: map[string]int{}}
	if py3 {
		p.b.WriteString("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00") // FRAME, length patched in bytes()
	} else {
		p.b.WriteString("\x80\x02")
	}
	return p
}

// put memoizes the object just written: BINPUT/LONG_BINPUT as cPickle does
// (ids from 1), MEMOIZE in protocol 4.
func (p *pickler) put() int {
	if p.py3 {
		p.b.WriteByte(0x94)
		p.memo++
		return p.memo - 1
	}
	p.memo++
	if p.memo < 256 {
		p.b.WriteByte('q')
		p.b.WriteByte(byte(p.memo))
	} else {
		p.b.WriteByte('r')
		binary.Write(&p.b, binary.LittleEndian, uint32(p.memo))
	}
	return p.memo
}

func (p *pickler) get(id int) {
	if id < 256 {
		p.b.WriteByte('h')
		p.b.WriteByte(byte(id))
	} else {
		p.b.WriteByte('j')
		binary.Write(&p.b, binary.LittleEndian, uint32(id))
	}
}

// text writes a dict key or a name: a Python 2 str (SHORT_BINSTRING or
// BINSTRING) or a Python 3 str (SHORT_BINUNICODE or BINUNICODE). Repeated
// strings come back from the memo.
func (p *pickler) text(s string) {
	if id, ok := p.seen[s]; ok {
		p.get(id)
		return
	}
	switch {
	case p.py3 && len(s) < 256:
		p.b.WriteByte(0x8c)
		p.b.WriteByte(byte(len(s)))
	case p.py3:
		p.b.WriteByte('X')
		binary.Write(&p.b, binary.LittleEndian, uint32(len(s)))
	case len(s) < 256:
		p.b.WriteByte('U')
		p.b.WriteByte(byte(len(s)))
	default:
		p.b.WriteByte('T')
		binary.Write(&p.b, binary.LittleEndian, uint32(len(s)))
	}
	p.b.WriteString(s)
	p.seen[s] = p.put()
}

// raw writes a byte string: a Python 2 str or Python 3 bytes.
func (p *pickler) raw(s []byte) {
	switch {
	case p.py3 && len(s) < 256:
		p.b.WriteByte('C')
		p.b.WriteByte(byte(len(s)))
	case p.py3:
		p.b.WriteByte('B')
		binary.Write(&p.b, binary.LittleEndian, uint32(len(s)))
	case len(s) < 256:
		p.b.WriteByte('U')
		p.b.WriteByte(byte(len(s)))
	default:
		p.b.WriteByte('T')
		binary.Write(&p.b, binary.LittleEndian, uint32(len(s)))
	}
	p.b.Write(s)
}

func (p *pickler) int(v int64) {
	switch {
	case v >= 0 && v < 256:
		p.b.WriteByte('K')
		p.b.WriteByte(byte(v))
	case v >= 0 && v < 65536:
		p.b.WriteByte('M')
		binary.Write(&p.b, binary.LittleEndian, uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.b.WriteByte('J')
		binary.Write(&p.b, binary.LittleEndian, int32(v))
	default: // LONG1, as Python 2 writes a long
		p.b.WriteByte(0x8a)
		var le [8]byte
		binary.LittleEndian.PutUint64(le[:], uint64(v))
		p.b.WriteByte(8)
		p.b.Write(le[:])
	}
}

func (p *pickler) global(mod, name string) {
	if p.py3 {
		p.text(mod)
		p.text(name)
		p.b.WriteByte(0x93) // STACK_GLOBAL
	} else {
		fmt.Fprintf(&p.b, "c%s\n%s\n", mod, name)
	}
	p.put()
}

// list writes a list of items with cPickle's batching: APPENDS per 1,000
// items, a lone APPEND for a batch of one.
func (p *pickler) list(n int, item func(i int)) {
	p.b.WriteByte(']')
	p.put()
	for lo := 0; lo < n; lo += 1000 {
		hi := min(n, lo+1000)
		if hi-lo == 1 {
			item(lo)
			p.b.WriteByte('a')
			continue
		}
		p.b.WriteByte('(')
		for i := lo; i < hi; i++ {
			item(i)
		}
		p.b.WriteByte('e')
	}
}

// ndarray writes a C-order uint8 array the way numpy's __reduce__ pickles
// it: _reconstruct(ndarray, (0,), 'b') then BUILD with
// (1, shape, dtype('u1', 0, 1) + BUILD (3, '|', None, None, None, -1, -1, 0),
// False, raw bytes).
func (p *pickler) ndarray(shape []int, data []byte) {
	p.global("numpy.core.multiarray", "_reconstruct")
	p.global("numpy", "ndarray")
	p.int(0)
	p.b.WriteByte(0x85) // TUPLE1
	p.raw([]byte("b"))
	p.b.WriteByte(0x87) // TUPLE3
	p.b.WriteByte('R')
	p.put()
	p.b.WriteByte('(')
	p.int(1)
	for _, d := range shape {
		p.int(int64(d))
	}
	p.b.WriteByte(0x84 + byte(len(shape))) // TUPLE1..3
	p.global("numpy", "dtype")
	p.text("u1")
	if p.py3 {
		p.b.WriteString("\x89\x88") // False, True
	} else {
		p.int(0)
		p.int(1)
	}
	p.b.WriteByte(0x87)
	p.b.WriteByte('R')
	p.put()
	p.b.WriteByte('(')
	p.int(3)
	p.text("|")
	p.b.WriteString("NNN")
	p.int(-1)
	p.int(-1)
	p.int(0)
	p.b.WriteString("tb") // TUPLE, BUILD
	p.b.WriteByte(0x89)   // NEWFALSE: C order
	p.raw(data)
	p.b.WriteString("tb")
}

// dict writes a dict of the given entries with one SETITEMS (or SETITEM for
// a single entry), as cPickle does below 1,000 entries.
func (p *pickler) dict(keys []string, val func(k string)) {
	p.b.WriteByte('}')
	p.put()
	if len(keys) != 1 {
		p.b.WriteByte('(')
	}
	for _, k := range keys {
		p.text(k)
		val(k)
	}
	if len(keys) == 1 {
		p.b.WriteByte('s')
	} else {
		p.b.WriteByte('u')
	}
}

func (p *pickler) bytes() []byte {
	p.b.WriteByte('.')
	b := p.b.Bytes()
	if p.py3 {
		binary.LittleEndian.PutUint64(b[3:], uint64(len(b)-11))
	}
	return b
}

// batchPickle encodes ds like a cifar-10-batches-py batch file:
// {'data': uint8 array N×3072, 'labels': [...], 'batch_label': ...,
// 'filenames': [...]}.
func batchPickle(ds *Dataset, label string, py3 bool) []byte {
	p := newPickler(py3)
	p.dict([]string{"data", "labels", "batch_label", "filenames"}, func(k string) {
		switch k {
		case "data":
			p.ndarray([]int{ds.Len(), ImageBytes}, ds.Images)
		case "labels":
			p.list(ds.Len(), func(i int) { p.int(int64(ds.Labels[i])) })
		case "batch_label":
			p.text(label)
		case "filenames":
			p.list(ds.Len(), func(i int) { p.text(fmt.Sprintf("image_%06d.png", i%7)) }) // repeats → BINGET
		}
	})
	return p.bytes()
}

// metaPickle encodes batches.meta: {'num_cases_per_batch': n,
// 'label_names': [...], 'num_vis': 3072}.
func metaPickle(names []string, perBatch int, py3 bool) []byte {
	p := newPickler(py3)
	p.dict([]string{"num_cases_per_batch", "label_names", "num_vis"}, func(k string) {
		switch k {
		case "num_cases_per_batch":
			p.int(int64(perBatch))
		case "label_names":
			p.list(len(names), func(i int) { p.text(names[i]) })
		case "num_vis":
			p.int(ImageBytes)
		}
	})
	return p.bytes()
}

// testClasses differ from ClassNames so tests can see that they were read.
var testClasses = []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}

// writeDataset writes a complete dataset of the given format ("bin" or
// "py") into folder, with per records per batch file, and returns the train
// and test sets it wrote.
func writeDataset(t testing.TB, folder, format string, per int) (train, test *Dataset) {
	t.Helper()
	train = &Dataset{Classes: testClasses}
	for k := range 5 {
		d := synth(per, k*per, uint64(k))
		train.Images = append(train.Images, d.Images...)
		train.Labels = append(train.Labels, d.Labels...)
		name := fmt.Sprintf("data_batch_%d", k+1)
		if format == "bin" {
			writeFile(t, filepath.Join(folder, name+".bin"), binBytes(d))
		} else {
			writeFile(t, filepath.Join(folder, name), batchPickle(d, fmt.Sprintf("training batch %d of 5", k+1), false))
		}
	}
	test = synth(per, 1000, 77)
	test.Classes = testClasses
	if format == "bin" {
		writeFile(t, filepath.Join(folder, "test_batch.bin"), binBytes(test))
		writeFile(t, filepath.Join(folder, "batches.meta.txt"), []byte(joinLines(testClasses)+"\n\n"))
	} else {
		writeFile(t, filepath.Join(folder, "test_batch"), batchPickle(test, "testing batch 1 of 1", false))
		writeFile(t, filepath.Join(folder, "batches.meta"), metaPickle(testClasses, per, false))
	}
	return train, test
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(x)
	}
	return b.String()
}

func sameDataset(t testing.TB, got, want *Dataset) {
	t.Helper()
	if got.Len() != want.Len() {
		t.Fatalf("Len = %d, want %d", got.Len(), want.Len())
	}
	if !bytes.Equal(got.Labels, want.Labels) {
		t.Fatalf("labels differ")
	}
	if !bytes.Equal(got.Images, want.Images) {
		t.Fatalf("images differ")
	}
	if fmt.Sprint(got.Classes) != fmt.Sprint(want.Classes) {
		t.Fatalf("classes = %v, want %v", got.Classes, want.Classes)
	}
}
