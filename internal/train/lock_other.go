//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package train

import "os"

// lockDir claims nothing where vgg16 knows no lock: it only checks that
// the directory is there.
func lockDir(dir string) (func(), error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	return func() {}, nil
}
