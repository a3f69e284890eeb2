package tensor

import (
	"errors"
	"testing"
)

func TestDeviceError(t *testing.T) {
	dev := errors.New("cudnnConvolutionForward: CUDNN_STATUS_BAD_PARAM")
	if got := DeviceError(dev); got != dev {
		t.Errorf("a device error came back as %v", got)
	}
	var bug error
	func() {
		defer func() { bug = DeviceError(recover()) }()
		var s []int
		_ = s[3] // a runtime error: a bug, not a device failure
	}()
	if bug != nil {
		t.Errorf("a runtime error was taken for a device failure: %v", bug)
	}
	if DeviceError("a string") != nil || DeviceError(nil) != nil {
		t.Error("a non-error panic value was taken for a device failure")
	}
}

func TestViewBounds(t *testing.T) {
	x := &Tensor{Shape: []int{2, 3}, Mem: nil}
	v := x.View(2, 2, 2)
	if v.Off != 2 || v.Size() != 4 {
		t.Errorf("view %+v", v)
	}
	defer func() {
		if recover() == nil {
			t.Error("a view past the end was allowed")
		}
	}()
	x.View(3, 2, 2)
}
