//go:build cgo && linux

package cpu

import (
	"strings"
	"testing"
)

// TestCBLASWithoutSgemm names the symbol a library VGG16_BLAS points at
// lacks. The message came from dlerror after dlclose, which had freed it:
// different bytes each run.
func TestCBLASWithoutSgemm(t *testing.T) {
	opened, err := openBLASFile("libc.so.6")
	if !opened {
		t.Skipf("no libc.so.6 to look in: %v", err)
	}
	if err == nil || !strings.HasSuffix(err.Error(), "libc.so.6: undefined symbol: cblas_sgemm") {
		t.Errorf("want libc.so.6 named as lacking cblas_sgemm, got %v", err)
	}
}
