//go:build linux && cgo

package gpu

import (
	"runtime"
	"time"

	"github.com/vgg16/vgg16/internal/cuda"
)

// Timer measures GPU time between two points of the stream with CUDA
// events, without waiting for the GPU in between.
type Timer struct {
	b           *Backend
	start, stop cuda.Event
}

// NewTimer creates a timer's two events.
func (b *Backend) NewTimer() (*Timer, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.drv.CtxSetCurrent(b.ctx); err != nil {
		return nil, err
	}
	t := &Timer{b: b}
	var err error
	if t.start, err = b.drv.EventCreate(cuda.EventDefault); err != nil {
		return nil, err
	}
	if t.stop, err = b.drv.EventCreate(cuda.EventDefault); err != nil {
		b.drv.EventDestroy(t.start)
		return nil, err
	}
	return t, nil
}

// Start marks the start on the stream.
func (t *Timer) Start() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := t.b.drv.CtxSetCurrent(t.b.ctx); err != nil {
		return err
	}
	return t.b.drv.EventRecord(t.start, t.b.stream)
}

// Stop marks the end, waits for it, and returns the GPU time since Start.
func (t *Timer) Stop() (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d := t.b.drv
	if err := d.CtxSetCurrent(t.b.ctx); err != nil {
		return 0, err
	}
	if err := d.EventRecord(t.stop, t.b.stream); err != nil {
		return 0, err
	}
	if err := d.EventSynchronize(t.stop); err != nil {
		return 0, err
	}
	ms, err := d.EventElapsedTime(t.start, t.stop)
	return time.Duration(float64(ms) * float64(time.Millisecond)), err
}

// Close destroys the events.
func (t *Timer) Close() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := t.b.drv.CtxSetCurrent(t.b.ctx); err != nil {
		return err
	}
	err1 := t.b.drv.EventDestroy(t.start)
	err2 := t.b.drv.EventDestroy(t.stop)
	if err1 != nil {
		return err1
	}
	return err2
}
