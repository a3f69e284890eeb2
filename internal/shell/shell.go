// Package shell writes the arguments of the commands that vgg16 suggests
// (continue with …, evaluate it with …) so that they can be pasted into a
// shell as they are, paths with spaces or quotes included.
package shell

import "strings"

// safe are the bytes that no shell reads specially.
const safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@+,"

// winSafe are the bytes that neither cmd.exe nor PowerShell reads
// specially in an argument.
const winSafe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=+\\"

// Quote returns s as one shell argument: unchanged where it needs no
// quoting, otherwise in single quotes (POSIX shells) or as Windows programs
// read their command lines (quote). Each platform's quote decides what
// needs none: POSIX's safe set has , and @, which PowerShell reads as a
// list and a splat.
func Quote(s string) string { return quote(s) }

// posix puts s in single quotes, in which a POSIX shell reads every byte
// as itself but the single quote, which is closed, escaped and reopened;
// s of safe bytes alone is left as it is.
func posix(s string) string {
	if s != "" && strings.Trim(s, safe) == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// windowsQuote writes s as the C runtime, and Go, split a Windows command
// line, in double quotes, with the backslashes before a quote (or the
// closing one: a path ending in \) doubled. Always in quotes, unlike
// syscall.EscapeArg, which quotes only for a space or tab: inside them
// cmd.exe and PowerShell take & | < > ^ ( ) ; , ' and @ as they are, where
// outside `R&D\run` would run `D\run` (PowerShell still expands $ and `
// in them, cmd.exe %VAR%). A path of letters, digits, _-./:=+ and
// backslashes needs none (not , or @: PowerShell reads a list, a splat).
func windowsQuote(s string) string {
	if s != "" && strings.Trim(s, winSafe) == "" {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1)) // 2n+1 backslashes, then the quote: n and a quote
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteByte(s[i])
	}
	b.WriteString(strings.Repeat(`\`, slashes)) // before the closing quote: doubled
	b.WriteByte('"')
	return b.String()
}
