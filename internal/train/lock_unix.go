//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package train

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// lockInDir: the lock is on the directory itself, no file in it.
const lockInDir = false

// lockDir takes flock(2)'s exclusive lock on the directory itself, so that
// the run directory holds no file of the lock's. The lock belongs to the
// open file, so a second lockDir in the same process conflicts too. note
// says why there is no lock where the file system has none.
func lockDir(dir string) (unlock func(), note string, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, "", err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, "", ErrDirInUse
	case err != nil: // ENOLCK, ENOTSUP: some network file systems
		f.Close()
		return func() {}, "flock: " + err.Error(), nil
	}
	// The directory locked is still the one named: not one that a run
	// that failed removed (locked) while this one opened it.
	held, err1 := f.Stat()
	now, err2 := os.Stat(dir)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		if err2 != nil {
			return nil, "", err2
		}
		return nil, "", ErrDirInUse
	}
	return func() { f.Close() }, "", nil
}
