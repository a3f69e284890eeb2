package cifar

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// ReadBatchFile reads one CIFAR-10 batch file: the binary version's
// (*.bin) or the python version's (a pickle), told apart by the name or,
// for another name, by the content: a pickle starts with its protocol
// byte, 0x80. An archive (the downloaded .tar.gz, or the .tar in it) is
// refused with what to do, not read as records.
func ReadBatchFile(path string) (*Dataset, error) {
	if strings.HasSuffix(path, ".bin") {
		return ReadBinFile(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var head [262]byte
	n, _ := io.ReadFull(f, head[:])
	f.Close()
	switch {
	case n >= 2 && head[0] == 0x1f && head[1] == 0x8b, n == len(head) && bytes.Equal(head[257:], []byte("ustar")):
		return nil, fmt.Errorf("cifar: %s is an archive (the downloaded cifar-10-*.tar.gz?), not a batch file: unpack it (tar xf) and give the folder it makes, or one batch file in it", path)
	case n == 0 || head[0] != 0x80: // an empty file: the binary reader says so
		return ReadBinFile(path)
	}
	return ReadPickleFile(path)
}
