package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"
)

// F32 makes an F32 tensor from v, which should hold product(shape) values
// (Encode rejects a tensor whose data does not match its shape).
//
// On a little-endian machine the tensor's Data is v's own memory, not a
// copy: a save of VGG16-BN's weights and momentum would otherwise hold
// another 1 GB while the file is written. v must not change while the
// tensor is in use.
func F32(shape []int, v []float32) Tensor {
	if !littleEndian || len(v) == 0 {
		return f32Copy(shape, v)
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	return Tensor{DType: "F32", Shape: slices.Clone(shape), Data: b}
}

// littleEndian is whether this machine stores a float32 as the format does.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f32Copy is F32 by value, byte by byte: on big-endian machines.
func f32Copy(shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{DType: "F32", Shape: slices.Clone(shape), Data: b}
}

// F64 makes an F64 tensor from v.
func F64(shape []int, v []float64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return Tensor{DType: "F64", Shape: slices.Clone(shape), Data: b}
}

// I64 makes an I64 tensor from v.
func I64(shape []int, v []int64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return Tensor{DType: "I64", Shape: slices.Clone(shape), Data: b}
}

// lookup finds a tensor and checks it, so the converters can index its
// data without bounds surprises even for hand-built Files.
func (f *File) lookup(name string) (Tensor, int, error) {
	t, ok := f.Tensors[name]
	if !ok {
		return Tensor{}, 0, fmt.Errorf("safetensors: no tensor %q", name)
	}
	if err := t.check(); err != nil {
		return Tensor{}, 0, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	return t, len(t.Data) / t.DType.Size(), nil
}

func unsupported(name string, dt DType, to string) error {
	return fmt.Errorf("safetensors: tensor %q: cannot convert %s to %s", name, dt, to)
}

// Float32 returns the named tensor's values as float32 and its shape.
// It converts from F32, F64, F16, BF16, I64, I32 and U8; F64 and large
// integers lose precision.
func (f *File) Float32(name string) ([]float32, []int, error) {
	t, n, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, n)
	d := t.Data
	le := binary.LittleEndian
	switch t.DType {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(d[4*i:]))
		}
	case "F64":
		for i := range out {
			out[i] = float32(math.Float64frombits(le.Uint64(d[8*i:])))
		}
	case "F16":
		for i := range out {
			out[i] = f16ToF32(le.Uint16(d[2*i:]))
		}
	case "BF16":
		for i := range out {
			out[i] = bf16ToF32(le.Uint16(d[2*i:]))
		}
	case "I64":
		for i := range out {
			out[i] = float32(int64(le.Uint64(d[8*i:])))
		}
	case "I32":
		for i := range out {
			out[i] = float32(int32(le.Uint32(d[4*i:])))
		}
	case "U8":
		for i := range out {
			out[i] = float32(d[i])
		}
	default:
		return nil, nil, unsupported(name, t.DType, "float32")
	}
	return out, slices.Clone(t.Shape), nil
}

// Float64 returns the named tensor's values as float64 and its shape,
// converting from the same dtypes as Float32.
func (f *File) Float64(name string) ([]float64, []int, error) {
	t, n, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float64, n)
	d := t.Data
	le := binary.LittleEndian
	switch t.DType {
	case "F64":
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(d[8*i:]))
		}
	case "F32":
		for i := range out {
			out[i] = float64(math.Float32frombits(le.Uint32(d[4*i:])))
		}
	case "F16":
		for i := range out {
			out[i] = float64(f16ToF32(le.Uint16(d[2*i:])))
		}
	case "BF16":
		for i := range out {
			out[i] = float64(bf16ToF32(le.Uint16(d[2*i:])))
		}
	case "I64":
		for i := range out {
			out[i] = float64(int64(le.Uint64(d[8*i:])))
		}
	case "I32":
		for i := range out {
			out[i] = float64(int32(le.Uint32(d[4*i:])))
		}
	case "U8":
		for i := range out {
			out[i] = float64(d[i])
		}
	default:
		return nil, nil, unsupported(name, t.DType, "float64")
	}
	return out, slices.Clone(t.Shape), nil
}

// Int64 returns the named tensor's values as int64 and its shape,
// converting from I64, I32 and U8. Float tensors are refused rather than
// truncated.
func (f *File) Int64(name string) ([]int64, []int, error) {
	t, n, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]int64, n)
	d := t.Data
	le := binary.LittleEndian
	switch t.DType {
	case "I64":
		for i := range out {
			out[i] = int64(le.Uint64(d[8*i:]))
		}
	case "I32":
		for i := range out {
			out[i] = int64(int32(le.Uint32(d[4*i:])))
		}
	case "U8":
		for i := range out {
			out[i] = int64(d[i])
		}
	default:
		return nil, nil, unsupported(name, t.DType, "int64")
	}
	return out, slices.Clone(t.Shape), nil
}

// bf16ToF32 widens bfloat16, which is exactly the top half of a float32.
func bf16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// f16ToF32 widens IEEE half precision; every half value is exact in float32.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0x1f: // Inf or NaN: keep the payload.
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0: // zero or subnormal: mant * 2^-24.
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	default: // rebias the exponent from 15 to 127.
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}
