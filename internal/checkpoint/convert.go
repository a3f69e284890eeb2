package checkpoint

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vgg16/vgg16/internal/pth"
	"github.com/vgg16/vgg16/internal/safetensors"
)

// ConvertPTH writes the state dict of the PyTorch file in (torch.save's zip
// format, or the legacy format of torchvision's model-zoo files; read as
// data, never executed) to out as safetensors, atomically, under the same
// names: floating-point tensors as F32 (as vgg16 computes; float16 and
// bfloat16 widen exactly), integer ones as I64. It returns the number of
// tensors. Only this direction: a .pth is a Python pickle, and safetensors
// is what PyTorch itself recommends for weights.
func ConvertPTH(in, out string) (int, error) {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".safetensors":
	case ".pth", ".pt", ".bin":
		return 0, fmt.Errorf("%s: vgg16 writes safetensors only (PyTorch reads them with safetensors.torch.load_file); name the output *.safetensors", out)
	default:
		return 0, fmt.Errorf("%s: name the output *.safetensors", out)
	}
	if err := readable(in); err != nil {
		return 0, err
	}
	if isSafetensors(in) {
		return 0, fmt.Errorf("%s is a safetensors file already: nothing to convert", in)
	}
	ts, err := pth.Read(in)
	if err != nil {
		return 0, err
	}
	f := &safetensors.File{Tensors: map[string]safetensors.Tensor{}, Metadata: map[string]string{keyFormat: "pt"}}
	for name, t := range ts {
		switch {
		case t.F32 != nil:
			f.Tensors[name] = safetensors.F32(t.Shape, t.F32)
		case t.I64 != nil:
			f.Tensors[name] = safetensors.I64(t.Shape, t.I64)
		default:
			return 0, fmt.Errorf("%s: tensor %s: %s has no values", in, name, t.DType)
		}
	}
	if err := safetensors.Write(out, f); err != nil {
		return 0, err
	}
	return len(f.Tensors), nil
}
