// Package cifar reads CIFAR-10 (the binary and the python-pickle versions),
// downloads it with a checksum check, augments images the way the seed's
// PyTorch script and the usual CIFAR recipes do, and feeds batches to the
// trainer through a prefetching, deterministic loader.
//
// Images are kept as the files store them: 3×32×32 uint8, channel-major
// (1,024 red, 1,024 green, 1,024 blue bytes, each plane row-major).
package cifar

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc64"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// Side is the height and width of a CIFAR image.
	Side = 32
	// ImageBytes is the size of one image: 3 planes of 32×32 bytes.
	ImageBytes = 3 * Side * Side
	// RecordBytes is the size of one record of the binary version: a label
	// byte followed by the image.
	RecordBytes = 1 + ImageBytes
	// NumClasses is the number of CIFAR-10 classes.
	NumClasses = 10
)

// ClassNames are the CIFAR-10 class names in label order, as in
// batches.meta.txt and batches.meta.
var ClassNames = []string{
	"airplane", "automobile", "bird", "cat", "deer",
	"dog", "frog", "horse", "ship", "truck",
}

// Dataset is a set of CIFAR images with their labels.
type Dataset struct {
	// Images holds N images of 3×32×32 bytes each, CHW per image, as in
	// the binary file.
	Images []byte
	// Labels holds N class indices 0..9.
	Labels []uint8
	// Classes names the classes in label order.
	Classes []string
}

// Len is the number of images.
func (d *Dataset) Len() int { return len(d.Labels) }

// Checksum is the CRC-64 (ECMA) of the labels, then the images: what a
// resumed run compares to tell that its data changed under it. About 0.1 s
// for CIFAR-10's training set.
func (d *Dataset) Checksum() string {
	crc := crc64.Update(0, crcTable, d.Labels)
	return fmt.Sprintf("%016x", crc64.Update(crc, crcTable, d.Images))
}

var crcTable = crc64.MakeTable(crc64.ECMA)

// Image returns the 3,072 bytes of image i. The slice aliases d.Images; its
// capacity ends with the image so that an append cannot overwrite the next.
func (d *Dataset) Image(i int) []byte {
	o := i * ImageBytes
	return d.Images[o : o+ImageBytes : o+ImageBytes]
}

// Subset returns a new dataset holding copies of the images idx, in that
// order. It panics on an index out of range, as slicing does.
func (d *Dataset) Subset(idx []int) *Dataset {
	s := &Dataset{
		Images:  make([]byte, len(idx)*ImageBytes),
		Labels:  make([]uint8, len(idx)),
		Classes: d.Classes,
	}
	for k, i := range idx {
		copy(s.Images[k*ImageBytes:], d.Image(i))
		s.Labels[k] = d.Labels[i]
	}
	return s
}

// Split holds out round(valFraction·Len) images, chosen at random from
// seed, as a validation set, and returns the rest as the training set. Both
// keep the original order of their images. The same seed always gives the
// same split. valFraction is clamped to [0, 1].
func (d *Dataset) Split(valFraction float64, seed uint64) (train, val *Dataset) {
	n := d.Len()
	if !(valFraction > 0) { // also catches NaN
		valFraction = 0
	}
	nVal := int(math.Round(math.Min(valFraction, 1) * float64(n)))
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	rng := rand.New(rand.NewPCG(mix(seed, 0x53504c4954), mix(seed, 1))) // "SPLIT"
	rng.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	vi, ti := perm[:nVal], perm[nVal:]
	slices.Sort(vi)
	slices.Sort(ti)
	return d.Subset(ti), d.Subset(vi)
}

// ReadBinFile reads one file of the binary version (cifar-10-batches-bin):
// records of a label byte and 3,072 image bytes. Its classes are ClassNames.
func ReadBinFile(path string) (*Dataset, error) {
	// The size first: a file of the wrong size, of another kind given by
	// mistake, is refused (and named, where its first bytes say what it
	// is) before any of it is read.
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() && st.Size()%RecordBytes != 0 {
		var head [9]byte
		if f, err := os.Open(path); err == nil {
			n, _ := io.ReadFull(f, head[:])
			f.Close()
			if kind := sniff(head[:n]); kind != "" {
				return nil, fmt.Errorf("cifar: %s: %s, not a CIFAR-10 binary batch file (records of %d bytes)", path, kind, RecordBytes)
			}
		}
		return nil, fmt.Errorf("cifar: %s: %w", path, sizeError(st.Size()))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cifar: %w", err)
	}
	ds, err := parseBin(b)
	if err != nil {
		return nil, fmt.Errorf("cifar: %s: %w", path, err)
	}
	return ds, nil
}

// sniff names the kind of file that head, its first bytes, begins one of
// that a binary batch could be mistaken for, or "".
func sniff(head []byte) string {
	for _, k := range []struct{ magic, kind string }{
		{"\x89PNG", "a PNG image"}, {"\xff\xd8\xff", "a JPEG image"}, {"PK\x03\x04", "a zip archive (a PyTorch .pth?)"},
		{"\x1f\x8b", "a gzip file (the downloaded archive? vgg16 data download unpacks it)"}, {"\x80\x02", "a Python pickle (the python version of CIFAR-10: give its folder)"},
		{"\x80\x04", "a Python pickle"}, {"\x80\x05", "a Python pickle"},
	} {
		if bytes.HasPrefix(head, []byte(k.magic)) {
			return k.kind
		}
	}
	if len(head) == 9 && head[8] == '{' && binary.LittleEndian.Uint64(head) < 1<<32 { // header length, then its JSON
		return "a safetensors file (a checkpoint?)"
	}
	return ""
}

// sizeError is the error for a batch file of size bytes, not a whole
// number of records: where the last one is cut.
func sizeError(size int64) error {
	n := size / RecordBytes
	return fmt.Errorf("size %d bytes is not a multiple of %d, the record size: record %d is truncated (%d of %d bytes)",
		size, RecordBytes, n, size-n*RecordBytes, RecordBytes)
}

// parseBin decodes records of the binary version. The images are copied out
// so that the dataset does not keep the file's buffer alive.
func parseBin(b []byte) (*Dataset, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty file, want records of %d bytes", RecordBytes)
	}
	if len(b)%RecordBytes != 0 {
		return nil, sizeError(int64(len(b)))
	}
	n := len(b) / RecordBytes
	ds := &Dataset{Images: make([]byte, n*ImageBytes), Labels: make([]uint8, n), Classes: ClassNames}
	for i := range n {
		r := b[i*RecordBytes : (i+1)*RecordBytes]
		if r[0] >= NumClasses {
			return nil, fmt.Errorf("record %d (byte offset %d): label %d out of range 0..%d", i, i*RecordBytes, r[0], NumClasses-1)
		}
		ds.Labels[i] = r[0]
		copy(ds.Images[i*ImageBytes:], r[1:])
	}
	return ds, nil
}

// readMetaTxt reads batches.meta.txt: the class names, one a line, in label
// order (the official file ends with blank lines, which are skipped).
func readMetaTxt(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cifar: %w", err)
	}
	var names []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			names = append(names, s)
		}
	}
	if len(names) != NumClasses {
		return nil, fmt.Errorf("cifar: %s: %d class names, want %d", path, len(names), NumClasses)
	}
	if err := CheckClassNames(names); err != nil {
		return nil, fmt.Errorf("cifar: %s: %w", path, err)
	}
	return names, nil
}

// CheckClassNames holds class names, which a dataset's meta file gives
// and the commands print, to what a table and a terminal can take: each
// one printable text of at most 128 bytes, no two the same.
func CheckClassNames(names []string) error {
	seen := map[string]bool{}
	for i, n := range names {
		switch {
		case n == "" || len(n) > 128:
			return fmt.Errorf("class %d's name %q: want 1 to 128 bytes", i, n)
		case !printable(n):
			return fmt.Errorf("class %d's name %q: want printable text", i, n)
		case seen[n]:
			return fmt.Errorf("class %d's name %q: another class has it", i, n)
		}
		seen[n] = true
	}
	return nil
}

// PrintableNames is names as CheckClassNames would have them, for names
// that were recorded before it held them (a checkpoint of an older
// version): a name with characters a terminal would act on is quoted
// with them escaped, a long one cut to 128 bytes, an empty one is its
// class number, and a name that another class has already gets its
// number after it (and more, until it is its own).
func PrintableNames(names []string) []string {
	out := make([]string, len(names))
	seen := map[string]bool{}
	for i, n := range names {
		switch {
		case n == "":
			n = strconv.Itoa(i)
		case !printable(n):
			n = strconv.QuoteToGraphic(n)
		}
		base := cut(n, 120) // room for a number after it
		n = base
		for k := 1; seen[n]; k++ {
			n = fmt.Sprintf("%s #%d", base, i)
			if k > 1 {
				n += "-" + strconv.Itoa(k)
			}
		}
		out[i], seen[n] = n, true
	}
	return out
}

// cut is s cut to at most n bytes at a rune boundary, "…" marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	end := n - len("…")
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + "…"
}

// printable reports whether s is UTF-8 text of graphic characters and
// spaces only: no control characters, no escape sequences.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) })
}

// mix hashes its inputs into one well-spread 64-bit value (splitmix64
// steps), so that nearby seeds, epochs and indices give unrelated streams.
func mix(vs ...uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, v := range vs {
		h ^= v
		h += 0x9e3779b97f4a7c15
		h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9
		h = (h ^ (h >> 27)) * 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}
