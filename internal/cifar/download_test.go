package cifar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type entry struct {
	name string
	body []byte
	typ  byte
}

// archiveOf packs a dataset folder written by writeDataset the way the
// official archives are laid out: the folder, then its files.
func archiveOf(t *testing.T, format string, per int, extra ...entry) []byte {
	t.Helper()
	src := t.TempDir()
	folder := map[string]string{"bin": BinFolder, "py": PyFolder}[format]
	writeDataset(t, filepath.Join(src, folder), format, per)
	entries := []entry{{name: folder + "/", typ: tar.TypeDir}}
	files, _ := os.ReadDir(filepath.Join(src, folder))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(src, folder, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry{name: folder + "/" + f.Name(), body: b, typ: tar.TypeReg})
	}
	entries = append(entries, entry{name: folder + "/readme.html", body: []byte("<html></html>"), typ: tar.TypeReg})
	return tarGz(t, append(entries, extra...))
}

func tarGz(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			hdr.Mode, hdr.Size = 0o755, 0
		}
		if e.typ == tar.TypeSymlink {
			hdr.Linkname, hdr.Size = "/etc/passwd", 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// serve serves body at /archive.tar.gz and counts requests.
func serve(t *testing.T, body []byte) (url string, hits *atomic.Int32) {
	hits = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/archive.tar.gz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/archive.tar.gz", hits
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// assertNothingLeft checks that a failed download left no dataset and no
// temporary files behind.
func assertNothingLeft(t *testing.T, dir string) {
	t.Helper()
	if Exists(dir) {
		t.Fatal("a failed download left a dataset that Exists accepts")
	}
	if names := listDir(t, dir); len(names) != 0 {
		t.Fatalf("a failed download left %v", names)
	}
}

func TestDownload(t *testing.T) {
	for _, format := range []string{"bin", "py"} {
		t.Run(format, func(t *testing.T) {
			arc := archiveOf(t, format, 3)
			url, hits := serve(t, arc)
			dir := filepath.Join(t.TempDir(), "data")
			var last, total int64
			calls := 0
			err := Download(context.Background(), DownloadOptions{
				Dir: dir, Format: format, URL: url, MD5: md5hex(arc),
				Progress: func(d, tot int64) { last, total = d, tot; calls++ },
			})
			if err != nil {
				t.Fatal(err)
			}
			if calls < 2 || last != int64(len(arc)) || total != int64(len(arc)) {
				t.Fatalf("progress ended at %d/%d after %d calls, want %d", last, total, calls, len(arc))
			}
			if !Exists(dir) {
				t.Fatal("Exists = false after a download")
			}
			folder := map[string]string{"bin": BinFolder, "py": PyFolder}[format]
			if names := listDir(t, dir); strings.Join(names, ",") != folder {
				t.Fatalf("dir holds %v, want only %s", names, folder)
			}
			ds, err := Open(dir, "train")
			if err != nil {
				t.Fatal(err)
			}
			if ds.Len() != 15 || ds.Classes[0] != "c0" {
				t.Fatalf("opened %d images, classes %v", ds.Len(), ds.Classes)
			}
			// A second call finds the dataset and does not download again.
			if err := Download(context.Background(), DownloadOptions{Dir: dir, Format: format, URL: url, MD5: md5hex(arc)}); err != nil {
				t.Fatal(err)
			}
			if hits.Load() != 1 {
				t.Fatalf("%d requests, want 1", hits.Load())
			}
		})
	}
}

func TestDownloadWrongChecksum(t *testing.T) {
	arc := archiveOf(t, "bin", 2)
	url, _ := serve(t, arc)
	dir := t.TempDir()
	const want = "0123456789abcdef0123456789abcdef"
	err := Download(context.Background(), DownloadOptions{Dir: dir, URL: url, MD5: want})
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"MD5 mismatch", "expected " + want, "got " + md5hex(arc), url} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	assertNothingLeft(t, dir)
}

// The server promises more bytes than it sends, then hangs up.
func TestDownloadTruncated(t *testing.T) {
	arc := archiveOf(t, "bin", 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: %d\r\n\r\n", len(arc))
		bw.Write(arc[:len(arc)/2])
		bw.Flush()
	}))
	defer srv.Close()
	dir := t.TempDir()
	err := Download(context.Background(), DownloadOptions{Dir: dir, URL: srv.URL, MD5: md5hex(arc)})
	if err == nil || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), fmt.Sprintf("of %d bytes", len(arc))) {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, dir)
}

// The server sends half the archive, then nothing more while keeping the
// connection open: the download fails after Stall instead of hanging.
func TestDownloadStalled(t *testing.T) {
	arc := archiveOf(t, "bin", 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(arc)))
		w.Write(arc[:len(arc)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a hang fails, not blocks, the test
	defer cancel()
	err := Download(ctx, DownloadOptions{Dir: dir, URL: srv.URL, MD5: md5hex(arc), Stall: 2 * time.Second}) // wide: the timer starts before the connection does
	if ctx.Err() != nil {
		t.Fatalf("the stalled download ran until the test's deadline: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), "stalled: no data for 2s") || !strings.Contains(err.Error(), fmt.Sprintf("after %d bytes", len(arc)/2)) {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, dir)
}

func TestDownloadRejectsUnsafeArchives(t *testing.T) {
	body := []byte("x")
	cases := map[string]entry{
		"dotdot":   {name: BinFolder + "/../../evil.txt", body: body, typ: tar.TypeReg},
		"absolute": {name: "/tmp/evil.txt", body: body, typ: tar.TypeReg},
		"symlink":  {name: BinFolder + "/link", typ: tar.TypeSymlink},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			arc := archiveOf(t, "bin", 1, bad)
			url, _ := serve(t, arc)
			parent := t.TempDir()
			dir := filepath.Join(parent, "data")
			err := Download(context.Background(), DownloadOptions{Dir: dir, URL: url, MD5: md5hex(arc)})
			if err == nil || !strings.Contains(err.Error(), bad.name) {
				t.Fatalf("err = %v", err)
			}
			assertNothingLeft(t, dir)
			if names := listDir(t, parent); len(names) != 1 {
				t.Fatalf("parent holds %v", names)
			}
		})
	}
}

func TestDownloadValidatesContents(t *testing.T) {
	// A checksum-correct archive whose batch is corrupt is not installed.
	bad := entry{name: BinFolder + "/data_batch_4.bin", body: bytes.Repeat([]byte{11}, RecordBytes), typ: tar.TypeReg}
	arc := archiveOf(t, "bin", 2, bad) // a later entry overwrites the good file
	url, _ := serve(t, arc)
	dir := t.TempDir()
	err := Download(context.Background(), DownloadOptions{Dir: dir, URL: url, MD5: md5hex(arc)})
	if err == nil || !strings.Contains(err.Error(), "data_batch_4.bin") || !strings.Contains(err.Error(), "label 11") {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, dir)

	// An archive without the expected folder.
	arc = tarGz(t, []entry{{name: "other/x", body: []byte("x"), typ: tar.TypeReg}})
	url, _ = serve(t, arc)
	err = Download(context.Background(), DownloadOptions{Dir: dir, URL: url, MD5: md5hex(arc)})
	if err == nil || !strings.Contains(err.Error(), "no "+BinFolder) {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, dir)
}

// TestDownloadKeepsIncompleteFolder: a partial copy where the dataset
// would go is the user's: Download says so, fetches nothing and leaves it.
func TestDownloadKeepsIncompleteFolder(t *testing.T) {
	arc := archiveOf(t, "bin", 2)
	url, fetched := serve(t, arc)
	dir := t.TempDir()
	mine := binBytes(synth(1, 0, 1))
	writeFile(t, filepath.Join(dir, BinFolder, "data_batch_1.bin"), mine)
	err := Download(context.Background(), DownloadOptions{Dir: dir, URL: url, MD5: md5hex(arc)})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, BinFolder)+" exists but is not a complete CIFAR-10 dataset") {
		t.Fatalf("download over a partial copy: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, BinFolder, "data_batch_1.bin")); !bytes.Equal(got, mine) || strings.Join(listDir(t, dir), ",") != BinFolder {
		t.Fatalf("the partial copy changed: dir holds %v", listDir(t, dir))
	}
	if n := fetched.Load(); n != 0 {
		t.Errorf("fetched the archive %d times", n)
	}
}

// TestConcurrentDownloads: runs started together each download the
// dataset into one folder; the first to finish installs it, and the others
// find it complete and succeed too.
func TestConcurrentDownloads(t *testing.T) {
	arc := archiveOf(t, "bin", 1)
	const n = 6
	var arrived sync.WaitGroup
	arrived.Add(n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait() // every download has started before any finishes
		w.Write(arc)
	}))
	defer srv.Close()
	dir := t.TempDir()
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- Download(context.Background(), DownloadOptions{Dir: dir, URL: srv.URL, MD5: md5hex(arc)})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("a concurrent download: %v", err)
		}
	}
	if !Exists(dir) || strings.Join(listDir(t, dir), ",") != BinFolder {
		t.Fatalf("after the downloads: Exists=%v, dir holds %v", Exists(dir), listDir(t, dir))
	}
}

func TestDownloadRemovesStaleTemporaries(t *testing.T) {
	arc := archiveOf(t, "bin", 1)
	url, _ := serve(t, arc)
	dir := t.TempDir()
	stale := filepath.Join(dir, tempPrefix+"download-1.tar.gz.part")
	fresh := filepath.Join(dir, tempPrefix+"download-2.tar.gz.part")
	writeFile(t, stale, []byte("old"))
	writeFile(t, fresh, []byte("new"))
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if err := Download(context.Background(), DownloadOptions{Dir: dir, URL: url, MD5: md5hex(arc)}); err != nil {
		t.Fatal(err)
	}
	if fileExists(stale) || !fileExists(fresh) {
		t.Fatalf("after download: stale kept %v, fresh kept %v", fileExists(stale), fileExists(fresh))
	}
}

func TestDownloadErrors(t *testing.T) {
	url, _ := serve(t, []byte("x"))
	dir := t.TempDir()
	err := Download(context.Background(), DownloadOptions{Dir: dir, URL: strings.Replace(url, "archive", "missing", 1)})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: err = %v", err)
	}
	assertNothingLeft(t, dir)
	if err := Download(context.Background(), DownloadOptions{Dir: dir, Format: "zip"}); err == nil {
		t.Fatal("unknown format accepted")
	}
	if err := Download(context.Background(), DownloadOptions{}); err == nil {
		t.Fatal("empty Dir accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Download(ctx, DownloadOptions{Dir: dir, URL: url}); err == nil {
		t.Fatal("cancelled context: no error")
	}
	assertNothingLeft(t, dir)
}

// TestDownloadDanglingLink: a folder, or the dataset's folder in it, that
// is a link to nowhere (a drive not mounted) is named so, before anything
// is fetched, and left as it is.
func TestDownloadDanglingLink(t *testing.T) {
	url, hits := serve(t, archiveOf(t, "bin", 1))
	dir, inner, nowhere := linksToNowhere(t, BinFolder)
	writeFile(t, filepath.Join(inner, "notes.txt"), []byte("mine"))
	for _, c := range []struct{ dir, link string }{{dir, dir}, {inner, filepath.Join(inner, BinFolder)}} {
		err := Download(context.Background(), DownloadOptions{Dir: c.dir, URL: url})
		if want := c.link + " is a link to " + nowhere + ", which does not exist"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Download into %s: %v, want %q", c.dir, err, want)
		}
		if _, err := os.Readlink(c.link); err != nil {
			t.Errorf("the link is gone: %v", err)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests, want none", hits.Load())
	}
}
