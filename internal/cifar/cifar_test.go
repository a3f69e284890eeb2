package cifar

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const realBatch = "../../../shared/cifar-10-sample/data_batch_1.bin"

func TestReadBinFile(t *testing.T) {
	want := synth(25, 0, 3)
	p := filepath.Join(t.TempDir(), "data_batch_1.bin")
	writeFile(t, p, binBytes(want))
	got, err := ReadBinFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sameDataset(t, got, want)
	if !bytes.Equal(got.Image(7), want.Images[7*ImageBytes:8*ImageBytes]) || cap(got.Image(7)) != ImageBytes {
		t.Fatal("Image(7) is not the 8th image, capped")
	}
}

func TestReadBinFileErrors(t *testing.T) {
	dir := t.TempDir()
	good := binBytes(synth(4, 0, 3))
	badLabel := append([]byte(nil), good...)
	badLabel[3*RecordBytes] = 10
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"truncated.bin", good[:3*RecordBytes+100], []string{"not a multiple of 3073", "record 3 is truncated"}},
		{"short.bin", good[:5], []string{"record 0 is truncated"}},
		{"label10.bin", badLabel, []string{"record 3", "label 10 out of range"}},
		{"empty.bin", nil, []string{"empty"}},
		{"image.bin", []byte("\x89PNG\r\n\x1a\n and the rest of a picture"), []string{"a PNG image, not a CIFAR-10 binary batch file"}},
		{"archive.bin", []byte("\x1f\x8b\x08\x00 compressed"), []string{"a gzip file (the downloaded archive?"}},
		{"weights.bin", []byte("\x05\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"), []string{"a safetensors file"}},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		writeFile(t, p, c.data)
		_, err := ReadBinFile(p)
		if err == nil {
			t.Fatalf("%s: no error", c.name)
		}
		for _, w := range append(c.want, p) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
	}
	if _, err := ReadBinFile(filepath.Join(dir, "missing.bin")); err == nil || !strings.Contains(err.Error(), "missing.bin") {
		t.Fatalf("missing file: %v", err)
	}
	// A large file of the wrong size is refused by its size, unread (a
	// sparse file here: reading it would take 3 GB).
	huge := filepath.Join(dir, "huge.bin")
	writeFile(t, huge, nil)
	if err := os.Truncate(huge, 3_000_000_000); err != nil {
		t.Skipf("no sparse file: %v", err)
	}
	if _, err := ReadBinFile(huge); err == nil || !strings.Contains(err.Error(), huge+": size 3000000000 bytes is not a multiple of 3073") {
		t.Errorf("a 3 GB file of the wrong size: %v", err)
	}
}

// TestRealBatch reads the real first training batch from shared/.
func TestRealBatch(t *testing.T) {
	raw, err := os.ReadFile(realBatch)
	if err != nil {
		t.Skipf("real CIFAR-10 batch not available (%v); skipping", err)
	}
	ds, err := ReadBinFile(realBatch)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 10000 {
		t.Fatalf("Len = %d, want 10000", ds.Len())
	}
	var counts [NumClasses]int
	for _, l := range ds.Labels {
		counts[l]++
	}
	sum := 0
	for c, n := range counts {
		if n < 800 || n > 1200 { // about 1,000 per class in each batch
			t.Errorf("class %d has %d images", c, n)
		}
		sum += n
	}
	if sum != 10000 {
		t.Fatalf("label counts sum to %d", sum)
	}
	// The first label, read straight from the file's first byte.
	if ds.Labels[0] != raw[0] || raw[0] != 6 || ds.Classes[raw[0]] != "frog" {
		t.Fatalf("first label %d (file byte %d), want 6 = frog", ds.Labels[0], raw[0])
	}
	last := ds.Len() - 1
	if !bytes.Equal(ds.Image(last), raw[last*RecordBytes+1:]) || ds.Labels[last] != raw[last*RecordBytes] {
		t.Fatal("last record differs from the file")
	}
}

func TestSubsetAndSplit(t *testing.T) {
	ds := synth(100, 0, 1)
	sub := ds.Subset([]int{5, 2, 99})
	for k, i := range []int{5, 2, 99} {
		if imageID(sub.Image(k)) != i || sub.Labels[k] != ds.Labels[i] {
			t.Fatalf("Subset image %d is not %d", k, i)
		}
	}
	sub.Images[0]++ // a copy, not a view
	if ds.Images[5*ImageBytes] == sub.Images[0] {
		t.Fatal("Subset shares memory with its dataset")
	}

	ids := func(d *Dataset) []int {
		var s []int
		for i := range d.Len() {
			s = append(s, imageID(d.Image(i)))
		}
		return s
	}
	tr, va := ds.Split(0.2, 42)
	if tr.Len() != 80 || va.Len() != 20 {
		t.Fatalf("split sizes %d/%d, want 80/20", tr.Len(), va.Len())
	}
	seen := map[int]bool{}
	for _, set := range [][]int{ids(tr), ids(va)} {
		for k, id := range set {
			if seen[id] {
				t.Fatalf("image %d in both halves", id)
			}
			seen[id] = true
			if k > 0 && set[k-1] > id {
				t.Fatal("split does not keep the original order")
			}
		}
	}
	if len(seen) != 100 {
		t.Fatalf("split covers %d images", len(seen))
	}
	tr2, va2 := ds.Split(0.2, 42)
	if !bytes.Equal(tr.Images, tr2.Images) || !bytes.Equal(va.Images, va2.Images) {
		t.Fatal("same seed, different split")
	}
	_, va3 := ds.Split(0.2, 43)
	if bytes.Equal(va.Images, va3.Images) {
		t.Fatal("different seeds, same split")
	}
	if tr, va := ds.Split(0, 1); tr.Len() != 100 || va.Len() != 0 {
		t.Fatal("Split(0)")
	}
	if tr, va := ds.Split(1, 1); tr.Len() != 0 || va.Len() != 100 {
		t.Fatal("Split(1)")
	}
}

// TestPrintableNamesUnique: a name made unique by its number does not
// take one that a later class has, nor one an earlier class has.
func TestPrintableNamesUnique(t *testing.T) {
	got := PrintableNames([]string{"b #2", "b", "b"})
	if want := []string{"b #2", "b", "b #2-2"}; !slices.Equal(got, want) || CheckClassNames(got) != nil {
		t.Errorf("PrintableNames = %q, want %q", got, want)
	}
}
