package cpu

import "testing"

// TestBLASEnv: "go" and "gonum" in any case, a library name as given.
func TestBLASEnv(t *testing.T) {
	for v, want := range map[string]string{" GO ": "go", "Gonum": "gonum", "gonum": "gonum", "libOpenBLAS.so.0": "libOpenBLAS.so.0", "": ""} {
		t.Setenv(BLASEnv, v)
		if got := blasEnv(); got != want {
			t.Errorf("%s=%q: %q, want %q", BLASEnv, v, got, want)
		}
	}
}
