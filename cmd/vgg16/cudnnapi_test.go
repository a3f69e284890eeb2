package main

import (
	"strings"
	"testing"
)

// TestCuDNNAPIFlag: --cudnn-api takes graph or legacy, and every command
// that opens a device refuses another value, naming it and the choices,
// before it touches a device or data (here on the CPU, where the flag
// would not matter).
func TestCuDNNAPIFlag(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--device", "cpu", "--cudnn-api", "fast"},
		{"train", "--device", "cpu", "--data", "demo", "--cudnn-api", "fast", "--epochs", "1"},
	} {
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), `--cudnn-api "fast": want graph or legacy`) {
			t.Errorf("%s: %v", strings.Join(args, " "), err)
		}
	}
}
