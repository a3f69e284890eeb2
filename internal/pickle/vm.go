// Package pickle runs Python pickles as data. It never imports or executes
// anything: the opcodes that would (GLOBAL, REDUCE, BUILD, persistent ids,
// ...) are handed to callbacks that the caller supplies, which typically
// resolve a short allow-list of names to inert Go values and refuse the
// rest. All opcodes of protocols 0 to 5 are understood except the
// extension registry (EXT1/2/4) and out-of-band buffers (NEXT_BUFFER,
// READONLY_BUFFER).
//
// The machine is iterative, so deeply nested input cannot exhaust the Go
// stack; its stack, marks and memo grow by at most one entry per input
// byte, and by MaxItems entries in all; lengths are checked against the
// bytes left before anything is allocated; dict keys are bounded in depth
// and size (MaxKeyDepth, MaxKeySize).
package pickle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// VM configures the machine. The zero VM reads plain data and refuses every
// global, call, BUILD and persistent id.
type VM struct {
	// Name describes the pickle in error messages ("main pickle",
	// "archive/data.pkl"); empty means "pickle".
	Name string

	// Global resolves GLOBAL, INST and STACK_GLOBAL. It returns an error
	// for names it does not allow; nil refuses them all.
	Global func(module, name string) (Value, error)

	// Call applies a callable to arguments for REDUCE (fn(*args)), NEWOBJ
	// and NEWOBJ_EX (cls.__new__(cls, *args); keyword arguments are
	// refused), OBJ and INST. nil refuses every call.
	Call func(fn Value, args []Value) (Value, error)

	// Build applies BUILD's state to obj (obj.__setstate__(state)). nil
	// refuses BUILD.
	Build func(obj, state Value) error

	// PersistentLoad resolves the ids of PERSID (a string) and BINPERSID
	// (any value). nil refuses persistent ids.
	PersistentLoad func(pid Value) (Value, error)

	// BytesStrings reads Python 2 str (STRING, BINSTRING,
	// SHORT_BINSTRING) as Bytes, like Python's encoding="bytes"; else
	// they are read as string.
	BytesStrings bool

	// Int64Only refuses integers that do not fit in an int64, so that
	// *big.Int never appears.
	Int64Only bool
}

// MaxItems bounds the values pushed, marks set and memo entries written
// in one run, together: each costs tens of bytes, so a pickle of a few
// megabytes of one-byte opcodes could otherwise take gigabytes. The data
// vgg16 reads (state dicts, CIFAR's python batches: 10,000 labels and
// file names each) holds a few tens of thousands.
const MaxItems = 1 << 22

// MaxIntDigits bounds the decimal integers of protocol 0 (INT, LONG), as
// Python bounds int(str).
const MaxIntDigits = 4300

// Error is the error of a failed run: where, in which opcode, and why.
type Error struct {
	Name   string // VM.Name
	Offset int64  // of the opcode
	Op     int    // the opcode, or -1 when the input ended before one
	Err    error
}

func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = "pickle"
	}
	if e.Op < 0 {
		return fmt.Sprintf("%s: byte %d: %v", name, e.Offset, e.Err)
	}
	return fmt.Sprintf("%s: byte %d: %s: %v", name, e.Offset, OpName(byte(e.Op)), e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Unpickle runs the pickle in b and returns the value STOP leaves. Bytes
// in the result share b's memory; what follows STOP is ignored.
func (vm *VM) Unpickle(b []byte) (Value, error) {
	return vm.Load(NewBytesReader(b))
}

// Load runs one pickle from r, up to and including its STOP, and returns
// the value STOP leaves. r is left just after the STOP.
func (vm *VM) Load(r *Reader) (Value, error) {
	m := &machine{vm: vm, r: r, memo: map[uint64]Value{}}
	for {
		pos := r.pos
		op, err := r.readByte()
		if err != nil {
			return nil, &Error{vm.Name, pos, -1, fmt.Errorf("%w: the pickle ends without STOP", err)}
		}
		done, v, err := m.step(op)
		if err == nil && m.items > MaxItems {
			err = fmt.Errorf("more than %d values, marks and memo entries: not the data this reader is for", MaxItems)
		}
		if err != nil {
			return nil, &Error{vm.Name, pos, int(op), err}
		}
		if done {
			return v, nil
		}
	}
}

// machine is one run's state: the value stack, the stack lengths at each
// MARK, and the memo.
type machine struct {
	vm    *VM
	r     *Reader
	stack []Value
	marks []int
	memo  map[uint64]Value
	items int // pushes, marks and memo writes so far (MaxItems)
}

var errUnderflow = errors.New("stack underflow")

func (m *machine) base() int {
	if len(m.marks) == 0 {
		return 0
	}
	return m.marks[len(m.marks)-1]
}

func (m *machine) push(v Value) { m.stack = append(m.stack, v); m.items++ }

func (m *machine) pop() (Value, error) {
	if len(m.stack) <= m.base() {
		return nil, errUnderflow
	}
	v := m.stack[len(m.stack)-1]
	m.stack[len(m.stack)-1] = nil
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

func (m *machine) top() (Value, error) {
	if len(m.stack) <= m.base() {
		return nil, errUnderflow
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark returns the items pushed since the last MARK and drops the mark.
func (m *machine) popMark() ([]Value, error) {
	if len(m.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	b := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	items := append([]Value(nil), m.stack[b:]...)
	clear(m.stack[b:])
	m.stack = m.stack[:b]
	return items, nil
}

// integer checks an integer against VM.Int64Only.
func (m *machine) integer(v Value) (Value, error) {
	if _, isBig := v.(*big.Int); isBig && m.vm.Int64Only {
		return nil, errors.New("integer does not fit in 64 bits")
	}
	return v, nil
}

// py2str is a Python 2 str, as VM.BytesStrings says.
func (m *machine) py2str(b []byte) Value {
	if m.vm.BytesStrings {
		return Bytes(b)
	}
	return string(b)
}

func (m *machine) call(fn Value, args []Value) error {
	if m.vm.Call == nil {
		return fmt.Errorf("cannot call a %s", TypeName(fn))
	}
	v, err := m.vm.Call(fn, args)
	if err != nil {
		return err
	}
	m.push(v)
	return nil
}

func (m *machine) global(module, name string) (Value, error) {
	if m.vm.Global == nil {
		return nil, fmt.Errorf("refusing GLOBAL %.200s.%.200s", module, name)
	}
	return m.vm.Global(module, name)
}

func (m *machine) step(op byte) (done bool, result Value, err error) {
	r := m.r
	switch op {
	case OpProto:
		v, err := r.readByte()
		if err != nil {
			return false, nil, err
		}
		if v > 5 {
			return false, nil, fmt.Errorf("unsupported pickle protocol %d", v)
		}
	case OpFrame:
		// Frames only group opcodes for buffering; their content follows
		// inline, so the length is just checked and skipped.
		n, err := r.uint(8)
		if err != nil {
			return false, nil, err
		}
		if n > uint64(r.Remaining()) {
			return false, nil, ErrTruncated
		}
	case OpStop:
		v, err := m.pop()
		return err == nil, v, err
	case OpMark:
		m.marks = append(m.marks, len(m.stack))
		m.items++
	case OpPop:
		if len(m.stack) > m.base() {
			_, err = m.pop()
		} else {
			_, err = m.popMark() // POP of a MARK, as Python does
		}
	case OpPopMark:
		_, err = m.popMark()
	case OpDup:
		var v Value
		if v, err = m.top(); err == nil {
			m.push(v)
		}

	case OpNone:
		m.push(None{})
	case OpNewTrue:
		m.push(true)
	case OpNewFalse:
		m.push(false)
	case OpBinInt:
		var v uint64
		if v, err = r.uint(4); err == nil {
			m.push(int64(int32(uint32(v))))
		}
	case OpBinInt1:
		var v uint64
		if v, err = r.uint(1); err == nil {
			m.push(int64(v))
		}
	case OpBinInt2:
		var v uint64
		if v, err = r.uint(2); err == nil {
			m.push(int64(v))
		}
	case OpLong1, OpLong4:
		var n uint64
		if op == OpLong1 {
			n, err = r.uint(1)
		} else if n, err = r.uint(4); err == nil && int32(uint32(n)) < 0 {
			err = errors.New("LONG4 with negative length")
		}
		if err != nil {
			return false, nil, err
		}
		b, err := r.read(n)
		if err != nil {
			return false, nil, err
		}
		v, err := m.integer(DecodeLong(b))
		if err != nil {
			return false, nil, err
		}
		m.push(v)
	case OpInt, OpLong:
		line, err := r.readLine()
		if err != nil {
			return false, nil, err
		}
		// Protocol 0 writes True/False as I01/I00.
		if op == OpInt && (line == "01" || line == "00") {
			m.push(line == "01")
			break
		}
		line = strings.TrimSuffix(line, "L")
		if len(line) > MaxIntDigits+1 {
			return false, nil, fmt.Errorf("integer of %d digits is too long", len(line))
		}
		z, ok := new(big.Int).SetString(line, 10)
		if !ok {
			return false, nil, fmt.Errorf("bad integer %.40q", line)
		}
		v, err := m.integer(normInt(z))
		if err != nil {
			return false, nil, err
		}
		m.push(v)
	case OpFloat:
		line, err := r.readLine()
		if err != nil {
			return false, nil, err
		}
		f, err := strconv.ParseFloat(line, 64)
		if err != nil {
			return false, nil, fmt.Errorf("bad float %.40q", line)
		}
		m.push(f)
	case OpBinFloat:
		b, err := r.read(8)
		if err != nil {
			return false, nil, err
		}
		m.push(math.Float64frombits(binary.BigEndian.Uint64(b)))

	case OpString:
		line, err := r.readLine()
		if err != nil {
			return false, nil, err
		}
		s, err := unquotePy(line)
		if err != nil {
			return false, nil, err
		}
		m.push(m.py2str([]byte(s)))
	case OpBinString:
		n, err := r.uint(4)
		if err != nil {
			return false, nil, err
		}
		if int32(uint32(n)) < 0 {
			return false, nil, errors.New("BINSTRING with negative length") // signed in Python
		}
		b, err := r.read(n)
		if err != nil {
			return false, nil, err
		}
		m.push(m.py2str(b))
	case OpShortBinString:
		b, err := m.counted(1)
		if err != nil {
			return false, nil, err
		}
		m.push(m.py2str(b))
	case OpUnicode:
		line, err := r.readLine()
		if err != nil {
			return false, nil, err
		}
		m.push(rawUnicodeEscape(line))
	case OpShortBinUnicode, OpBinUnicode, OpBinUnicode8:
		b, err := m.counted(lengthSize(op))
		if err != nil {
			return false, nil, err
		}
		m.push(string(b))
	case OpShortBinBytes, OpBinBytes, OpBinBytes8, OpByteArray8:
		b, err := m.counted(lengthSize(op))
		if err != nil {
			return false, nil, err
		}
		m.push(Bytes(b))

	case OpEmptyTuple:
		m.push(Tuple{})
	case OpTuple, OpFrozenSet:
		var items []Value
		if items, err = m.popMark(); err == nil {
			m.push(Tuple(items))
		}
	case OpTuple1, OpTuple2, OpTuple3:
		n := int(op-OpTuple1) + 1
		if len(m.stack)-m.base() < n {
			return false, nil, errUnderflow
		}
		t := append(Tuple(nil), m.stack[len(m.stack)-n:]...)
		clear(m.stack[len(m.stack)-n:])
		m.stack = m.stack[:len(m.stack)-n]
		m.push(t)
	case OpEmptyList:
		m.push(&List{})
	case OpList:
		var items []Value
		if items, err = m.popMark(); err == nil {
			m.push(&List{Items: items})
		}
	case OpAppend, OpAppends:
		var items []Value
		if op == OpAppend {
			var v Value
			if v, err = m.pop(); err != nil {
				return false, nil, err
			}
			items = []Value{v}
		} else if items, err = m.popMark(); err != nil {
			return false, nil, err
		}
		t, err := m.top()
		if err != nil {
			return false, nil, err
		}
		l, ok := t.(*List)
		if !ok {
			return false, nil, fmt.Errorf("append to a %s", TypeName(t))
		}
		l.Items = append(l.Items, items...)
	case OpEmptySet:
		m.push(&Set{})
	case OpAddItems:
		items, err := m.popMark()
		if err != nil {
			return false, nil, err
		}
		t, err := m.top()
		if err != nil {
			return false, nil, err
		}
		s, ok := t.(*Set)
		if !ok {
			return false, nil, fmt.Errorf("add to a %s", TypeName(t))
		}
		for _, it := range items {
			if err := s.Add(it); err != nil {
				return false, nil, err
			}
		}
	case OpEmptyDict:
		m.push(&Dict{})
	case OpDict:
		items, err := m.popMark()
		if err != nil {
			return false, nil, err
		}
		d := &Dict{}
		if err := setPairs(d, items); err != nil {
			return false, nil, err
		}
		m.push(d)
	case OpSetItem, OpSetItems:
		var items []Value
		if op == OpSetItem {
			v, err := m.pop()
			if err != nil {
				return false, nil, err
			}
			k, err := m.pop()
			if err != nil {
				return false, nil, err
			}
			items = []Value{k, v}
		} else if items, err = m.popMark(); err != nil {
			return false, nil, err
		}
		t, err := m.top()
		if err != nil {
			return false, nil, err
		}
		d, ok := t.(*Dict)
		if !ok {
			return false, nil, fmt.Errorf("setitem on a %s", TypeName(t))
		}
		if err := setPairs(d, items); err != nil {
			return false, nil, err
		}

	case OpGet, OpBinGet, OpLongBinGet, OpPut, OpBinPut, OpLongBinPut, OpMemoize:
		var idx uint64
		switch op {
		case OpGet, OpPut:
			line, err := r.readLine()
			if err != nil {
				return false, nil, err
			}
			if idx, err = strconv.ParseUint(line, 10, 64); err != nil {
				return false, nil, fmt.Errorf("bad memo index %.40q", line)
			}
		case OpBinGet, OpBinPut:
			idx, err = r.uint(1)
		case OpLongBinGet, OpLongBinPut:
			idx, err = r.uint(4)
		case OpMemoize:
			idx = uint64(len(m.memo))
		}
		if err != nil {
			return false, nil, err
		}
		if op == OpGet || op == OpBinGet || op == OpLongBinGet {
			v, ok := m.memo[idx]
			if !ok {
				return false, nil, fmt.Errorf("memo entry %d is missing", idx)
			}
			m.push(v)
			break
		}
		v, err := m.top()
		if err != nil {
			return false, nil, err
		}
		m.memo[idx] = v
		m.items++

	case OpGlobal, OpInst:
		mod, err := r.readLine()
		if err != nil {
			return false, nil, err
		}
		name, err := r.readLine()
		if err != nil {
			return false, nil, err
		}
		g, err := m.global(mod, name)
		if err != nil {
			return false, nil, err
		}
		if op == OpGlobal {
			m.push(g)
			break
		}
		args, err := m.popMark()
		if err != nil {
			return false, nil, err
		}
		return false, nil, m.call(g, args)
	case OpStackGlobal:
		name, err := m.pop()
		if err != nil {
			return false, nil, err
		}
		mod, err := m.pop()
		if err != nil {
			return false, nil, err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return false, nil, errors.New("STACK_GLOBAL needs two str")
		}
		g, err := m.global(ms, ns)
		if err != nil {
			return false, nil, err
		}
		m.push(g)
	case OpReduce, OpNewObj, OpNewObjEx:
		if op == OpNewObjEx {
			kw, err := m.pop()
			if err != nil {
				return false, nil, err
			}
			if d, ok := kw.(*Dict); !ok || d.Len() != 0 {
				return false, nil, errors.New("NEWOBJ_EX with keyword arguments")
			}
		}
		a, err := m.pop()
		if err != nil {
			return false, nil, err
		}
		args, ok := a.(Tuple)
		if !ok {
			return false, nil, fmt.Errorf("call arguments are a %s, not a tuple", TypeName(a))
		}
		fn, err := m.pop()
		if err != nil {
			return false, nil, err
		}
		return false, nil, m.call(fn, args)
	case OpObj:
		items, err := m.popMark()
		if err != nil {
			return false, nil, err
		}
		if len(items) == 0 {
			return false, nil, errors.New("OBJ without a class")
		}
		return false, nil, m.call(items[0], items[1:])
	case OpBuild:
		state, err := m.pop()
		if err != nil {
			return false, nil, err
		}
		obj, err := m.top()
		if err != nil {
			return false, nil, err
		}
		if m.vm.Build == nil {
			return false, nil, fmt.Errorf("BUILD on a %s is not supported", TypeName(obj))
		}
		return false, nil, m.vm.Build(obj, state)
	case OpPersID, OpBinPersID:
		var pid Value
		if op == OpPersID {
			if pid, err = r.readLine(); err != nil {
				return false, nil, err
			}
		} else if pid, err = m.pop(); err != nil {
			return false, nil, err
		}
		if m.vm.PersistentLoad == nil {
			return false, nil, errors.New("unexpected persistent id")
		}
		v, err := m.vm.PersistentLoad(pid)
		if err != nil {
			return false, nil, err
		}
		m.push(v)
	case OpExt1, OpExt2, OpExt4:
		return false, nil, errors.New("extension-registry opcodes (EXT*) are not supported")
	case OpNextBuffer, OpReadOnlyBuffer:
		return false, nil, errors.New("out-of-band buffers are not supported")
	default:
		return false, nil, errors.New("unknown opcode")
	}
	return false, nil, err
}

// counted reads a length of lenSize bytes, then that many bytes.
func (m *machine) counted(lenSize int) ([]byte, error) {
	n, err := m.r.uint(lenSize)
	if err != nil {
		return nil, err
	}
	return m.r.read(n)
}

// lengthSize is the size of the length prefix of a counted string opcode.
func lengthSize(op byte) int {
	switch op {
	case OpShortBinString, OpShortBinUnicode, OpShortBinBytes:
		return 1
	case OpBinUnicode8, OpBinBytes8, OpByteArray8:
		return 8
	}
	return 4
}

func setPairs(d *Dict, items []Value) error {
	if len(items)%2 != 0 {
		return errors.New("odd number of items for a dict")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.Set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}
