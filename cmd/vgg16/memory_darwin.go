package main

import "golang.org/x/sys/unix"

// availableBytes is the machine's physical memory (hw.memsize): macOS
// has no one figure for what is free, and a run that needs more than all
// of it cannot fit.
func availableBytes() (int64, string) {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil {
		return 0, ""
	}
	return int64(n), "of memory"
}
