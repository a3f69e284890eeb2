package train

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/cpu"
)

// TestFailedSaveAtTheSameStep: a run resumed and interrupted before its
// first step saves again at the step of its last checkpoint, rewriting the
// optimizer state that checkpoint names. Where the weights then cannot be
// written (a full disk: here a file-size limit, in a child process, between
// the optimizer state's size and the weights'), the old checkpoint and its
// optimizer state must both stay, and the run resume from them.
func TestFailedSaveAtTheSameStep(t *testing.T) {
	if dir := os.Getenv("VGG16_FSIZE_CHILD"); dir != "" {
		fsizeChild(dir)
		return
	}
	dir := t.TempDir()
	o := smallOptions()
	o.Epochs = 1
	if _, err := newRun(t, dir, o, &quiet{}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.Load(filepath.Join(dir, LastFile))
	if err != nil {
		t.Fatal(err)
	}
	opt, err1 := os.Stat(OptimPath(dir, ck.Info.ID))
	last, err2 := os.Stat(filepath.Join(dir, LastFile))
	if err1 != nil || err2 != nil || opt.Size() >= last.Size() {
		t.Fatalf("optimizer state %v, weights %v: the test wants the state the smaller", opt, last)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFailedSaveAtTheSameStep$")
	cmd.Env = append(os.Environ(), "VGG16_FSIZE_CHILD="+dir, "VGG16_FSIZE_LIMIT="+strconv.FormatInt(opt.Size(), 10))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child: saving "+filepath.Join(dir, LastFile)) {
		t.Fatalf("the child's save did not fail as meant: %v\n%s", err, out)
	}
	o.Epochs = 2
	r := newRun(t, dir, o, &quiet{})
	r.Resume = true
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatalf("resume after the failed save: %v", err)
	}
}

// fsizeChild resumes the run in dir under a file-size limit, with its
// context cancelled, and prints the error of the save that interruption makes.
func fsizeChild(dir string) {
	limit, _ := strconv.ParseUint(os.Getenv("VGG16_FSIZE_LIMIT"), 10, 64)
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails (EFBIG) instead of killing the process
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
		panic(err)
	}
	rl.Cur = limit
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
		panic(err)
	}
	o := smallOptions()
	o.Epochs = 2
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &Run{Dir: dir, Opt: o, Classes: []string{"red", "green", "blue", "white"}, Train: synthetic(256, 1), Val: synthetic(64, 2),
		Backend: cpu.New(), Report: &quiet{}, Resume: true}
	_, err := r.Execute(ctx)
	if err != nil && errors.Is(err, syscall.EFBIG) {
		os.Stdout.WriteString("child: " + err.Error() + "\n")
	} else {
		os.Stdout.WriteString("child: the save did not fail with EFBIG: " + errString(err) + "\n")
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
