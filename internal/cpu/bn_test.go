package cpu_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
)

// TestBatchNormReLUFused checks that batch norm + ReLU in one pass (train,
// inference) and in the same passes (backward) give the bits of the batch
// norm then ReLUForward, and ReLUBackward then BatchNormBackward, on
// planes whose lengths leave remainders for the eight-lane sums.
func TestBatchNormReLUFused(t *testing.T) {
	be := cpu.New()
	for _, shape := range [][]int{{3, 5, 3, 3}, {2, 4, 8, 8}, {7, 3}, {2, 3, 5, 7}} {
		rng := rand.New(rand.NewPCG(uint64(len(shape)), uint64(shape[1])))
		c := shape[1]
		x, dy := weights(be, rng, shape...), weights(be, rng, shape...)
		gamma, beta, shift := weights(be, rng, c), weights(be, rng, c), weights(be, rng, c)
		type out struct{ y, rm, rv, sm, si, dx, dg, db, dy []float32 }
		run := func(fused bool) out {
			rm, rv, sm, si := weights(be, rand.New(rand.NewPCG(9, 9)), c), be.New(c), be.New(c), be.New(c)
			be.Fill(rv, 1)
			y, dx, dg, db := be.New(shape...), be.New(shape...), be.New(c), be.New(c)
			g := be.New(shape...)
			copy(cpu.Data(g), cpu.Data(dy))
			if fused {
				be.BatchNormReLUTrain(y, x, gamma, beta, rm, rv, sm, si, shift, 0.1, 1e-5)
				be.BatchNormReLUBackward(dx, dg, db, g, y, x, gamma, beta, sm, si)
			} else {
				be.BatchNormTrain(y, x, gamma, beta, rm, rv, sm, si, shift, 0.1, 1e-5)
				be.ReLUForward(y, y)
				masked := be.New(shape...)
				be.ReLUBackward(masked, g, y)
				be.BatchNormBackward(dx, dg, db, masked, x, gamma, sm, si)
			}
			d := cpu.Data
			return out{d(y), d(rm), d(rv), d(sm), d(si), d(dx), d(dg), d(db), d(g)}
		}
		got, want := run(true), run(false)
		for name, pair := range map[string][2][]float32{
			"y": {got.y, want.y}, "running mean": {got.rm, want.rm}, "running var": {got.rv, want.rv},
			"saved mean": {got.sm, want.sm}, "saved 1/std": {got.si, want.si},
			"dx": {got.dx, want.dx}, "dgamma": {got.dg, want.dg}, "dbeta": {got.db, want.db},
			"dy (unchanged)": {got.dy, cpu.Data(dy)},
		} {
			if !slices.Equal(pair[0], pair[1]) {
				t.Errorf("%v %s: fused %v, separate %v", shape, name, pair[0], pair[1])
			}
		}
		// Inference: one pass, the bits of BatchNormInfer then ReLUForward.
		rm, rv := weights(be, rng, c), be.New(c)
		be.Fill(rv, 0.5)
		fusedY, sepY := be.New(shape...), be.New(shape...)
		be.BatchNormReLUInfer(fusedY, x, gamma, beta, rm, rv, 1e-5)
		be.BatchNormInfer(sepY, x, gamma, beta, rm, rv, 1e-5)
		be.ReLUForward(sepY, sepY)
		if !slices.Equal(cpu.Data(fusedY), cpu.Data(sepY)) {
			t.Errorf("%v inference: fused %v, separate %v", shape, cpu.Data(fusedY), cpu.Data(sepY))
		}
		if !slices.ContainsFunc(got.y, func(v float32) bool { return v == 0 }) || !slices.ContainsFunc(got.y, func(v float32) bool { return v > 0 }) {
			t.Errorf("%v: the ReLU should both pass and stop some values: %v", shape, got.y)
		}
	}
}
