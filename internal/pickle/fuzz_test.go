package pickle

import (
	"strings"
	"testing"
)

// FuzzVM runs arbitrary bytes on a VM whose callbacks accept everything
// harmless: it may fail, never panic, and it must do the same from memory
// and from a stream.
func FuzzVM(f *testing.F) {
	for _, c := range goodPickles {
		f.Add([]byte(c.in))
	}
	f.Add([]byte("\x80\x02cos\nsystem\nU\x02ls\x85R."))
	f.Add([]byte("\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x01."))
	f.Add([]byte("\x80\x02}K\x01" + strings.Repeat("2\x86", 8) + "Ns."))
	f.Fuzz(func(t *testing.T, b []byte) {
		v1, err1 := testVM().Unpickle(b)
		r := NewReader(strings.NewReader(string(b)), int64(len(b)))
		v2, err2 := testVM().Load(r)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("memory: %v; stream: %v", err1, err2)
		}
		if err1 != nil {
			if err1.Error() != err2.Error() {
				t.Fatalf("memory: %v; stream: %v", err1, err2)
			}
			return
		}
		if s1, s2 := repr(v1), repr(v2); s1 != s2 {
			t.Fatalf("memory: %s; stream: %s", s1, s2)
		}
		if r.Offset() > int64(len(b)) {
			t.Fatalf("read %d of %d bytes", r.Offset(), len(b))
		}
	})
}
