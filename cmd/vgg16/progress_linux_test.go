package main

import (
	"os"
	"testing"
)

// TestIsTerminalThroughLock checks that the lock train puts around its
// output keeps a terminal a terminal: progress bars, not plain lines.
func TestIsTerminalThroughLock(t *testing.T) {
	f, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0) // a pseudo-terminal's master side
	if err != nil {
		t.Skipf("no pseudo-terminal to test with: %v", err)
	}
	defer f.Close()
	if !isTerminal(f) {
		t.Fatal("isTerminal: /dev/ptmx is not a terminal")
	}
	if !isTerminal(&lockedWriter{w: f}) {
		t.Error("isTerminal: a terminal behind lockedWriter is not a terminal")
	}
}
