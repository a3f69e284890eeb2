// Package shell writes the arguments of the commands that vgg16 suggests
// (continue with …, evaluate it with …) so that they can be pasted into a
// shell as they are, paths with spaces or quotes included.
package shell

import (
	"runtime"
	"strings"
)

// Quote returns s as one shell argument: unchanged where it needs no
// quoting, otherwise in single quotes (POSIX shells) or double quotes
// (Windows, whose paths hold no double quote).
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,") == "" {
		return s
	}
	if runtime.GOOS == "windows" {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
