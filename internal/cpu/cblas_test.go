//go:build cgo && !windows

package cpu

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCBLASWithoutSgemm names the symbol a library VGG16_BLAS points at
// lacks. The message came from dlerror after dlclose, which had freed it:
// different bytes each run. A child process, since the library is looked
// for once per process.
func TestCBLASWithoutSgemm(t *testing.T) {
	if os.Getenv("VGG16_TEST_CBLAS_CHILD") != "" {
		_, err := openCBLAS()
		fmt.Printf("error: %v\n", err)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCBLASWithoutSgemm$")
	cmd.Env = append(os.Environ(), "VGG16_TEST_CBLAS_CHILD=1", BLASEnv+"=libc.so.6")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(string(out), "cannot open") {
		t.Skipf("no libc.so.6 to look in: %s", out)
	}
	if !strings.Contains(string(out), "error: no CBLAS found: ") || !strings.Contains(string(out), "libc.so.6: undefined symbol: cblas_sgemm\n") {
		t.Errorf("want libc.so.6 named as lacking cblas_sgemm, got:\n%s", out)
	}
}
