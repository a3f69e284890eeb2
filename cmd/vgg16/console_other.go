//go:build !windows

package main

import "os"

// ansiConsole is false: progressbar clears a line with spaces here.
func ansiConsole(*os.File) bool { return false }
