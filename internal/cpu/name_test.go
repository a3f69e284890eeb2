package cpu_test

import (
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
)

// TestName checks that the backend's name says how it runs 3x3
// convolutions, which its speed depends on.
func TestName(t *testing.T) {
	for be, want := range map[*cpu.Backend]string{cpu.New(): "3x3 convolutions: Winograd F(2x2, 3x3), ", cpu.NewIm2col(): "3x3 convolutions: im2col (VGG16_WINOGRAD=0)"} {
		if name := be.Name(); !strings.Contains(name, want) {
			t.Errorf("name %q, want it to say %q", name, want)
		}
	}
}

// TestNameNotesABadWinogradValue: a value of VGG16_WINOGRAD other than 0
// or 1 is named as ignored, not silently taken for "on".
func TestNameNotesABadWinogradValue(t *testing.T) {
	t.Setenv(cpu.WinogradEnv, "off")
	if name, want := cpu.New().Name(), "Winograd F(2x2, 3x3), "; !strings.Contains(name, want) || !strings.HasSuffix(name, "(VGG16_WINOGRAD=off: want 0 or 1, ignored)") {
		t.Errorf("name %q: want Winograd, with a note that VGG16_WINOGRAD=off is ignored", name)
	}
}
