package pickle

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Value is anything the machine leaves on its stack. The machine itself
// builds only these types:
//
//	None         Python None
//	bool         True, False
//	int64        an int that fits in 64 bits
//	*big.Int     any larger int (never one that fits in int64)
//	float64      a float
//	string       a str (and, unless VM.BytesStrings, a Python 2 str)
//	Bytes        bytes or bytearray (and Python 2 str with VM.BytesStrings)
//	Tuple        a tuple, and a frozenset
//	*List        a list
//	*Set         a set
//	*Dict        a dict
//
// plus whatever the VM's callbacks return for globals, calls and
// persistent ids.
type Value = any

type (
	// None is Python's None.
	None struct{}
	// Bytes is a bytes object. Bytes read by VM.Unpickle share memory with
	// the input.
	Bytes []byte
	// Tuple is a tuple or a frozenset.
	Tuple []Value
	// List is a list; a pointer, so that APPEND on a memoised list is seen
	// through every reference, as in Python.
	List struct{ Items []Value }
	// Global is a convenient value for a resolved GLOBAL; VM.Global may
	// return it or anything else.
	Global struct{ Module, Name string }
)

// Set is a set: distinct hashable items in insertion order.
type Set struct {
	Items []Value
	index map[string]struct{}
}

// Add adds an item unless an equal one is there.
func (s *Set) Add(v Value) error {
	h, err := hashKey(v)
	if err != nil {
		return err
	}
	if s.index == nil {
		s.index = map[string]struct{}{}
	}
	if _, ok := s.index[h]; ok {
		return nil
	}
	s.index[h] = struct{}{}
	s.Items = append(s.Items, v)
	return nil
}

// Dict is a dict. It keeps insertion order, like Python 3 dicts and
// OrderedDict. Keys are compared as Python compares them (1 == True, ...).
type Dict struct {
	keys  []Value
	vals  []Value
	index map[string]int // hashKey(key) -> position
}

// Len is the number of entries.
func (d *Dict) Len() int { return len(d.keys) }

// Keys returns the keys in insertion order; the caller must not modify them.
func (d *Dict) Keys() []Value { return d.keys }

// Values returns the values in the order of Keys; the caller must not
// modify them.
func (d *Dict) Values() []Value { return d.vals }

// Set sets d[k] = v. Unhashable keys (lists, dicts, ...) are an error, as in
// Python. Overwriting keeps the key's first position.
func (d *Dict) Set(k, v Value) error {
	h, err := hashKey(k)
	if err != nil {
		return err
	}
	if d.index == nil {
		d.index = map[string]int{}
	}
	if i, ok := d.index[h]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[h] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

// Get returns d[k].
func (d *Dict) Get(k Value) (Value, bool) {
	h, err := hashKey(k)
	if err != nil {
		return nil, false
	}
	i, ok := d.index[h]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// MaxKeyDepth bounds the nesting of tuples in dict keys and set items, and
// MaxKeySize the size of their encoding, so that hashing stays cheap on
// hostile input (a tuple of copies of a tuple of copies of ... grows
// exponentially).
const (
	MaxKeyDepth = 32
	MaxKeySize  = 1 << 20
)

var errKeyTooLarge = errors.New("dict key is too large")

func hashKey(v Value) (string, error) {
	var sb strings.Builder
	if err := writeKey(&sb, v, 0); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// writeKey encodes a hashable value uniquely (lengths are prefixed, so that
// different values never collide). Lists, dicts and sets are unhashable, as
// in Python; that also keeps self-referencing values out of the recursion.
func writeKey(sb *strings.Builder, v Value, depth int) error {
	if depth > MaxKeyDepth {
		return errors.New("dict key nested too deeply")
	}
	if sb.Len() > MaxKeySize {
		return errKeyTooLarge
	}
	counted := func(tag string, s string) error {
		if len(s) > MaxKeySize-sb.Len() {
			return errKeyTooLarge
		}
		sb.WriteString(tag + strconv.Itoa(len(s)) + ":")
		sb.WriteString(s)
		return nil
	}
	switch x := v.(type) {
	case string:
		return counted("s", x)
	case Bytes:
		return counted("b", string(x))
	case int64:
		sb.WriteString("i" + strconv.FormatInt(x, 10) + ";")
	case bool:
		// True == 1 and False == 0 as dict keys, as in Python.
		if x {
			sb.WriteString("i1;")
		} else {
			sb.WriteString("i0;")
		}
	case *big.Int:
		// Hex is linear to produce; int64 values never get here.
		return counted("I", x.Text(16))
	case float64:
		if x == math.Trunc(x) && x >= -(1<<63) && x < 1<<63 {
			sb.WriteString("i" + strconv.FormatInt(int64(x), 10) + ";") // 1.0 == 1
		} else {
			sb.WriteString("f" + strconv.FormatUint(math.Float64bits(x), 16) + ";")
		}
	case None:
		sb.WriteString("N")
	case Global:
		if err := counted("g", x.Module); err != nil {
			return err
		}
		return counted(".", x.Name)
	case Tuple:
		sb.WriteString("t" + strconv.Itoa(len(x)) + "(")
		for _, e := range x {
			if err := writeKey(sb, e, depth+1); err != nil {
				return err
			}
		}
		sb.WriteString(")")
	default:
		return fmt.Errorf("unhashable dict key of type %s", TypeName(v))
	}
	return nil
}

// TypeName names a value's type for error messages. It never formats the
// value itself, which could be huge or refer to itself.
func TypeName(v Value) string {
	switch x := v.(type) {
	case nil:
		return "nothing"
	case None:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case Bytes:
		return "bytes"
	case Tuple:
		return "tuple"
	case *List:
		return "list"
	case *Set:
		return "set"
	case *Dict:
		return "dict"
	case Global:
		return "global " + x.Module + "." + x.Name
	}
	return fmt.Sprintf("%T", v)
}

// DecodeLong decodes a little-endian two's-complement integer (the
// argument of LONG1 and LONG4): an int64 if it fits, else a *big.Int.
func DecodeLong(b []byte) Value {
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
			v |= ^uint64(0) << (8 * len(b)) // sign-extend
		}
		return int64(v)
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
func normInt(z *big.Int) Value {
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
				if v, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32); err == nil && validRune(rune(v)) {
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

func validRune(r rune) bool {
	return r >= 0 && r <= 0x10ffff && (r < 0xd800 || r > 0xdfff)
}
