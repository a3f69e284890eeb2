package shell

import "syscall"

// quote writes s as the C runtime, and Go, split a Windows command line:
// in double quotes, with the backslashes before a quote (or the closing
// one: a path ending in \) doubled.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	return syscall.EscapeArg(s)
}
