//go:build !windows

package robust

// isTransient is false: a POSIX rename replaces a file whoever has it open.
func isTransient(error) bool { return false }
