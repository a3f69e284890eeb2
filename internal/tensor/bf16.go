package tensor

import "math"

// bfloat16: the top 16 bits of a float32 (sign, 8 exponent bits, 7
// mantissa bits). Backends that store activations in bf16 (the GPU with
// --precision bf16) convert with these on the host, and kernels.cu with
// the same rounding on the device.

// ToBF16 rounds f to the nearest bfloat16, ties to even; a NaN stays a
// (quiet) NaN of the same sign.
func ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// FromBF16 is the float32 a bfloat16 stands for (exact).
func FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// RoundBF16 is f rounded to bfloat16 precision, as a float32.
func RoundBF16(f float32) float32 { return FromBF16(ToBF16(f)) }
