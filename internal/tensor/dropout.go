package tensor

import "math"

// The dropout mask is counter-based: element i of a layer's output is kept
// when DropoutHash(key, i) >= DropoutThreshold(p). key mixes the run's seed,
// the training step and the layer (DropoutKey). Nothing is stored between
// forward and backward, and a GPU kernel computing the same 64-bit integer
// arithmetic draws the bit-identical mask.

// DropoutKey combines the run's seed, the step number and the layer's index
// into the key of one layer's mask for one step.
func DropoutKey(seed, step, layer uint64) uint64 {
	return mix64(mix64(seed^0x6a09e667f3bcc909) ^ mix64(step+0x3c6ef372fe94f82b) ^ mix64(layer+0xa54ff53a5f1d36f1))
}

// DropoutHash is the 32-bit random number of element i under key.
func DropoutHash(key, i uint64) uint32 {
	return uint32(mix64(key+i*0x9e3779b97f4a7c15) >> 32)
}

// DropoutThreshold is the integer below which an element is dropped:
// p·2³² rounded down, so that P(drop) = p up to 2⁻³².
func DropoutThreshold(p float64) uint32 {
	if p <= 0 {
		return 0
	}
	if p >= 1 {
		return math.MaxUint32
	}
	return uint32(p * (1 << 32))
}

// mix64 is the splitmix64 finaliser: a bijection on 64-bit words whose
// output bits all depend on all input bits.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
