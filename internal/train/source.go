package train

import (
	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Source yields an epoch's batches into backend tensors, made either by the
// CPU loader (workers transform, the floats are uploaded) or, when the
// backend holds the images (tensor.Images), by the backend from the
// epoch's cifar.Plan. Both give the same batches bit for bit.
type Source interface {
	Batches() int
	// Next fills the first n rows of x [B,3,S,S] and y [B] with the next
	// batch and returns n and its labels (valid until the next call);
	// ok is false after the last batch.
	Next(x, y *tensor.Tensor) (n int, labels []float32, ok bool)
	// skip passes over the next batch without making it.
	skip() bool
	Close()
}

// NewSource makes the batches of one epoch of ds: from set on the backend
// when set is not nil (UploadImages), else from a loader with opt.Workers
// goroutines. The training loop and vgg16 bench use it.
func NewSource(be tensor.Backend, ds *cifar.Dataset, set tensor.ImageSet, opt cifar.LoaderOptions) (Source, error) {
	if set != nil {
		if imgs, ok := be.(tensor.Images); ok {
			pl, err := cifar.NewPlan(ds, opt)
			if err != nil {
				return nil, err
			}
			return &deviceSource{be: be, imgs: imgs, set: set, plan: pl, table: (*[3][256]float32)(pl.Transform().Table())}, nil
		}
	}
	return &hostSource{be: be, ld: cifar.NewLoader(ds, opt)}, nil
}

// UploadImages puts ds on the backend when it can make batches itself
// (nil otherwise); the caller frees the set.
func UploadImages(be tensor.Backend, ds *cifar.Dataset) tensor.ImageSet {
	imgs, ok := be.(tensor.Images)
	if !ok || ds == nil || ds.Len() == 0 {
		return nil
	}
	return imgs.UploadImages(ds.Images, cifar.Side)
}

// hostSource: the CPU loader's batches, uploaded.
type hostSource struct {
	be     tensor.Backend
	ld     *cifar.Loader
	labels []float32
}

func (s *hostSource) Batches() int { return s.ld.Batches() }
func (s *hostSource) Close()       { s.ld.Close() }

func (s *hostSource) Next(x, y *tensor.Tensor) (int, []float32, bool) {
	b, ok := s.ld.Next()
	if !ok {
		return 0, nil, false
	}
	n := b.N
	s.be.Upload(x.View(0, n, x.Shape[1], x.Shape[2], x.Shape[3]), b.X)
	s.be.Upload(y.View(0, n), b.Y)
	s.labels = append(s.labels[:0], b.Y...) // kept past Release
	s.ld.Release(b)
	return n, s.labels, true
}

func (s *hostSource) skip() bool {
	b, ok := s.ld.Next()
	s.ld.Release(b)
	return ok
}

// deviceSource: the plan's crops, made into batches by the backend.
type deviceSource struct {
	be    tensor.Backend
	imgs  tensor.Images
	set   tensor.ImageSet
	plan  *cifar.Plan
	table *[3][256]float32
	k     int
	pb    cifar.PlanBatch
	crops []tensor.Crop
}

func (s *deviceSource) Batches() int { return s.plan.Batches() }
func (s *deviceSource) Close()       {}

func (s *deviceSource) Next(x, y *tensor.Tensor) (int, []float32, bool) {
	if s.k >= s.plan.Batches() {
		return 0, nil, false
	}
	s.plan.Batch(s.k, &s.pb)
	s.k++
	n := s.pb.N
	s.crops = s.crops[:0]
	for p, c := range s.pb.Crops {
		s.crops = append(s.crops, tensor.Crop{Image: s.pb.Index[p], Top: c.Top, Left: c.Left, H: c.H, W: c.W, Flip: c.Flip})
	}
	s.imgs.CropResize(x.View(0, n, x.Shape[1], x.Shape[2], x.Shape[3]), s.set, s.crops, s.table)
	s.be.Upload(y.View(0, n), s.pb.Labels)
	return n, s.pb.Labels, true
}

func (s *deviceSource) skip() bool {
	if s.k >= s.plan.Batches() {
		return false
	}
	s.k++
	return true
}
