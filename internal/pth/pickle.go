package pth

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The pickle machine below builds Python values as plain Go data. It never
// imports or calls anything: GLOBAL only resolves names from a short
// allow-list, and "calling" one of them (REDUCE, NEWOBJ, ...) is a Go
// function that builds a dict or records a tensor view.

// Python values as the machine represents them.
type (
	pyNone  struct{}
	pyTuple []any
	pyBytes []byte
	// pyList is a pointer so that APPEND on a memoised list is seen by
	// every reference, as in Python. Sets are lists too.
	pyList struct{ items []any }
	// pyDict keeps insertion order, like Python 3 dicts and OrderedDict.
	pyDict struct {
		keys  []any
		vals  []any
		index map[string]int // hashKey(key) -> position
	}
	// pyGlobal is an allowed GLOBAL; what it means is decided where used.
	pyGlobal struct{ module, name string }
)

func newDict() *pyDict { return &pyDict{index: map[string]int{}} }

func (d *pyDict) set(k, v any) error {
	h, err := hashKey(k, 0)
	if err != nil {
		return err
	}
	if i, ok := d.index[h]; ok {
		d.vals[i] = v // Python keeps the first position on overwrite
		return nil
	}
	d.index[h] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

func (d *pyDict) get(k string) (any, bool) {
	h, _ := hashKey(k, 0)
	i, ok := d.index[h]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// maxKeyDepth bounds tuple nesting in dict keys, so hashing stays cheap on
// hostile input.
const maxKeyDepth = 32

// hashKey encodes a hashable value as a unique string (length-prefixed so
// that different values never collide). Lists and dicts are unhashable, as in
// Python; that also keeps self-referencing values out of the recursion.
func hashKey(v any, depth int) (string, error) {
	if depth > maxKeyDepth {
		return "", errors.New("dict key nested too deeply")
	}
	switch x := v.(type) {
	case string:
		return "s" + strconv.Itoa(len(x)) + ":" + x, nil
	case pyBytes:
		return "b" + strconv.Itoa(len(x)) + ":" + string(x), nil
	case int64:
		return "i" + strconv.FormatInt(x, 10), nil
	case *big.Int:
		return "i" + x.String(), nil
	case bool:
		return "B" + strconv.FormatBool(x), nil
	case float64:
		return "f" + strconv.FormatUint(math.Float64bits(x), 16), nil
	case pyNone:
		return "N", nil
	case pyGlobal:
		return "g" + strconv.Itoa(len(x.module)) + ":" + x.module + "." + x.name, nil
	case pyTuple:
		var sb strings.Builder
		sb.WriteString("t" + strconv.Itoa(len(x)) + "(")
		for _, e := range x {
			h, err := hashKey(e, depth+1)
			if err != nil {
				return "", err
			}
			sb.WriteString(strconv.Itoa(len(h)) + ":" + h)
		}
		sb.WriteString(")")
		return sb.String(), nil
	}
	return "", fmt.Errorf("unhashable dict key of type %s", typeName(v))
}

// typeName names a value's type for error messages. It never formats the
// value itself, which could be huge or refer to itself.
func typeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "nothing"
	case pyNone:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case pyBytes:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return "global " + x.module + "." + x.name
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

// byteReader reads a pickle stream and counts what it consumed, so the
// legacy format can find the raw storages that follow the pickles.
type byteReader struct {
	br    *bufio.Reader
	pos   int64 // bytes consumed so far
	limit int64 // total bytes available
}

func newByteReader(r io.Reader, size int64) *byteReader {
	return &byteReader{br: bufio.NewReaderSize(r, 1<<16), limit: size}
}

var errTruncated = errors.New("unexpected end of data")

func (r *byteReader) readByte() (byte, error) {
	if r.pos >= r.limit {
		return 0, errTruncated
	}
	b, err := r.br.ReadByte()
	if err != nil {
		return 0, ioErr(err)
	}
	r.pos++
	return b, nil
}

// read returns the next n bytes. Lengths come from the file, so they are
// checked against what is left before anything is allocated.
func (r *byteReader) read(n uint64) ([]byte, error) {
	if n > uint64(r.limit-r.pos) {
		return nil, errTruncated
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r.br, buf); err != nil {
		return nil, ioErr(err)
	}
	r.pos += int64(n)
	return buf, nil
}

// readLine returns the bytes up to a newline, without it.
func (r *byteReader) readLine() (string, error) {
	var sb strings.Builder
	for {
		b, err := r.readByte()
		if err != nil {
			return "", err
		}
		if b == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b)
	}
}

func ioErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errTruncated
	}
	return err
}

// Pickle opcodes (see Python's Lib/pickle.py).
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opFloat          = 'F'
	opInt            = 'I'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opLong           = 'L'
	opBinInt2        = 'M'
	opNone           = 'N'
	opPersID         = 'P'
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opString         = 'S'
	opBinString      = 'T'
	opShortBinString = 'U'
	opUnicode        = 'V'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opGet            = 'g'
	opBinGet         = 'h'
	opInst           = 'i'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opObj            = 'o'
	opPut            = 'p'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opBinFloat       = 'G'

	opProto    = 0x80
	opNewObj   = 0x81
	opExt1     = 0x82
	opExt2     = 0x83
	opExt4     = 0x84
	opTuple1   = 0x85
	opTuple2   = 0x86
	opTuple3   = 0x87
	opNewTrue  = 0x88
	opNewFalse = 0x89
	opLong1    = 0x8a
	opLong4    = 0x8b

	opBinBytes      = 'B'
	opShortBinBytes = 'C'

	opShortBinUnicode = 0x8c
	opBinUnicode8     = 0x8d
	opBinBytes8       = 0x8e
	opEmptySet        = 0x8f
	opAddItems        = 0x90
	opFrozenSet       = 0x91
	opNewObjEx        = 0x92
	opStackGlobal     = 0x93
	opMemoize         = 0x94
	opFrame           = 0x95

	opByteArray8     = 0x96
	opNextBuffer     = 0x97
	opReadOnlyBuffer = 0x98
)

// unpickler runs one pickle (up to STOP) from r.
type unpickler struct {
	r     *byteReader
	name  string // what is being read, for error messages
	stack []any
	marks []int // stack lengths at each MARK
	memo  map[uint64]any
	// persistentLoad resolves BINPERSID ids; nil means none are expected.
	persistentLoad func(pid any) (any, error)
}

func newUnpickler(r *byteReader, name string, pl func(any) (any, error)) *unpickler {
	return &unpickler{r: r, name: name, memo: map[uint64]any{}, persistentLoad: pl}
}

type pickleError struct {
	name string
	pos  int64
	err  error
}

func (e *pickleError) Error() string {
	return fmt.Sprintf("%s: byte %d: %v", e.name, e.pos, e.err)
}

func (e *pickleError) Unwrap() error { return e.err }

func (u *unpickler) base() int {
	if len(u.marks) == 0 {
		return 0
	}
	return u.marks[len(u.marks)-1]
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) <= u.base() {
		return nil, errors.New("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) <= u.base() {
		return nil, errors.New("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark returns the items pushed since the last MARK and drops the mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	b := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[b:]...)
	u.stack = u.stack[:b]
	return items, nil
}

func le(b []byte) uint64 {
	var x uint64
	for i := len(b) - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	return x
}

// load runs the pickle machine until STOP and returns the result.
func (u *unpickler) load() (any, error) {
	for {
		pos := u.r.pos
		op, err := u.r.readByte()
		if err == nil {
			var done bool
			var v any
			done, v, err = u.step(op)
			if err == nil && done {
				return v, nil
			}
		}
		if err != nil {
			return nil, &pickleError{u.name, pos, err}
		}
	}
}

// readLen reads an n-byte little-endian length.
func (u *unpickler) readLen(n uint64) (uint64, error) {
	b, err := u.r.read(n)
	if err != nil {
		return 0, err
	}
	return le(b), nil
}

// readCounted reads a length of lenSize bytes, then that many bytes.
func (u *unpickler) readCounted(lenSize uint64) ([]byte, error) {
	n, err := u.readLen(lenSize)
	if err != nil {
		return nil, err
	}
	return u.r.read(n)
}

func (u *unpickler) step(op byte) (done bool, result any, err error) {
	switch op {
	case opProto:
		v, err := u.r.readByte()
		if err != nil {
			return false, nil, err
		}
		if v > 5 {
			return false, nil, fmt.Errorf("unsupported pickle protocol %d", v)
		}
	case opFrame:
		// Frames only group opcodes for buffering; their content follows
		// inline, so the length is just checked and skipped.
		n, err := u.readLen(8)
		if err != nil {
			return false, nil, err
		}
		if n > uint64(u.r.limit-u.r.pos) {
			return false, nil, errTruncated
		}
	case opStop:
		v, err := u.pop()
		return err == nil, v, err
	case opMark:
		u.marks = append(u.marks, len(u.stack))
	case opPop:
		if len(u.stack) > u.base() {
			u.stack = u.stack[:len(u.stack)-1]
		} else if _, err := u.popMark(); err != nil {
			return false, nil, err
		}
	case opPopMark:
		if _, err := u.popMark(); err != nil {
			return false, nil, err
		}
	case opDup:
		v, err := u.top()
		if err != nil {
			return false, nil, err
		}
		u.push(v)

	case opNone:
		u.push(pyNone{})
	case opNewTrue:
		u.push(true)
	case opNewFalse:
		u.push(false)
	case opBinInt:
		b, err := u.r.read(4)
		if err != nil {
			return false, nil, err
		}
		u.push(int64(int32(binary.LittleEndian.Uint32(b))))
	case opBinInt1:
		b, err := u.r.readByte()
		if err != nil {
			return false, nil, err
		}
		u.push(int64(b))
	case opBinInt2:
		b, err := u.r.read(2)
		if err != nil {
			return false, nil, err
		}
		u.push(int64(binary.LittleEndian.Uint16(b)))
	case opLong1, opLong4:
		var n uint64
		if op == opLong1 {
			b, err := u.r.readByte()
			if err != nil {
				return false, nil, err
			}
			n = uint64(b)
		} else {
			b, err := u.r.read(4)
			if err != nil {
				return false, nil, err
			}
			m := int32(binary.LittleEndian.Uint32(b))
			if m < 0 {
				return false, nil, errors.New("LONG4 with negative length")
			}
			n = uint64(m)
		}
		b, err := u.r.read(n)
		if err != nil {
			return false, nil, err
		}
		u.push(decodeLong(b))
	case opInt, opLong:
		line, err := u.r.readLine()
		if err != nil {
			return false, nil, err
		}
		// Protocol 0 writes True/False as I01/I00.
		if op == opInt && line == "01" {
			u.push(true)
			break
		}
		if op == opInt && line == "00" {
			u.push(false)
			break
		}
		line = strings.TrimSuffix(line, "L")
		z, ok := new(big.Int).SetString(line, 10)
		if !ok {
			return false, nil, fmt.Errorf("bad integer %.40q", line)
		}
		u.push(normInt(z))
	case opFloat:
		line, err := u.r.readLine()
		if err != nil {
			return false, nil, err
		}
		f, err := strconv.ParseFloat(line, 64)
		if err != nil {
			return false, nil, fmt.Errorf("bad float %.40q", line)
		}
		u.push(f)
	case opBinFloat:
		b, err := u.r.read(8)
		if err != nil {
			return false, nil, err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))

	case opBinString:
		// Python 2 pickles carry text as byte strings; torch loads them
		// with encoding='utf-8', i.e. as str. BINSTRING's length is signed.
		b, err := u.r.read(4)
		if err != nil {
			return false, nil, err
		}
		n := int32(binary.LittleEndian.Uint32(b))
		if n < 0 {
			return false, nil, errors.New("BINSTRING with negative length")
		}
		str, err := u.r.read(uint64(n))
		if err != nil {
			return false, nil, err
		}
		u.push(string(str))
	case opShortBinString, opShortBinUnicode, opBinUnicode, opBinUnicode8:
		str, err := u.readCounted(lengthSize(op))
		if err != nil {
			return false, nil, err
		}
		u.push(string(str))
	case opShortBinBytes, opBinBytes, opBinBytes8, opByteArray8:
		b, err := u.readCounted(lengthSize(op))
		if err != nil {
			return false, nil, err
		}
		u.push(pyBytes(b))
	case opString:
		line, err := u.r.readLine()
		if err != nil {
			return false, nil, err
		}
		s, err := unquotePy(line)
		if err != nil {
			return false, nil, err
		}
		u.push(s)
	case opUnicode:
		line, err := u.r.readLine()
		if err != nil {
			return false, nil, err
		}
		u.push(rawUnicodeEscape(line))

	case opEmptyTuple:
		u.push(pyTuple{})
	case opTuple:
		items, err := u.popMark()
		if err != nil {
			return false, nil, err
		}
		u.push(pyTuple(items))
	case opTuple1, opTuple2, opTuple3:
		n := int(op-opTuple1) + 1
		if len(u.stack)-u.base() < n {
			return false, nil, errors.New("stack underflow")
		}
		t := append(pyTuple(nil), u.stack[len(u.stack)-n:]...)
		u.stack = u.stack[:len(u.stack)-n]
		u.push(t)
	case opEmptyList:
		u.push(&pyList{})
	case opList:
		items, err := u.popMark()
		if err != nil {
			return false, nil, err
		}
		u.push(&pyList{items: items})
	case opAppend, opAppends, opAddItems:
		var items []any
		if op == opAppend {
			v, err := u.pop()
			if err != nil {
				return false, nil, err
			}
			items = []any{v}
		} else if items, err = u.popMark(); err != nil {
			return false, nil, err
		}
		t, err := u.top()
		if err != nil {
			return false, nil, err
		}
		l, ok := t.(*pyList)
		if !ok {
			return false, nil, fmt.Errorf("append to a %s", typeName(t))
		}
		l.items = append(l.items, items...)
	case opEmptySet:
		u.push(&pyList{})
	case opFrozenSet:
		items, err := u.popMark()
		if err != nil {
			return false, nil, err
		}
		u.push(pyTuple(items))
	case opEmptyDict:
		u.push(newDict())
	case opDict:
		items, err := u.popMark()
		if err != nil {
			return false, nil, err
		}
		d := newDict()
		if err := setPairs(d, items); err != nil {
			return false, nil, err
		}
		u.push(d)
	case opSetItem, opSetItems:
		var items []any
		if op == opSetItem {
			v, err := u.pop()
			if err != nil {
				return false, nil, err
			}
			k, err := u.pop()
			if err != nil {
				return false, nil, err
			}
			items = []any{k, v}
		} else if items, err = u.popMark(); err != nil {
			return false, nil, err
		}
		t, err := u.top()
		if err != nil {
			return false, nil, err
		}
		d, ok := t.(*pyDict)
		if !ok {
			return false, nil, fmt.Errorf("setitem on a %s", typeName(t))
		}
		if err := setPairs(d, items); err != nil {
			return false, nil, err
		}

	case opGet, opBinGet, opLongBinGet, opPut, opBinPut, opLongBinPut, opMemoize:
		var idx uint64
		switch op {
		case opGet, opPut:
			line, err := u.r.readLine()
			if err != nil {
				return false, nil, err
			}
			if idx, err = strconv.ParseUint(line, 10, 64); err != nil {
				return false, nil, fmt.Errorf("bad memo index %.40q", line)
			}
		case opBinGet, opBinPut:
			b, err := u.r.readByte()
			if err != nil {
				return false, nil, err
			}
			idx = uint64(b)
		case opLongBinGet, opLongBinPut:
			if idx, err = u.readLen(4); err != nil {
				return false, nil, err
			}
		case opMemoize:
			idx = uint64(len(u.memo))
		}
		if op == opGet || op == opBinGet || op == opLongBinGet {
			v, ok := u.memo[idx]
			if !ok {
				return false, nil, fmt.Errorf("memo entry %d is missing", idx)
			}
			u.push(v)
			break
		}
		v, err := u.top()
		if err != nil {
			return false, nil, err
		}
		u.memo[idx] = v

	case opGlobal, opInst:
		mod, err := u.r.readLine()
		if err != nil {
			return false, nil, err
		}
		name, err := u.r.readLine()
		if err != nil {
			return false, nil, err
		}
		g, err := resolveGlobal(mod, name)
		if err != nil {
			return false, nil, err
		}
		if op == opGlobal {
			u.push(g)
			break
		}
		args, err := u.popMark()
		if err != nil {
			return false, nil, err
		}
		v, err := callGlobal(g, args)
		if err != nil {
			return false, nil, err
		}
		u.push(v)
	case opStackGlobal:
		name, err := u.pop()
		if err != nil {
			return false, nil, err
		}
		mod, err := u.pop()
		if err != nil {
			return false, nil, err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return false, nil, errors.New("STACK_GLOBAL needs two strings")
		}
		g, err := resolveGlobal(ms, ns)
		if err != nil {
			return false, nil, err
		}
		u.push(g)
	case opReduce, opNewObj, opNewObjEx, opObj:
		var fn any
		var args []any
		switch op {
		case opObj:
			items, err := u.popMark()
			if err != nil {
				return false, nil, err
			}
			if len(items) == 0 {
				return false, nil, errors.New("OBJ without a class")
			}
			fn, args = items[0], items[1:]
		default:
			if op == opNewObjEx {
				kw, err := u.pop()
				if err != nil {
					return false, nil, err
				}
				if d, ok := kw.(*pyDict); !ok || len(d.keys) != 0 {
					return false, nil, errors.New("NEWOBJ_EX with keyword arguments")
				}
			}
			a, err := u.pop()
			if err != nil {
				return false, nil, err
			}
			t, ok := a.(pyTuple)
			if !ok {
				return false, nil, fmt.Errorf("call arguments are a %s, not a tuple", typeName(a))
			}
			if fn, err = u.pop(); err != nil {
				return false, nil, err
			}
			args = t
		}
		g, ok := fn.(pyGlobal)
		if !ok {
			return false, nil, fmt.Errorf("cannot call a %s", typeName(fn))
		}
		v, err := callGlobal(g, args)
		if err != nil {
			return false, nil, err
		}
		u.push(v)
	case opBuild:
		state, err := u.pop()
		if err != nil {
			return false, nil, err
		}
		obj, err := u.top()
		if err != nil {
			return false, nil, err
		}
		// torch sets OrderedDict._metadata (per-module versions) this way;
		// it carries nothing about the tensors, so it is dropped.
		switch obj.(type) {
		case *pyDict, *tensorRef:
		default:
			return false, nil, fmt.Errorf("BUILD on a %s (state %s) is not supported", typeName(obj), typeName(state))
		}
	case opBinPersID, opPersID:
		var pid any
		if op == opPersID {
			if pid, err = u.r.readLine(); err != nil {
				return false, nil, err
			}
		} else if pid, err = u.pop(); err != nil {
			return false, nil, err
		}
		if u.persistentLoad == nil {
			return false, nil, errors.New("unexpected persistent id")
		}
		v, err := u.persistentLoad(pid)
		if err != nil {
			return false, nil, err
		}
		u.push(v)
	case opExt1, opExt2, opExt4:
		return false, nil, errors.New("extension-registry opcodes (EXT*) are not supported")
	case opNextBuffer, opReadOnlyBuffer:
		return false, nil, errors.New("out-of-band buffers are not supported")
	default:
		return false, nil, fmt.Errorf("unknown pickle opcode 0x%02x", op)
	}
	return false, nil, nil
}

// lengthSize is the size of the length prefix of a counted string opcode.
func lengthSize(op byte) uint64 {
	switch op {
	case opShortBinString, opShortBinUnicode, opShortBinBytes:
		return 1
	case opBinUnicode8, opBinBytes8, opByteArray8:
		return 8
	}
	return 4
}

func setPairs(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return errors.New("odd number of items for a dict")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// decodeLong decodes a little-endian two's-complement integer (LONG1/LONG4).
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	be := make([]byte, len(b))
	for i, c := range b {
		be[len(b)-1-i] = c
	}
	z := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		z.Sub(z, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return normInt(z)
}

// normInt keeps ints that fit in int64 as int64.
func normInt(z *big.Int) any {
	if z.IsInt64() {
		return z.Int64()
	}
	return z
}

// unquotePy decodes a protocol-0 STRING argument: a Python repr of a string.
func unquotePy(s string) (string, error) {
	if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
		return "", errors.New("STRING argument is not quoted")
	}
	s = s[1 : len(s)-1]
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			sb.WriteByte(c)
			continue
		}
		i++
		switch c = s[i]; c {
		case 'n':
			sb.WriteByte('\n')
		case 't':
			sb.WriteByte('\t')
		case 'r':
			sb.WriteByte('\r')
		case 'x':
			if i+2 >= len(s) {
				return "", errors.New("bad \\x escape in STRING")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", errors.New("bad \\x escape in STRING")
			}
			sb.WriteByte(byte(v))
			i += 2
		default:
			sb.WriteByte(c) // \\, \', \" and anything else literally
		}
	}
	return sb.String(), nil
}

// rawUnicodeEscape decodes a protocol-0 UNICODE argument (\uXXXX and
// \UXXXXXXXX escapes; everything else is Latin-1).
func rawUnicodeEscape(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			n := 4
			if s[i+1] == 'U' {
				n = 8
			}
			if i+2+n <= len(s) {
				if v, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32); err == nil && utf8.ValidRune(rune(v)) {
					sb.WriteRune(rune(v))
					i += 1 + n
					continue
				}
			}
		}
		sb.WriteRune(rune(s[i]))
	}
	return sb.String()
}
