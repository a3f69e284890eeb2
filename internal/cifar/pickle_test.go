package cifar

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPickleFile(t *testing.T) {
	for _, py3 := range []bool{false, true} {
		name := "py2-cPickle-proto2"
		if py3 {
			name = "py3-proto4-str-keys"
		}
		t.Run(name, func(t *testing.T) {
			// 1,003 records: three APPENDS batches of labels would need more,
			// but 1,003 gives one full batch of 1,000 and one of 3.
			want := synth(1003, 0, 5)
			p := filepath.Join(t.TempDir(), "data_batch_1")
			writeFile(t, p, batchPickle(want, "training batch 1 of 5", py3))
			got, err := ReadPickleFile(p)
			if err != nil {
				t.Fatal(err)
			}
			sameDataset(t, got, want)
		})
	}
}

func TestPickleSingleRecordUsesAppend(t *testing.T) {
	// One label is written with APPEND rather than MARK ... APPENDS.
	want := synth(1, 0, 1)
	b := batchPickle(want, "x", false)
	got, err := parsePickleBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	sameDataset(t, got, want)
}

func TestPickleBigLabelUsesLong1(t *testing.T) {
	// A label written as a Python 2 long (LONG1) is still range-checked.
	p := newPickler(false)
	p.dict([]string{"data", "labels"}, func(k string) {
		if k == "data" {
			p.ndarray([]int{1, ImageBytes}, make([]byte, ImageBytes))
		} else {
			p.list(2, func(i int) { p.int(1 << 40) })
		}
	})
	_, err := parsePickleBatch(p.bytes())
	if err == nil || !strings.Contains(err.Error(), "2 labels for 1 images") {
		t.Fatalf("err = %v", err)
	}
	v, err := decodeLong([]byte{0xff})
	if err != nil || v != -1 {
		t.Fatalf("decodeLong(ff) = %d, %v; want -1", v, err)
	}
	v, _ = decodeLong([]byte{0x00, 0x01})
	if v != 256 {
		t.Fatalf("decodeLong(00 01) = %d, want 256", v)
	}
}

func TestPickleMeta(t *testing.T) {
	for _, py3 := range []bool{false, true} {
		names, err := parseMetaPickle(metaPickle(testClasses, 10000, py3))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(names, ",") != strings.Join(testClasses, ",") {
			t.Fatalf("names = %v", names)
		}
	}
}

// corruptPickles are pickles that must be refused with an error.
func corruptPickles() map[string][]byte {
	good := batchPickle(synth(3, 0, 1), "b", false)
	m := map[string][]byte{
		"empty":          {},
		"only proto":     {0x80, 0x02},
		"no stop":        good[:len(good)-1],
		"unknown opcode": {0x80, 0x02, 'I', '1', '\n', '.'}, // protocol 0 INT
		"os.system":      []byte("\x80\x02cos\nsystem\nq\x00U\x02lsq\x01\x85R."),
		"builtins.eval":  []byte("\x80\x02c__builtin__\neval\nU\x011\x85R."),
		"ndarray call":   []byte("\x80\x02cnumpy\nndarray\nK\x00\x85R."),
		"not a dict":     []byte("\x80\x02]q\x00."),
		"empty dict":     []byte("\x80\x02}q\x00."),
		"underflow":      []byte("\x80\x02a."),
		"bad memo":       []byte("\x80\x02h\x05."),
		"odd setitems":   []byte("\x80\x02}(K\x01u."),
		"huge binstring": []byte("\x80\x02T\xff\xff\xff\x7f."),
		"list key":       []byte("\x80\x02}]K\x01s."),
		"appends to int": []byte("\x80\x02K\x01(K\x02e."),
		"build on int":   []byte("\x80\x02K\x01)b."),
		"protocol 9":     []byte("\x80\x09}."),
	}
	// Every strict prefix of a valid file.
	for _, n := range []int{3, 10, 40, 100, 150, len(good) / 2, len(good) - 40} {
		m[fmt.Sprintf("prefix %d", n)] = good[:n]
	}
	// A label out of range, a dtype other than uint8, Fortran order, a
	// shape that does not match the bytes.
	ds := synth(3, 0, 1)
	ds.Labels[2] = 10
	m["label 10"] = batchPickle(ds, "b", false)
	m["float dtype"] = bytes.Replace(good, []byte("U\x02u1"), []byte("U\x02f4"), 1)
	m["fortran"] = bytes.Replace(good, []byte("tb\x89T"), []byte("tb\x88T"), 1)
	m["shape"] = bytes.Replace(good, []byte("K\x01K\x03M\x00\x0c\x86"), []byte("K\x01K\x04M\x00\x0c\x86"), 1)
	m["no data"] = bytes.Replace(good, []byte("U\x04data"), []byte("U\x04date"), 1)
	return m
}

func TestReadPickleCorrupt(t *testing.T) {
	for name, b := range corruptPickles() {
		t.Run(name, func(t *testing.T) {
			if _, err := parsePickleBatch(b); err == nil {
				t.Fatalf("no error")
			}
		})
	}
	// The replacements above must have hit the real encoding.
	good := batchPickle(synth(3, 0, 1), "b", false)
	for _, s := range []string{"U\x02u1", "tb\x89T", "K\x01K\x03M\x00\x0c\x86", "U\x04data"} {
		if !bytes.Contains(good, []byte(s)) {
			t.Fatalf("test pickle lacks %q", s)
		}
	}
}

func TestPickleGlobalErrorNamesIt(t *testing.T) {
	_, err := parsePickleBatch([]byte("\x80\x02cos\nsystem\nq\x00U\x02lsq\x01\x85R."))
	if err == nil || !strings.Contains(err.Error(), "os.system is not allowed") {
		t.Fatalf("err = %v", err)
	}
	// Python 3's bytes at protocol 2 say what to do instead.
	_, err = parsePickleBatch([]byte("\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00bq\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04."))
	if err == nil || !strings.Contains(err.Error(), "Python 3 wrote this at protocol 2") {
		t.Fatalf("_codecs.encode: %v", err)
	}
}

func TestReadPickleFileErrorNamesFile(t *testing.T) {
	ds := synth(2, 0, 1)
	ds.Labels[1] = 12
	p := filepath.Join(t.TempDir(), "data_batch_3")
	writeFile(t, p, batchPickle(ds, "b", false))
	_, err := ReadPickleFile(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "record 1") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ReadPickleFile(filepath.Join(t.TempDir(), "nope")); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

// TestReadPickleFileSaysWhatItIs: a python-version file that does not
// decode is said to be empty, not a pickle, or truncated, before the
// decoder's detail ("GET: bad memo index" for a text file).
func TestReadPickleFileSaysWhatItIs(t *testing.T) {
	good := batchPickle(synth(3, 0, 1), "b", false)
	dir := t.TempDir()
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":     {nil, "empty file, want a pickle"},
		"text":      {[]byte("garbage\n"), "not a pickle of the python version (its files start with byte 0x80, this one with 0x67)"},
		"truncated": {good[:len(good)/2], fmt.Sprintf("truncated (%d bytes; a partial copy?): ", len(good)/2)},
	} {
		p := filepath.Join(dir, name)
		writeFile(t, p, c.b)
		_, err := ReadPickleFile(p)
		if err == nil || !strings.HasPrefix(err.Error(), "cifar: "+p+": "+c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
		mp := filepath.Join(dir, name+".meta")
		writeFile(t, mp, c.b)
		if _, err := readMetaPickle(mp); err == nil || !strings.HasPrefix(err.Error(), "cifar: "+mp+": "+c.want) {
			t.Errorf("%s batches.meta: err = %v, want %q", name, err, c.want)
		}
	}
}
