package shell

import (
	"os/exec"
	"runtime"
	"testing"
)

// TestQuote: what a POSIX shell makes of each quoted argument is the
// argument itself.
func TestQuote(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX quoting")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, s := range []string{"runs/20261207-120000-vgg16-32", "my runs/a b", "it's", `a"b`, "$HOME", "x;rm -rf y", "*", "", "ünïcode dir", "a\\b", "back`tick`"} {
		q := Quote(s)
		out, err := exec.Command(sh, "-c", "printf %s "+q).Output()
		if err != nil || string(out) != s {
			t.Errorf("Quote(%q) = %s: the shell read %q (%v)", s, q, out, err)
		}
	}
	if q := Quote("runs/20261207-120000-vgg16-32"); q != "runs/20261207-120000-vgg16-32" {
		t.Errorf("a plain path was quoted: %s", q)
	}
}
