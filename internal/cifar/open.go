package cifar

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The folder names inside the official archives.
const (
	BinFolder = "cifar-10-batches-bin"
	PyFolder  = "cifar-10-batches-py"
)

// format describes one on-disk version of the dataset.
type format struct {
	name   string // "bin" or "py"
	folder string
	ext    string // suffix of the batch files
	meta   string // class-name file
}

var (
	binFormat = format{name: "bin", folder: BinFolder, ext: ".bin", meta: "batches.meta.txt"}
	pyFormat  = format{name: "py", folder: PyFolder, ext: "", meta: "batches.meta"}
	// The binary version is preferred when both are present: it reads faster.
	formats = []format{binFormat, pyFormat}
)

func (f format) files(split string) []string {
	if split == "test" {
		return []string{"test_batch" + f.ext}
	}
	out := make([]string, 5)
	for i := range out {
		out[i] = fmt.Sprintf("data_batch_%d%s", i+1, f.ext)
	}
	return out
}

func (f format) read(path string) (*Dataset, error) {
	if f.name == "bin" {
		return ReadBinFile(path)
	}
	return ReadPickleFile(path)
}

func (f format) readMeta(path string) ([]string, error) {
	if f.name == "bin" {
		return readMetaTxt(path)
	}
	return readMetaPickle(path)
}

// candidates lists the folders that may hold a dataset of format f: dir's
// subfolder with the official name, or dir itself.
func candidates(dir string, f format) []string {
	return []string{filepath.Join(dir, f.folder), dir}
}

// complete reports whether folder holds all six batch files of format f,
// each a non-empty regular file (of whole records, for the binary version).
// It only stats: Download validates contents before a folder gets its name.
func complete(folder string, f format) bool {
	for _, split := range []string{"train", "test"} {
		for _, name := range f.files(split) {
			fi, err := os.Stat(filepath.Join(folder, name))
			if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
				return false
			}
			if f.name == "bin" && fi.Size()%RecordBytes != 0 {
				return false
			}
		}
	}
	return true
}

// Incomplete finds a dataset folder in dir (as Exists looks for one) that
// holds some batch files but not all six whole: the folder and what it
// lacks, as a phrase ("without data_batch_2.bin; data_batch_3.bin is
// damaged: …"), or "" where there is none.
func Incomplete(dir string) (folder, lacks string) {
	for _, f := range formats {
		for _, c := range candidates(dir, f) {
			if !hasAny(c, f) || complete(c, f) {
				continue
			}
			var missing, damaged []string
			for _, split := range []string{"train", "test"} {
				for _, name := range f.files(split) {
					fi, err := os.Stat(filepath.Join(c, name))
					switch {
					case err != nil || !fi.Mode().IsRegular():
						missing = append(missing, name)
					case fi.Size() == 0:
						damaged = append(damaged, name+" is empty")
					case f.name == "bin" && fi.Size()%RecordBytes != 0:
						damaged = append(damaged, fmt.Sprintf("%s is damaged: %d bytes, not a whole number of %d-byte records", name, fi.Size(), RecordBytes))
					}
				}
			}
			var parts []string
			if len(missing) > 0 {
				parts = append(parts, "without "+strings.Join(missing, ", "))
			}
			return c, strings.Join(append(parts, damaged...), "; ")
		}
	}
	return "", ""
}

// hasAny reports whether folder holds at least one batch file of format f,
// which is how Open decides which layout the user pointed it at.
func hasAny(folder string, f format) bool {
	for _, split := range []string{"train", "test"} {
		for _, name := range f.files(split) {
			if _, err := os.Stat(filepath.Join(folder, name)); err == nil {
				return true
			}
		}
	}
	return false
}

// Exists reports whether a complete dataset (all five training batches and
// the test batch, in either version) is in dir: in dir/cifar-10-batches-bin,
// dir/cifar-10-batches-py, or dir itself.
func Exists(dir string) bool {
	for _, f := range formats {
		if existsFormat(dir, f) {
			return true
		}
	}
	return false
}

// HasFormat reports whether dir holds the whole dataset in the version
// name ("bin" or "py"), where Exists would take either.
func HasFormat(dir, name string) bool {
	for _, f := range formats {
		if f.name == name {
			return existsFormat(dir, f)
		}
	}
	return false
}

func existsFormat(dir string, f format) bool {
	for _, c := range candidates(dir, f) {
		if complete(c, f) {
			return true
		}
	}
	return false
}

// Open reads the "train" (data_batch_1..5) or "test" (test_batch) split.
// dir is the folder that holds cifar-10-batches-bin/ or cifar-10-batches-py/,
// or one of those folders itself. Class names come from batches.meta.txt or
// batches.meta when present, ClassNames otherwise.
func Open(dir string, split string) (*Dataset, error) {
	if split != "train" && split != "test" {
		return nil, fmt.Errorf("cifar: unknown split %q, want \"train\" or \"test\"", split)
	}
	// Prefer a folder that has every file of the split; otherwise report the
	// first missing file of the first folder that looks like a dataset.
	type cand struct {
		folder string
		f      format
	}
	var found []cand
	for _, f := range formats {
		for _, c := range candidates(dir, f) {
			if hasAny(c, f) {
				found = append(found, cand{c, f})
			}
		}
	}
	if len(found) == 0 {
		if err := BrokenLink(dir); err != nil {
			return nil, err
		}
		if err := Unreadable(dir); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("cifar: no CIFAR-10 dataset in %s (looked for %s/ and %s/ with data_batch_1..5 and test_batch): run `vgg16 data download` (offline: one batch file, or the embedded sample, demo, works too): %w",
			dir, BinFolder, PyFolder, fs.ErrNotExist)
	}
	pick := found[0]
	for _, c := range found {
		if hasSplit(c.folder, c.f, split) {
			pick = c
			break
		}
	}
	return openFolder(pick.folder, pick.f, split)
}

func hasSplit(folder string, f format, split string) bool {
	for _, name := range f.files(split) {
		if _, err := os.Stat(filepath.Join(folder, name)); err != nil {
			return false
		}
	}
	return true
}

func openFolder(folder string, f format, split string) (*Dataset, error) {
	names := f.files(split)
	for _, name := range names {
		p := filepath.Join(folder, name)
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("cifar: %s is missing (incomplete dataset): move %s away and run `vgg16 data download`, or use one batch file: %w", p, folder, fs.ErrNotExist)
			}
			return nil, fmt.Errorf("cifar: %w", err)
		}
	}
	classes := ClassNames
	if mp := filepath.Join(folder, f.meta); fileExists(mp) {
		var err error
		if classes, err = f.readMeta(mp); err != nil {
			return nil, err
		}
	}
	var parts []*Dataset
	total := 0
	for _, name := range names {
		d, err := f.read(filepath.Join(folder, name))
		if err != nil {
			return nil, err
		}
		parts = append(parts, d)
		total += d.Len()
	}
	if len(parts) == 1 {
		parts[0].Classes = classes
		return parts[0], nil
	}
	ds := &Dataset{Images: make([]byte, 0, total*ImageBytes), Labels: make([]uint8, 0, total), Classes: classes}
	for i, p := range parts {
		ds.Images = append(ds.Images, p.Images...)
		ds.Labels = append(ds.Labels, p.Labels...)
		parts[i] = nil // let each batch go as soon as it is copied
	}
	return ds, nil
}

// Unreadable is the error for the first of dir and the dataset's folders
// in it that is there but cannot be listed (no permission, a link that
// loops), which would otherwise read as no dataset at all; nil where
// there is none.
func Unreadable(dir string) error {
	for _, p := range []string{dir, filepath.Join(dir, BinFolder), filepath.Join(dir, PyFolder)} {
		if _, err := os.Lstat(p); err != nil {
			continue // not there: no dataset, as said
		}
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.IsDir() {
			continue // a link to nowhere is BrokenLink's to name
		}
		if err == nil {
			_, err = os.ReadDir(p)
		}
		if err != nil {
			return fmt.Errorf("cifar: %w", err)
		}
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// BrokenLink is the error for the first of dir and the dataset's folders in
// it that is a symbolic link to nothing (a drive not mounted, say), which a
// download must not replace; nil where there is none.
func BrokenLink(dir string) error {
	if err := linkToNowhere(dir, filepath.Join(dir, BinFolder), filepath.Join(dir, PyFolder)); err != nil {
		return fmt.Errorf("%w: %w", err, fs.ErrNotExist)
	}
	return nil
}
