// Package shell writes the arguments of the commands that vgg16 suggests
// (continue with …, evaluate it with …) so that they can be pasted into a
// shell as they are, paths with spaces or quotes included.
package shell

import "strings"

// safe are the bytes that no shell reads specially.
const safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@+,"

// Quote returns s as one shell argument: unchanged where it needs no
// quoting, otherwise in single quotes (POSIX shells) or as Windows programs
// read their command lines (quote).
func Quote(s string) string {
	if s != "" && strings.Trim(s, safe) == "" {
		return s
	}
	return quote(s)
}

// posix puts s in single quotes, in which a POSIX shell reads every byte
// as itself but the single quote, which is closed, escaped and reopened.
func posix(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
