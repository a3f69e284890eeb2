package pth

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/vgg16/vgg16/internal/pickle"
)

// maxPickle bounds a zip file's data.pkl: a million tensors' worth.
const maxPickle = 64 << 20

// decodeZip reads the torch >= 1.6 format: a zip holding <prefix>/data.pkl,
// whose persistent ids ('storage', type, key, location, numel) name the raw
// records <prefix>/data/<key>.
func decodeZip(r io.ReaderAt, size int64) (map[string]Tensor, error) {
	zr, err := zip.NewReader(r, size)
	// ErrInsecurePath only warns about names; nothing is extracted here.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fmt.Errorf("zip archive: %w", err)
	}
	files := map[string]*zip.File{}
	var pkl *zip.File
	for _, f := range zr.File {
		files[f.Name] = f
		if path.Base(f.Name) == "data.pkl" && (pkl == nil || strings.Count(f.Name, "/") < strings.Count(pkl.Name, "/")) {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, errors.New("zip archive has no data.pkl, so it was not written by torch.save")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")

	bigEndian := false
	if f := files[prefix+"byteorder"]; f != nil {
		b, err := readAll(f, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		switch strings.TrimSpace(string(b)) {
		case "little":
		case "big":
			bigEndian = true
		default:
			return nil, fmt.Errorf("%s: unknown byte order %.20q", f.Name, b)
		}
	}

	// A pickle is small next to the tensors (a state dict's: about 100
	// bytes a tensor); the cap stops a decompression bomb, which the
	// machine would hold two or three times over.
	p, err := readAll(pkl, maxPickle)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkl.Name, err)
	}
	reg := storageRegistry{}
	persistentLoad := func(pid any) (any, error) {
		t, err := persistentID(pid, 5)
		if err != nil {
			return nil, err
		}
		key, ok := asString(t[2])
		if !ok {
			return nil, fmt.Errorf("storage key is a %s", typeName(t[2]))
		}
		root, err := reg.root(key, t[1], t[4])
		if err != nil {
			return nil, err
		}
		return &storageRef{root: root, n: root.numel}, nil
	}
	obj, err := load(pickle.NewBytesReader(p), pkl.Name, persistentLoad)
	if err != nil {
		return nil, err
	}
	keys, refs, err := stateDict(obj)
	if err != nil {
		return nil, err
	}
	load := func(root *rootStorage) ([]byte, error) {
		name := prefix + "data/" + root.key
		f := files[name]
		if f == nil {
			return nil, fmt.Errorf("record %s is missing from the archive", name)
		}
		need := uint64(root.numel * root.dt.size)
		if f.UncompressedSize64 < need {
			return nil, fmt.Errorf("record %s has %d bytes, but %d %s elements need %d", name, f.UncompressedSize64, root.numel, root.dt.name, need)
		}
		b, err := readN(f, need, uint64(size))
		if err != nil {
			return nil, fmt.Errorf("record %s: %w", name, err)
		}
		if bigEndian {
			swapBytes(b, int(root.dt.size))
		}
		return b, nil
	}
	return materialize(keys, refs, load, size)
}

// readAll reads a whole entry of at most max bytes.
func readAll(f *zip.File, max int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("entry is larger than %d bytes", max)
	}
	return b, nil
}

// readN reads the first n bytes of an entry. Sizes in the zip directory are
// claims, so a buffer is sized up front only when the bytes can really be in
// the file; otherwise it grows as data arrives.
func readN(f *zip.File, n, fileSize uint64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var b []byte
	if n <= fileSize {
		b = make([]byte, n)
		_, err = io.ReadFull(rc, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(rc, int64(n)))
		if err == nil && uint64(len(b)) < n {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		return nil, ioErr(err)
	}
	if f.UncompressedSize64 == n {
		// Reading to the end makes archive/zip check the CRC.
		if _, err := rc.Read(make([]byte, 1)); err != io.EOF {
			if err == nil {
				err = errors.New("record is longer than its directory entry says")
			}
			return nil, err
		}
	}
	return b, nil
}

// swapBytes reverses each size-byte element in place.
func swapBytes(b []byte, size int) {
	if size <= 1 {
		return
	}
	for i := 0; i+size <= len(b); i += size {
		e := b[i : i+size]
		for j, k := 0, size-1; j < k; j, k = j+1, k-1 {
			e[j], e[k] = e[k], e[j]
		}
	}
}
