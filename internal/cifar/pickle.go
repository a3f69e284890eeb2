package cifar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
)

// The python version of CIFAR-10 is a set of pickles written by Python 2's
// cPickle (protocol 2): a dict with 'data' (a numpy uint8 array 10000×3072,
// pickled through numpy.core.multiarray._reconstruct), 'labels' (a list of
// ints), 'batch_label' and 'filenames'. Loading a pickle with Python runs
// whatever callables it names; here it is read as data by a small
// interpreter of the opcodes such files use. The only globals it accepts
// are numpy's array and dtype reconstruction, and those only build inert
// values that are checked before use: nothing is ever executed.

// Values on the interpreter's stack.
type (
	pyBytes  []byte // Python 2 str or Python 3 bytes
	pyStr    string // unicode
	pyInt    int64
	pyFloat  float64
	pyBool   bool
	pyNone   struct{}
	pyTuple  []any
	pyList   struct{ items []any }
	pyGlobal struct{ module, name string }
	pyDict   struct {
		keys  []any
		vals  []any
		index map[dictKey]int
	}
	// pyArray is what numpy's _reconstruct + __setstate__ would build.
	pyArray struct {
		shape   []int
		dtype   *pyDtype
		fortran bool
		data    []byte
		built   bool
	}
	pyDtype struct {
		str   string // as given to numpy.dtype(), e.g. "u1"
		order string // byte order from the state, e.g. "|"
		built bool
	}
)

type dictKey struct {
	kind byte // 's' text, 'b' bytes, 'i' int, 'n' None, 't' bool
	s    string
	i    int64
}

func keyOf(v any) (dictKey, error) {
	switch v := v.(type) {
	case pyStr:
		return dictKey{kind: 's', s: string(v)}, nil
	case pyBytes:
		return dictKey{kind: 'b', s: string(v)}, nil
	case pyInt:
		return dictKey{kind: 'i', i: int64(v)}, nil
	case pyBool:
		if v {
			return dictKey{kind: 'i', i: 1}, nil // True == 1 as a key in Python
		}
		return dictKey{kind: 'i', i: 0}, nil
	case pyNone:
		return dictKey{kind: 'n'}, nil
	}
	return dictKey{}, fmt.Errorf("unsupported dict key of type %s", typeName(v))
}

func (d *pyDict) set(k, v any) error {
	key, err := keyOf(k)
	if err != nil {
		return err
	}
	if d.index == nil {
		d.index = map[dictKey]int{}
	}
	if i, ok := d.index[key]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[key] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

// get looks a text key up both as str and as bytes: the real files (Python 2)
// have bytes keys, files re-saved by Python 3 have str keys.
func (d *pyDict) get(name string) (any, bool) {
	for _, k := range []dictKey{{kind: 'b', s: name}, {kind: 's', s: name}} {
		if i, ok := d.index[k]; ok {
			return d.vals[i], true
		}
	}
	return nil, false
}

func typeName(v any) string {
	switch v.(type) {
	case pyBytes:
		return "bytes"
	case pyStr:
		return "str"
	case pyInt:
		return "int"
	case pyFloat:
		return "float"
	case pyBool:
		return "bool"
	case pyNone:
		return "None"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return "global"
	case *pyArray:
		return "numpy.ndarray"
	case *pyDtype:
		return "numpy.dtype"
	}
	return fmt.Sprintf("%T", v)
}

// Pickle opcodes understood by unpickle (names as in Python's pickletools).
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opNone           = 'N'
	opReduce         = 'R'
	opBinString      = 'T'
	opShortBinString = 'U'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opBinFloat       = 'G'
	opProto          = 0x80
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
)

// unpickler is the interpreter's state: a byte cursor, the value stack, the
// positions of MARKs on it, and the memo.
type unpickler struct {
	b     []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint64]any
}

var errTruncated = errors.New("pickle truncated")

func (u *unpickler) take(n uint64) ([]byte, error) {
	if n > uint64(len(u.b)-u.pos) {
		return nil, errTruncated
	}
	s := u.b[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return s, nil
}

func (u *unpickler) uint(n int) (uint64, error) {
	s, err := u.take(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(s[i])
	}
	return v, nil
}

func (u *unpickler) line() (string, error) {
	for i := u.pos; i < len(u.b); i++ {
		if u.b[i] == '\n' {
			s := string(u.b[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	return "", errTruncated
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	n := len(u.stack)
	if n == 0 || (len(u.marks) > 0 && u.marks[len(u.marks)-1] == n) {
		return nil, errors.New("stack underflow")
	}
	v := u.stack[n-1]
	u.stack = u.stack[:n-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	n := len(u.stack)
	if n == 0 || (len(u.marks) > 0 && u.marks[len(u.marks)-1] == n) {
		return nil, errors.New("stack underflow")
	}
	return u.stack[n-1], nil
}

// popMark removes and returns the items above the last MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

// unpickle interprets a pickle and returns the value STOP leaves on top.
func unpickle(b []byte) (v any, err error) {
	u := &unpickler{b: b, memo: map[uint64]any{}}
	for {
		if u.pos >= len(u.b) {
			return nil, errors.New("pickle ends without STOP")
		}
		at := u.pos
		op := u.b[u.pos]
		u.pos++
		done, err := u.step(op)
		if err != nil {
			return nil, fmt.Errorf("pickle opcode 0x%02x at byte %d: %w", op, at, err)
		}
		if done {
			return u.pop()
		}
	}
}

func (u *unpickler) step(op byte) (stop bool, err error) {
	switch op {
	case opProto:
		p, err := u.uint(1)
		if err != nil {
			return false, err
		}
		if p > 5 {
			return false, fmt.Errorf("unsupported pickle protocol %d", p)
		}
	case opFrame:
		_, err = u.uint(8) // framing is only a read-ahead hint
	case opStop:
		return true, nil
	case opMark:
		u.marks = append(u.marks, len(u.stack))
	case opPop:
		if len(u.marks) > 0 && u.marks[len(u.marks)-1] == len(u.stack) {
			u.marks = u.marks[:len(u.marks)-1] // POP of a MARK, as Python does
		} else {
			_, err = u.pop()
		}
	case opPopMark:
		_, err = u.popMark()
	case opDup:
		var v any
		if v, err = u.top(); err == nil {
			u.push(v)
		}
	case opNone:
		u.push(pyNone{})
	case opNewTrue:
		u.push(pyBool(true))
	case opNewFalse:
		u.push(pyBool(false))
	case opBinInt:
		var v uint64
		if v, err = u.uint(4); err == nil {
			u.push(pyInt(int32(uint32(v))))
		}
	case opBinInt1:
		var v uint64
		if v, err = u.uint(1); err == nil {
			u.push(pyInt(v))
		}
	case opBinInt2:
		var v uint64
		if v, err = u.uint(2); err == nil {
			u.push(pyInt(v))
		}
	case opLong1, opLong4:
		var n uint64
		if op == opLong1 {
			n, err = u.uint(1)
		} else {
			n, err = u.uint(4)
		}
		if err != nil {
			return false, err
		}
		var s []byte
		if s, err = u.take(n); err != nil {
			return false, err
		}
		var v pyInt
		if v, err = decodeLong(s); err == nil {
			u.push(v)
		}
	case opBinFloat:
		var s []byte
		if s, err = u.take(8); err == nil {
			u.push(pyFloat(math.Float64frombits(binary.BigEndian.Uint64(s))))
		}
	case opShortBinString, opShortBinBytes, opShortBinUni:
		err = u.str(op, 1)
	case opBinString, opBinBytes, opBinUnicode:
		err = u.str(op, 4)
	case opBinUnicode8, opBinBytes8:
		err = u.str(op, 8)
	case opEmptyDict:
		u.push(&pyDict{})
	case opEmptyList:
		u.push(&pyList{})
	case opEmptyTuple:
		u.push(pyTuple{})
	case opDict:
		var items []any
		if items, err = u.popMark(); err != nil {
			return false, err
		}
		d := &pyDict{}
		err = setItems(d, items)
		u.push(d)
	case opList:
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(&pyList{items: items})
		}
	case opTuple:
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(pyTuple(items))
		}
	case opTuple1, opTuple2, opTuple3:
		n := int(op-opTuple1) + 1
		t := make(pyTuple, n)
		for i := n - 1; i >= 0; i-- {
			if t[i], err = u.pop(); err != nil {
				return false, err
			}
		}
		u.push(t)
	case opAppend:
		var v, l any
		if v, err = u.pop(); err != nil {
			return false, err
		}
		if l, err = u.top(); err != nil {
			return false, err
		}
		lst, ok := l.(*pyList)
		if !ok {
			return false, fmt.Errorf("APPEND to a %s", typeName(l))
		}
		lst.items = append(lst.items, v)
	case opAppends:
		var items []any
		var l any
		if items, err = u.popMark(); err != nil {
			return false, err
		}
		if l, err = u.top(); err != nil {
			return false, err
		}
		lst, ok := l.(*pyList)
		if !ok {
			return false, fmt.Errorf("APPENDS to a %s", typeName(l))
		}
		lst.items = append(lst.items, items...)
	case opSetItem:
		var k, v, d any
		if v, err = u.pop(); err != nil {
			return false, err
		}
		if k, err = u.pop(); err != nil {
			return false, err
		}
		if d, err = u.top(); err != nil {
			return false, err
		}
		dict, ok := d.(*pyDict)
		if !ok {
			return false, fmt.Errorf("SETITEM on a %s", typeName(d))
		}
		err = dict.set(k, v)
	case opSetItems:
		var items []any
		var d any
		if items, err = u.popMark(); err != nil {
			return false, err
		}
		if d, err = u.top(); err != nil {
			return false, err
		}
		dict, ok := d.(*pyDict)
		if !ok {
			return false, fmt.Errorf("SETITEMS on a %s", typeName(d))
		}
		err = setItems(dict, items)
	case opBinPut, opLongBinPut, opMemoize:
		var v any
		if v, err = u.top(); err != nil {
			return false, err
		}
		var i uint64
		switch op {
		case opBinPut:
			i, err = u.uint(1)
		case opLongBinPut:
			i, err = u.uint(4)
		default:
			i = uint64(len(u.memo))
		}
		if err == nil {
			u.memo[i] = v
		}
	case opBinGet, opLongBinGet:
		var i uint64
		if op == opBinGet {
			i, err = u.uint(1)
		} else {
			i, err = u.uint(4)
		}
		if err != nil {
			return false, err
		}
		v, ok := u.memo[i]
		if !ok {
			return false, fmt.Errorf("memo key %d not defined", i)
		}
		u.push(v)
	case opGlobal:
		var mod, name string
		if mod, err = u.line(); err != nil {
			return false, err
		}
		if name, err = u.line(); err != nil {
			return false, err
		}
		var g pyGlobal
		if g, err = allowGlobal(mod, name); err == nil {
			u.push(g)
		}
	case opStackGlobal:
		var mod, name any
		if name, err = u.pop(); err != nil {
			return false, err
		}
		if mod, err = u.pop(); err != nil {
			return false, err
		}
		ms, ok1 := mod.(pyStr)
		ns, ok2 := name.(pyStr)
		if !ok1 || !ok2 {
			return false, errors.New("STACK_GLOBAL needs two str")
		}
		var g pyGlobal
		if g, err = allowGlobal(string(ms), string(ns)); err == nil {
			u.push(g)
		}
	case opReduce:
		var args, fn any
		if args, err = u.pop(); err != nil {
			return false, err
		}
		if fn, err = u.pop(); err != nil {
			return false, err
		}
		var v any
		if v, err = reduce(fn, args); err == nil {
			u.push(v)
		}
	case opBuild:
		var state, obj any
		if state, err = u.pop(); err != nil {
			return false, err
		}
		if obj, err = u.top(); err != nil {
			return false, err
		}
		err = build(obj, state)
	default:
		return false, errors.New("unsupported opcode")
	}
	return false, err
}

// str reads a length-prefixed string opcode; n is the size of the length.
func (u *unpickler) str(op byte, n int) error {
	l, err := u.uint(n)
	if err != nil {
		return err
	}
	if op == opBinString && l >= 1<<31 {
		return errors.New("negative BINSTRING length") // signed in Python
	}
	s, err := u.take(l)
	if err != nil {
		return err
	}
	switch op {
	case opBinUnicode, opShortBinUni, opBinUnicode8:
		u.push(pyStr(s))
	default:
		u.push(pyBytes(s))
	}
	return nil
}

func setItems(d *pyDict, items []any) error {
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
func decodeLong(s []byte) (pyInt, error) {
	if len(s) > 8 {
		return 0, fmt.Errorf("integer of %d bytes is too large", len(s))
	}
	var v uint64
	for i := len(s) - 1; i >= 0; i-- {
		v = v<<8 | uint64(s[i])
	}
	if len(s) > 0 && len(s) < 8 && s[len(s)-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * len(s)) // sign-extend
	}
	return pyInt(int64(v)), nil
}

// allowGlobal is the whitelist: numpy's array reconstruction under its
// numpy 1 (numpy.core) and numpy 2 (numpy._core) names. Any other global is
// refused, so that a pickle can never name something to run.
func allowGlobal(mod, name string) (pyGlobal, error) {
	g := pyGlobal{mod, name}
	switch g {
	case pyGlobal{"numpy.core.multiarray", "_reconstruct"},
		pyGlobal{"numpy._core.multiarray", "_reconstruct"},
		pyGlobal{"numpy", "ndarray"},
		pyGlobal{"numpy", "dtype"}:
		return g, nil
	}
	return g, fmt.Errorf("global %s.%s is not allowed (only numpy's ndarray reconstruction is)", mod, name)
}

func isReconstruct(g pyGlobal) bool {
	return g.name == "_reconstruct" && (g.module == "numpy.core.multiarray" || g.module == "numpy._core.multiarray")
}

// reduce applies a whitelisted global to its arguments, which here only
// means recording them in an inert value.
func reduce(fn, args any) (any, error) {
	g, ok := fn.(pyGlobal)
	if !ok {
		return nil, fmt.Errorf("REDUCE of a %s", typeName(fn))
	}
	a, ok := args.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("REDUCE arguments are a %s, want a tuple", typeName(args))
	}
	switch {
	case isReconstruct(g):
		// _reconstruct(numpy.ndarray, (0,), b'b'): an empty array that BUILD fills.
		if len(a) != 3 || a[0] != (pyGlobal{"numpy", "ndarray"}) {
			return nil, errors.New("_reconstruct arguments are not (numpy.ndarray, shape, typecode)")
		}
		return &pyArray{}, nil
	case g == pyGlobal{"numpy", "dtype"}:
		// dtype('u1', 0, 1)
		if len(a) < 1 {
			return nil, errors.New("numpy.dtype without arguments")
		}
		var s string
		switch v := a[0].(type) {
		case pyBytes:
			s = string(v)
		case pyStr:
			s = string(v)
		default:
			return nil, fmt.Errorf("numpy.dtype of a %s", typeName(a[0]))
		}
		return &pyDtype{str: s}, nil
	}
	return nil, fmt.Errorf("cannot call %s.%s", g.module, g.name)
}

// build applies a BUILD state to an array or a dtype (numpy's __setstate__).
func build(obj, state any) error {
	st, ok := state.(pyTuple)
	if !ok {
		return fmt.Errorf("BUILD state is a %s, want a tuple", typeName(state))
	}
	switch o := obj.(type) {
	case *pyDtype:
		// (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
		if len(st) < 2 {
			return errors.New("short dtype state")
		}
		switch v := st[1].(type) {
		case pyBytes:
			o.order = string(v)
		case pyStr:
			o.order = string(v)
		default:
			return errors.New("dtype state without a byte order")
		}
		o.built = true
		return nil
	case *pyArray:
		// (version, shape, dtype, is_fortran, raw data)
		if len(st) != 5 {
			return fmt.Errorf("ndarray state has %d items, want 5", len(st))
		}
		shape, ok := st[1].(pyTuple)
		if !ok {
			return errors.New("ndarray shape is not a tuple")
		}
		o.shape = make([]int, len(shape))
		for i, d := range shape {
			n, ok := d.(pyInt)
			if !ok || n < 0 || n > math.MaxInt32 {
				return errors.New("ndarray shape is not a tuple of sizes")
			}
			o.shape[i] = int(n)
		}
		if o.dtype, ok = st[2].(*pyDtype); !ok {
			return errors.New("ndarray dtype is missing")
		}
		f, ok := st[3].(pyBool)
		if !ok {
			if i, isInt := st[3].(pyInt); isInt && (i == 0 || i == 1) {
				f, ok = i == 1, true
			}
		}
		if !ok {
			return errors.New("ndarray fortran flag is not a bool")
		}
		o.fortran = bool(f)
		data, ok := st[4].(pyBytes)
		if !ok {
			return fmt.Errorf("ndarray data is a %s, want bytes", typeName(st[4]))
		}
		o.data = data
		o.built = true
		return nil
	}
	return fmt.Errorf("BUILD on a %s", typeName(obj))
}

// ReadPickleFile reads one batch file of the python version
// (cifar-10-batches-py/data_batch_N or test_batch). Its classes are
// ClassNames.
func ReadPickleFile(path string) (*Dataset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cifar: %w", err)
	}
	ds, err := parsePickleBatch(b)
	if err != nil {
		return nil, fmt.Errorf("cifar: %s: %w", path, err)
	}
	return ds, nil
}

func parsePickleBatch(b []byte) (*Dataset, error) {
	v, err := unpickle(b)
	if err != nil {
		return nil, err
	}
	d, ok := v.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("pickle holds a %s, want a dict", typeName(v))
	}
	dv, ok := d.get("data")
	if !ok {
		return nil, errors.New("no 'data' entry")
	}
	arr, ok := dv.(*pyArray)
	if !ok || !arr.built || arr.dtype == nil || !arr.dtype.built {
		return nil, fmt.Errorf("'data' is a %s, want a numpy array", typeName(dv))
	}
	if s := arr.dtype.str; s != "u1" && s != "|u1" && s != "uint8" {
		return nil, fmt.Errorf("'data' has dtype %q, want uint8", s)
	}
	if arr.fortran {
		return nil, errors.New("'data' is in Fortran order, want C order")
	}
	// 10000×3072 in the real files; N×3×32×32 is the same layout.
	sh := arr.shape
	if !(len(sh) == 2 && sh[1] == ImageBytes) && !(len(sh) == 4 && sh[1] == 3 && sh[2] == Side && sh[3] == Side) {
		return nil, fmt.Errorf("'data' has shape %v, want [N %d]", sh, ImageBytes)
	}
	n := sh[0]
	if len(arr.data) != n*ImageBytes {
		return nil, fmt.Errorf("'data' has %d bytes, its shape %v needs %d", len(arr.data), sh, n*ImageBytes)
	}
	lv, ok := d.get("labels")
	if !ok {
		return nil, errors.New("no 'labels' entry")
	}
	var items []any
	switch l := lv.(type) {
	case *pyList:
		items = l.items
	case pyTuple:
		items = l
	default:
		return nil, fmt.Errorf("'labels' is a %s, want a list", typeName(lv))
	}
	if len(items) != n {
		return nil, fmt.Errorf("%d labels for %d images", len(items), n)
	}
	ds := &Dataset{Images: make([]byte, n*ImageBytes), Labels: make([]uint8, n), Classes: ClassNames}
	for i, it := range items {
		l, ok := it.(pyInt)
		if !ok {
			return nil, fmt.Errorf("label %d is a %s, want an int", i, typeName(it))
		}
		if l < 0 || l >= NumClasses {
			return nil, fmt.Errorf("label %d of record %d out of range 0..%d", l, i, NumClasses-1)
		}
		ds.Labels[i] = uint8(l)
	}
	copy(ds.Images, arr.data) // do not keep the whole file alive
	return ds, nil
}

// readMetaPickle reads batches.meta: a dict whose 'label_names' lists the
// class names in label order.
func readMetaPickle(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cifar: %w", err)
	}
	names, err := parseMetaPickle(b)
	if err != nil {
		return nil, fmt.Errorf("cifar: %s: %w", path, err)
	}
	return names, nil
}

func parseMetaPickle(b []byte) ([]string, error) {
	v, err := unpickle(b)
	if err != nil {
		return nil, err
	}
	d, ok := v.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("pickle holds a %s, want a dict", typeName(v))
	}
	lv, ok := d.get("label_names")
	if !ok {
		return nil, errors.New("no 'label_names' entry")
	}
	l, ok := lv.(*pyList)
	if !ok {
		return nil, fmt.Errorf("'label_names' is a %s, want a list", typeName(lv))
	}
	if len(l.items) != NumClasses {
		return nil, fmt.Errorf("%d label names, want %d", len(l.items), NumClasses)
	}
	names := make([]string, len(l.items))
	for i, it := range l.items {
		switch s := it.(type) {
		case pyBytes:
			names[i] = string(s)
		case pyStr:
			names[i] = string(s)
		default:
			return nil, fmt.Errorf("label name %d is a %s", i, typeName(it))
		}
		if names[i] == "" {
			return nil, fmt.Errorf("label name %d is empty", i)
		}
	}
	return names, nil
}
