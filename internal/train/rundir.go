package train

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vgg16/vgg16/internal/checkpoint"
)

// ErrDirInUse is the error for a run directory that another process holds.
var ErrDirInUse = errors.New("in use by another vgg16 train")

// tempPattern matches the temporary files of atomic writes (".<name>.tmp…",
// the run's own write check too), which a crash can leave.
const tempPattern = ".*.tmp*"

// isTemp says whether the file name matches tempPattern.
func isTemp(name string) bool {
	ok, _ := filepath.Match(tempPattern, name)
	return ok
}

// lockName is the file that holds a run directory's lock where directories
// themselves cannot be locked (Windows). It is gone when its process ends.
const lockName = ".lock"

// A Claim is a run directory held by this process: locked until Release or
// the end of the process, however it ends (the operating system lets go of
// the lock; nothing stale is left). Two trainings writing one run would
// interleave its checkpoints and metrics, and each would remove the other's
// optimizer state and the files it is writing.
type Claim struct {
	Dir string
	// Note says why the directory could not be locked (a file system
	// without locks, as some network file systems are); "" when it is.
	Note   string
	unlock func()
	made   bool // the claim made the directory
}

// Release lets go of the directory, and removes it first where the claim
// made it and it stayed empty (a run that failed before writing anything).
func (c *Claim) Release() {
	if c.made && !lockInDir { // removed while still locked: no other process takes it in between
		os.Remove(c.Dir) // an empty directory only
	}
	c.unlock()
	if c.made && lockInDir { // once the lock's own file is gone
		os.Remove(c.Dir)
	}
}

// LockDir claims the existing directory dir.
func LockDir(dir string) (*Claim, error) {
	unlock, note, err := lockDir(dir)
	if errors.Is(err, ErrDirInUse) {
		return nil, fmt.Errorf("run directory %s is %w: a run trains in one process at a time", dir, ErrDirInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("run directory %s: %w", dir, err)
	}
	if note != "" {
		note = fmt.Sprintf("run directory %s cannot be locked here (%s): nothing stops a second vgg16 from training it at the same time", dir, note)
	}
	return &Claim{Dir: dir, Note: note, unlock: unlock}, nil
}

// PrepareDir makes dir a fresh run directory, refusing one that already
// holds a run unless resume is set (and then requiring one), and claims it.
func PrepareDir(dir string, resume bool) (*Claim, error) {
	if resume {
		return claimRun(dir)
	}
	if err := CheckNewDir(dir); err != nil {
		return nil, err
	}
	_, statErr := os.Lstat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory %s: %w", dir, err)
	}
	made := os.IsNotExist(statErr)
	c, err := LockDir(dir)
	if err != nil {
		if made && !errors.Is(err, ErrDirInUse) { // in use: another run's now
			os.Remove(dir)
		}
		return nil, err
	}
	c.made = made
	// Checked again now that it is ours: another run may have started in
	// it between the first check and the lock, and finished.
	if err := c.readyForNew(); err != nil {
		return nil, err
	}
	return c, nil
}

// readyForNew checks that the claimed directory can take a new run (it is
// empty and writable), letting go of it where it cannot.
func (c *Claim) readyForNew() error {
	err := CheckNewDir(c.Dir)
	if err == nil {
		err = checkWritable(c.Dir)
	}
	if err != nil {
		c.Release()
	}
	return err
}

// StartAgain claims dir for a new run, as PrepareDir does, where a run there
// stopped before its first last.safetensors (killed while saving its first
// epoch): what it left, which the new run would write again, is removed and
// named. It serves --auto-resume, whose command must start that run again
// rather than fail every time it is run.
func StartAgain(dir string) (c *Claim, removed []string, err error) {
	if left, ok := leftBeforeFirstSave(dir); !ok || len(left) == 0 {
		c, err := PrepareDir(dir, false)
		return c, nil, err
	}
	if c, err = LockDir(dir); err != nil { // not while a run there writes them
		return nil, nil, err
	}
	if left, ok := leftBeforeFirstSave(dir); ok {
		for _, name := range left {
			if os.Remove(filepath.Join(dir, name)) == nil {
				removed = append(removed, name)
			}
		}
	}
	if err := c.readyForNew(); err != nil {
		return nil, nil, err
	}
	return c, removed, nil
}

// leftBeforeFirstSave lists the files in dir that a run writes before its
// first last.safetensors (the best checkpoint, the first epoch's metrics and
// plot, the optimizer state, the temporary files of atomic writes); ok says
// dir holds nothing else, so that they are all the unsaved run's.
func leftBeforeFirstSave(dir string) (files []string, ok bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, false
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == lockName:
			continue
		case !e.Type().IsRegular():
			return nil, false
		case name == MetricsFile && !firstEpochOnly(filepath.Join(dir, name)):
			return nil, false // the metrics of more than the first epoch: a run that saved (its last.safetensors moved away), the user's
		case name == BestFile && !firstEpochBest(filepath.Join(dir, name)):
			return nil, false // likewise a best checkpoint of a later epoch, or not vgg16's
		case name == BestFile, name == MetricsFile, name == PlotFile,
			strings.HasPrefix(name, optimPrefix) && strings.HasSuffix(name, ".safetensors"), isTemp(name):
			files = append(files, name)
		default: // last.safetensors, or anything of the user's
			return nil, false
		}
	}
	return files, true
}

// firstEpochOnly says whether the metrics file at path is one a run writes
// before its first last.safetensors: epoch 1's line alone (written
// atomically, so whole or absent).
func firstEpochOnly(path string) bool {
	h, err := ReadMetrics(path)
	return err == nil && len(h) <= 1 && (len(h) == 0 || h[0].Epoch == 1)
}

// firstEpochBest says whether the checkpoint at path is a best one that a
// run writes before its first last.safetensors: epoch 1's.
func firstEpochBest(path string) bool {
	e, err := checkpoint.ReadEpoch(path)
	return err == nil && e == 1
}

// claimRun claims the directory of a run to resume.
func claimRun(dir string) (*Claim, error) {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("--run-dir %s: a file, not a directory: --resume takes the run's directory (the one holding %s)", dir, LastFile)
	}
	if !checkpoint.Exists(filepath.Join(dir, LastFile)) {
		if checkpoint.Exists(filepath.Join(dir, BestFile)) {
			return nil, fmt.Errorf("--resume: %s has no %s: the run stopped while saving its first epoch (%s holds that epoch's weights); start again with another --run-dir", dir, LastFile, BestFile)
		}
		return nil, fmt.Errorf("--resume: %s has no %s to resume from", dir, LastFile)
	}
	c, err := LockDir(dir)
	if err != nil {
		return nil, err
	}
	// What atomic writes interrupted by a crash left: temporary files
	// (".<name>.tmp…") that nothing reads. Only now: a run training in
	// the directory would be writing them.
	tmps, _ := filepath.Glob(filepath.Join(dir, tempPattern))
	for _, t := range tmps {
		os.Remove(t)
	}
	if err := checkWritable(dir); err != nil {
		c.Release()
		return nil, err
	}
	return c, nil
}

// CheckNewDir says why a new run cannot start in dir: it holds a run, or
// anything else. A directory that does not exist yet is fine.
func CheckNewDir(dir string) error {
	if checkpoint.Exists(filepath.Join(dir, LastFile)) {
		return fmt.Errorf("run directory %s already holds a run: pass --resume to continue it or choose another --run-dir", dir)
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return fmt.Errorf("--run-dir %s: a file, not a directory", dir)
	}
	entries, _ := os.ReadDir(dir)
	entries = slices.DeleteFunc(entries, func(e fs.DirEntry) bool { return e.Name() == lockName })
	if len(entries) > 0 {
		return fmt.Errorf("run directory %s exists and is not empty: choose another --run-dir", dir)
	}
	return nil
}

// checkWritable says, before any training, that dir takes no files (a
// directory that is read-only, or on a read-only mount): the first
// checkpoint would fail only after an epoch's work.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-check.tmp")
	if err != nil {
		return fmt.Errorf("run directory %s cannot take the run's files: %w", dir, err)
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("run directory %s: %w", dir, err)
	}
	return nil
}

// NewDir creates the directory of a new run named dir, or, where that name
// is taken (another run started in the same second), dir-2, dir-3, …, and
// claims the one it made (Claim.Dir): creating it claims the name, so two
// runs never share one.
func NewDir(dir string) (*Claim, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("run directory %s: %w", dir, err)
	}
	for i := 1; i <= 100; i++ {
		d := dir
		if i > 1 {
			d = fmt.Sprintf("%s-%d", dir, i)
		}
		err := os.Mkdir(d, 0o755)
		if err == nil {
			c, err := LockDir(d)
			if err != nil {
				os.Remove(d)
				return nil, err
			}
			c.made = true
			return c, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("run directory %s: %w", d, err)
		}
	}
	return nil, fmt.Errorf("run directory %s and 99 more with suffixes exist: choose a --run-dir", dir)
}
