package cifar

import (
	"io"
	"os"
	"strings"
)

// ReadBatchFile reads one CIFAR-10 batch file: the binary version's
// (*.bin) or the python version's (a pickle), told apart by the name or,
// for another name, by the content: a pickle starts with its protocol
// byte, 0x80.
func ReadBatchFile(path string) (*Dataset, error) {
	if strings.HasSuffix(path, ".bin") {
		return ReadBinFile(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var head [1]byte
	_, err = io.ReadFull(f, head[:])
	f.Close()
	if err == nil && head[0] != 0x80 {
		return ReadBinFile(path)
	}
	return ReadPickleFile(path)
}
