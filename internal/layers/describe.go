package layers

import "github.com/vgg16/vgg16/internal/tensor"

// Describe returns the summary table and parameter count of cfg without
// allocating its weights (VGG16 at 224x224 is half a gigabyte).
func Describe(cfg Config) ([]Row, int, error) {
	m, err := New(shapes{}, cfg)
	if err != nil {
		return nil, 0, err
	}
	return m.Summary(), m.NumParams(), nil
}

// CheckState says what LoadState would say of s for a model of cfg (which
// tensors are missing, unexpected or of the wrong shape), without
// allocating the model.
func CheckState(cfg Config, s State) error {
	m, err := New(shapes{}, cfg)
	if err != nil {
		return err
	}
	return m.LoadState(s)
}

// SharedGradients is how many elements the gradient buffer of cfg's
// model holds with ShareGradients, without allocating it.
func SharedGradients(cfg Config) (int, error) {
	m, err := New(shapes{}, cfg)
	if err != nil {
		return 0, err
	}
	m.ShareGradients(true)
	return m.Grads().Size(), nil
}

// EvalActivations is how many elements the activation buffer of cfg's
// model holds for an evaluation's Forward of batch images (packed, on a
// backend without the pooled batch norm), found by planning that pass
// without allocating anything.
func EvalActivations(cfg Config, batch int) (int, error) {
	m, err := New(shapes{}, cfg)
	if err != nil {
		return 0, err
	}
	m.PackActivations(true)
	m.plan(shapes{}.New(batch, 3, cfg.ImageSize, cfg.ImageSize), false)
	return m.acts.need, nil
}

// shapes is a Backend that only tracks shapes: New hands out tensors
// without memory, and the few calls New makes on a backend do nothing.
type shapes struct{ tensor.Backend }

type noMem int

func (n noMem) Len() int { return int(n) }

func (shapes) New(shape ...int) *tensor.Tensor {
	return &tensor.Tensor{Shape: append([]int(nil), shape...), Mem: noMem(tensor.Volume(shape))}
}
func (shapes) Fill(*tensor.Tensor, float32)     {}
func (shapes) Upload(*tensor.Tensor, []float32) {}
func (shapes) Free(*tensor.Tensor)              {}
