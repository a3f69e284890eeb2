package tensor

import "runtime"

// Backend runs the operations of a VGG network on one device.
//
// Conventions for every method:
//   - Images are NCHW, matrices row-major, all float32.
//   - Outputs come first in the argument list and are overwritten, never
//     accumulated into. Gradients of parameters are overwritten too: each
//     parameter is used by exactly one op per step. The exceptions say so:
//     Tally adds into an epoch's metrics, SGDStep updates in place.
//   - Shapes are checked by the caller (internal/layers); a backend may panic
//     on a mismatch.
//   - Nothing here allocates on the hot path except what a backend caches
//     for itself the first time it sees a shape (im2col buffers, cuDNN
//     workspaces, algorithm choices), so a training step allocates nothing
//     after the first.
//   - Work may run asynchronously; Download waits for it.
//   - Methods return no errors: a device failure (a failed CUDA call, out
//     of memory) panics with an error value, which callers turn back into
//     an error with DeviceError at a step or command boundary.
type Backend interface {
	// Name says which device and libraries the backend uses, in one line.
	Name() string
	// New allocates a zero-filled tensor. Not for use inside a step.
	New(shape ...int) *Tensor
	// Free releases a tensor's memory now rather than at exit. Views of the
	// same Storage become invalid.
	Free(t *Tensor)
	// Close releases everything the backend holds.
	Close() error

	// Upload copies host data into t; len(src) must be t.Size().
	Upload(dst *Tensor, src []float32)
	// Download copies t to the host after all queued work is done.
	Download(dst []float32, src *Tensor)
	// Fill sets every element of t to v.
	Fill(t *Tensor, v float32)
	// Copy copies src into dst, which has the same size.
	Copy(dst, src *Tensor)

	// ConvForward: y[N,Co,H,W] = conv(x[N,Ci,H,W], w[Co,Ci,K,K]) + b[Co],
	// stride 1, zero padding pad on each side ("same" when pad = (K-1)/2).
	// b may be nil: no bias.
	ConvForward(y, x, w, b *Tensor, pad int)
	// ConvBackwardData: dx[N,Ci,H,W] from dy[N,Co,H,W] and w[Co,Ci,K,K].
	ConvBackwardData(dx, dy, w *Tensor, pad int)
	// ConvBackwardFilter: dw[Co,Ci,K,K] and db[Co] from x and dy; db may
	// be nil (no bias gradient wanted).
	ConvBackwardFilter(dw, db, x, dy *Tensor, pad int)
	// ConvBackward is ConvBackwardData (skipped when dx is nil) and
	// ConvBackwardFilter in one call, so that a backend can share work
	// between them.
	ConvBackward(dx, dw, db, x, dy, w *Tensor, pad int)

	// BatchNormTrain normalises x[N,C,H,W] with the batch statistics
	// (biased variance), writes y = gamma*xhat + beta, saves mean[C] and
	// invStd[C] = 1/sqrt(var+eps) for the backward pass, and updates the
	// running statistics: r = (1-momentum)*r + momentum*batch, using the
	// unbiased variance n/(n-1) for runVar (PyTorch's BatchNorm2d).
	//
	// shift[C] may be nil. Otherwise it is a per-channel constant that x
	// lacks: the bias of the convolution before, left out because batch
	// norm subtracts the mean again. It changes neither y nor the saved
	// statistics (those of x), only the running mean, which moves towards
	// the batch mean of x + shift as if the bias had been added.
	BatchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *Tensor, momentum, eps float64)
	// BatchNormInfer normalises x with the running statistics.
	BatchNormInfer(y, x, gamma, beta, runMean, runVar *Tensor, eps float64)
	// BatchNormBackward: dx, dgamma[C], dbeta[C] from dy, x and the saved
	// statistics of the matching BatchNormTrain.
	BatchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd *Tensor)
	// BatchNormReLUTrain is BatchNormTrain followed by ReLU on y, and
	// BatchNormReLUInfer BatchNormInfer followed by ReLU: conv → BN → ReLU
	// as one op, which a backend may fuse.
	BatchNormReLUTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *Tensor, momentum, eps float64)
	BatchNormReLUInfer(y, x, gamma, beta, runMean, runVar *Tensor, eps float64)
	// BatchNormReLUBackward is ReLU's backward through y, the output of
	// BatchNormReLUTrain, then BatchNormBackward. dy may be overwritten.
	// beta is BatchNormReLUTrain's: a backend may tell where the ReLU cut
	// from x, gamma and beta instead of reading y.
	BatchNormReLUBackward(dx, dgamma, dbeta, dy, y, x, gamma, beta, saveMean, saveInvStd *Tensor)
	// BatchNormReLUApply writes BatchNormReLUTrain's y again from x and the
	// statistics it saved, for a model that recomputes its batch-norm
	// outputs in the backward instead of keeping them: the same values, to
	// rounding (a backend may make them bit for bit the same).
	BatchNormReLUApply(y, x, gamma, beta, saveMean, saveInvStd *Tensor)

	// MaxPoolForward: y[N,C,H/s,W/s] is the max over each k×k window with
	// stride s (VGG: k = s = 2).
	MaxPoolForward(y, x *Tensor, k, s int)
	// MaxPoolBackward routes dy to the first maximum of each window of x
	// (row-major order, as PyTorch does).
	MaxPoolBackward(dx, dy, x, y *Tensor, k, s int)

	// LRNForward is PyTorch's LocalResponseNorm across channels:
	// y = x / (k + alpha/size * Σ x²)^beta over a window of size channels.
	LRNForward(y, x *Tensor, p LRN)
	// LRNBackward: dx from dy, x and the forward output y.
	LRNBackward(dx, dy, x, y *Tensor, p LRN)

	// LinearForward: y[N,Out] = x[N,In] · w[Out,In]ᵀ + b[Out].
	LinearForward(y, x, w, b *Tensor)
	// LinearBackward: dx[N,In] (skipped when nil), dw[Out,In] (skipped
	// when nil), db[Out].
	LinearBackward(dx, dw, db, dy, x, w *Tensor)
	// LinearWeightGrad: rows [row, row+K) of a Linear's weight gradient,
	// dw[K,In] = dy[N,Out][:, row:row+K]ᵀ · x[N,In], as LinearBackward
	// computes them: a large layer's gradient a part at a time.
	LinearWeightGrad(dw, dy, x *Tensor, row int)

	// ReLUForward: y = max(x, 0); y may be x.
	ReLUForward(y, x *Tensor)
	// ReLUBackward: dx = dy where y > 0, else 0; dx may be dy.
	ReLUBackward(dx, dy, y *Tensor)

	// DropoutForward zeroes each element i of x whose DropoutHash(key, i)
	// falls below DropoutThreshold(p) and scales the rest by 1/(1-p).
	// The mask depends only on (key, i), so every backend draws the same one.
	DropoutForward(y, x *Tensor, p float64, key uint64)
	// DropoutBackward applies the same mask and scale to dy.
	DropoutBackward(dx, dy *Tensor, p float64, key uint64)

	// SoftmaxCrossEntropy computes the mean over the batch of the
	// cross-entropy of softmax(logits[N,C]) against labels[N] (class
	// indices stored as float32) with label smoothing eps, into loss[1], and
	// its gradient dlogits[N,C] unless dlogits is nil.
	SoftmaxCrossEntropy(loss, dlogits, logits, labels *Tensor, smoothing float64)
	// Tally adds a batch to an epoch's running metrics acc[2] (float32):
	// acc[0] += loss[0]·N, acc[1] += the rows of logits[N,C] whose first
	// maximum is at the class labels[N] names. Kept on the device, the
	// metrics need no host synchronisation after every step.
	Tally(acc, loss, logits, labels *Tensor)

	// SGDStep updates p in place from its gradient g and momentum buffer m
	// (all the same size), as torch.optim.SGD does:
	//   g += wd*p; m = momentum*m + (1-dampening)*g (m = g when first);
	//   g = g + momentum*m when nesterov else m; p -= lr*g.
	SGDStep(p, g, m *Tensor, h SGD, first bool)
}

// LRN holds the parameters of a local response normalisation.
type LRN struct {
	Size           int
	Alpha, Beta, K float64
}

// DefaultLRN is the setting of VGG11-LRN: PyTorch's
// LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2).
var DefaultLRN = LRN{Size: 5, Alpha: 1e-4, Beta: 0.75, K: 2}

// SGD holds the hyper-parameters of one optimizer step.
type SGD struct {
	LR, Momentum, WeightDecay, Dampening float64
	Nesterov                             bool
}

// DeviceError is the error a backend panicked with, given what recover
// returned: the error value of a device failure, or nil for anything else
// (a runtime error or a non-error value is a bug and should keep crashing).
func DeviceError(p any) error {
	e, ok := p.(error)
	if _, bug := p.(runtime.Error); !ok || bug {
		return nil
	}
	return e
}

// StepRecorder is implemented by backends that can record a training step
// once and replay it (the GPU backend, as a CUDA graph), which saves the
// host the cost of issuing every operation again. Steps with the same key
// must do the same work on the same tensors; only dropout keys and the
// learning rate may change. Inside a step there may be no New, Free,
// Upload or Download. Step may call f twice (when recording fails, it runs
// the step again op by op), so f must start from the same state each time.
type StepRecorder interface {
	Step(key string, f func())
}

// Recording reports whether be is recording or replaying a step now,
// when it may not allocate or free memory (a backend that records steps
// says so with a Recording() bool method).
func Recording(be Backend) bool {
	r, ok := be.(interface{ Recording() bool })
	return ok && r.Recording()
}

// Step runs f, one step, recorded where be can.
func Step(be Backend, key string, f func()) {
	if r, ok := be.(StepRecorder); ok {
		r.Step(key, f)
		return
	}
	f()
}

// Profiler is implemented by backends that can time each op on the device
// (the GPU backend, with CUDA events): Profile(true) starts timing,
// ProfileReport waits for the device and sums the times by op.
type Profiler interface {
	Profile(on bool)
	ProfileReport() ([]OpTime, error)
}

// OpTime is one op's share of the profiled time.
type OpTime struct {
	Op    string  `json:"op"`    // the Backend method, e.g. "ConvBackwardFilter"
	Calls int     `json:"calls"` // times it ran
	Ms    float64 `json:"ms"`    // milliseconds, all calls together
	// Parts, where a backend can tell, split Ms among the kernels the op
	// launched (by name) and the rest ("other": library calls, copies).
	Parts []OpTime `json:"parts,omitempty"`
}

// Images is implemented by backends that can hold a set of uint8 images in
// their memory and make each batch of model inputs from it (the GPU's input
// pipeline): the dataset crosses to the device once, and a batch costs the
// upload of its crops and labels (28 bytes an image) instead of its floats.
type Images interface {
	// UploadImages copies len(pix)/(3·side²) images of 3×side×side bytes
	// (channel-major, as CIFAR stores them) into the backend's memory.
	UploadImages(pix []byte, side int) ImageSet
	// CropResize writes dst [len(crops), 3, S, S]: each crop's window of its
	// image resized bilinearly to S×S, rounded to bytes, mirrored when asked
	// and mapped through table (the normalisation of each byte value of
	// each channel), as cifar.ApplyCrop computes it, bit for bit.
	CropResize(dst *Tensor, set ImageSet, crops []Crop, table *[3][256]float32)
}

// ImageSet is a set of uint8 images held by a backend (Images).
type ImageSet interface {
	Len() int // images
	Free()
}

// Crop is one image of a batch made by Images.CropResize: the H×W window
// at (Top, Left) of image Image of the set, where pixels outside the image
// read as zero, resized to the batch's side and mirrored horizontally when
// Flip (cifar.Crop, plus the image it applies to).
type Crop struct {
	Image           int
	Top, Left, H, W int
	Flip            bool
}

// Activations is implemented by backends that may store activations — the
// model's input, each module's output and the gradients passed between
// modules — in a narrower type than float32 (the GPU with --precision
// bf16 keeps them as bfloat16). Parameters, their gradients, optimizer
// state and statistics always come from New. Upload and Download convert.
type Activations interface {
	NewActivation(shape ...int) *Tensor
}

// Layouts is implemented by backends that may store a 4-d activation
// [N, C, H, W] in another order than NCHW (the GPU with --precision bf16
// stores images channels-last). Their Upload, Download and Copy convert,
// so only code that reinterprets memory — a Reshape of an image into rows —
// needs to ask, and Copy into a tensor of the shape it wants instead.
type Layouts interface {
	ChannelsLast(t *Tensor) bool
}

// PooledBatchNorm is implemented by backends that can fuse a 2x2/2
// max-pool into the batch norm + ReLU before it (VGG's last convolution of
// each block): the batch norm's output is then never stored, and the
// pool's backward is folded into the batch norm's. y and dy are the pool's
// output and its gradient [N, C, H/2, W/2]; the rest as in the
// BatchNormReLU ops. The results are those of BatchNormReLUTrain (or
// Infer) then MaxPoolForward(·, ·, 2, 2), and of MaxPoolBackward then
// BatchNormReLUBackward, to rounding. dx shares no memory with dy or x.
type PooledBatchNorm interface {
	// PoolsBatchNorm says whether the ops below take a batch norm's input
	// activation of c channels of h×w images (a backend may fuse some
	// layouts and sizes only). A model asks before its first step, to
	// size its buffers, and at each forward.
	PoolsBatchNorm(c, h, w int) bool
	BatchNormReLUPoolTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *Tensor, momentum, eps float64)
	BatchNormReLUPoolInfer(y, x, gamma, beta, runMean, runVar *Tensor, eps float64)
	BatchNormReLUPoolBackward(dx, dgamma, dbeta, dy, x, gamma, beta, saveMean, saveInvStd *Tensor)
}

// NewActivation allocates an activation tensor: be's narrower storage where
// it has one (Activations), else New.
func NewActivation(be Backend, shape ...int) *Tensor {
	if a, ok := be.(Activations); ok {
		return a.NewActivation(shape...)
	}
	return be.New(shape...)
}
