package train

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// lockInDir: the lock is a file in the directory.
const lockInDir = true

// lockDir opens dir's lock file with no sharing, which no second open gets
// while this one lasts, and with delete-on-close, so that it goes when the
// process ends, however it ends.
func lockDir(dir string) (unlock func(), note string, err error) {
	name, err := windows.UTF16PtrFromString(filepath.Join(dir, lockName))
	if err != nil {
		return nil, "", err
	}
	h, err := windows.CreateFile(name, windows.GENERIC_READ|windows.GENERIC_WRITE|windows.DELETE, 0, nil,
		windows.OPEN_ALWAYS, windows.FILE_ATTRIBUTE_HIDDEN|windows.FILE_FLAG_DELETE_ON_CLOSE, 0)
	if errors.Is(err, windows.ERROR_SHARING_VIOLATION) {
		return nil, "", ErrDirInUse
	}
	// Access is denied, too, to an open while the last holder's file waits
	// to be deleted on its close: the directory was in use a moment ago.
	// Without the file, it is the directory's permissions.
	if _, statErr := os.Lstat(filepath.Join(dir, lockName)); errors.Is(err, windows.ERROR_ACCESS_DENIED) && statErr == nil {
		return nil, "", ErrDirInUse
	}
	if err != nil {
		return nil, "", err
	}
	return func() { windows.CloseHandle(h) }, "", nil
}
