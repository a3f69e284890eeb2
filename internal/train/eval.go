package train

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/tensor"
)

// EvalResult is the outcome of evaluating a model on a dataset.
type EvalResult struct {
	Images    int      `json:"images"`
	Loss      Number   `json:"loss"` // NaN or ±Inf (null) where the outputs overflowed
	Acc       float64  `json:"accuracy"`
	PerClass  []Number `json:"per_class_accuracy"` // NaN (null) for a class without images
	Confusion [][]int  `json:"confusion"`          // [true class][predicted class]
}

// Evaluate runs the model in inference mode over ds with the deterministic
// transform tf. progress, when not nil, is called after each batch. A
// backend that makes batches itself (tensor.Images) gets ds uploaded for
// the call; otherwise workers goroutines transform the images.
func Evaluate(m *layers.Model, ds *cifar.Dataset, tf cifar.EvalTransform, batch, workers int, progress func(done, total int)) (*EvalResult, error) {
	batch = max(1, min(batch, ds.Len())) // a batch larger than the data holds no more images
	bufs := newEvalBuffers(m, batch)
	defer bufs.free()
	if set := UploadImages(m.Backend(), ds); set != nil {
		defer set.Free()
		return evaluate(context.Background(), m, ds, set, tf, bufs, workers, progress)
	}
	return evaluate(context.Background(), m, ds, nil, tf, bufs, workers, progress)
}

// evalBuffers are the tensors an evaluation needs besides the model's. A
// training run keeps one set for all its validations: freeing device
// memory drops the GPU's recorded steps, which would then be recorded
// again after every validation.
type evalBuffers struct {
	be          tensor.Backend
	x, y, loss  *tensor.Tensor // [B,3,S,S], [B], [1]
	batch, size int
}

func newEvalBuffers(m *layers.Model, batch int) *evalBuffers {
	be, size := m.Backend(), m.Config.ImageSize
	return &evalBuffers{be: be, batch: batch, size: size,
		x: tensor.NewActivation(be, batch, 3, size, size), y: be.New(batch), loss: be.New(1)}
}

func (e *evalBuffers) free() {
	for _, t := range []*tensor.Tensor{e.x, e.y, e.loss} {
		e.be.Free(t)
	}
}

// evaluate is Evaluate with the batches made from set when it is not nil,
// in the buffers bufs (whose batch is the evaluation's); it stops with
// ctx's error between batches once ctx is done.
func evaluate(ctx context.Context, m *layers.Model, ds *cifar.Dataset, set tensor.ImageSet, tf cifar.EvalTransform, bufs *evalBuffers, workers int, progress func(done, total int)) (*EvalResult, error) {
	be := m.Backend()
	batch := bufs.batch
	classes := m.Config.Classes
	size := m.Config.ImageSize
	if tf.OutputSize() != size {
		return nil, fmt.Errorf("evaluation transform makes %dx%d images, the model takes %dx%d", tf.OutputSize(), tf.OutputSize(), size, size)
	}
	res := &EvalResult{Confusion: make([][]int, classes), PerClass: make([]Number, classes)}
	for i := range res.Confusion {
		res.Confusion[i] = make([]int, classes)
	}
	x, y, loss := bufs.x, bufs.y, bufs.loss
	src, err := NewSource(be, ds, set, cifar.LoaderOptions{Batch: batch, Transform: tf, Workers: workers})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	logits := make([]float32, batch*classes)
	lossHost := make([]float32, 1)
	var sum float64
	for {
		if err := ctx.Err(); err != nil { // the training run was interrupted
			return nil, err
		}
		n, labels, ok := src.Next(x, y)
		if !ok {
			break
		}
		for _, l := range labels {
			if int(l) >= classes {
				return nil, fmt.Errorf("label %d in the data, but the model has %d classes", int(l), classes)
			}
		}
		xb, yb := x.View(0, n, 3, size, size), y.View(0, n)
		var out *tensor.Tensor
		tensor.Step(be, "eval/"+strconv.Itoa(n), func() { // recorded where the backend can
			out = m.Forward(xb, false)
			be.SoftmaxCrossEntropy(loss, nil, out, yb, 0)
		})
		be.Download(lossHost, loss)
		be.Download(logits[:n*classes], out)
		sum += float64(float64(lossHost[0]) * float64(n))
		for i, l := range labels {
			res.Confusion[int(l)][argmax(logits[i*classes:(i+1)*classes])]++
		}
		res.Images += n
		if progress != nil {
			progress(res.Images, ds.Len())
		}
	}
	if res.Images == 0 {
		return nil, fmt.Errorf("no images to evaluate")
	}
	correct := 0
	for c, row := range res.Confusion {
		total := 0
		for _, v := range row {
			total += v
		}
		correct += row[c]
		res.PerClass[c] = Number(math.NaN())
		if total > 0 {
			res.PerClass[c] = Number(float64(row[c]) / float64(total))
		}
	}
	res.Loss = Number(sum / float64(res.Images))
	res.Acc = float64(correct) / float64(res.Images)
	return res, nil
}
