//go:build !windows

package shell

func quote(s string) string { return posix(s) }
