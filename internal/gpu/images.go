//go:build linux && cgo

package gpu

import (
	"fmt"
	"unsafe"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/kernels"
	"github.com/vgg16/vgg16/internal/tensor"
)

// The input pipeline on the GPU (tensor.Images): the uint8 dataset is
// uploaded once and each batch is made by one kernel (crop_resize) from
// the crops the host drew, so a batch costs 28 bytes an image on the bus
// (its crop and its label)
// instead of 12·S² and no host core touches a pixel.

// imageSet is a tensor.ImageSet: n images of 3×side×side bytes in a
// backend tensor (its float32 count rounded up), so that the backend's
// accounting and Close cover it.
type imageSet struct {
	b       *Backend
	t       *tensor.Tensor // [ceil(n·3·side²/4)] holding the bytes
	n, side int
}

func (s *imageSet) Len() int { return s.n }

func (s *imageSet) Free() {
	if s.t != nil {
		s.b.Free(s.t)
		s.t, s.n = nil, 0
	}
}

// UploadImages implements tensor.Images.
func (b *Backend) UploadImages(pix []byte, side int) tensor.ImageSet {
	per := 3 * side * side
	if side <= 0 || len(pix) == 0 || len(pix)%per != 0 {
		panic(fmt.Sprintf("gpu: an image set of %d bytes is not a whole number of 3×%d×%d images", len(pix), side, side))
	}
	t := b.newTensor(false, []int{(len(pix) + 3) / 4}, fmt.Sprintf("the image set (%d images of 3×%d×%d bytes)", len(pix)/per, side, side))
	defer b.op()()
	b.upload(b.ptr(t), pix)
	return &imageSet{b: b, t: t, n: len(pix) / per, side: side}
}

// CropResize implements tensor.Images. The crops (and the table, when it
// changed) go up through the staging buffer in order with the queued work;
// the kernel runs outside recorded steps, before the step that reads dst.
func (b *Backend) CropResize(dst *tensor.Tensor, set tensor.ImageSet, crops []tensor.Crop, table *[3][256]float32) {
	s, ok := set.(*imageSet)
	if !ok || s.b != b || s.t == nil {
		panic(fmt.Sprintf("gpu: CropResize from an image set that is not on this backend (%T) or was freed", set))
	}
	n := len(crops)
	if len(dst.Shape) != 4 || dst.Shape[0] != n || dst.Shape[1] != 3 || dst.Shape[2] != dst.Shape[3] {
		panic(fmt.Sprintf("gpu: CropResize of %d crops into %v: want [%d 3 S S]", n, dst, n))
	}
	for k, c := range crops {
		if c.Image < 0 || c.Image >= s.n || c.H < 1 || c.W < 1 || c.H > s.side || c.W > s.side {
			panic(fmt.Sprintf("gpu: crop %d %+v: want an image below %d and a window of at most %d×%d", k, c, s.n, s.side, s.side))
		}
	}
	b.notInStep("CropResize")
	defer b.op()()
	if n == 0 {
		return
	}
	m := &b.mem
	if !m.tableSet || m.table != *table {
		b.grow(&m.tableDev, int64(unsafe.Sizeof(*table)), "the normalisation table")
		b.upload(m.tableDev.ptr, unsafe.Slice((*byte)(unsafe.Pointer(table)), unsafe.Sizeof(*table)))
		m.table, m.tableSet = *table, true
	}
	bytes := int64(4 * kernels.CropWords * n)
	b.grow(&m.crops, bytes, "the batch's crops")
	pin := b.pinned(bytes)
	w := unsafe.Slice((*int32)(pin.p), kernels.CropWords*n)
	for k, c := range crops {
		cw := w[kernels.CropWords*k : kernels.CropWords*(k+1)]
		cw[0], cw[1], cw[2], cw[3], cw[4], cw[5] = int32(c.Image), int32(c.Top), int32(c.Left), int32(c.H), int32(c.W), 0
		if c.Flip {
			cw[5] = 1
		}
	}
	b.must(b.drv.MemcpyHtoDAsync(m.crops.ptr, pin.p, bytes, b.stream), "upload of the crops")
	b.copied(pin)
	crop := b.k.CropResize
	switch {
	case isHalf(dst) && channelsLast(dst):
		crop = b.k.CropResizeBF16
	case isHalf(dst):
		panic(fmt.Sprintf("gpu: CropResize into a bf16 tensor %v that is not an activation (tensor.NewActivation)", dst))
	case channelsLast(dst):
		crop = b.k.CropResizeNHWC
	}
	b.must(crop(b.stream, b.ptr(dst), b.ptr(s.t), m.crops.ptr, m.tableDev.ptr, n, dst.Shape[2], s.side), "crop_resize")
}

// upload copies src to device memory at p through the staging buffer, in
// order with the queued work; it returns before the copy is done.
func (b *Backend) upload(p cuda.DevicePtr, src []byte) {
	b.stageUp(p, int64(len(src)), func(pin []byte, off int64) { copy(pin, src[off:]) })
}

// stageUp copies bytes bytes to device memory at p in chunks of the
// staging buffer, which fill writes: fill(pin, off) fills pin with the
// bytes from offset off on (an even number of bytes unless the last
// chunk). It returns before the copies are done.
func (b *Backend) stageUp(p cuda.DevicePtr, bytes int64, fill func(pin []byte, off int64)) {
	for off := int64(0); off < bytes; off += stageChunk {
		k := min(stageChunk, bytes-off)
		pin := b.pinned(k)
		fill(unsafe.Slice((*byte)(pin.p), k), off)
		b.must(b.drv.MemcpyHtoDAsync(p+cuda.DevicePtr(off), pin.p, k, b.stream), "upload")
		b.copied(pin)
	}
}
