package cifar

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
)

// Transform turns one CIFAR image into the float32 CHW input of a model.
// Implementations must be safe for concurrent use: the loader calls Apply
// from several goroutines, each with its own rng.
type Transform interface {
	// Apply writes the 3×S×S tensor for img (3×32×32 bytes) into dst,
	// drawing any randomness from rng.
	Apply(dst []float32, img []byte, rng *rand.Rand)
}

// Sizer is implemented by transforms that know their output side S; the
// loader uses it to size batches (and assumes 32 for a Transform without).
type Sizer interface {
	OutputSize() int
}

// Crop is the geometry of one image's augmentation: the H×W window at
// (Top, Left) of the 32×32 image, where pixels outside the image read as
// zero (CIFAR's padding), resized bilinearly to the output side and
// mirrored horizontally when Flip. Every transform of this package is a
// Crop followed by a Table lookup, so a device can do the pixel work from
// the Crop alone and give the same floats (internal/gpu does).
type Crop struct {
	Top, Left, H, W int
	Flip            bool
}

// Planner is implemented by transforms whose randomness is all in a Crop:
// Apply(dst, img, rng) is ApplyCrop(dst, img, Plan(rng), OutputSize(),
// Table()), drawing from rng the same values in the same order.
type Planner interface {
	Transform
	Sizer
	Plan(rng *rand.Rand) Crop
	Table() *Table
}

// ApplyCrop writes the s×s float image that crop and table make of img
// (3×32×32 bytes) into dst (3×s×s floats): the pixel work of every
// transform, and the reference a device's version is tested against.
func ApplyCrop(dst []float32, img []byte, c Crop, s int, t *Table) {
	checkShapes(dst, img, s)
	if c.H <= 0 || c.W <= 0 || c.H > Side || c.W > Side {
		panic(fmt.Sprintf("cifar: crop %+v is not a window of at most %d×%d", c, Side, Side))
	}
	if c.Top >= 0 && c.Left >= 0 && c.Top+c.H <= Side && c.Left+c.W <= Side {
		resizeNorm(dst, img, c.Top, c.Left, c.H, c.W, s, c.Flip, t)
		return
	}
	// Part of the window lies outside: copy what lies inside to the origin
	// of a zeroed buffer (the crop of the padded image without building it).
	var buf [ImageBytes]byte
	y0, y1 := max(0, -c.Top), min(c.H, Side-c.Top)
	x0, x1 := max(0, -c.Left), min(c.W, Side-c.Left)
	if x0 < x1 {
		for ch := range 3 {
			for y := y0; y < y1; y++ {
				row := ch*Side*Side + (c.Top+y)*Side + c.Left
				copy(buf[ch*Side*Side+y*Side+x0:ch*Side*Side+y*Side+x1], img[row+x0:row+x1])
			}
		}
	}
	resizeNorm(dst, buf[:], 0, 0, c.H, c.W, s, c.Flip, t)
}

// Norm is a per-channel normalisation of x/255: (x/255 - Mean) / Std.
// The zero Norm means plain x/255.
type Norm struct {
	Mean, Std [3]float32
}

var (
	// ImageNetNorm is torchvision's ImageNet normalisation, the seed's.
	ImageNetNorm = Norm{Mean: [3]float32{0.485, 0.456, 0.406}, Std: [3]float32{0.229, 0.224, 0.225}}
	// CIFARNorm is the usual CIFAR-10 normalisation.
	CIFARNorm = Norm{Mean: [3]float32{0.4914, 0.4822, 0.4465}, Std: [3]float32{0.2470, 0.2435, 0.2616}}
)

// Table maps each byte value of each channel to its normalised float,
// computed as torchvision does in float32: ToTensor's x/255, then
// Normalize's (x - mean) / std. A table makes it one load per output, and
// a device given the same table gives the same floats.
type Table [3][256]float32

func (n Norm) table() Table {
	var t Table
	for c := range 3 {
		for v := range 256 {
			x := float32(v) / 255
			if n.Std[c] != 0 {
				x = (x - n.Mean[c]) / n.Std[c]
			}
			t[c][v] = x
		}
	}
	return t
}

// Tables of the common norms are built once; any other Norm gets its table
// built on the stack per image.
var (
	imagenetLUT = ImageNetNorm.table()
	cifarLUT    = CIFARNorm.table()
	plainLUT    = Norm{}.table()
)

func (n Norm) lookup(t *Table) *Table {
	switch n {
	case ImageNetNorm:
		return &imagenetLUT
	case CIFARNorm:
		return &cifarLUT
	case Norm{}:
		return &plainLUT
	}
	*t = n.table()
	return t
}

// SeedTransform is the seed script's training augmentation:
// RandomResizedCrop(Size, scale=(0.08, 1), ratio=(3/4, 4/3)), bilinear,
// then RandomHorizontalFlip(0.5), ToTensor and ImageNet normalisation.
type SeedTransform struct {
	Size int // output side; 0 means 224
}

// OutputSize implements Sizer.
func (t SeedTransform) OutputSize() int { return sizeOr(t.Size, 224) }

// Eval is the matching evaluation transform.
func (t SeedTransform) Eval() EvalTransform {
	return EvalTransform{Size: t.OutputSize(), Norm: ImageNetNorm}
}

// Apply implements Transform.
func (t SeedTransform) Apply(dst []float32, img []byte, rng *rand.Rand) {
	ApplyCrop(dst, img, t.Plan(rng), t.OutputSize(), &imagenetLUT)
}

// Plan implements Planner. Its draws, in order: the crop (as
// resizedCropParams), then the flip.
func (t SeedTransform) Plan(rng *rand.Rand) Crop {
	i, j, h, w := resizedCropParams(rng, Side, Side, 0.08, 1, 3.0/4, 4.0/3)
	return Crop{Top: i, Left: j, H: h, W: w, Flip: rng.Float64() < 0.5}
}

// Table implements Planner.
func (t SeedTransform) Table() *Table { return &imagenetLUT }

// resizedCropParams samples a crop as torchvision's
// RandomResizedCrop.get_params does: up to 10 tries of a uniform area
// fraction and a log-uniform aspect ratio, rounded half to even like
// Python's round; then the centre crop clamped to the ratio range. It
// returns the top row, left column, height and width.
func resizedCropParams(rng *rand.Rand, height, width int, smin, smax, rmin, rmax float64) (i, j, h, w int) {
	area := float64(height * width)
	lmin, lmax := math.Log(rmin), math.Log(rmax)
	for range 10 {
		target := area * (smin + float64((smax-smin)*rng.Float64())) // the conversions forbid fused multiply-adds, as in Python
		ar := math.Exp(lmin + float64((lmax-lmin)*rng.Float64()))
		w = int(math.RoundToEven(math.Sqrt(target * ar)))
		h = int(math.RoundToEven(math.Sqrt(target / ar)))
		if 0 < w && w <= width && 0 < h && h <= height {
			i = rng.IntN(height - h + 1)
			j = rng.IntN(width - w + 1)
			return i, j, h, w
		}
	}
	inRatio := float64(width) / float64(height)
	switch {
	case inRatio < rmin:
		w = width
		h = int(math.RoundToEven(float64(w) / rmin))
	case inRatio > rmax:
		h = height
		w = int(math.RoundToEven(float64(h) * rmax))
	default:
		w, h = width, height
	}
	return (height - h) / 2, (width - w) / 2, h, w
}

// CIFARTransform is the usual CIFAR-10 training augmentation: pad 4 pixels
// of zeros, take a random 32×32 crop, flip horizontally with p=0.5, and
// normalise with CIFARNorm. A Size other than 32 resizes the crop
// bilinearly.
type CIFARTransform struct {
	Size int // output side; 0 means 32
}

// OutputSize implements Sizer.
func (t CIFARTransform) OutputSize() int { return sizeOr(t.Size, Side) }

// Eval is the matching evaluation transform.
func (t CIFARTransform) Eval() EvalTransform {
	return EvalTransform{Size: t.OutputSize(), Norm: CIFARNorm}
}

const cifarPad = 4

// cifarParams draws the crop offsets in the padded 40×40 image and the flip,
// in torchvision's order (RandomCrop's top, then left, then the flip).
func cifarParams(rng *rand.Rand) (i, j int, flip bool) {
	i = rng.IntN(2*cifarPad + 1)
	j = rng.IntN(2*cifarPad + 1)
	return i, j, rng.Float64() < 0.5
}

// Apply implements Transform.
func (t CIFARTransform) Apply(dst []float32, img []byte, rng *rand.Rand) {
	ApplyCrop(dst, img, t.Plan(rng), t.OutputSize(), &cifarLUT)
}

// Plan implements Planner: the 32×32 window of the padded image at (i, j)
// is the window at (i-4, j-4) of the image, reading zeros outside it. Its
// draws, in order: the crop's top, its left, then the flip.
func (t CIFARTransform) Plan(rng *rand.Rand) Crop {
	i, j, flip := cifarParams(rng)
	return Crop{Top: i - cifarPad, Left: j - cifarPad, H: Side, W: Side, Flip: flip}
}

// Table implements Planner.
func (t CIFARTransform) Table() *Table { return &cifarLUT }

// EvalTransform is the deterministic evaluation transform: a bilinear resize
// from 32 to Size (the identity at 32), then Norm.
type EvalTransform struct {
	Size int // output side; 0 means 32
	Norm Norm
}

// OutputSize implements Sizer.
func (t EvalTransform) OutputSize() int { return sizeOr(t.Size, Side) }

// Apply implements Transform; it draws nothing, so rng may be nil.
func (t EvalTransform) Apply(dst []float32, img []byte, _ *rand.Rand) {
	var tab Table
	ApplyCrop(dst, img, t.Plan(nil), t.OutputSize(), t.Norm.lookup(&tab))
}

// Plan implements Planner: the whole image, drawing nothing.
func (t EvalTransform) Plan(*rand.Rand) Crop { return Crop{H: Side, W: Side} }

// Table implements Planner.
func (t EvalTransform) Table() *Table { return t.Norm.lookup(new(Table)) }

func sizeOr(s, def int) int {
	if s <= 0 {
		return def
	}
	return s
}

func checkShapes(dst []float32, img []byte, s int) {
	if len(img) != ImageBytes || len(dst) != 3*s*s {
		panic(fmt.Sprintf("cifar: transform to %d×%d needs a %d-byte image and %d floats, got %d and %d",
			s, s, ImageBytes, 3*s*s, len(img), len(dst)))
	}
}

// tap is one output coordinate's two source samples and their weights.
type tap struct {
	i0, i1 int
	w0, w1 float32
}

// linearTaps computes PyTorch's upsample_bilinear2d source indices and
// weights (align_corners=False) for resizing n inputs to m outputs:
// src = (dst + 0.5)·n/m - 0.5, clamped at 0, the upper neighbour clamped
// to the last input.
func linearTaps(taps []tap, n, m int) {
	scale := float32(n) / float32(m)
	for d := range m {
		src := float32(scale*(float32(d)+0.5)) - 0.5 // the conversion forbids a fused multiply-add
		if src < 0 {
			src = 0
		}
		i0 := int(src)
		l1 := src - float32(i0)
		i1 := i0
		if i0 < n-1 {
			i1 = i0 + 1
		}
		taps[d] = tap{i0: i0, i1: i1, w0: 1 - l1, w1: l1}
	}
}

// scratch is a per-goroutine work area for resizeNorm, pooled so that
// steady-state transforms allocate nothing.
type scratch struct {
	xt, yt []tap
	rows   []float32
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// resizeNorm resizes the h×w crop at (i, j) of each 32×32 plane of img to
// s×s bilinearly, rounds to the nearest integer (half to even) as
// torchvision does when it resizes a uint8 image, optionally mirrors it
// horizontally, and writes the normalised values from t into dst.
func resizeNorm(dst []float32, img []byte, i, j, h, w, s int, flip bool, t *Table) {
	if h == s && w == s {
		// No resampling: a straight copy through the table.
		for c := range 3 {
			tc := &t[c]
			for y := range s {
				src := img[c*Side*Side+(i+y)*Side+j:]
				out := dst[(c*s+y)*s : (c*s+y+1)*s]
				if flip {
					for x := range out {
						out[x] = tc[src[s-1-x]]
					}
				} else {
					for x := range out {
						out[x] = tc[src[x]]
					}
				}
			}
		}
		return
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	if cap(sc.xt) < s {
		sc.xt, sc.yt = make([]tap, s), make([]tap, s)
	}
	xt, yt := sc.xt[:s], sc.yt[:s]
	linearTaps(xt, w, s)
	linearTaps(yt, h, s)
	if flip {
		// Mirroring the output is mirroring the x taps.
		for a, b := 0, s-1; a < b; a, b = a+1, b-1 {
			xt[a], xt[b] = xt[b], xt[a]
		}
	}
	if cap(sc.rows) < h*s {
		sc.rows = make([]float32, Side*s)
	}
	rows := sc.rows[:h*s]
	for c := range 3 {
		// Horizontal pass over the h source rows of the crop, then the
		// vertical pass: the same products PyTorch forms, in the same order.
		for y := range h {
			src := img[c*Side*Side+(i+y)*Side+j : c*Side*Side+(i+y)*Side+j+w]
			r := rows[y*s : (y+1)*s]
			for x, tp := range xt {
				r[x] = float32(tp.w0*float32(src[tp.i0])) + float32(tp.w1*float32(src[tp.i1]))
			}
		}
		tc := &t[c]
		for y, tp := range yt {
			out := dst[(c*s+y)*s : (c*s+y+1)*s]
			r0, r1 := rows[tp.i0*s:][:len(out)], rows[tp.i1*s:][:len(out)] // lengths let the compiler drop bounds checks
			for x := range out {
				v := float32(tp.w0*r0[x]) + float32(tp.w1*r1[x])
				out[x] = tc[roundByte(v)]
			}
		}
	}
}

// roundMagic is 1.5·2²³: adding it to a float32 in (-0.5, 2²²) leaves the
// value rounded to an integer, half to even, in the low mantissa bits.
const roundMagic = 12582912

// roundByte rounds v, which must lie in (-0.5, 255.5), half to even as
// torch.round does. Bilinear outputs are convex combinations of bytes, so
// they lie in [0, 255] up to float error, and no clamp is needed. The
// explicit conversion keeps the compiler from fusing the addition.
func roundByte(v float32) uint8 {
	return uint8(math.Float32bits(float32(v + roundMagic)))
}
