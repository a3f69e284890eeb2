package pth

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"

	"github.com/vgg16/vgg16/internal/pickle"
)

// dtype describes one torch storage type.
type dtype struct {
	name  string // torch's dtype name, reported in Tensor.DType
	size  int64  // bytes per element
	float bool   // converted to float32 (else to int64)
}

// storageTypes are the storage GLOBALs a state dict may name. Everything
// else is refused: an unknown GLOBAL is exactly how a malicious pickle runs
// code in Python.
var storageTypes = map[string]dtype{
	"FloatStorage":    {"float32", 4, true},
	"HalfStorage":     {"float16", 2, true},
	"BFloat16Storage": {"bfloat16", 2, true},
	"DoubleStorage":   {"float64", 8, true},
	"LongStorage":     {"int64", 8, false},
	"IntStorage":      {"int32", 4, false},
	"ShortStorage":    {"int16", 2, false},
	"CharStorage":     {"int8", 1, false},
	"ByteStorage":     {"uint8", 1, false},
	"BoolStorage":     {"bool", 1, false},
}

// callables are the GLOBALs that may be called (REDUCE/NEWOBJ).
var callables = map[string]bool{
	"collections.OrderedDict":                    true,
	"torch._utils._rebuild_tensor":               true,
	"torch._utils._rebuild_tensor_v2":            true,
	"torch._utils._rebuild_parameter":            true,
	"torch._utils._rebuild_parameter_with_state": true,
}

func resolveGlobal(module, name string) (any, error) {
	full := module + "." + name
	if module == "torch" {
		if _, ok := storageTypes[name]; ok {
			return pickle.Global{Module: module, Name: name}, nil
		}
	}
	if callables[full] {
		return pickle.Global{Module: module, Name: name}, nil
	}
	return nil, fmt.Errorf("refusing GLOBAL %.200s: only tensors, storages and OrderedDicts are read", full)
}

// rootStorage is one storage record of the file: a flat array of numel
// elements of one dtype.
type rootStorage struct {
	key   string
	dt    dtype
	numel int64
	// Legacy format only: where the raw bytes start in the file.
	dataOff int64
	hasData bool
}

// storageRef is what a persistent id resolves to: a root storage or, in the
// legacy format, a window [off, off+n) of one.
type storageRef struct {
	root *rootStorage
	off  int64
	n    int64
}

// tensorRef records a _rebuild_tensor call; the data is read afterwards,
// once the storages' places in the file are known.
type tensorRef struct {
	st     *storageRef
	offset int64
	size   []int64
	stride []int64
}

// storageRegistry maps storage keys to roots; the first reference fixes a
// key's dtype and size, as in torch.load.
type storageRegistry map[string]*rootStorage

func (reg storageRegistry) root(key string, typ any, numel any) (*rootStorage, error) {
	g, ok := typ.(pickle.Global)
	dt, known := storageTypes[g.Name]
	if !ok || g.Module != "torch" || !known {
		return nil, fmt.Errorf("storage %q: storage type is a %s", trunc(key), typeName(typ))
	}
	n, err := toInt(numel)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("storage %q: bad element count (%s)", trunc(key), typeName(numel))
	}
	if r, ok := reg[key]; ok {
		if r.dt != dt {
			return nil, fmt.Errorf("storage %q is used as both %s and %s", trunc(key), r.dt.name, dt.name)
		}
		return r, nil
	}
	if n > math.MaxInt64/dt.size {
		return nil, fmt.Errorf("storage %q: element count %d is too large", trunc(key), n)
	}
	r := &rootStorage{key: key, dt: dt, numel: n}
	reg[key] = r
	return r, nil
}

// trunc shortens file-supplied strings in error messages.
func trunc(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// asString accepts str, or bytes as Python 2 pickles write them (torch's
// _maybe_decode_ascii).
func asString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case pickle.Bytes:
		return string(x), true
	}
	return "", false
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case *big.Int:
		return 0, errors.New("integer out of range")
	}
	return 0, fmt.Errorf("expected an int, got a %s", typeName(v))
}

func toInts(v any) ([]int64, error) {
	t, ok := v.(pickle.Tuple)
	if !ok {
		if l, isList := v.(*pickle.List); isList {
			t = l.Items
		} else {
			return nil, fmt.Errorf("expected a tuple of ints, got a %s", typeName(v))
		}
	}
	out := make([]int64, len(t))
	for i, e := range t {
		n, err := toInt(e)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// callGlobal performs the few calls a state dict pickle makes.
func callGlobal(fn any, args []any) (any, error) {
	g, ok := fn.(pickle.Global)
	if !ok {
		return nil, fmt.Errorf("cannot call a %s", typeName(fn))
	}
	switch g.Module + "." + g.Name {
	case "collections.OrderedDict":
		d := &pickle.Dict{}
		if len(args) == 0 {
			return d, nil
		}
		if len(args) != 1 {
			return nil, fmt.Errorf("OrderedDict called with %d arguments", len(args))
		}
		// Python 2 pickles an OrderedDict as OrderedDict([[k, v], ...]).
		var items []any
		switch x := args[0].(type) {
		case *pickle.List:
			items = x.Items
		case pickle.Tuple:
			items = x
		case *pickle.Dict:
			keys, vals := x.Keys(), x.Values()
			for i := range keys {
				if err := d.Set(keys[i], vals[i]); err != nil {
					return nil, err
				}
			}
			return d, nil
		default:
			return nil, fmt.Errorf("OrderedDict called with a %s", typeName(args[0]))
		}
		for _, it := range items {
			var pair []any
			switch p := it.(type) {
			case *pickle.List:
				pair = p.Items
			case pickle.Tuple:
				pair = p
			}
			if len(pair) != 2 {
				return nil, errors.New("OrderedDict item is not a pair")
			}
			if err := d.Set(pair[0], pair[1]); err != nil {
				return nil, err
			}
		}
		return d, nil
	case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
		// v2: (storage, storage_offset, size, stride, requires_grad,
		// backward_hooks[, metadata]); v1 has only the first four.
		want := map[bool][2]int{true: {6, 7}, false: {4, 4}}[g.Name == "_rebuild_tensor_v2"]
		if len(args) < want[0] || len(args) > want[1] {
			return nil, fmt.Errorf("%s called with %d arguments", g.Name, len(args))
		}
		st, ok := args[0].(*storageRef)
		if !ok {
			return nil, fmt.Errorf("%s: first argument is a %s, not a storage", g.Name, typeName(args[0]))
		}
		off, err := toInt(args[1])
		if err != nil {
			return nil, fmt.Errorf("%s: storage offset: %w", g.Name, err)
		}
		size, err := toInts(args[2])
		if err != nil {
			return nil, fmt.Errorf("%s: size: %w", g.Name, err)
		}
		stride, err := toInts(args[3])
		if err != nil {
			return nil, fmt.Errorf("%s: stride: %w", g.Name, err)
		}
		return &tensorRef{st: st, offset: off, size: size, stride: stride}, nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		// (data, requires_grad, backward_hooks[, state]): a Parameter is
		// just its tensor here.
		if len(args) < 3 || len(args) > 4 {
			return nil, fmt.Errorf("%s called with %d arguments", g.Name, len(args))
		}
		t, ok := args[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("%s: data is a %s, not a tensor", g.Name, typeName(args[0]))
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s.%s is not callable", g.Module, g.Name)
}

// stateDict finds the dict of tensors in the unpickled object: the object
// itself, or its "state_dict"/"model" entry for training checkpoints.
func stateDict(obj any) (keys []string, vals []*tensorRef, err error) {
	d, ok := obj.(*pickle.Dict)
	if !ok {
		return nil, nil, fmt.Errorf("top-level object is a %s, not a dict of tensors", typeName(obj))
	}
	bad := firstNonTensor(d)
	if bad >= 0 {
		for _, k := range []string{"state_dict", "model"} {
			if v, ok := d.Get(k); ok {
				if inner, ok := v.(*pickle.Dict); ok && firstNonTensor(inner) < 0 {
					d, bad = inner, -1
					break
				}
			}
		}
	}
	if bad >= 0 {
		k, _ := asString(d.Keys()[bad])
		return nil, nil, fmt.Errorf("not a state dict: entry %q is a %s, not a tensor (and no \"state_dict\" or \"model\" entry holds a dict of tensors)", trunc(k), typeName(d.Values()[bad]))
	}
	for i, k := range d.Keys() {
		s, ok := k.(string)
		if !ok {
			return nil, nil, fmt.Errorf("state dict key is a %s, not a str", typeName(k))
		}
		keys = append(keys, s)
		vals = append(vals, d.Values()[i].(*tensorRef))
	}
	return keys, vals, nil
}

func firstNonTensor(d *pickle.Dict) int {
	for i, v := range d.Values() {
		if _, ok := v.(*tensorRef); !ok {
			return i
		}
	}
	return -1
}

// storageLoader returns a root storage's raw little-endian bytes, at least
// numel*size of them.
type storageLoader func(*rootStorage) ([]byte, error)

// maxBroadcast bounds the elements tensors hold beyond their storages'
// (zero or overlapping strides), each tensor's and all together, so that
// a few bytes of input cannot demand gigabytes.
const maxBroadcast = 1 << 24

// Elements within their storage the tensors of a file may hold, as stored,
// twice its bytes: one storage viewed under two names, as
// torch.save({'a': t, 'b': t}) writes, and no more. (Built as float32 or
// int64, an element takes up to 8 times its stored size.) A storage's
// claimed size is checked only when it is read, after the tensors before
// it are built; one that claims more than its file holds fails there, or
// counts here for all it claims.
func viewBudget(fileSize int64) int64 { return 2 * fileSize }

// materialize reads every tensor. Storages are loaded once each and dropped
// as soon as their last tensor is built, to keep peak memory near one copy.
func materialize(keys []string, refs []*tensorRef, load storageLoader, fileSize int64) (map[string]Tensor, error) {
	uses := map[*rootStorage]int{}
	for _, t := range refs {
		uses[t.st.root]++
	}
	cache := map[*rootStorage][]byte{}
	out := make(map[string]Tensor, len(keys))
	// Go through storages in a stable order so errors are reproducible.
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return keys[order[a]] < keys[order[b]] })
	// Every geometry checked, and what all the tensors hold counted,
	// before anything is read.
	views, beyond := viewBudget(fileSize), int64(maxBroadcast)
	for _, i := range order {
		t := refs[i]
		numel, err := checkView(t)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", trunc(keys[i]), err)
		}
		within := min(numel, t.st.n)
		views -= within * t.st.root.dt.size
		beyond -= numel - within
		switch {
		case views < 0:
			return nil, fmt.Errorf("tensor %q: the tensors view more than twice the file's %d bytes of storage; refusing", trunc(keys[i]), fileSize)
		case beyond < 0:
			return nil, fmt.Errorf("tensor %q: the tensors hold more than %d elements beyond their storages'; refusing such a broadcast", trunc(keys[i]), maxBroadcast)
		}
	}
	for _, i := range order {
		t := refs[i]
		root := t.st.root
		raw, ok := cache[root]
		if !ok {
			var err error
			if raw, err = load(root); err != nil {
				return nil, fmt.Errorf("tensor %q: storage %q: %w", trunc(keys[i]), trunc(root.key), err)
			}
			if int64(len(raw)) < root.numel*root.dt.size {
				return nil, fmt.Errorf("tensor %q: storage %q has %d bytes, want %d", trunc(keys[i]), trunc(root.key), len(raw), root.numel*root.dt.size)
			}
			cache[root] = raw
		}
		tt, err := build(t, raw)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", trunc(keys[i]), err)
		}
		out[keys[i]] = tt
		if uses[root]--; uses[root] == 0 {
			delete(cache, root)
		}
	}
	return out, nil
}

// checkView validates a tensor's geometry against its storage before any
// data is read, and returns its number of elements.
func checkView(t *tensorRef) (int64, error) {
	st := t.st
	if len(t.size) != len(t.stride) {
		return 0, fmt.Errorf("size has %d dims but stride has %d", len(t.size), len(t.stride))
	}
	if t.offset < 0 {
		return 0, fmt.Errorf("negative storage offset %d", t.offset)
	}
	numel := int64(1)
	for i, s := range t.size {
		if s < 0 || t.stride[i] < 0 {
			return 0, fmt.Errorf("negative size or stride in %v / %v", t.size, t.stride)
		}
		if s != 0 && numel > math.MaxInt32*int64(math.MaxInt32)/s {
			return 0, fmt.Errorf("size %v is too large", t.size)
		}
		numel *= s
	}
	if numel == 0 {
		return 0, nil
	}
	last := t.offset // highest element index the view touches
	for i, s := range t.size {
		if s > 1 && t.stride[i] > (math.MaxInt64-last)/(s-1) {
			return 0, fmt.Errorf("size %v with stride %v overflows", t.size, t.stride)
		}
		last += (s - 1) * t.stride[i]
	}
	if last >= st.n {
		return 0, fmt.Errorf("size %v, stride %v at offset %d needs element %d, but the %s storage has %d elements",
			t.size, t.stride, t.offset, last, st.root.dt.name, st.n)
	}
	if numel > st.n && numel > maxBroadcast {
		return 0, fmt.Errorf("size %v has %d elements from a storage of %d; refusing such a broadcast", t.size, numel, st.n)
	}
	return numel, nil
}

// build converts the viewed elements to a Tensor. raw is the whole root
// storage; the tensor's geometry has passed checkView.
func build(t *tensorRef, raw []byte) (Tensor, error) {
	dt := t.st.root.dt
	shape := make([]int, len(t.size))
	numel := 1
	for i, s := range t.size {
		shape[i] = int(s)
		numel *= int(s)
	}
	out := Tensor{Shape: shape, DType: dt.name}
	// Element positions are relative to the storage window.
	base := t.st.off
	var positions func(yield func(int, int64))
	if isContiguous(t.size, t.stride) {
		positions = func(yield func(int, int64)) {
			for i := 0; i < numel; i++ {
				yield(i, base+t.offset+int64(i))
			}
		}
	} else {
		positions = func(yield func(int, int64)) { strided(t, numel, base, yield) }
	}
	es := dt.size
	if dt.float {
		out.F32 = make([]float32, numel)
		f := out.F32
		switch dt.name {
		case "float32":
			if numel > 0 && isContiguous(t.size, t.stride) {
				// The common case, kept free of per-element calls. (An empty
				// tensor's offset is unchecked, so it must not slice.)
				src := raw[(base+t.offset)*es:]
				for i := range f {
					f[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
				}
				break
			}
			positions(func(i int, p int64) { f[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[p*es:])) })
		case "float16":
			positions(func(i int, p int64) { f[i] = halfToFloat(binary.LittleEndian.Uint16(raw[p*es:])) })
		case "bfloat16":
			positions(func(i int, p int64) {
				f[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[p*es:])) << 16)
			})
		case "float64":
			positions(func(i int, p int64) { f[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[p*es:]))) })
		}
		return out, nil
	}
	out.I64 = make([]int64, numel)
	v := out.I64
	switch dt.name {
	case "int64":
		positions(func(i int, p int64) { v[i] = int64(binary.LittleEndian.Uint64(raw[p*es:])) })
	case "int32":
		positions(func(i int, p int64) { v[i] = int64(int32(binary.LittleEndian.Uint32(raw[p*es:]))) })
	case "int16":
		positions(func(i int, p int64) { v[i] = int64(int16(binary.LittleEndian.Uint16(raw[p*es:]))) })
	case "int8":
		positions(func(i int, p int64) { v[i] = int64(int8(raw[p])) })
	case "uint8":
		positions(func(i int, p int64) { v[i] = int64(raw[p]) })
	case "bool":
		positions(func(i int, p int64) {
			if raw[p] != 0 {
				v[i] = 1
			}
		})
	default:
		return Tensor{}, fmt.Errorf("unhandled dtype %s", dt.name)
	}
	return out, nil
}

// isContiguous reports whether stride is the row-major stride of size
// (dims of size 1 may have any stride, as in torch).
func isContiguous(size, stride []int64) bool {
	want := int64(1)
	for i := len(size) - 1; i >= 0; i-- {
		if size[i] != 1 && stride[i] != want {
			return false
		}
		want *= size[i]
	}
	return true
}

// strided walks a non-contiguous view in row-major order, yielding each
// element's storage position.
func strided(t *tensorRef, numel int, base int64, yield func(int, int64)) {
	nd := len(t.size)
	idx := make([]int64, nd)
	pos := base + t.offset
	for i := 0; i < numel; i++ {
		yield(i, pos)
		for d := nd - 1; d >= 0; d-- {
			idx[d]++
			pos += t.stride[d]
			if idx[d] < t.size[d] {
				break
			}
			pos -= idx[d] * t.stride[d]
			idx[d] = 0
		}
	}
}

// halfToFloat converts IEEE binary16 to float32 exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: shift the mantissa up until it is normal.
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	case 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13) // Inf or NaN
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// persistentID splits a ('storage', ...) persistent id.
func persistentID(pid any, want int) (pickle.Tuple, error) {
	t, ok := pid.(pickle.Tuple)
	if !ok {
		return nil, fmt.Errorf("persistent id is a %s, not a tuple", typeName(pid))
	}
	if len(t) == 0 {
		return nil, errors.New("empty persistent id")
	}
	kind, _ := asString(t[0])
	if kind != "storage" {
		if kind == "module" {
			return nil, errors.New("the file holds a whole pickled module, not a state dict; save model.state_dict() instead")
		}
		return nil, fmt.Errorf("unknown persistent id kind %q", trunc(strings.ToValidUTF8(kind, "?")))
	}
	if len(t) != want {
		return nil, fmt.Errorf("storage persistent id has %d fields, want %d", len(t), want)
	}
	return t, nil
}
