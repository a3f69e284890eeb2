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
