// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length N, N bytes of JSON header naming each tensor's
// dtype, shape and byte range, then the data buffer those ranges point into.
//
// Everything is held in memory; tensors are raw little-endian bytes, and the
// Float32/Float64/Int64 helpers convert them to Go slices.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// DType is a safetensors dtype name, such as "F32".
type DType string

// metaKey is the reserved header key holding the string metadata.
const metaKey = "__metadata__"

// dtypeSizes lists the dtypes the format defines, with their element sizes.
// All are carried as raw bytes; the conversion helpers understand F64, F32,
// F16, BF16, I64, I32 and U8.
var dtypeSizes = map[DType]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"F64": 8, "I64": 8, "U64": 8,
}

// Size is the number of bytes one element takes, or 0 for an unknown dtype.
func (d DType) Size() int { return dtypeSizes[d] }

// maxHeader bounds the JSON header so a corrupt length cannot make us
// allocate or scan gigabytes (the reference implementation uses 100 MB too).
const maxHeader = 100_000_000

// Tensor is one named array: its dtype, its shape (empty for a scalar) and
// its elements as raw little-endian bytes, row-major.
type Tensor struct {
	DType DType
	Shape []int
	Data  []byte
}

// File is the whole content of a safetensors file.
type File struct {
	Tensors  map[string]Tensor
	Metadata map[string]string
}

// Names returns the tensor names, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Tensors))
	for n := range f.Tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// numel is the product of shape, erroring on negative dims and on overflow.
// A zero anywhere makes the product 0 even if the other dims are huge.
// It counts in int64, as a file's header does, so that a 32-bit build
// names an element count too large for it as a 64-bit one does.
func numel[D int | int64](shape []D) (int, error) {
	var n int64 = 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d == 0 {
			n = 0
		}
	}
	if n == 0 {
		return 0, nil
	}
	for _, d := range shape {
		if n > math.MaxInt/int64(d) {
			return 0, fmt.Errorf("shape %v: element count overflows", shape)
		}
		n *= int64(d)
	}
	return int(n), nil
}

// nbytes is the byte size shape implies for dtype, checking everything that
// could make it meaningless.
func nbytes[D int | int64](dt DType, shape []D) (int, error) {
	size := dt.Size()
	if size == 0 {
		return 0, fmt.Errorf("unknown dtype %q", dt)
	}
	n, err := numel(shape)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt/size {
		return 0, fmt.Errorf("shape %v: byte size overflows", shape)
	}
	return n * size, nil
}

// check reports whether t is self-consistent: known dtype, sane shape, and
// exactly as many bytes as the shape needs.
func (t Tensor) check() error {
	want, err := nbytes(t.DType, t.Shape)
	if err != nil {
		return err
	}
	if len(t.Data) != want {
		return fmt.Errorf("%s%v needs %d bytes, has %d", t.DType, t.Shape, want, len(t.Data))
	}
	return nil
}

// Decode parses a safetensors file held in b. The tensors' Data are copies,
// so b may be reused afterwards.
func Decode(b []byte) (*File, error) {
	f, err := decode(b, true)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return f, nil
}

// header entry; pointers tell a missing field from a zero one.
type entry struct {
	DType       *DType   `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int   `json:"data_offsets"`
}

// headerLen is the header length that the first 8 bytes of a file of size
// bytes declare, checked against the limit and the bytes after it.
func headerLen(first []byte, size int64) (uint64, error) {
	if size < 8 {
		return 0, fmt.Errorf("file is %d bytes, shorter than the 8-byte header length", size)
	}
	n := binary.LittleEndian.Uint64(first)
	switch {
	case n > maxHeader:
		return 0, fmt.Errorf("header length %d is over the %d limit", n, maxHeader)
	case n > uint64(size-8):
		return 0, fmt.Errorf("header length %d is larger than the %d bytes after it", n, size-8)
	}
	return n, nil
}

// lastOffset is the largest end of the entries' data_offsets that are
// ranges; the entries' other faults are decode's to name.
func lastOffset(entries map[string]json.RawMessage) int {
	last := 0
	for _, raw := range entries {
		var e entry
		if json.Unmarshal(raw, &e) != nil || e.DataOffsets == nil || len(*e.DataOffsets) != 2 {
			continue
		}
		if off := *e.DataOffsets; off[0] >= 0 && off[1] >= off[0] {
			last = max(last, off[1])
		}
	}
	return last
}

func decode(b []byte, copyData bool) (*File, error) {
	n, err := headerLen(b, int64(len(b)))
	if err != nil {
		return nil, err
	}
	data := b[8+n:]
	if copyData {
		data = bytes.Clone(data)
	}
	entries, meta, err := parseHeader(b[8 : 8+n])
	if err != nil {
		return nil, err
	}

	type span struct {
		name       string
		begin, end int
	}
	// A file cut short (a copy or download that stopped) is said as such,
	// not as whichever tensor the map happens to reach first.
	if last := lastOffset(entries); last > len(data) {
		return nil, fmt.Errorf("file is truncated: %d bytes, where its header places tensor data up to byte %d (%d bytes missing)",
			len(b), 8+n+uint64(last), last-len(data))
	}
	f := &File{Tensors: make(map[string]Tensor, len(entries)), Metadata: meta}
	spans := make([]span, 0, len(entries))
	for name, raw := range entries {
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
			return nil, fmt.Errorf("tensor %q: needs dtype, shape and data_offsets", name)
		}
		size, err := nbytes(*e.DType, *e.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		shape := make([]int, len(*e.Shape))
		for i, d := range *e.Shape {
			if int64(int(d)) != d { // beside a zero: only a 32-bit build gets here
				return nil, fmt.Errorf("tensor %q: shape %v: dimension %d is beyond this build's %d-bit int", name, *e.Shape, d, strconv.IntSize)
			}
			shape[i] = int(d)
		}
		off := *e.DataOffsets
		if len(off) != 2 {
			return nil, fmt.Errorf("tensor %q: data_offsets %v is not [begin, end]", name, off)
		}
		begin, end := off[0], off[1]
		switch {
		case begin < 0 || end < begin:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] are not a range", name, begin, end)
		case end > len(data):
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] run past the %d-byte data buffer", name, begin, end, len(data))
		case end-begin != size:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] hold %d bytes, %s%v needs %d", name, begin, end, end-begin, *e.DType, shape, size)
		}
		// Capped so an append to one tensor can never write into the next.
		f.Tensors[name] = Tensor{DType: *e.DType, Shape: shape, Data: data[begin:end:end]}
		spans = append(spans, span{name, begin, end})
	}

	// The ranges must tile the buffer exactly: no overlaps, no gaps, no tail.
	slices.SortFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return a.begin - b.begin
		}
		return a.end - b.end
	})
	pos := 0
	for _, s := range spans {
		if s.begin < pos {
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] overlap the previous tensor, which ends at %d", s.name, s.begin, s.end, pos)
		}
		if s.begin > pos {
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] leave a gap after byte %d", s.name, s.begin, s.end, pos)
		}
		pos = s.end
	}
	if pos != len(data) {
		return nil, fmt.Errorf("tensors cover %d bytes of the %d-byte data buffer", pos, len(data))
	}
	return f, nil
}

// parseHeader splits the header object into raw tensor entries and the
// metadata. It walks tokens rather than unmarshalling into a map because a
// map would silently keep only the last of two entries with the same name.
func parseHeader(h []byte) (map[string]json.RawMessage, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(h))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("header is not a JSON object")
	}
	entries := map[string]json.RawMessage{}
	var meta map[string]string
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("header: invalid JSON: %w", err)
		}
		name := tok.(string) // inside an object, keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("header: invalid JSON at %q: %w", name, err)
		}
		if name == metaKey {
			if seenMeta {
				return nil, nil, fmt.Errorf("header: %s appears twice", metaKey)
			}
			seenMeta = true
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, fmt.Errorf("header: %s must map strings to strings: %w", metaKey, err)
			}
			continue
		}
		if _, dup := entries[name]; dup {
			return nil, nil, fmt.Errorf("tensor %q: named twice in the header", name)
		}
		entries[name] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("header: invalid JSON: %w", err)
	}
	// Only whitespace (the alignment padding) may follow the object.
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("header: trailing data after the JSON object")
	}
	return entries, meta, nil
}

// Encode serializes f. The output is deterministic: metadata first, tensors
// in name order both in the header and in the data buffer.
func Encode(f *File) ([]byte, error) {
	hdr, size, err := header(f)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(size)
	if err := writeTo(&buf, f, hdr); err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return buf.Bytes(), nil
}

// header validates f and builds its padded JSON header; size is the total
// encoded size.
func header(f *File) (hdr []byte, size int, err error) {
	var h bytes.Buffer
	h.WriteByte('{')
	if len(f.Metadata) > 0 {
		m, err := json.Marshal(f.Metadata)
		if err != nil {
			return nil, 0, err
		}
		h.WriteString(`"` + metaKey + `":`)
		h.Write(m)
	}
	pos := 0
	for _, name := range f.Names() {
		t := f.Tensors[name]
		if name == metaKey {
			return nil, 0, fmt.Errorf("tensor name %q is reserved", name)
		}
		if err := t.check(); err != nil {
			return nil, 0, fmt.Errorf("tensor %q: %w", name, err)
		}
		if h.Len() > 1 {
			h.WriteByte(',')
		}
		key, _ := json.Marshal(name) // a string always marshals
		h.Write(key)
		h.WriteString(`:{"dtype":"` + string(t.DType) + `","shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
		}
		end := pos + len(t.Data)
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, pos, end)
		pos = end
	}
	h.WriteByte('}')
	// Pad so the data buffer starts 8-byte aligned, as the spec recommends.
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	return h.Bytes(), 8 + h.Len() + pos, nil
}

// writeTo writes the length, the header built by header(f), then the data.
func writeTo(w io.Writer, f *File, hdr []byte) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, name := range f.Names() {
		if _, err := w.Write(f.Tensors[name].Data); err != nil {
			return err
		}
	}
	return nil
}
