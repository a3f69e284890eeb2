//go:build linux && cgo

package gpu

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"unsafe"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/tensor"
)

// stageChunk bounds the page-locked staging buffer that Upload and
// Download copy through (bytes); larger transfers go in chunks.
var stageChunk int64 = 64 << 20

// alignment is what cuDNN gets: parameter views into the model's flat
// buffer can start anywhere, and vectorised cuDNN kernels want 16-byte
// aligned operands, so a misaligned operand is copied to scratch memory.
const alignment = 16

// mem is the Storage of the GPU backend: n float32s at ptr, or n bfloat16s
// when half (activations with --precision bf16, see half.go).
type mem struct {
	// nhwc: viewed with 4 dimensions, the elements are channels-last (an
	// activation of a backend whose images are; see channelsLast).
	nhwc bool
	b    *Backend
	ptr  cuda.DevicePtr
	n    int
	half bool
}

func (m *mem) Len() int { return m.n }

// elem is the size of one element in bytes.
func (m *mem) elem() int64 {
	if m.half {
		return 2
	}
	return 4
}

// bytes is the size of the allocation: whole 32-bit words, so that New
// can zero it with cuMemsetD32.
func (m *mem) bytes() int64 { return roundUp(m.elem()*int64(m.n), 4) }

// devBuf is a device buffer that grows, and is let go only for a moment
// (release): the cuDNN workspace and other scratch. Growing happens the
// first time a shape needs more, so a steady-state training step
// allocates nothing.
type devBuf struct {
	ptr   cuda.DevicePtr
	bytes int64
	what  string // what it holds (grow's what), for PeakParts
}

// copyBack is an output staged in aligned scratch, copied to its tensor
// after the op.
type copyBack struct {
	dst, src cuda.DevicePtr
	bytes    int64
}

// memory is the backend's accounting of device memory and its scratch.
type memory struct {
	live      map[*mem]struct{}
	cur, peak int64 // bytes of device memory held by this backend
	// peakParts is what made up peak when it was reached: bytes by
	// tensor kind and by scratch buffer (PeakParts).
	peakParts map[string]int64

	ws       devBuf // cuDNN workspace, shared by all convolutions
	blasWS   devBuf // cuBLAS workspace (cublasSetWorkspace)
	bn       devBuf // the fused batch-norm kernels' partial sums and coefficients
	arena    devBuf // aligned copies of misaligned cuDNN operands
	rowLoss  devBuf // softmax cross-entropy's per-row losses (double)
	crops    devBuf // CropResize's crops [n, kernels.CropWords] int32
	w16      devBuf // the current convolution's or Linear's weights as it reads them: bf16 (half.go), or float32 KRSC (channels-last tf32)
	dw16     devBuf // the current convolution's weight gradient as cuDNN writes it (bf16, or float32 KRSC)
	f32a     devBuf // float32 copies of a bf16 convolution's operands
	f32b     devBuf // when it runs in float32 (half.go)
	f32c     devBuf
	nchw     devBuf // an NCHW copy of a channels-last image that Upload or Download transposes (layout.go)
	tableDev devBuf // CropResize's normalisation table [3, 256]

	table    [3][256]float32 // what tableDev holds, when tableSet
	tableSet bool

	pins    [stageSlots]pinSlot // page-locked staging buffers, used in turn
	pinNext int

	ptrs  [10]cuda.DevicePtr // stage's result, reused
	backs []copyBack
}

func (m *memory) init() { m.live = map[*mem]struct{}{} }

// scratch lists the backend's scratch buffers.
func (m *memory) scratch() []*devBuf {
	return []*devBuf{&m.ws, &m.blasWS, &m.bn, &m.arena, &m.rowLoss, &m.crops, &m.tableDev, &m.w16, &m.dw16, &m.f32a, &m.f32b, &m.f32c, &m.nchw}
}

// stageSlots is how many page-locked staging buffers transfers take in
// turn. A buffer is rewritten only once the copy from it stageSlots
// transfers ago is done; a training step uploads two things (its crops and
// labels, or its images and labels), so with three the host waits for the
// step before last, never the last: it queues step k+1 while the GPU runs
// step k.
const stageSlots = 3

// pinSlot is one staging buffer (C memory) and the event recorded after
// the last copy from it.
type pinSlot struct {
	p       unsafe.Pointer
	bytes   int64
	ev      cuda.Event
	pending bool
}

func (m *memory) open(b *Backend) (err error) {
	for i := range m.pins {
		if m.pins[i].ev, err = b.drv.EventCreate(cuda.EventDisableTiming); err != nil {
			return err
		}
	}
	return nil
}

func (m *memory) close(b *Backend) error {
	var errs []error
	for t := range m.live {
		if t.ptr != 0 {
			errs = append(errs, b.drv.MemFree(t.ptr))
		}
		t.ptr, t.n = 0, 0
	}
	clear(m.live)
	for _, d := range m.scratch() {
		if d.ptr != 0 {
			errs = append(errs, b.drv.MemFree(d.ptr))
		}
		*d = devBuf{}
	}
	for i := range m.pins {
		s := &m.pins[i]
		if s.p != nil {
			errs = append(errs, b.drv.MemFreeHost(s.p))
		}
		if s.ev != 0 {
			errs = append(errs, b.drv.EventDestroy(s.ev))
		}
		*s = pinSlot{}
	}
	m.cur, m.tableSet = 0, false
	return errors.Join(errs...)
}

// PeakBytes is the most device memory this backend has held at once:
// tensors, the cuDNN workspace and scratch (not what cuBLAS and cuDNN
// allocate for themselves).
func (b *Backend) PeakBytes() int64 { return b.mem.peak }

// CurrentBytes is the device memory this backend holds now.
func (b *Backend) CurrentBytes() int64 { return b.mem.cur }

// ResetPeak restarts PeakBytes from the current amount.
func (b *Backend) ResetPeak() {
	b.mem.peak = b.mem.cur
	b.mem.peakParts = b.parts("", 0)
}

// PeakParts is what PeakBytes was made of when it was reached: bytes of
// float32 tensors (parameters, gradients, momentum; activations too in
// float32), of bf16 tensors (activations in bf16), and of each scratch
// buffer by what it holds ("the cuDNN workspace", …); "other" is the rest
// (the recorded steps' scalars, scratch an op held for the moment).
func (b *Backend) PeakParts() map[string]int64 { return maps.Clone(b.mem.peakParts) }

// parts is what the backend holds now, by kind, with an allocation of
// bytes for part under way (counted in cur, not yet where it goes).
func (b *Backend) parts(part string, bytes int64) map[string]int64 {
	p := map[string]int64{}
	for m := range b.mem.live {
		if m.ptr != 0 {
			p[tensorPart(m.half)] += m.bytes()
		}
	}
	for _, d := range b.mem.scratch() {
		if d.bytes > 0 {
			p[d.what] += d.bytes
		}
	}
	if bytes > 0 {
		p[part] += bytes
	}
	rest := b.mem.cur
	for _, v := range p {
		rest -= v
	}
	if rest != 0 {
		p["other"] += rest
	}
	return p
}

func tensorPart(half bool) string {
	if half {
		return "bf16 tensors"
	}
	return "float32 tensors"
}

// alloc allocates device memory, counting it; what names the request in
// an out-of-memory error, part in PeakParts.
func (b *Backend) alloc(bytes int64, what, part string) cuda.DevicePtr {
	p, err := b.drv.MemAlloc(bytes)
	if err != nil {
		var ce *cuda.Error
		if errors.As(err, &ce) && ce.Code == cuda.ErrOutOfMemory {
			ce.Hint = fmt.Sprintf("allocating %s for %s: %s", formatBytes(bytes), what, b.oomHint(bytes))
		}
		b.must(err, "")
	}
	b.mem.cur += bytes
	if b.mem.cur > b.mem.peak {
		b.mem.peak = b.mem.cur
		b.mem.peakParts = b.parts(part, bytes)
	}
	return p
}

// oomHint says how much memory there is. What to do about it depends on
// the command that ran, which adds its advice (the backend knows no flags).
func (b *Backend) oomHint(bytes int64) string {
	free, total, err := b.drv.MemGetInfo()
	if err != nil {
		return fmt.Sprintf("%s held by this program", formatBytes(b.mem.cur))
	}
	return fmt.Sprintf("%s free of %s, %s held by this program", formatBytes(free), formatBytes(total), formatBytes(b.mem.cur))
}

func (b *Backend) free(p cuda.DevicePtr, bytes int64) {
	if p == 0 {
		return
	}
	b.forgetSteps() // a recording may use this memory
	b.must(b.drv.MemFree(p), "")
	b.mem.cur -= bytes
}

// release frees d, waiting first for queued work that may still use it.
func (b *Backend) release(d *devBuf) {
	if d.ptr == 0 {
		return
	}
	b.notInStep("freeing " + d.what)
	b.must(b.drv.StreamSynchronize(b.stream), "")
	b.free(d.ptr, d.bytes)
	*d = devBuf{}
}

// grow makes d at least need bytes, waiting first for queued work that may
// still use the old buffer.
func (b *Backend) grow(d *devBuf, need int64, what string) {
	if need <= d.bytes {
		return
	}
	b.notInStep("growing " + what)
	b.release(d)
	need = (need + 1<<20 - 1) &^ (1<<20 - 1)
	d.ptr = b.alloc(need, what, what)
	d.bytes, d.what = need, what
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// New allocates a zero-filled float32 tensor.
func (b *Backend) New(shape ...int) *tensor.Tensor { return b.newTensor(false, shape, "") }

// newTensor allocates a zero-filled tensor of float32s, or of bfloat16s
// when half; what names it in an out-of-memory error ("" for the shape).
func (b *Backend) newTensor(half bool, shape []int, what string) *tensor.Tensor {
	b.notInStep("New")
	defer b.op()()
	n := tensor.Volume(shape)
	if n < 0 {
		panic(fmt.Sprintf("gpu: negative shape %v", shape))
	}
	m := &mem{b: b, n: n, half: half}
	if n > 0 {
		switch {
		case what != "":
		case half:
			what = fmt.Sprintf("a bf16 tensor %v", shape)
		default:
			what = fmt.Sprintf("a tensor %v", shape)
		}
		m.ptr = b.alloc(m.bytes(), what, tensorPart(half))
		b.must(b.drv.MemsetD32Async(m.ptr, 0, m.bytes()/4, b.stream), "")
	}
	b.mem.live[m] = struct{}{}
	return &tensor.Tensor{Shape: append([]int(nil), shape...), Mem: m}
}

// Free releases a tensor's memory now, once queued work is done with it.
func (b *Backend) Free(t *tensor.Tensor) {
	m, ok := t.Mem.(*mem)
	if !ok || m.b != b || m.ptr == 0 {
		if ok && m.b == b && m.n == 0 {
			delete(b.mem.live, m) // an empty tensor: nothing to free
		}
		return
	}
	b.notInStep("Free")
	defer b.op()()
	b.must(b.drv.StreamSynchronize(b.stream), "")
	b.free(m.ptr, m.bytes())
	m.ptr, m.n = 0, 0
	delete(b.mem.live, m)
}

// ptr is the device address of t's first element.
// optPtr is ptr, or 0 for a nil tensor (an optional argument).
func (b *Backend) optPtr(t *tensor.Tensor) cuda.DevicePtr {
	if t == nil {
		return 0
	}
	return b.ptr(t)
}

func (b *Backend) ptr(t *tensor.Tensor) cuda.DevicePtr {
	m, ok := t.Mem.(*mem)
	if !ok || m.b != b {
		panic(fmt.Sprintf("gpu: %v does not live on this GPU backend", t))
	}
	if t.Off < 0 || t.Off+t.Size() > m.n {
		if m.ptr == 0 && m.n == 0 {
			panic(fmt.Sprintf("gpu: %v used after Free", t))
		}
		panic(fmt.Sprintf("gpu: %v at offset %d outside its storage of %d", t, t.Off, m.n))
	}
	return m.ptr + cuda.DevicePtr(m.elem()*int64(t.Off))
}

// isHalf reports whether t's elements are bfloat16.
func isHalf(t *tensor.Tensor) bool {
	m, ok := t.Mem.(*mem)
	return ok && m.half
}

// nbytes is the size of t's elements in memory.
func nbytes(t *tensor.Tensor) int64 { return elemSize(t) * int64(t.Size()) }

// elemSize is the size of one of t's elements in memory.
func elemSize(t *tensor.Tensor) int64 {
	if isHalf(t) {
		return 2
	}
	return 4
}

// pinned returns the next staging buffer, with room for bytes, once the
// last copy from it is done. A caller that queues a copy from it calls
// copied after.
func (b *Backend) pinned(bytes int64) *pinSlot {
	m := &b.mem
	s := &m.pins[m.pinNext]
	m.pinNext = (m.pinNext + 1) % stageSlots
	if s.pending {
		b.must(b.drv.EventSynchronize(s.ev), "")
		s.pending = false
	}
	if bytes > s.bytes {
		if s.p != nil {
			b.must(b.drv.MemFreeHost(s.p), "")
			s.p, s.bytes = nil, 0
		}
		size := min(stageChunk, max(bytes, 1<<20))
		p, err := b.drv.MemAllocHost(size)
		b.must(err, "page-locked staging buffer")
		s.p, s.bytes = p, size
	}
	return s
}

// copied marks s in use by the copy just queued from it.
func (b *Backend) copied(s *pinSlot) {
	b.must(b.drv.EventRecord(s.ev, b.stream), "")
	s.pending = true
}

// Upload copies host data into t through the staging buffer; the copy runs
// in order with the queued work and Upload returns before it is done.
func (b *Backend) Upload(dst *tensor.Tensor, src []float32) {
	if len(src) != dst.Size() {
		panic(fmt.Sprintf("gpu: upload of %d values into %v", len(src), dst))
	}
	b.notInStep("Upload")
	defer b.op()()
	if len(src) == 0 {
		return
	}
	if channelsLast(dst) { // up in NCHW order, then transposed on the device
		rows := b.nchwScratch(dst)
		b.uploadNCHW(rows, src)
		in, c, h, w := nchw(dst)
		b.must(b.k.Transpose(b.stream, b.ptr(dst), b.ptr(rows), in, c, h*w, isHalf(dst), isHalf(dst)), "upload to NHWC")
		return
	}
	b.uploadNCHW(dst, src)
}

// uploadNCHW is Upload into a tensor stored in its shape's order.
func (b *Backend) uploadNCHW(dst *tensor.Tensor, src []float32) {
	if !isHalf(dst) {
		b.upload(b.ptr(dst), unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
		return
	}
	b.stageUp(b.ptr(dst), 2*int64(len(src)), func(pin []byte, off int64) { // float32 to bfloat16 on the way in
		h := unsafe.Slice((*uint16)(unsafe.Pointer(&pin[0])), len(pin)/2)
		for i, v := range src[off/2:][:len(h)] {
			h[i] = tensor.ToBF16(v)
		}
	})
}

// Download copies t to the host once all queued work is done.
func (b *Backend) Download(dst []float32, src *tensor.Tensor) {
	if len(dst) != src.Size() {
		panic(fmt.Sprintf("gpu: download of %v into %d values", src, len(dst)))
	}
	b.notInStep("Download")
	defer b.op()()
	half, elem := isHalf(src), elemSize(src)
	if channelsLast(src) { // transposed on the device, then down in NCHW order
		rows := b.nchwScratch(src)
		in, c, h, w := nchw(src)
		b.must(b.k.Transpose(b.stream, b.ptr(rows), b.ptr(src), in, h*w, c, half, half), "download from NHWC")
		src = rows
	}
	p := b.ptr(src)
	chunk := int(stageChunk / elem)
	for off := 0; off < len(dst); off += chunk {
		k := min(chunk, len(dst)-off)
		pin := b.pinned(elem * int64(k)).p
		b.must(b.drv.MemcpyDtoHAsync(pin, p+cuda.DevicePtr(elem*int64(off)), elem*int64(k), b.stream), "download")
		b.must(b.drv.StreamSynchronize(b.stream), "download")
		if half { // bfloat16 to float32 on the way out
			for i, h := range unsafe.Slice((*uint16)(pin), k) {
				dst[off+i] = tensor.FromBF16(h)
			}
		} else {
			copy(dst[off:off+k], unsafe.Slice((*float32)(pin), k))
		}
	}
}

// Fill sets every element of t to v.
func (b *Backend) Fill(t *tensor.Tensor, v float32) {
	if b.rec.mode != eager && b.recorded(newSig(sigFill).t(t).v(uint64(math.Float32bits(v)))) {
		return
	}
	defer b.op()()
	if n := t.Size(); n > 0 && isHalf(t) {
		b.must(b.drv.MemsetD16Async(b.ptr(t), tensor.ToBF16(v), int64(n), b.stream), "fill")
	} else if n > 0 {
		b.must(b.drv.MemsetD32Async(b.ptr(t), math.Float32bits(v), int64(n), b.stream), "fill")
	}
}

// Copy copies src into dst, which has the same size, each in its own
// layout: from or to a channels-last image it transposes (flatten's NCHW
// rows, float32 images).
func (b *Backend) Copy(dst, src *tensor.Tensor) {
	if b.rec.mode != eager && b.recorded(newSig(sigCopy).t(dst).t(src)) {
		return
	}
	if dst.Size() != src.Size() {
		panic(fmt.Sprintf("gpu: copy of %v into %v", src, dst))
	}
	defer b.op()()
	n := src.Size()
	switch {
	case n == 0:
	case channelsLast(src) && !channelsLast(dst):
		in, c, h, w := nchw(src)
		b.must(b.k.Transpose(b.stream, b.ptr(dst), b.ptr(src), in, h*w, c, isHalf(dst), isHalf(src)), "copy from NHWC")
	case channelsLast(dst) && !channelsLast(src):
		in, c, h, w := nchw(dst)
		b.must(b.k.Transpose(b.stream, b.ptr(dst), b.ptr(src), in, c, h*w, isHalf(dst), isHalf(src)), "copy to NHWC")
	case isHalf(dst) == isHalf(src):
		b.must(b.drv.MemcpyDtoDAsync(b.ptr(dst), b.ptr(src), nbytes(src), b.stream), "copy")
	case isHalf(dst):
		b.must(b.k.CastF32ToBF16(b.stream, b.ptr(dst), b.ptr(src), n), "copy to bf16")
	default:
		b.must(b.k.CastBF16ToF32(b.stream, b.ptr(dst), b.ptr(src), n), "copy from bf16")
	}
}

// operand is one tensor argument of a cuDNN call, for stage.
type operand struct {
	t       *tensor.Tensor
	in, out bool // read by the call / written by it
}

func in(t *tensor.Tensor) operand    { return operand{t: t, in: true} }
func out(t *tensor.Tensor) operand   { return operand{t: t, out: true} }
func inout(t *tensor.Tensor) operand { return operand{t: t, in: true, out: true} }

// stage returns the device addresses of the operands, 16-byte aligned:
// an operand that is not (a parameter view at an odd offset) is replaced
// by a copy in the scratch arena, copied back by unstage if the call
// writes it; a nil operand (an optional one left out) gets address 0. The
// result is valid until the next stage.
func (b *Backend) stage(ops ...operand) []cuda.DevicePtr {
	ptrs := b.mem.ptrs[:len(ops)]
	b.mem.backs = b.mem.backs[:0] // left over if the last op panicked
	var need int64
	for i, o := range ops {
		ptrs[i] = b.optPtr(o.t)
		if ptrs[i]%alignment != 0 {
			need += roundUp(nbytes(o.t), 256)
		}
	}
	if need == 0 {
		return ptrs
	}
	b.grow(&b.mem.arena, need, "aligned copies of parameters")
	at := b.mem.arena.ptr
	for i, o := range ops {
		if ptrs[i]%alignment == 0 {
			continue
		}
		bytes := nbytes(o.t)
		if o.in {
			b.must(b.drv.MemcpyDtoDAsync(at, ptrs[i], bytes, b.stream), "")
		}
		if o.out {
			b.mem.backs = append(b.mem.backs, copyBack{dst: ptrs[i], src: at, bytes: bytes})
		}
		ptrs[i] = at
		at += cuda.DevicePtr(roundUp(bytes, 256))
	}
	return ptrs
}

// unstage copies staged outputs back to their tensors.
func (b *Backend) unstage() {
	for _, c := range b.mem.backs {
		b.must(b.drv.MemcpyDtoDAsync(c.dst, c.src, c.bytes, b.stream), "")
	}
	b.mem.backs = b.mem.backs[:0]
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }
