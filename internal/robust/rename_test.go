package robust

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

var errBusy = errors.New("busy")

// fake makes rename fail with err the first n times, and counts the calls.
func fake(t *testing.T, n int, err error) *int {
	t.Helper()
	calls := 0
	oldRename, oldSleep, oldTransient := rename, sleep, transient
	t.Cleanup(func() { rename, sleep, transient = oldRename, oldSleep, oldTransient })
	rename = func(a, b string) error {
		calls++
		if calls <= n {
			return err
		}
		return os.Rename(a, b)
	}
	sleep = func(time.Duration) {}
	transient = func(e error) bool { return errors.Is(e, errBusy) }
	return &calls
}

func files(t *testing.T) (string, string) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(a, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestRenameRetries: a rename that another process's hold refuses a few
// times (Windows) replaces the file once the hold ends.
func TestRenameRetries(t *testing.T) {
	calls := fake(t, 5, errBusy)
	a, b := files(t)
	if err := Rename(a, b); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(b); string(got) != "new" || *calls != 6 {
		t.Errorf("b holds %q after %d calls, want \"new\" after 6", got, *calls)
	}
}

// TestRenameGivesUp: a hold that lasts fails the rename after Timeout, and
// another error at once.
func TestRenameGivesUp(t *testing.T) {
	calls := fake(t, 1<<30, errBusy)
	a, b := files(t)
	if err := Rename(a, b); !errors.Is(err, errBusy) {
		t.Fatalf("Rename = %v, want the hold's error", err)
	}
	if *calls < 10 || *calls > 100 {
		t.Errorf("%d tries in %s", *calls, Timeout)
	}
	other := errors.New("no space")
	calls = fake(t, 1<<30, other)
	if err := Rename(a, b); !errors.Is(err, other) || *calls != 1 {
		t.Errorf("Rename = %v after %d calls, want the error after 1", err, *calls)
	}
}

// TestNotTransientHere: off Windows nothing is retried.
func TestNotTransientHere(t *testing.T) {
	if runtime.GOOS != "windows" && isTransient(os.ErrPermission) {
		t.Error("isTransient is true off Windows")
	}
}
