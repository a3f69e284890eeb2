package cifar

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenLayouts(t *testing.T) {
	for _, tc := range []struct{ format, folder string }{{"bin", BinFolder}, {"py", PyFolder}} {
		t.Run(tc.format, func(t *testing.T) {
			dir := t.TempDir()
			folder := filepath.Join(dir, tc.folder)
			train, test := writeDataset(t, folder, tc.format, 7)
			if !Exists(dir) || !Exists(folder) {
				t.Fatal("Exists = false for a complete dataset")
			}
			for _, d := range []string{dir, folder} { // parent or the folder itself
				got, err := Open(d, "train")
				if err != nil {
					t.Fatal(err)
				}
				sameDataset(t, got, train) // five batches in order, classes from the meta file
				got, err = Open(d, "test")
				if err != nil {
					t.Fatal(err)
				}
				sameDataset(t, got, test)
			}

			// Without the meta file the classes are the standard ones.
			meta := map[string]string{"bin": "batches.meta.txt", "py": "batches.meta"}[tc.format]
			if err := os.Remove(filepath.Join(folder, meta)); err != nil {
				t.Fatal(err)
			}
			got, err := Open(dir, "test")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got.Classes, ",") != strings.Join(ClassNames, ",") {
				t.Fatalf("classes = %v", got.Classes)
			}

			// A missing batch: Exists says no, Open names the file and the fix.
			third := "data_batch_3"
			if tc.format == "bin" {
				third += ".bin"
			}
			if err := os.Remove(filepath.Join(folder, third)); err != nil {
				t.Fatal(err)
			}
			if Exists(dir) {
				t.Fatal("Exists = true with a batch missing")
			}
			_, err = Open(dir, "train")
			if err == nil || !strings.Contains(err.Error(), third) || !strings.Contains(err.Error(), "vgg16 data download") ||
				!errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("err = %v", err)
			}
			if _, err := Open(dir, "test"); err != nil {
				t.Fatalf("test split with a training batch missing: %v", err)
			}
		})
	}
}

func TestOpenPrefersCompleteFormat(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, BinFolder, "data_batch_1.bin"), binBytes(synth(2, 0, 1))) // a stray partial bin
	train, _ := writeDataset(t, filepath.Join(dir, PyFolder), "py", 3)
	got, err := Open(dir, "train")
	if err != nil {
		t.Fatal(err)
	}
	sameDataset(t, got, train)
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir, "train")
	if err == nil || !strings.Contains(err.Error(), "vgg16 data download") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
	if Exists(dir) {
		t.Fatal("Exists on an empty dir")
	}
	if _, err := Open(dir, "validation"); err == nil {
		t.Fatal("unknown split accepted")
	}
	// A corrupt batch is reported with its name.
	folder := filepath.Join(dir, BinFolder)
	writeDataset(t, folder, "bin", 2)
	writeFile(t, filepath.Join(folder, "data_batch_2.bin"), []byte("short"))
	if _, err := Open(dir, "train"); err == nil || !strings.Contains(err.Error(), "data_batch_2.bin") {
		t.Fatalf("corrupt batch: %v", err)
	}
	if Exists(dir) {
		t.Fatal("Exists accepts a batch that is not whole records")
	}
	writeFile(t, filepath.Join(folder, "batches.meta.txt"), []byte("a\nb\n"))
	if _, err := Open(dir, "test"); err == nil || !strings.Contains(err.Error(), "batches.meta.txt") {
		t.Fatalf("bad meta: %v", err)
	}
}

// TestReadBatchFileArchiveOrEmpty: the downloaded archive (gzip, or the
// tar in it) given as a batch file is named as an archive with what to
// do, not read as records of the wrong size; an empty file is named empty,
// not a pickle without STOP.
func TestReadBatchFileArchiveOrEmpty(t *testing.T) {
	dir := t.TempDir()
	arc := filepath.Join(dir, "cifar-10-binary.tar.gz")
	writeFile(t, arc, archiveOf(t, "bin", 1))
	zr, err := gzip.NewReader(bytes.NewReader(archiveOf(t, "bin", 1)))
	if err != nil {
		t.Fatal(err)
	}
	tarBytes, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "cifar-10-binary.tar")
	writeFile(t, tarPath, tarBytes)
	for _, p := range []string{arc, tarPath} {
		if _, err := ReadBatchFile(p); err == nil || !strings.Contains(err.Error(), p+" is an archive") || !strings.Contains(err.Error(), "unpack it (tar xf)") {
			t.Errorf("ReadBatchFile(%s) = %v, want it named an archive to unpack", p, err)
		}
	}
	empty := filepath.Join(dir, "test_batch")
	writeFile(t, empty, nil)
	if _, err := ReadBatchFile(empty); err == nil || !strings.Contains(err.Error(), empty+": empty file") {
		t.Errorf("ReadBatchFile of an empty file = %v, want it named empty", err)
	}
}

// linksToNowhere makes dir, a link to the missing nowhere (a drive not
// mounted), and inner, a folder whose dataset folder named folder links
// there too. It skips the test where there are no symbolic links.
func linksToNowhere(t *testing.T, folder string) (dir, inner, nowhere string) {
	root := t.TempDir()
	nowhere = filepath.Join(root, "unmounted")
	dir = filepath.Join(root, "data")
	if err := os.Symlink(nowhere, dir); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	inner = filepath.Join(root, "data2")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(nowhere, filepath.Join(inner, folder)); err != nil {
		t.Fatal(err)
	}
	return dir, inner, nowhere
}

// TestOpenDanglingLink: a data folder, or the dataset's folder in it, that
// links to nowhere (a drive not mounted) is named as that link, not as a
// folder without CIFAR-10.
func TestOpenDanglingLink(t *testing.T) {
	dir, inner, nowhere := linksToNowhere(t, PyFolder)
	for d, link := range map[string]string{dir: dir, inner: filepath.Join(inner, PyFolder)} {
		_, err := Open(d, "test")
		if want := link + " is a link to " + nowhere + ", which does not exist"; err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%s): %v, want %q", d, err, want)
		}
	}
}

// TestLinkLoop: a dataset folder that is a link to itself is named with
// its error, not taken for no dataset, and a download does not fetch the
// archive only to fail on it at the end.
func TestLinkLoop(t *testing.T) {
	dir := t.TempDir()
	loop := filepath.Join(dir, BinFolder)
	if err := os.Symlink(loop, loop); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	if _, err := Open(dir, "train"); err == nil || !strings.Contains(err.Error(), loop) || strings.Contains(err.Error(), "no CIFAR-10 dataset") {
		t.Errorf("Open of a folder whose dataset folder loops: %v", err)
	}
	err := Download(context.Background(), DownloadOptions{Dir: dir, URL: "http://127.0.0.1:1/never-fetched"})
	if err == nil || !strings.Contains(err.Error(), "cifar: stat "+loop+": ") {
		t.Errorf("Download into a folder whose dataset folder loops: %v", err)
	}
}
