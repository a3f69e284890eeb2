package pickle

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// ErrTruncated is the error (wrapped in an *Error) for input that ends
// before the pickle does.
var ErrTruncated = errors.New("unexpected end of data")

// Reader is the input of a VM: a byte slice, or size bytes of a stream. It
// counts what was consumed, so that several pickles can be read one after
// the other and whatever follows them found (torch's legacy format). Every
// length read from the input is checked against what is left before
// anything is allocated.
type Reader struct {
	b     []byte        // the whole input, when reading from memory
	br    *bufio.Reader // else the stream
	pos   int64         // bytes consumed so far
	limit int64         // total bytes available
}

// NewReader reads at most size bytes of r.
func NewReader(r io.Reader, size int64) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 1<<16), limit: max(size, 0)}
}

// NewBytesReader reads b. Bytes values the VM builds from it share b's
// memory.
func NewBytesReader(b []byte) *Reader {
	return &Reader{b: b, limit: int64(len(b))}
}

// Offset is the number of bytes consumed.
func (r *Reader) Offset() int64 { return r.pos }

// Remaining is the number of bytes not yet consumed.
func (r *Reader) Remaining() int64 { return r.limit - r.pos }

func (r *Reader) readByte() (byte, error) {
	if r.pos >= r.limit {
		return 0, ErrTruncated
	}
	if r.b != nil {
		c := r.b[r.pos]
		r.pos++
		return c, nil
	}
	c, err := r.br.ReadByte()
	if err != nil {
		return 0, ioErr(err)
	}
	r.pos++
	return c, nil
}

// read returns the next n bytes.
func (r *Reader) read(n uint64) ([]byte, error) {
	if n > uint64(r.limit-r.pos) {
		return nil, ErrTruncated
	}
	if r.b != nil {
		s := r.b[r.pos : r.pos+int64(n) : r.pos+int64(n)]
		r.pos += int64(n)
		return s, nil
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r.br, buf); err != nil {
		return nil, ioErr(err)
	}
	r.pos += int64(n)
	return buf, nil
}

// uint reads an n-byte little-endian unsigned integer.
func (r *Reader) uint(n int) (uint64, error) {
	s, err := r.read(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(s[i])
	}
	return v, nil
}

// readLine returns the bytes up to a newline, without it.
func (r *Reader) readLine() (string, error) {
	if r.b != nil {
		i := bytes.IndexByte(r.b[r.pos:r.limit], '\n')
		if i < 0 {
			r.pos = r.limit
			return "", ErrTruncated
		}
		s := string(r.b[r.pos : r.pos+int64(i)])
		r.pos += int64(i) + 1
		return s, nil
	}
	var sb strings.Builder
	for {
		c, err := r.readByte()
		if err != nil {
			return "", err
		}
		if c == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(c)
	}
}

func ioErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ErrTruncated
	}
	return err
}
