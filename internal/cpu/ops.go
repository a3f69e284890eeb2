package cpu

import (
	"fmt"
	"math"

	"github.com/vgg16/vgg16/internal/tensor"
)

// nchw returns the batch, channel and plane size of an image tensor.
func nchw(t *tensor.Tensor) (n, c, hw int) {
	if len(t.Shape) == 2 { // [N,C]: BatchNorm1d-like use, plane of one
		return t.Shape[0], t.Shape[1], 1
	}
	if len(t.Shape) != 4 {
		panic(fmt.Sprintf("cpu: want an NCHW tensor, got %v", t.Shape))
	}
	return t.Shape[0], t.Shape[1], t.Shape[2] * t.Shape[3]
}

func (b *Backend) BatchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	b.batchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps, false)
}

// batchNormTrain is BatchNormTrain, with ReLU in the same pass over y
// where relu is set. The passes over the planes are bn.c's.
func (b *Backend) batchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64, relu bool) {
	n, c, hw := nchw(x)
	X, Y, G, B, S := Data(x), Data(y), Data(gamma), Data(beta), optData(shift)
	RM, RV, SM, SI := Data(runMean), Data(runVar), Data(saveMean), Data(saveInvStd)
	st := b.stats(4 * c)
	mean, ss, scale, shiftBy := st[:c], st[c:2*c], st[2*c:3*c], st[3*c:]
	cnt := float64(n * hw)
	parallelFor(c, 1, func(lo, hi int) {
		bnStats(X, n, c, hw, lo, hi, mean, ss)
		for ch := lo; ch < hi; ch++ {
			variance := ss[ch] / cnt
			inv := 1 / math.Sqrt(variance+eps)
			scale[ch] = float64(G[ch]) * inv
			shiftBy[ch] = float64(B[ch]) - float64(mean[ch]*scale[ch])
			SM[ch], SI[ch] = float32(mean[ch]), float32(inv)
			unbiased := variance
			if cnt > 1 {
				unbiased = ss[ch] / (cnt - 1)
			}
			m := mean[ch]
			if S != nil {
				m += float64(S[ch])
			}
			RM[ch] = float32(float64((1-momentum)*float64(RM[ch])) + float64(momentum*m))
			RV[ch] = float32(float64((1-momentum)*float64(RV[ch])) + float64(momentum*unbiased))
		}
		bnApply(Y, X, n, c, hw, lo, hi, scale, shiftBy, relu)
	})
}

func (b *Backend) BatchNormInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	batchNormInfer(y, x, gamma, beta, runMean, runVar, eps, false)
}

// batchNormInfer is BatchNormInfer, with ReLU in the same pass where relu
// is set.
func batchNormInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64, relu bool) {
	n, c, hw := nchw(x)
	X, Y, G, B, RM, RV := Data(x), Data(y), Data(gamma), Data(beta), Data(runMean), Data(runVar)
	parallelFor(n*c, 1, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			ch := j % c
			scale := float64(G[ch]) / math.Sqrt(float64(RV[ch])+eps)
			shift := float64(B[ch]) - float64(float64(RM[ch])*scale)
			s32, h32 := float32(scale), float32(shift)
			dst := Y[j*hw:][:hw]
			if relu {
				for p, v := range X[j*hw:][:hw] {
					dst[p] = max(float32(v*s32)+h32, 0)
				}
				continue
			}
			for p, v := range X[j*hw:][:hw] {
				dst[p] = float32(v*s32) + h32
			}
		}
	})
}

func (b *Backend) BatchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd *tensor.Tensor) {
	b.batchNormBackward(dx, dgamma, dbeta, dy, nil, x, gamma, saveMean, saveInvStd)
}

// batchNormBackward is BatchNormBackward of dy masked by the ReLU output y
// where y is not nil: ReLU's backward in the same passes, dy left as it is.
func (b *Backend) batchNormBackward(dx, dgamma, dbeta, dy, y, x, gamma, saveMean, saveInvStd *tensor.Tensor) {
	n, c, hw := nchw(x)
	X, DY, DX, G, Y := Data(x), Data(dy), Data(dx), Data(gamma), optData(y)
	DG, DB, SM, SI := Data(dgamma), Data(dbeta), Data(saveMean), Data(saveInvStd)
	st := b.stats(7 * c)
	mean, inv, sdy, sdyx, k, mdy, mdyx := st[:c], st[c:2*c], st[2*c:3*c], st[3*c:4*c], st[4*c:5*c], st[5*c:6*c], st[6*c:]
	cnt := float64(n * hw)
	parallelFor(c, 1, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			mean[ch], inv[ch] = float64(SM[ch]), float64(SI[ch])
		}
		bnGradSums(DY, X, Y, n, c, hw, lo, hi, mean, sdy, sdyx)
		for ch := lo; ch < hi; ch++ {
			sdyx[ch] *= inv[ch] // Σdy·xhat
			DG[ch], DB[ch] = float32(sdyx[ch]), float32(sdy[ch])
			// dx = γ·inv·(dy − Σdy/M − xhat·Σ(dy·xhat)/M)
			k[ch] = float64(G[ch]) * inv[ch]
			mdy[ch], mdyx[ch] = sdy[ch]/cnt, sdyx[ch]/cnt
		}
		bnGradApply(DX, DY, X, Y, n, c, hw, lo, hi, mean, inv, k, mdy, mdyx)
	})
}

// BatchNormReLUTrain is BatchNormTrain, then ReLU, in one pass over y.
func (b *Backend) BatchNormReLUTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift *tensor.Tensor, momentum, eps float64) {
	b.batchNormTrain(y, x, gamma, beta, runMean, runVar, saveMean, saveInvStd, shift, momentum, eps, true)
}

// BatchNormReLUInfer is BatchNormInfer, then ReLU, in one pass over y.
func (b *Backend) BatchNormReLUInfer(y, x, gamma, beta, runMean, runVar *tensor.Tensor, eps float64) {
	batchNormInfer(y, x, gamma, beta, runMean, runVar, eps, true)
}

// BatchNormReLUApply is BatchNormTrain's normalisation from the saved
// (float32) statistics, then ReLU: y to within the rounding of the saved
// mean and 1/std.
func (b *Backend) BatchNormReLUApply(y, x, gamma, beta, saveMean, saveInvStd *tensor.Tensor) {
	n, c, hw := nchw(x)
	X, Y, G, B, SM, SI := Data(x), Data(y), Data(gamma), Data(beta), Data(saveMean), Data(saveInvStd)
	parallelFor(n*c, 1, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			ch := j % c
			scale := float64(G[ch]) * float64(SI[ch])
			shift := float64(B[ch]) - float64(float64(SM[ch])*scale)
			dst := Y[j*hw:][:hw]
			for p, v := range X[j*hw:][:hw] {
				dst[p] = max(float32(float64(float64(v)*scale)+shift), 0)
			}
		}
	})
}

// BatchNormReLUBackward is ReLU's backward, then BatchNormBackward, in
// the same passes (dy is left as it is).
func (b *Backend) BatchNormReLUBackward(dx, dgamma, dbeta, dy, y, x, gamma, _, saveMean, saveInvStd *tensor.Tensor) {
	b.batchNormBackward(dx, dgamma, dbeta, dy, y, x, gamma, saveMean, saveInvStd)
}

func (b *Backend) MaxPoolForward(y, x *tensor.Tensor, k, s int) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	oh, ow := (h-k)/s+1, (w-k)/s+1
	X, Y := Data(x), Data(y)
	if len(Y) != n*c*oh*ow {
		panic(fmt.Sprintf("cpu: max-pool output %v for input %v", y.Shape, x.Shape))
	}
	if k == 2 && s == 2 {
		pool2Forward(Y, X, n*c, h, w)
		return
	}
	parallelFor(n*c, 4, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			src, dst := X[j*h*w:][:h*w], Y[j*oh*ow:][:oh*ow]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					m := float32(math.Inf(-1))
					for ki := 0; ki < k; ki++ {
						for _, v := range src[(oy*s+ki)*w+ox*s:][:k] {
							if v > m || v != v { // NaN propagates, as in PyTorch
								m = v
							}
						}
					}
					dst[oy*ow+ox] = m
				}
			}
		}
	})
}

func (b *Backend) MaxPoolBackward(dx, dy, x, y *tensor.Tensor, k, s int) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	oh, ow := (h-k)/s+1, (w-k)/s+1
	X, DX, DY := Data(x), Data(dx), Data(dy)
	if k == 2 && s == 2 {
		pool2Backward(DX, DY, X, n*c, h, w)
		return
	}
	parallelFor(n*c, 4, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			src, dsrc, g := X[j*h*w:][:h*w], DX[j*h*w:][:h*w], DY[j*oh*ow:][:oh*ow]
			clear(dsrc)
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					best, m := -1, float32(math.Inf(-1))
					for ki := 0; ki < k; ki++ {
						for kj := 0; kj < k; kj++ {
							idx := (oy*s+ki)*w + ox*s + kj
							if v := src[idx]; best < 0 || v > m {
								best, m = idx, v
							}
						}
					}
					dsrc[best] += g[oy*ow+ox]
				}
			}
		}
	})
}

// pool2Forward is MaxPoolForward for VGG's 2x2 windows with stride 2 over
// planes planes of h×w: no loops over the window, no branches.
func pool2Forward(Y, X []float32, planes, h, w int) {
	oh, ow := h/2, w/2
	parallelFor(planes, 4, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			src, dst := X[j*h*w:][:h*w], Y[j*oh*ow:][:oh*ow]
			for oy := 0; oy < oh; oy++ {
				r0, r1 := src[2*oy*w:][:2*ow], src[(2*oy+1)*w:][:2*ow]
				out := dst[oy*ow:][:ow]
				for ox := range out {
					// max propagates NaN, as PyTorch's max-pool does.
					out[ox] = max(r0[2*ox], r0[2*ox+1], r1[2*ox], r1[2*ox+1])
				}
			}
		}
	})
}

// pool2Backward is MaxPoolBackward for 2x2 windows with stride 2: each
// window's gradient goes to its first maximum in row-major order, chosen
// with masks rather than branches (which element wins is close to random).
func pool2Backward(DX, DY, X []float32, planes, h, w int) {
	oh, ow := h/2, w/2
	parallelFor(planes, 4, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			src, dsrc, g := X[j*h*w:][:h*w], DX[j*h*w:][:h*w], DY[j*oh*ow:][:oh*ow]
			if h%2 != 0 || w%2 != 0 { // rows or columns no window covers
				clear(dsrc)
			}
			for oy := 0; oy < oh; oy++ {
				r0, r1 := src[2*oy*w:][:2*ow], src[(2*oy+1)*w:][:2*ow]
				d0, d1 := dsrc[2*oy*w:][:2*ow], dsrc[(2*oy+1)*w:][:2*ow]
				gr := g[oy*ow:][:ow]
				for ox, gv := range gr {
					a, b, c, d := r0[2*ox], r0[2*ox+1], r1[2*ox], r1[2*ox+1]
					m := max(a, b, c, d)
					var ma, mb, mc uint32
					if a == m {
						ma = ^uint32(0)
					}
					if b == m {
						mb = ^uint32(0)
					}
					if c == m {
						mc = ^uint32(0)
					}
					mb &^= ma
					mc &^= ma | mb
					md := ^(ma | mb | mc)
					bits := math.Float32bits(gv)
					d0[2*ox] = math.Float32frombits(bits & ma)
					d0[2*ox+1] = math.Float32frombits(bits & mb)
					d1[2*ox] = math.Float32frombits(bits & mc)
					d1[2*ox+1] = math.Float32frombits(bits & md)
				}
			}
		}
	})
}

// lrnWindow is the channel window [lo,hi) of channel ch: size/2 before,
// (size-1)/2 after, as PyTorch pads it.
func lrnWindow(ch, c, size int) (int, int) {
	return max(0, ch-size/2), min(c, ch+(size-1)/2+1)
}

// lrnScale writes scale[ch] = k + alpha/size·Σ x² over the window, for one
// pixel whose channel values are x[ch·hw].
func lrnScale(scale, x []float32, c, hw int, p tensor.LRN) {
	for ch := 0; ch < c; ch++ {
		lo, hi := lrnWindow(ch, c, p.Size)
		var s float64
		for j := lo; j < hi; j++ {
			v := float64(x[j*hw])
			s += float64(v * v)
		}
		scale[ch] = float32(p.K + float64(p.Alpha/float64(p.Size)*s))
	}
}

func (b *Backend) LRNForward(y, x *tensor.Tensor, p tensor.LRN) {
	n, c, hw := nchw(x)
	X, Y := Data(x), Data(y)
	parallelFor(n*hw, 64, func(lo, hi int) {
		scale := make([]float32, c)
		for j := lo; j < hi; j++ {
			i, px := j/hw, j%hw
			base := i*c*hw + px
			lrnScale(scale, X[base:], c, hw, p)
			for ch := 0; ch < c; ch++ {
				Y[base+ch*hw] = float32(float64(X[base+ch*hw]) * math.Pow(float64(scale[ch]), -p.Beta))
			}
		}
	})
}

func (b *Backend) LRNBackward(dx, dy, x, y *tensor.Tensor, p tensor.LRN) {
	n, c, hw := nchw(x)
	X, Y, DX, DY := Data(x), Data(y), Data(dx), Data(dy)
	parallelFor(n*hw, 64, func(lo, hi int) {
		scale := make([]float32, c)
		t := make([]float64, c) // dy·y/scale per channel
		for j := lo; j < hi; j++ {
			i, px := j/hw, j%hw
			base := i*c*hw + px
			lrnScale(scale, X[base:], c, hw, p)
			for ch := 0; ch < c; ch++ {
				t[ch] = float64(DY[base+ch*hw]) * float64(Y[base+ch*hw]) / float64(scale[ch])
			}
			// dx_c = dy_c·scale_c^-β − 2αβ/size · x_c · Σ_{j: c ∈ window(j)} t_j
			for ch := 0; ch < c; ch++ {
				lo, hi := max(0, ch-(p.Size-1)/2), min(c, ch+p.Size/2+1)
				var s float64
				for j := lo; j < hi; j++ {
					s += t[j]
				}
				xv := float64(X[base+ch*hw])
				DX[base+ch*hw] = float32(float64(float64(DY[base+ch*hw])*math.Pow(float64(scale[ch]), -p.Beta)) - float64(2*p.Alpha*p.Beta/float64(p.Size)*xv*s))
			}
		}
	})
}

func (b *Backend) LinearForward(y, x, w, bias *tensor.Tensor) {
	n, in, out := x.Shape[0], w.Shape[1], w.Shape[0]
	X, Y, W, B := Data(x), Data(y), Data(w), Data(bias)
	if len(X) != n*in || len(Y) != n*out || len(B) != out {
		panic(fmt.Sprintf("cpu: linear %v·%vᵀ into %v", x.Shape, w.Shape, y.Shape))
	}
	for i := 0; i < n; i++ {
		copy(Y[i*out:][:out], B)
	}
	b.sgemm(false, true, n, out, in, 1, X, in, W, in, 1, Y, out)
}

func (b *Backend) LinearBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	n, in, out := x.Shape[0], w.Shape[1], w.Shape[0]
	W, DB, DY := Data(w), Data(db), Data(dy)
	if dx != nil {
		b.sgemm(false, false, n, in, out, 1, DY, out, W, in, 0, Data(dx), in)
	}
	if dw != nil {
		b.LinearWeightGrad(dw, dy, x, 0)
	}
	for o := 0; o < out; o++ {
		var s float64
		for i := 0; i < n; i++ {
			s += float64(DY[i*out+o])
		}
		DB[o] = float32(s)
	}
}

func (b *Backend) LinearWeightGrad(dw, dy, x *tensor.Tensor, row int) {
	n, in, out, k := x.Shape[0], x.Shape[1], dy.Shape[1], dw.Shape[0]
	if len(dw.Shape) != 2 || dw.Shape[1] != in || dy.Shape[0] != n || row < 0 || row+k > out {
		panic(fmt.Sprintf("cpu: linear weight gradient %v of rows from %d, for dy %v and x %v", dw.Shape, row, dy.Shape, x.Shape))
	}
	// dy's columns [row, row+k): a matrix of k columns, row stride out.
	b.sgemm(true, false, k, in, n, 1, Data(dy)[row:], out, Data(x), in, 0, Data(dw), in)
}

func (b *Backend) ReLUForward(y, x *tensor.Tensor) {
	X, Y := Data(x), Data(y)
	parallelFor(len(X), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			Y[i] = max(X[i], 0)
		}
	})
}

func (b *Backend) ReLUBackward(dx, dy, y *tensor.Tensor) {
	DX, DY, Y := Data(dx), Data(dy), Data(y)
	parallelFor(len(Y), 1<<14, func(lo, hi int) {
		y, g, d := Y[lo:hi], DY[lo:hi], DX[lo:hi]
		g, d = g[:len(y)], d[:len(y)]
		for i, v := range y {
			// A mask instead of a branch: which activations are positive is
			// close to random, and a mispredicted branch per element cost
			// more than the memory traffic (15 ms against 3–4 ms for 4M values).
			var m uint32
			if v > 0 {
				m = ^uint32(0)
			}
			d[i] = math.Float32frombits(math.Float32bits(g[i]) & m)
		}
	})
}

// dropout applies the mask of key and the 1/(1-p) scale to src.
func dropout(dst, src []float32, p float64, key uint64) {
	thr := tensor.DropoutThreshold(p)
	scale := float32(1 / (1 - p))
	parallelFor(len(src), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if tensor.DropoutHash(key, uint64(i)) >= thr {
				dst[i] = src[i] * scale
			} else {
				dst[i] = 0
			}
		}
	})
}

func (b *Backend) DropoutForward(y, x *tensor.Tensor, p float64, key uint64) {
	dropout(Data(y), Data(x), p, key)
}

func (b *Backend) DropoutBackward(dx, dy *tensor.Tensor, p float64, key uint64) {
	dropout(Data(dx), Data(dy), p, key)
}

func (b *Backend) SoftmaxCrossEntropy(loss, dlogits, logits, labels *tensor.Tensor, smoothing float64) {
	n, c := logits.Shape[0], logits.Shape[1]
	L, Y := Data(logits), Data(labels)
	var D []float32
	if dlogits != nil {
		D = Data(dlogits)
	}
	var total float64
	for i := 0; i < n; i++ {
		row := L[i*c:][:c]
		label := int(Y[i])
		if label < 0 || label >= c {
			panic(fmt.Sprintf("cpu: label %v of sample %d outside [0,%d)", Y[i], i, c))
		}
		m := math.Inf(-1)
		for _, v := range row {
			m = max(m, float64(v))
		}
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v) - m)
		}
		// log softmax = (v-m) - log z: m + log z would lose log z beside a
		// large m (logits near float32's limit, where the loss is still ln C
		// for equal ones).
		logZ := math.Log(z)
		// target = (1-ε)·onehot + ε/C
		for j, v := range row {
			t := smoothing / float64(c)
			if j == label {
				t += 1 - smoothing
			}
			lp := (float64(v) - m) - logZ
			total -= float64(t * lp)
			if D != nil {
				D[i*c+j] = float32((math.Exp(lp) - t) / float64(n))
			}
		}
	}
	Data(loss)[0] = float32(total / float64(n))
}

func (b *Backend) Tally(acc, loss, logits, labels *tensor.Tensor) {
	n, c := logits.Shape[0], logits.Shape[1]
	L, Y, A := Data(logits), Data(labels), Data(acc)
	correct := 0
	for i := range n {
		row := L[i*c:][:c]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		if float32(best) == Y[i] {
			correct++
		}
	}
	// The conversions keep the products from fusing into the sums: the GPU
	// rounds each operation the same way.
	A[0] += float32(Data(loss)[0] * float32(n))
	A[1] += float32(correct)
}

func (b *Backend) SGDStep(p, g, m *tensor.Tensor, h tensor.SGD, first bool) {
	P, G, M := Data(p), Data(g), Data(m)
	lr, mom, wd, damp := float32(h.LR), float32(h.Momentum), float32(h.WeightDecay), float32(1-h.Dampening)
	parallelFor(len(P), 1<<14, func(lo, hi int) {
		p, g, m := P[lo:hi], G[lo:hi], M[lo:hi]
		g, m = g[:len(p)], m[:len(p)]
		// One loop per case, so that the hot one (momentum after the
		// first step) runs without tests per element.
		switch {
		case mom == 0:
			for i := range p {
				p[i] -= float32(lr * (g[i] + float32(wd*p[i])))
			}
		case first && h.Nesterov:
			for i := range p {
				d := g[i] + float32(wd*p[i])
				m[i] = d
				p[i] -= float32(lr * (d + float32(mom*d)))
			}
		case first:
			for i := range p {
				d := g[i] + float32(wd*p[i])
				m[i] = d
				p[i] -= float32(lr * d)
			}
		case h.Nesterov:
			for i := range p {
				d := g[i] + float32(wd*p[i])
				mi := float32(mom*m[i]) + float32(damp*d)
				m[i] = mi
				p[i] -= float32(lr * (d + float32(mom*mi)))
			}
		default:
			for i := range p {
				mi := float32(mom*m[i]) + float32(damp*(g[i]+float32(wd*p[i])))
				m[i] = mi
				p[i] -= float32(lr * mi)
			}
		}
	})
}

var _ tensor.Backend = (*Backend)(nil)
