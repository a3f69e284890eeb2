package cifar

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/vgg16/vgg16/internal/robust"
)

// The official archives and their MD5 sums (as torchvision checks them).
const (
	BinURL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
	BinMD5 = "c32a1d4ab5d03f1284b67883e8d87530"
	PyURL  = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
	PyMD5  = "c58f30108f718f92721af3b95e74349a"
)

// maxExtract bounds what an archive may unpack to (the real ones hold about
// 180 MB), so that a wrong URL cannot fill the disk.
const maxExtract = 1 << 30

// DownloadOptions configures Download.
type DownloadOptions struct {
	// Dir receives cifar-10-batches-bin/ or cifar-10-batches-py/. Required.
	Dir string
	// Format is "bin" (default) or "py".
	Format string
	// URL defaults to the official archive of Format (BinURL or PyURL).
	URL string
	// MD5 is the archive's expected MD5 in hex; it defaults to the official
	// archive's (BinMD5 or PyMD5), also for a mirror URL.
	MD5 string
	// Progress, when set, is called as bytes arrive; total is -1 when the
	// server does not say.
	Progress func(done, total int64)
	// Client defaults to http.DefaultClient.
	Client *http.Client
	// Stall is how long the transfer may go without a byte before it
	// fails (a server or network that stops sending would otherwise hang
	// it for ever); it defaults to DefaultStall.
	Stall time.Duration
}

// DefaultStall is DownloadOptions.Stall's default.
const DefaultStall = time.Minute

// errStalled cancels a transfer that no byte has reached for a while.
var errStalled = errors.New("stalled")

// Download fetches the CIFAR-10 archive into opt.Dir, checks its size and
// MD5, unpacks it into a temporary folder inside opt.Dir, reads every batch
// file back, and only then renames the folder into place. Whatever stops it
// half-way leaves nothing that Exists or Open accepts. When the dataset of
// that format is already in opt.Dir it returns nil at once.
func Download(ctx context.Context, opt DownloadOptions) error {
	var f format
	switch opt.Format {
	case "", "bin":
		f = binFormat
		opt.URL = cmpOr(opt.URL, BinURL)
		opt.MD5 = cmpOr(opt.MD5, BinMD5)
	case "py":
		f = pyFormat
		opt.URL = cmpOr(opt.URL, PyURL)
		opt.MD5 = cmpOr(opt.MD5, PyMD5)
	default:
		return fmt.Errorf("cifar: unknown format %q, want \"bin\" or \"py\"", opt.Format)
	}
	if opt.Dir == "" {
		return errors.New("cifar: download: no destination folder")
	}
	if opt.Client == nil {
		opt.Client = http.DefaultClient
	}
	if existsFormat(opt.Dir, f) {
		return nil
	}
	if err := Unreadable(opt.Dir); err != nil { // a folder that loops, or cannot be listed
		return err
	}
	// A link to nowhere (a drive not mounted) is neither made nor replaced.
	target := filepath.Join(opt.Dir, f.folder)
	if err := linkToNowhere(opt.Dir, target); err != nil {
		return fmt.Errorf("%w: mount it, or remove the link to download there", err)
	}
	// A folder of that name that is not a complete dataset is the user's
	// (a partial copy, something else, a link that loops): never replaced.
	if _, err := os.Lstat(target); err == nil {
		return fmt.Errorf("cifar: %s exists but is not a complete CIFAR-10 dataset: complete it, or move it away and download again", target)
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return fmt.Errorf("cifar: %w", err)
	}
	removeStale(opt.Dir)

	tmp, err := os.CreateTemp(opt.Dir, tempPrefix+"download-*.tar.gz.part")
	if err != nil {
		return fmt.Errorf("cifar: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := fetch(ctx, opt, tmp); err != nil {
		return err
	}

	work, err := os.MkdirTemp(opt.Dir, tempPrefix+"extract-*")
	if err != nil {
		return fmt.Errorf("cifar: %w", err)
	}
	defer os.RemoveAll(work)
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cifar: %w", err)
	}
	if err := extractTarGz(tmp, work); err != nil {
		return fmt.Errorf("cifar: unpacking %s: %w", opt.URL, err)
	}
	src := filepath.Join(work, f.folder)
	if err := validateFolder(src, f); err != nil {
		return fmt.Errorf("cifar: archive from %s: %w", opt.URL, err)
	}
	// Another download into opt.Dir may have finished first (before this
	// check, or between it and the rename, which then fails: a folder is
	// never renamed over one with files): then the dataset is there.
	var renameErr error
	if !fileExists(target) {
		if renameErr = robust.Rename(src, target); renameErr == nil {
			return nil
		}
	}
	if existsFormat(opt.Dir, f) {
		return nil
	}
	if renameErr != nil {
		return fmt.Errorf("cifar: %w", renameErr)
	}
	return fmt.Errorf("cifar: %s appeared during the download and is not a complete dataset: left as it is", target)
}

// tempPrefix starts the names of Download's temporary files and folders:
// hidden, and never a name that Exists or Open looks at.
const tempPrefix = ".cifar-10-"

// staleAfter is how long a temporary entry goes unmodified before a later
// Download takes it for the leftover of a killed one (a running download
// writes its file continuously).
const staleAfter = 10 * time.Minute

// removeStale deletes what killed downloads left in dir.
func removeStale(dir string) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAfter {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// linkToNowhere is the error for the first of paths that is a symbolic
// link whose target does not exist; nil where none is.
func linkToNowhere(paths ...string) error {
	for _, p := range paths {
		if to, ok := danglingLink(p); ok {
			return fmt.Errorf("cifar: %s is a link to %s, which does not exist (a drive not mounted?)", p, to)
		}
	}
	return nil
}

// danglingLink reports whether p is a symbolic link whose target does not
// exist, and the target.
func danglingLink(p string) (string, bool) {
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return "", false
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		return "", false
	}
	to, _ := os.Readlink(p)
	return to, true
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fetch writes the body of opt.URL to w and checks its length and MD5.
func fetch(ctx context.Context, opt DownloadOptions, w io.Writer) error {
	stall := opt.Stall
	if stall <= 0 {
		stall = DefaultStall
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer timer.Stop()
	var n int64
	stalled := func() error {
		if context.Cause(ctx) != errStalled {
			return nil
		}
		return fmt.Errorf("cifar: download %s stalled: no data for %s after %d bytes; run it again", opt.URL, stall, n)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, opt.URL, nil)
	if err != nil {
		return fmt.Errorf("cifar: %w", err)
	}
	resp, err := opt.Client.Do(req)
	if err != nil {
		if err := stalled(); err != nil {
			return err
		}
		return fmt.Errorf("cifar: download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cifar: download %s: %s", opt.URL, resp.Status)
	}
	total := resp.ContentLength
	h := md5.New()
	pw := &progressWriter{total: total, fn: func(done, total int64) {
		timer.Reset(stall)
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}}
	if opt.Progress != nil {
		opt.Progress(0, total) // show the bar before the first byte
	}
	n, err = io.Copy(io.MultiWriter(w, h, pw), resp.Body)
	if err != nil {
		if err := stalled(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("cifar: download %s: %w", opt.URL, ctx.Err())
		}
		if total >= 0 {
			return fmt.Errorf("cifar: download %s truncated after %d of %d bytes: %w", opt.URL, n, total, err)
		}
		return fmt.Errorf("cifar: download %s failed after %d bytes: %w", opt.URL, n, err)
	}
	if total >= 0 && n != total {
		return fmt.Errorf("cifar: download %s truncated: got %d of %d bytes", opt.URL, n, total)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, opt.MD5) {
		return fmt.Errorf("cifar: download %s: MD5 mismatch: expected %s, got %s (%d bytes); the file is corrupt or not the CIFAR-10 archive",
			opt.URL, strings.ToLower(opt.MD5), got, n)
	}
	return nil
}

type progressWriter struct {
	done, total int64
	fn          func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
	return len(b), nil
}

// extractTarGz unpacks regular files and folders into dst. Entries that
// would land outside dst (absolute paths, "..") and links are refused.
func extractTarGz(r io.Reader, dst string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var written int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name, err := safeEntryName(hdr.Name)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, filepath.FromSlash(name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if hdr.Size < 0 || written+hdr.Size > maxExtract {
				return fmt.Errorf("archive unpacks to more than %d bytes", maxExtract)
			}
			written += hdr.Size
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, err = io.CopyN(out, tr, hdr.Size)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		default:
			return fmt.Errorf("entry %q: unsupported type %q (only files and folders)", hdr.Name, hdr.Typeflag)
		}
	}
}

func safeEntryName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || filepath.IsAbs(name) ||
		(len(name) > 1 && name[1] == ':') {
		return "", fmt.Errorf("entry %q has an absolute path", name)
	}
	for _, el := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if el == ".." {
			return "", fmt.Errorf("entry %q leaves the folder (\"..\")", name)
		}
	}
	clean := path.Clean(name)
	if !filepath.IsLocal(filepath.FromSlash(clean)) {
		return "", fmt.Errorf("entry %q is not a local path", name)
	}
	return clean, nil
}

// validateFolder reads every batch (and the class names) of an unpacked
// archive, so that a folder only gets its final name when Open will work.
func validateFolder(folder string, f format) error {
	if fi, err := os.Stat(folder); err != nil || !fi.IsDir() {
		return fmt.Errorf("no %s/ folder in the archive", f.folder)
	}
	for _, split := range []string{"train", "test"} {
		for _, name := range f.files(split) {
			p := filepath.Join(folder, name)
			if !fileExists(p) {
				return fmt.Errorf("%s/%s missing from the archive", f.folder, name)
			}
			if _, err := f.read(p); err != nil {
				return err
			}
		}
	}
	if mp := filepath.Join(folder, f.meta); fileExists(mp) {
		if _, err := f.readMeta(mp); err != nil {
			return err
		}
	}
	return nil
}
