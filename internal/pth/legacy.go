package pth

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/vgg16/vgg16/internal/pickle"
)

// legacyMagic and legacyProtocol open every file torch < 1.6 wrote
// (torch/serialization.py MAGIC_NUMBER and PROTOCOL_VERSION).
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

const legacyProtocol = 1001

// decodeLegacy reads the torch < 1.6 format: pickles of the magic number,
// the protocol version and a sys_info dict; the main pickle, whose
// persistent ids are ('storage', type, root_key, location, numel,
// view_metadata); a pickle of the storage keys; then for each key in that
// order an int64 element count and the raw little-endian elements.
func decodeLegacy(r io.ReaderAt, size int64) (map[string]Tensor, error) {
	br := pickle.NewReader(io.NewSectionReader(r, 0, size), size)
	magic, err := load(br, "magic number", nil)
	if err != nil {
		return nil, err
	}
	if z, ok := magic.(*big.Int); !ok || z.Cmp(legacyMagic) != 0 {
		return nil, errors.New("invalid magic number: not a file written by torch.save")
	}
	proto, err := load(br, "protocol version", nil)
	if err != nil {
		return nil, err
	}
	if p, ok := proto.(int64); !ok || p != legacyProtocol {
		return nil, fmt.Errorf("unsupported legacy protocol version (a %s, want %d)", typeName(proto), legacyProtocol)
	}
	info, err := load(br, "sys_info", nil)
	if err != nil {
		return nil, err
	}
	if d, ok := info.(*pickle.Dict); ok {
		// The element counts were written in the saving machine's byte
		// order; only little-endian writers are understood.
		if le, ok := d.Get("little_endian"); ok && le == false {
			return nil, errors.New("file was written on a big-endian machine, which is not supported")
		}
	}

	reg := storageRegistry{}
	views := map[string]*storageRef{}
	persistentLoad := func(pid any) (any, error) {
		t, err := persistentID(pid, 6)
		if err != nil {
			return nil, err
		}
		key, ok := asString(t[2])
		if !ok {
			return nil, fmt.Errorf("storage key is a %s", typeName(t[2]))
		}
		root, err := reg.root(key, t[1], t[4])
		if err != nil {
			return nil, err
		}
		if _, ok := t[5].(pickle.None); ok {
			return &storageRef{root: root, n: root.numel}, nil
		}
		// view_metadata = (view_key, offset, size): a window of the root.
		vm, ok := t[5].(pickle.Tuple)
		if !ok || len(vm) != 3 {
			return nil, fmt.Errorf("storage %q: view metadata is a %s, not a 3-tuple", trunc(key), typeName(t[5]))
		}
		vkey, ok := asString(vm[0])
		if !ok {
			return nil, fmt.Errorf("storage %q: view key is a %s", trunc(key), typeName(vm[0]))
		}
		if v, ok := views[vkey]; ok {
			return v, nil // the first reference defines a view, as in torch
		}
		off, err1 := toInt(vm[1])
		n, err2 := toInt(vm[2])
		if err1 != nil || err2 != nil || off < 0 || n < 0 || off > root.numel || n > root.numel-off {
			return nil, fmt.Errorf("storage %q: view %q lies outside the %d-element storage", trunc(key), trunc(vkey), root.numel)
		}
		v := &storageRef{root: root, off: off, n: n}
		views[vkey] = v
		return v, nil
	}
	obj, err := load(br, "main pickle", persistentLoad)
	if err != nil {
		return nil, err
	}
	keysObj, err := load(br, "storage key list", nil)
	if err != nil {
		return nil, err
	}
	keyList, ok := keysObj.(*pickle.List)
	if !ok {
		return nil, fmt.Errorf("storage key list is a %s", typeName(keysObj))
	}

	// Find each storage's bytes; nothing is read yet.
	off := br.Offset()
	for _, k := range keyList.Items {
		key, ok := asString(k)
		if !ok {
			return nil, fmt.Errorf("storage key list holds a %s", typeName(k))
		}
		root := reg[key]
		if root == nil {
			return nil, fmt.Errorf("storage %q is listed but no tensor uses it", trunc(key))
		}
		var hdr [8]byte
		if off > size-8 {
			return nil, fmt.Errorf("storage %q: file ends before its element count", trunc(key))
		}
		if n, err := r.ReadAt(hdr[:], off); n < len(hdr) {
			return nil, fmt.Errorf("storage %q: %w", trunc(key), ioErr(err))
		}
		count := int64(binary.LittleEndian.Uint64(hdr[:]))
		if count != root.numel {
			return nil, fmt.Errorf("storage %q has %d elements in the file, but the pickle says %d", trunc(key), count, root.numel)
		}
		nbytes := count * root.dt.size // bounded when the root was made
		off += 8
		if nbytes > size-off {
			return nil, fmt.Errorf("storage %q: file ends inside its %d bytes of data", trunc(key), nbytes)
		}
		root.dataOff, root.hasData = off, true
		off += nbytes
	}

	keys, refs, err := stateDict(obj)
	if err != nil {
		return nil, err
	}
	load := func(root *rootStorage) ([]byte, error) {
		if !root.hasData {
			return nil, errors.New("not in the storage key list, so the file holds no data for it")
		}
		b := make([]byte, root.numel*root.dt.size)
		// ReaderAt may report io.EOF along with a full read at the end.
		if n, err := r.ReadAt(b, root.dataOff); n < len(b) {
			return nil, ioErr(err)
		}
		return b, nil
	}
	return materialize(keys, refs, load, size)
}
