package train

import (
	"errors"
	"fmt"
)

// ErrDirInUse is LockDir's error where another process holds the run.
var ErrDirInUse = errors.New("in use by another vgg16 train")

// lockName is the file that holds a run directory's lock where directories
// themselves cannot be locked (Windows). It is gone when its process ends.
const lockName = ".lock"

// LockDir claims the run directory dir for this process until release is
// called or the process ends, however it ends (the operating system lets
// go of the lock; nothing stale is left). Two trainings writing one run
// would interleave its checkpoints and metrics, and each would remove the
// other's optimizer state and the files it is writing. On a file system
// without locks (some network file systems) the run goes on unclaimed.
func LockDir(dir string) (release func(), err error) {
	release, err = lockDir(dir)
	if errors.Is(err, ErrDirInUse) {
		return nil, fmt.Errorf("run directory %s is %w: a run trains in one process at a time (wait for it, or stop it with Ctrl-C and --resume)", dir, ErrDirInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("run directory %s: %w", dir, err)
	}
	return release, nil
}
