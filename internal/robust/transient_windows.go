package robust

import (
	"errors"

	"golang.org/x/sys/windows"
)

// isTransient reports whether err is what MoveFileEx returns while another
// process holds the file to be replaced, or the one renamed, open.
func isTransient(err error) bool {
	return errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_SHARING_VIOLATION) ||
		errors.Is(err, windows.ERROR_LOCK_VIOLATION)
}
