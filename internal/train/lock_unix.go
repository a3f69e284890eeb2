//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package train

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes flock(2)'s exclusive lock on the directory itself, so that
// the run directory holds no file of the lock's. The lock belongs to the
// open file, so a second LockDir in the same process conflicts too.
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		return func() { f.Close() }, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, ErrDirInUse
	default: // no locks here (ENOLCK, ENOTSUP on some network file systems)
		f.Close()
		return func() {}, nil
	}
}
