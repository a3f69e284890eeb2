// Package robust replaces a file by renaming another over it, as os.Rename
// does, but riding out the moments when Windows refuses the rename: its
// MoveFileEx fails with "Access is denied" or a sharing violation while any
// other process has the file to be replaced open (a `vgg16 eval` or
// `summary` reading a checkpoint, a backup or sync client), and while a
// scanner (Defender, the search indexer) holds a file just written and
// closed. Such a hold lasts moments; an epoch's work should not end on it.
package robust

import (
	"os"
	"time"
)

// Timeout bounds how long Rename retries a transient failure.
const Timeout = 10 * time.Second

// For the tests.
var (
	rename    = os.Rename
	sleep     = time.Sleep
	transient = isTransient
)

// Rename renames oldpath to newpath, replacing newpath, as os.Rename does;
// where that fails with an error that another process's brief hold on
// either file explains (Windows only), it tries again for up to Timeout.
func Rename(oldpath, newpath string) error {
	delay, waited := time.Millisecond, time.Duration(0)
	for {
		err := rename(oldpath, newpath)
		if err == nil || !transient(err) || waited >= Timeout {
			return err
		}
		sleep(delay)
		waited += delay
		delay = min(2*delay, 200*time.Millisecond)
	}
}
