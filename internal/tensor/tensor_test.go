package tensor

import (
	"errors"
	"math"
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

func TestBF16(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80}, {-2, 0xc000}, {0, 0}, {float32(math.Copysign(0, -1)), 0x8000},
		{math.Float32frombits(0x3f808000), 0x3f80},                // a tie: to even (down)
		{math.Float32frombits(0x3f818000), 0x3f82},                // a tie: to even (up)
		{math.Float32frombits(0x3f808001), 0x3f81},                // just above the tie
		{float32(math.Inf(1)), 0x7f80}, {math.MaxFloat32, 0x7f80}, // rounds up to infinity
	} {
		if got := ToBF16(c.in); got != c.want {
			t.Errorf("ToBF16(%v) = %#x, want %#x", c.in, got, c.want)
		}
	}
	nan := ToBF16(float32(math.NaN()))
	if f := FromBF16(nan); f == f {
		t.Errorf("NaN became %v (%#x)", f, nan)
	}
	if g := ToBF16(math.Float32frombits(0x7f800001)); FromBF16(g) == FromBF16(g) { // a NaN whose payload is in the low bits
		t.Errorf("a signalling NaN became %#x", g)
	}
	for _, f := range []float32{3.14159, -1e-20, 65504, 1e30} {
		// |f| in [2^(e-1), 2^e): bf16's 8 significant bits make its ulp
		// 2^(e-8) there, half of it 2^(e-9).
		_, e := math.Frexp(float64(f))
		if r := RoundBF16(f); math.Abs(float64(r)-float64(f)) > math.Ldexp(1, e-9) {
			t.Errorf("RoundBF16(%v) = %v: off by more than half an ulp", f, r)
		}
	}
}
