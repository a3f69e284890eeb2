package main

import (
	"os"

	"golang.org/x/sys/windows"
)

// ansiConsole turns on the console's handling of ANSI escape codes
// (ENABLE_VIRTUAL_TERMINAL_PROCESSING, Windows 10 and later) and says
// whether it is on. Without them progressbar clears a line on Windows by
// "\r" alone, which leaves the end of a longer line behind: after a
// finished bar, the end of the bar past the epoch's line.
func ansiConsole(f *os.File) bool {
	h := windows.Handle(f.Fd())
	var mode uint32
	if windows.GetConsoleMode(h, &mode) != nil {
		return false
	}
	if mode&windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING != 0 {
		return true
	}
	return windows.SetConsoleMode(h, mode|windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING) == nil
}
