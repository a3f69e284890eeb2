package pickle

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// repr prints a value like Python's repr, within a budget so that cyclic or
// huge values stay printable.
func repr(v Value) string {
	var sb strings.Builder
	writeRepr(&sb, v, 0)
	return sb.String()
}

func writeRepr(sb *strings.Builder, v Value, depth int) {
	if depth > 50 || sb.Len() > 1<<16 {
		sb.WriteString("...")
		return
	}
	seq := func(open, close string, items []Value) {
		sb.WriteString(open)
		for i, it := range items {
			if i > 0 {
				sb.WriteString(", ")
			}
			writeRepr(sb, it, depth+1)
		}
		sb.WriteString(close)
	}
	switch x := v.(type) {
	case None:
		sb.WriteString("None")
	case bool:
		if x {
			sb.WriteString("True")
		} else {
			sb.WriteString("False")
		}
	case int64:
		sb.WriteString(strconv.FormatInt(x, 10))
	case *big.Int:
		sb.WriteString(x.String())
	case float64:
		sb.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		sb.WriteString(strconv.Quote(x))
	case Bytes:
		sb.WriteString("b" + strconv.Quote(string(x)))
	case Tuple:
		if len(x) == 1 {
			seq("(", ",)", x)
		} else {
			seq("(", ")", x)
		}
	case *List:
		seq("[", "]", x.Items)
	case *Set:
		seq("{", "}", x.Items)
	case *Dict:
		sb.WriteString("{")
		for i, k := range x.Keys() {
			if i > 0 {
				sb.WriteString(", ")
			}
			writeRepr(sb, k, depth+1)
			sb.WriteString(": ")
			writeRepr(sb, x.Values()[i], depth+1)
		}
		sb.WriteString("}")
	case Global:
		sb.WriteString(x.Module + "." + x.Name)
	case call:
		writeRepr(sb, x.fn, depth+1)
		seq("(", ")", x.args)
	case built:
		sb.WriteString("setstate")
		writeRepr(sb, x.state, depth+1)
	case pers:
		sb.WriteString("pid")
		writeRepr(sb, x.pid, depth+1)
	default:
		fmt.Fprintf(sb, "%T", v)
	}
}

// Inert values the test callbacks build.
type (
	call struct {
		fn   Value
		args Tuple
	}
	built struct{ state Value }
	pers  struct{ pid Value }
)

// testVM allows globals of module "ok" and records calls, BUILDs and
// persistent ids as values.
func testVM() *VM {
	return &VM{
		Global: func(module, name string) (Value, error) {
			if module != "ok" {
				return nil, fmt.Errorf("refusing GLOBAL %s.%s", module, name)
			}
			return Global{module, name}, nil
		},
		Call: func(fn Value, args []Value) (Value, error) {
			if _, ok := fn.(Global); !ok {
				return nil, fmt.Errorf("cannot call a %s", TypeName(fn))
			}
			return &List{Items: []Value{call{fn, args}}}, nil
		},
		Build: func(obj, state Value) error {
			l, ok := obj.(*List)
			if !ok {
				return fmt.Errorf("BUILD on a %s", TypeName(obj))
			}
			l.Items = append(l.Items, built{state})
			return nil
		},
		PersistentLoad: func(pid Value) (Value, error) { return pers{pid}, nil },
	}
}

var goodPickles = []struct {
	name, in, want string
}{
	// Protocol 0, as Python 2 pickle.dumps(..., 0) writes it.
	{"proto0 list", "(lp0\nI1\naI-2\naF1.5\naS'a\\nb\\x41'\np1\naVcaf\\u00e9\np2\naL12345678901234567890L\nag1\na.",
		`[1, -2, 1.5, "a\nbA", "café", 12345678901234567890, "a\nbA"]`},
	{"proto0 bools", "(I01\nI00\nNt.", "(True, False, None)"},
	{"proto0 dict", "(dp0\nS'k'\np1\n(lp2\nI7\nas.", `{"k": [7]}`},
	{"ints", "\x80\x02(J\xff\xff\xff\xffM\xff\xffK\x07\x8a\x01\xff\x8a\x00\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01\x8b\x02\x00\x00\x00\x00\x80t.",
		"(-1, 65535, 7, -1, 0, 18446744073709551616, -32768)"},
	{"float", "\x80\x02G?\xf8\x00\x00\x00\x00\x00\x00.", "1.5"},
	{"bools none", "\x80\x02\x88\x89N\x87.", "(True, False, None)"},
	{"strings", "\x80\x04(U\x02hiT\x01\x00\x00\x00aX\x02\x00\x00\x00\xc3\xa9\x8c\x01z\x8d\x01\x00\x00\x00\x00\x00\x00\x00yt.",
		`("hi", "a", "é", "z", "y")`},
	{"bytes", "\x80\x05(C\x02hiB\x01\x00\x00\x00a\x8e\x01\x00\x00\x00\x00\x00\x00\x00b\x96\x01\x00\x00\x00\x00\x00\x00\x00ct.",
		`(b"hi", b"a", b"b", b"c")`},
	{"tuples", "\x80\x02)K\x01\x85K\x01K\x02\x86K\x01K\x02K\x03\x87(K\x04t(t\x86\x87\x86.",
		"((1,), ((1, 2), (1, 2, 3), ((4,), ())))"},
	{"list ops", "\x80\x02]K\x01a(K\x02K\x03e(K\x04l\x86.", "([1, 2, 3], [4])"},
	{"dict ops", "\x80\x02}U\x01aK\x01s(U\x01bK\x02U\x01aK\x03u(K\x01K\x02\x88K\x03d\x86.",
		`({"a": 3, "b": 2}, {1: 3})`},
	{"tuple key", "\x80\x02}K\x01K\x02\x86N\x88K\x01\x86\x87K\x05sN\x85K\x06s.", "{((1, 2), None, (True, 1)): 5, (None,): 6}"},
	{"sets", "\x80\x04\x8f(K\x01K\x02K\x01\x90(K\x03K\x04\x91\x86.", "({1, 2}, (3, 4))"},
	{"memo shares", "\x80\x02]q\x00h\x00K\x01a0h\x00.", "[1]"},
	{"memo long", "\x80\x02]r\x00\x01\x00\x00j\x00\x01\x00\x00K\x01a0j\x00\x01\x00\x00.", "[1]"},
	{"memoize", "\x80\x04]\x94K\x05a0h\x00.", "[5]"},
	{"self reference", "\x80\x02]q\x00h\x00a.", strings.Repeat("[", 51) + "..." + strings.Repeat("]", 51)},
	{"marks", "\x80\x02K\x07(K\x01K\x021(0.", "7"},
	{"pop", "\x80\x02K\x07K\x080.", "7"},
	{"dup", "\x80\x02K\x012\x86.", "(1, 1)"},
	{"frame", "\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x01.", "1"},
	{"global reduce build", "\x80\x02cok\nf\nK\x01\x85R}b.", "[ok.f(1), setstate{}]"},
	{"stack global newobj", "\x80\x04\x8c\x02ok\x8c\x01C\x93K\x02\x85\x81.", "[ok.C(2)]"},
	{"newobj_ex", "\x80\x04\x8c\x02ok\x8c\x01C\x93)}\x92.", "[ok.C()]"},
	{"obj", "\x80\x02(cok\nC\nK\x01K\x02o.", "[ok.C(1, 2)]"},
	{"inst", "(K\x01iok\nC\n.", "[ok.C(1)]"},
	{"persid", "Pabc\n.", `pid"abc"`},
	{"binpersid", "\x80\x02U\x01sK\x01\x86Q.", `pid("s", 1)`},
	{"trailing bytes ignored", "K\x01.garbage", "1"},
}

func TestOpcodes(t *testing.T) {
	for _, c := range goodPickles {
		t.Run(c.name, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				var v Value
				var err error
				if stream {
					v, err = testVM().Load(NewReader(strings.NewReader(c.in), int64(len(c.in))))
				} else {
					v, err = testVM().Unpickle([]byte(c.in))
				}
				if err != nil {
					t.Fatalf("stream=%v: %v", stream, err)
				}
				if got := repr(v); got != c.want {
					t.Fatalf("stream=%v: got %s, want %s", stream, got, c.want)
				}
			}
		})
	}
}

func TestCoversOpcodes(t *testing.T) {
	// Every opcode other than those that are always refused appears in a
	// test above.
	refused := map[byte]bool{OpExt1: true, OpExt2: true, OpExt4: true, OpNextBuffer: true, OpReadOnlyBuffer: true}
	var missing []string
	for op := range opNames {
		if refused[op] {
			continue
		}
		found := false
		for _, c := range goodPickles {
			if strings.IndexByte(c.in, op) >= 0 {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, OpName(op))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("no test pickle holds %v", missing)
	}
}

func TestStringOptions(t *testing.T) {
	in := []byte("\x80\x02(U\x01aT\x01\x00\x00\x00bS'c'\nX\x01\x00\x00\x00dt.")
	vm := testVM()
	vm.BytesStrings = true
	v, err := vm.Unpickle(in)
	if err != nil || repr(v) != `(b"a", b"b", b"c", "d")` {
		t.Fatalf("BytesStrings: %s, %v", repr(v), err)
	}
	// A dict with a bytes key does not find the same text as str.
	d, err := vm.Unpickle([]byte("\x80\x02}U\x01kK\x01s."))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.(*Dict).Get("k"); ok {
		t.Error(`bytes key b"k" found as str "k"`)
	}
	if v, ok := d.(*Dict).Get(Bytes("k")); !ok || v != int64(1) {
		t.Errorf(`d[b"k"] = %v, %v`, v, ok)
	}
}

func TestInt64Only(t *testing.T) {
	vm := &VM{Int64Only: true}
	for _, in := range []string{
		"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.",
		"L18446744073709551616L\n.",
		"I18446744073709551616\n.",
	} {
		if _, err := vm.Unpickle([]byte(in)); err == nil || !strings.Contains(err.Error(), "64 bits") {
			t.Errorf("%q: err = %v", in, err)
		}
	}
	// A 9-byte LONG1 that fits is fine.
	if v, err := vm.Unpickle([]byte("\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff.")); err != nil || v != int64(-1) {
		t.Errorf("9-byte -1: %v, %v", v, err)
	}
}

func TestDecodeLong(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{"", "0"}, {"\xff", "-1"}, {"\x00\x01", "256"}, {"\x80", "-128"}, {"\xff\x00", "255"},
		{"\xff\xff\xff\xff\xff\xff\xff\x7f", "9223372036854775807"},
		{"\x00\x00\x00\x00\x00\x00\x00\x80", "-9223372036854775808"},
		{"\x00\x00\x00\x00\x00\x00\x00\x80\x00", "9223372036854775808"},
		{"\xff\xff\xff\xff\xff\xff\xff\x7f\xff", "-9223372036854775809"},
	} {
		v := DecodeLong([]byte(c.in))
		if got := repr(v); got != c.want {
			t.Errorf("DecodeLong(%q) = %s, want %s", c.in, got, c.want)
		}
		if z, ok := v.(*big.Int); ok && z.IsInt64() {
			t.Errorf("DecodeLong(%q) is a *big.Int that fits in int64", c.in)
		}
	}
}

func TestRefusals(t *testing.T) {
	zero := &VM{}
	for _, c := range []struct {
		name string
		vm   *VM
		in   string
		want string
	}{
		{"zero VM refuses GLOBAL", zero, "\x80\x02cos\nsystem\nU\x02ls\x85R.", "refusing GLOBAL os.system"},
		{"zero VM refuses STACK_GLOBAL", zero, "\x80\x04\x8c\x02os\x8c\x06system\x93.", "refusing GLOBAL os.system"},
		{"resolver refuses GLOBAL", testVM(), "\x80\x02cos\nsystem\nU\x02ls\x85R.", "refusing GLOBAL os.system"},
		{"resolver refuses INST", testVM(), "(U\x02lsios\nsystem\n.", "refusing GLOBAL os.system"},
		{"resolver refuses STACK_GLOBAL", testVM(), "\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", "refusing GLOBAL builtins.eval"},
		{"STACK_GLOBAL of bytes", testVM(), "\x80\x04C\x02okC\x01f\x93.", "two str"},
		{"zero VM refuses REDUCE", zero, "\x80\x02)\x85)R.", "cannot call a tuple"},
		{"call of a non-global", testVM(), "\x80\x02K\x01)R.", "cannot call a int"},
		{"REDUCE args not a tuple", testVM(), "\x80\x02cok\nf\nK\x01R.", "not a tuple"},
		{"NEWOBJ_EX kwargs", testVM(), "\x80\x04cok\nf\n)}K\x01K\x01s\x92.", "keyword arguments"},
		{"OBJ without class", testVM(), "\x80\x02(o.", "without a class"},
		{"zero VM refuses BUILD", zero, "\x80\x02]}b.", "BUILD on a list"},
		{"zero VM refuses BINPERSID", zero, "\x80\x02K\x01Q.", "unexpected persistent id"},
		{"zero VM refuses PERSID", zero, "P1\n.", "unexpected persistent id"},
		{"EXT1", testVM(), "\x80\x02\x82\x01.", "EXT"},
		{"EXT2", testVM(), "\x80\x02\x83\x01\x00.", "EXT"},
		{"EXT4", testVM(), "\x80\x02\x84\x01\x00\x00\x00.", "EXT"},
		{"NEXT_BUFFER", testVM(), "\x80\x05\x97.", "out-of-band"},
		{"READONLY_BUFFER", testVM(), "\x80\x05\x98.", "out-of-band"},
		{"unknown opcode", testVM(), "\x80\x02\xff.", "opcode 0xff: unknown opcode"},
		{"protocol 6", testVM(), "\x80\x06N.", "unsupported pickle protocol 6"},
		{"underflow", testVM(), "\x80\x02.", "stack underflow"},
		{"underflow at mark", testVM(), "\x80\x02K\x01(a.", "stack underflow"},
		{"tuple2 across mark", testVM(), "\x80\x02K\x01(K\x02\x86.", "stack underflow"},
		{"no mark", testVM(), "\x80\x02K\x01t.", "no MARK"},
		{"pop_mark without mark", testVM(), "\x80\x021.", "no MARK"},
		{"missing memo", testVM(), "\x80\x02h\x05.", "memo entry 5 is missing"},
		{"put on empty stack", testVM(), "\x80\x02q\x00.", "stack underflow"},
		{"bad memo index", testVM(), "gx\n.", "bad memo index"},
		{"odd dict", testVM(), "\x80\x02(K\x01d.", "odd number"},
		{"list key", testVM(), "\x80\x02}]K\x01s.", "unhashable dict key of type list"},
		{"dict in set", testVM(), "\x80\x04\x8f(}\x90.", "unhashable"},
		{"append to dict", testVM(), "\x80\x02}K\x01a.", "append to a dict"},
		{"setitem on list", testVM(), "\x80\x02]K\x01K\x02s.", "setitem on a list"},
		{"additems on list", testVM(), "\x80\x04](K\x01\x90.", "add to a list"},
		{"bad int", testVM(), "I12x\n.", "bad integer"},
		{"bad float", testVM(), "Fx\n.", "bad float"},
		{"unquoted STRING", testVM(), "Sabc\n.", "not quoted"},
		{"bad STRING escape", testVM(), "S'\\xZZ'\n.", "escape"},
		{"negative BINSTRING", testVM(), "\x80\x02T\xff\xff\xff\xff.", "negative length"},
		{"negative LONG4", testVM(), "\x80\x02\x8b\xff\xff\xff\xff.", "negative length"},
		{"long INT", testVM(), "I" + strings.Repeat("9", MaxIntDigits+10) + "\n.", "too long"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.vm.Unpickle([]byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("err is a %T, not an *Error", err)
			}
		})
	}
}

func TestErrorNamesPlace(t *testing.T) {
	vm := testVM()
	vm.Name = "archive/data.pkl"
	_, err := vm.Unpickle([]byte("\x80\x02K\x01cos\nsystem\n."))
	var pe *Error
	if !errors.As(err, &pe) || pe.Offset != 4 || pe.Op != OpGlobal {
		t.Fatalf("err = %#v", err)
	}
	if want := "archive/data.pkl: byte 4: GLOBAL: refusing GLOBAL os.system"; err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
	_, err = (&VM{}).Unpickle([]byte("K\x01"))
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "pickle: byte 2:") || !strings.Contains(err.Error(), "without STOP") {
		t.Fatalf("err = %v", err)
	}
}

// TestTruncated cuts valid pickles at every byte: each cut must be an
// ErrTruncated, from memory and from a stream.
func TestTruncated(t *testing.T) {
	for _, c := range goodPickles {
		if c.name == "trailing bytes ignored" {
			continue
		}
		for n := 0; n < len(c.in); n++ {
			in := c.in[:n]
			_, err1 := testVM().Unpickle([]byte(in))
			_, err2 := testVM().Load(NewReader(strings.NewReader(in), int64(n)))
			if !errors.Is(err1, ErrTruncated) || !errors.Is(err2, ErrTruncated) {
				t.Errorf("%s cut to %d bytes: %v / %v", c.name, n, err1, err2)
			}
		}
	}
	// A stream shorter than its stated size is truncated too.
	if _, err := testVM().Load(NewReader(strings.NewReader("\x80\x02C\x05ab"), 100)); !errors.Is(err, ErrTruncated) {
		t.Errorf("short stream: %v", err)
	}
}

// TestHugeLengths: lengths are checked against the input before anything is
// allocated, so claims of exabytes fail at once.
func TestHugeLengths(t *testing.T) {
	for _, in := range []string{
		"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f",
		"\x80\x05\x96\xff\xff\xff\xff\xff\xff\xff\xff",
		"\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x40",
		"\x80\x02T\xff\xff\xff\x7f",
		"\x80\x02X\xff\xff\xff\xff",
		"\x80\x02\x8b\xff\xff\xff\x7f",
		"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff.",
		"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00.",
	} {
		for _, stream := range []bool{false, true} {
			var err error
			allocs := testing.AllocsPerRun(1, func() {
				if stream {
					_, err = testVM().Load(NewReader(strings.NewReader(in), int64(len(in))))
				} else {
					_, err = testVM().Unpickle([]byte(in))
				}
			})
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("%q: %v", in, err)
			}
			if allocs > 100 {
				t.Errorf("%q: %v allocations", in, allocs)
			}
		}
	}
}

// TestDeepNesting: nesting is handled without recursion, and dict keys,
// the only values hashed recursively, are bounded in depth and size.
func TestDeepNesting(t *testing.T) {
	const n = 1 << 20
	deep := "\x80\x02" + strings.Repeat("]", n) + strings.Repeat("a", n-1) + "."
	v, err := testVM().Unpickle([]byte(deep))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n-1; i++ {
		l := v.(*List)
		if len(l.Items) != 1 {
			t.Fatalf("level %d has %d items", i, len(l.Items))
		}
		v = l.Items[0]
	}
	// Deeply nested tuples and marks are fine as values.
	marks := "\x80\x02" + strings.Repeat("(", n) + strings.Repeat("t", n) + "."
	if _, err := testVM().Unpickle([]byte(marks)); err != nil {
		t.Fatal(err)
	}

	// As a dict key, a tuple may nest MaxKeyDepth deep, no deeper.
	key := func(depth int) string {
		return "\x80\x02}K\x01" + strings.Repeat("\x85", depth) + "Ns."
	}
	if _, err := testVM().Unpickle([]byte(key(MaxKeyDepth))); err != nil {
		t.Fatalf("key of depth %d: %v", MaxKeyDepth, err)
	}
	if _, err := testVM().Unpickle([]byte(key(MaxKeyDepth + 1))); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("key of depth %d: %v", MaxKeyDepth+1, err)
	}
	// A tuple of two copies of a tuple of two copies of ... is 2^30 leaves
	// in 92 bytes: refused quickly, for dicts and sets.
	wide := "K\x01" + strings.Repeat("2\x86", 30)
	start := time.Now()
	for _, in := range []string{"\x80\x02}" + wide + "Ns.", "\x80\x04\x8f(" + wide + "\x90."} {
		if _, err := testVM().Unpickle([]byte(in)); err == nil || !strings.Contains(err.Error(), "too") {
			t.Errorf("exponential key: %v", err)
		}
	}
	// A big key made of one large string is refused too.
	big := "\x80\x04}\x8e\x00\x00\x20\x00\x00\x00\x00\x00" + strings.Repeat("x", 1<<21) + "Ns."
	if _, err := testVM().Unpickle([]byte(big)); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("2 MiB key: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusing large keys took %v", d)
	}
}

// TestSequence reads consecutive pickles from one stream, as torch's legacy
// format stores them, and finds what follows.
func TestSequence(t *testing.T) {
	in := "\x80\x02K\x01.\x80\x02U\x01a.tail"
	r := NewReader(bytes.NewReader([]byte(in)), int64(len(in)))
	a, err := testVM().Load(r)
	if err != nil || a != int64(1) || r.Offset() != 5 {
		t.Fatalf("first: %v, %v at %d", a, err, r.Offset())
	}
	b, err := testVM().Load(r)
	if err != nil || b != "a" || r.Offset() != 11 || r.Remaining() != 4 {
		t.Fatalf("second: %v, %v at %d", b, err, r.Offset())
	}
	if _, err := testVM().Load(r); err == nil {
		t.Fatal("third pickle read from the tail")
	}
}

func TestDictKeysLikePython(t *testing.T) {
	d := &Dict{}
	for _, kv := range [][2]Value{{int64(1), "a"}, {true, "b"}, {1.0, "c"}, {1.5, "d"}, {"1", "e"}, {Bytes("1"), "f"}, {None{}, "g"}, {Tuple{int64(1)}, "h"}} {
		if err := d.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if got := repr(d); got != `{1: "c", 1.5: "d", "1": "e", b"1": "f", None: "g", (1,): "h"}` {
		t.Fatalf("got %s", got)
	}
	if err := d.Set(&List{}, 1); err == nil {
		t.Fatal("list as key accepted")
	}
	if err := d.Set(&Dict{}, 1); err == nil {
		t.Fatal("dict as key accepted")
	}
}

// TestMaxItems: a pickle of little but one-byte opcodes that each add an
// entry (marks here, the cheapest to test) stops at MaxItems, long before
// its memory would; one at the bound runs.
func TestMaxItems(t *testing.T) {
	marks := func(n int) []byte {
		b := append([]byte{OpProto, 2}, bytes.Repeat([]byte{OpMark}, n)...)
		return append(b, OpNone, OpStop)
	}
	var vm VM
	if _, err := vm.Unpickle(marks(MaxItems - 1)); err != nil {
		t.Errorf("%d marks and a value: %v", MaxItems-1, err)
	}
	if _, err := vm.Unpickle(marks(MaxItems + 1)); err == nil || !strings.Contains(err.Error(), "more than 4194304 values, marks and memo entries") {
		t.Errorf("%d marks: %v", MaxItems+1, err)
	}
}
