package device

import (
	"errors"

	"github.com/vgg16/vgg16/internal/tensor"
)

func openGPU(o Options) (tensor.Backend, error) {
	return nil, errors.New("this build has no GPU backend yet; run with --device cpu")
}
