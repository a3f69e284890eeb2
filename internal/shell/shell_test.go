package shell

import (
	"os/exec"
	"runtime"
	"strings"
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

// TestWindowsQuote: the C runtime's split of a Windows command line (as
// CommandLineToArgvW and Go's os.Args read it) gives each argument back,
// and every argument with a byte that cmd.exe or PowerShell reads
// specially is in double quotes, inside which they read it as itself.
func TestWindowsQuote(t *testing.T) {
	for _, s := range []string{`runs\20261207-120000-vgg16-32`, `C:\my runs\a b`, `C:\my runs\`, `it's`, `a"b`, `a\"b`, `a\\"b\`, `R&D\run`,
		`a|b`, `x;y`, `a,b`, `@x`, `(1)`, "tab\there", "", "ünïcode dir", `\\server\share\runs`} {
		q := windowsQuote(s)
		got := splitWindows(q)
		if len(got) != 1 || got[0] != s {
			t.Errorf("windowsQuote(%q) = %s: read back as %q", s, q, got)
		}
		if strings.Trim(s, winSafe) != "" && !(strings.HasPrefix(q, `"`) && strings.HasSuffix(q, `"`)) {
			t.Errorf("windowsQuote(%q) = %s: not in double quotes", s, q)
		}
	}
	if q := windowsQuote(`runs\20261207-120000-vgg16-32`); q != `runs\20261207-120000-vgg16-32` {
		t.Errorf("a plain path was quoted: %s", q)
	}
	// What Quote gives on Windows: POSIX's safe set (, and @) is not
	// Windows's: PowerShell splits --run-dir a,b into two arguments.
	if runtime.GOOS == "windows" {
		for _, s := range []string{"lr=0.1,bs=64", "runs/a,b", "@x"} {
			if q := Quote(s); q != windowsQuote(s) || !strings.HasPrefix(q, `"`) {
				t.Errorf("Quote(%q) = %s, want %s", s, q, windowsQuote(s))
			}
		}
	}
}

// splitWindows splits a command line as the Microsoft C runtime does:
// 2n backslashes and a quote are n backslashes and a quote that opens or
// closes; 2n+1 backslashes and a quote, n backslashes and a quote; other
// backslashes are themselves; spaces and tabs outside quotes separate.
func splitWindows(line string) []string {
	var args []string
	var arg strings.Builder
	inQuotes, started := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\':
			n := 0
			for i < len(line) && line[i] == '\\' {
				n++
				i++
			}
			if i < len(line) && line[i] == '"' {
				arg.WriteString(strings.Repeat(`\`, n/2))
				if n%2 == 1 {
					arg.WriteByte('"')
				} else {
					inQuotes = !inQuotes
				}
			} else {
				arg.WriteString(strings.Repeat(`\`, n))
				i--
			}
			started = true
		case c == '"':
			inQuotes, started = !inQuotes, true
		case (c == ' ' || c == '\t') && !inQuotes:
			if started {
				args = append(args, arg.String())
				arg.Reset()
				started = false
			}
		default:
			arg.WriteByte(c)
			started = true
		}
	}
	if started {
		args = append(args, arg.String())
	}
	return args
}
