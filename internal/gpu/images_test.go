//go:build linux && cgo

package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/tensor"
)

func TestCropResize(t *testing.T) { precisions(t, testCropResize) }

// The input pipeline makes cifar.ApplyCrop's floats bit for bit, for the
// crops of every transform (inside the image, in the padding, resized up
// and down, flipped), and a table change reaches the device.
func testCropResize(t *testing.T, be *Backend, _ float64) {
	r := rand.New(rand.NewPCG(11, 12))
	const N = 37 // an odd byte count: the set's last float is partly padding
	pix := make([]byte, N*cifar.ImageBytes)
	for i := range pix {
		pix[i] = byte(r.Uint32())
	}
	set := be.UploadImages(pix, cifar.Side)
	if set.Len() != N {
		t.Fatalf("Len() = %d, want %d", set.Len(), N)
	}
	for _, tf := range []cifar.Planner{cifar.CIFARTransform{}, cifar.SeedTransform{Size: 40}, cifar.SeedTransform{Size: 16},
		cifar.EvalTransform{Size: 32, Norm: cifar.CIFARNorm}, cifar.EvalTransform{Size: 48, Norm: cifar.ImageNetNorm}} {
		s := tf.OutputSize()
		for _, n := range []int{1, 9} {
			crops := make([]tensor.Crop, n)
			want := make([]float32, n*3*s*s)
			for k := range crops {
				c := tf.Plan(r)
				img := r.IntN(N)
				if k == n-1 {
					img = N - 1 // the last image, against the end of the allocation
				}
				crops[k] = tensor.Crop{Image: img, Top: c.Top, Left: c.Left, H: c.H, W: c.W, Flip: c.Flip}
				cifar.ApplyCrop(want[k*3*s*s:(k+1)*3*s*s], pix[img*cifar.ImageBytes:(img+1)*cifar.ImageBytes], c, s, tf.Table())
			}
			x := tensor.NewActivation(be, n, 3, s, s) // a model input: channels-last with Options.ChannelsLast
			be.CropResize(x, set, crops, (*[3][256]float32)(tf.Table()))
			got := make([]float32, x.Size())
			be.Download(got, x)
			be.Free(x)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%T size %d, %d crops: element %d = %v, want %v", tf, s, n, i, got[i], want[i])
				}
			}
		}
	}
	held := be.CurrentBytes()
	set.Free()
	set.Free() // twice is harmless
	if freed, want := held-be.CurrentBytes(), int64(len(pix)+3)/4*4; freed != want {
		t.Errorf("Free gave back %d bytes, want the set's %d", freed, want)
	}
}

func TestCropResizeErrors(t *testing.T) { precisions(t, testCropResizeErrors) }

func testCropResizeErrors(t *testing.T, be *Backend, _ float64) {
	set := be.UploadImages(make([]byte, 2*cifar.ImageBytes), cifar.Side)
	defer set.Free()
	x := be.New(1, 3, 8, 8)
	defer be.Free(x)
	tab := new([3][256]float32)
	for name, c := range map[string]struct {
		f    func()
		want string
	}{
		"image out of range": {func() { be.CropResize(x, set, []tensor.Crop{{Image: 2, H: 32, W: 32}}, tab) }, "want an image below 2"},
		"empty window":       {func() { be.CropResize(x, set, []tensor.Crop{{H: 0, W: 32}}, tab) }, "window of at most 32×32"},
		"batch mismatch":     {func() { be.CropResize(x, set, make([]tensor.Crop, 2), tab) }, "CropResize of 2 crops"},
		"partial image":      {func() { be.UploadImages(make([]byte, 100), cifar.Side) }, "not a whole number"},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				p := recover()
				if p == nil || !strings.Contains(fmt.Sprint(p), c.want) {
					t.Errorf("panic %v, want one containing %q", p, c.want)
				}
			}()
			c.f()
		})
	}
}
