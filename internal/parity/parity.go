// Package parity replays a PyTorch reference fixture (see
// ../shared/fixtures/README.md) on a backend and measures how far each
// recorded tensor is from PyTorch's float64 result. The CPU backend's tests
// and the GPU check both run it.
package parity

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vgg16/vgg16/internal/checkpoint"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/safetensors"
	"github.com/vgg16/vgg16/internal/tensor"
)

// Meta is the part of a fixture's meta.json that the replay uses.
type Meta struct {
	Cfg       layers.Cfg `json:"cfg"`
	BatchNorm *bool      `json:"batch_norm"` // absent: true (the fixtures are VGG-BN)
	Hidden    int        `json:"hidden"`
	Classes   int        `json:"classes"`
	ImageSize int        `json:"image_size"`
	Dropout   float64    `json:"dropout"`
	BNEps     float64    `json:"bn_eps"`
	BNMom     float64    `json:"bn_momentum"`
	Optimizer struct {
		Name        string  `json:"name"`
		LR          float64 `json:"lr"`
		Momentum    float64 `json:"momentum"`
		WeightDecay float64 `json:"weight_decay"`
		Dampening   float64 `json:"dampening"`
		Nesterov    bool    `json:"nesterov"`
	} `json:"optimizer"`
}

// Result is the comparison of one recorded tensor.
type Result struct {
	Name  string
	Err   float64 // ‖out − ref‖ / scale
	Scale string  // what the error is relative to, when not ‖ref‖
}

// Report is the outcome of one fixture.
type Report struct {
	Dir     string
	Results []Result
}

// Worst returns the results whose error exceeds tol (NaN always does),
// worst first.
func (r *Report) Worst(tol float64) []Result {
	var bad []Result
	for _, x := range r.Results {
		if !(x.Err <= tol) {
			bad = append(bad, x)
		}
	}
	sort.Slice(bad, func(i, j int) bool { return !(bad[i].Err <= bad[j].Err) })
	return bad
}

// Max is the largest error of the report.
func (r *Report) Max() Result {
	var m Result
	for _, x := range r.Results {
		if !(x.Err <= m.Err) {
			m = x
		}
	}
	return m
}

// Dirs lists the fixture directories (those holding a meta.json) in root.
func Dirs(root string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(root, "*", "meta.json"))
	if err != nil {
		return nil, err
	}
	dirs := make([]string, len(matches))
	for i, m := range matches {
		dirs[i] = filepath.Dir(m)
	}
	sort.Strings(dirs)
	return dirs, nil
}

// ReadMeta reads dir/meta.json.
func ReadMeta(dir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "meta.json"), err)
	}
	if m.Dropout != 0 {
		return nil, fmt.Errorf("%s: dropout %g: a replay needs dropout 0, PyTorch's random mask cannot be reproduced", dir, m.Dropout)
	}
	if m.Optimizer.Name != "" && m.Optimizer.Name != "sgd" {
		return nil, fmt.Errorf("%s: optimizer %q, only sgd is replayed", dir, m.Optimizer.Name)
	}
	return &m, nil
}

// Config is the model configuration the fixture describes.
func (m *Meta) Config() layers.Config {
	bn := m.BatchNorm == nil || *m.BatchNorm
	return layers.Config{Arch: "fixture", Cfg: m.Cfg, BatchNorm: bn, ImageSize: m.ImageSize, Hidden: m.Hidden, Classes: m.Classes,
		Dropout: m.Dropout, BNEps: m.BNEps, BNMomentum: m.BNMom}
}

// Run replays the fixture in dir on be: two SGD steps on (x0,y0), (x1,y1)
// and an evaluation forward on x2, comparing every recorded tensor.
func Run(be tensor.Backend, dir string) (*Report, error) {
	meta, err := ReadMeta(dir)
	if err != nil {
		return nil, err
	}
	model, err := layers.New(be, meta.Config())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	defer model.Free()
	init, err := safetensors.Read(filepath.Join(dir, "init.safetensors"))
	if err != nil {
		return nil, err
	}
	state, err := checkpoint.StateFromFile(init)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if err := model.LoadState(state); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	batches, err := safetensors.Read(filepath.Join(dir, "batches.safetensors"))
	if err != nil {
		return nil, err
	}
	want, err := safetensors.Read(filepath.Join(dir, "expected.safetensors"))
	if err != nil {
		return nil, err
	}

	rep := &Report{Dir: dir}
	compare := func(name string, got []float32, scaleName string) error {
		ref, _, err := want.Float64(name)
		if err != nil {
			return err
		}
		if len(ref) != len(got) {
			return fmt.Errorf("%s: %s has %d values, the backend gave %d", dir, name, len(ref), len(got))
		}
		var diff, norm float64
		for i, r := range ref {
			d := float64(got[i]) - r
			diff += d * d
			norm += r * r
		}
		res := Result{Name: name}
		scale := math.Sqrt(norm)
		// A tensor that is zero in exact arithmetic (the bias of a
		// convolution followed by BN has zero gradient and so never moves)
		// is all rounding noise: compare it against its layer's weight.
		if scaleName != "" && scaleName != name {
			if w, _, err := want.Float64(scaleName); err == nil {
				var wn float64
				for _, v := range w {
					wn += v * v
				}
				if wn = math.Sqrt(wn); scale < 1e-6*wn {
					scale, res.Scale = wn, "‖"+scaleName+"‖"
				}
			}
		}
		res.Err = math.Sqrt(diff) / scale
		if scale == 0 {
			res.Err = math.Sqrt(diff)
			res.Scale = "absolute"
		}
		rep.Results = append(rep.Results, res)
		return nil
	}
	download := func(t *tensor.Tensor) []float32 {
		h := make([]float32, t.Size())
		be.Download(h, t)
		return h
	}
	input := func(xName, yName string) (*tensor.Tensor, *tensor.Tensor, error) {
		xs, shape, err := batches.Float32(xName)
		if err != nil {
			return nil, nil, err
		}
		x := tensor.NewActivation(be, shape...)
		be.Upload(x, xs)
		if yName == "" {
			return x, nil, nil
		}
		ys, yshape, err := batches.Float32(yName)
		if err != nil {
			return nil, nil, err
		}
		y := be.New(yshape...)
		be.Upload(y, ys)
		return x, y, nil
	}
	h := tensor.SGD{LR: meta.Optimizer.LR, Momentum: meta.Optimizer.Momentum, WeightDecay: meta.Optimizer.WeightDecay, Dampening: meta.Optimizer.Dampening, Nesterov: meta.Optimizer.Nesterov}
	mom := be.New(model.FlatSize())
	loss := be.New(1)
	defer be.Free(mom)
	defer be.Free(loss)

	for step := 0; step < 2; step++ {
		x, y, err := input(fmt.Sprintf("x%d", step), fmt.Sprintf("y%d", step))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		logits := model.Forward(x, true)
		dlogits := tensor.NewActivation(be, logits.Shape...)
		be.SoftmaxCrossEntropy(loss, dlogits, logits, y, 0)
		if step == 0 {
			if err := compare("logits0", download(logits), ""); err != nil {
				return nil, err
			}
		}
		if err := compare(fmt.Sprintf("loss%d", step), download(loss), ""); err != nil {
			return nil, err
		}
		model.Backward(dlogits)
		if step == 0 {
			for _, p := range model.Params() {
				if err := compare("grad."+p.Name, download(p.Grad), "grad."+weightOf(p.Name)); err != nil {
					return nil, err
				}
			}
		}
		be.SGDStep(model.Weights(), model.Grads(), mom, h, step == 0)
		for _, t := range []*tensor.Tensor{x, y, dlogits} {
			be.Free(t)
		}
	}
	after := model.State()
	for name, t := range after.Floats {
		if err := compare("param."+name, t.Data, "param."+weightOf(name)); err != nil {
			return nil, err
		}
	}
	for name, c := range after.Counts {
		ref, _, err := want.Int64("param." + name)
		if err != nil {
			return nil, err
		}
		res := Result{Name: "param." + name, Scale: "exact"}
		if len(ref) != 1 || ref[0] != c {
			res.Err = math.Inf(1)
		}
		rep.Results = append(rep.Results, res)
	}
	x2, _, err := input("x2", "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	defer be.Free(x2)
	if err := compare("eval_logits2", download(model.Forward(x2, false)), ""); err != nil {
		return nil, err
	}
	sort.Slice(rep.Results, func(i, j int) bool { return rep.Results[i].Name < rep.Results[j].Name })
	return rep, nil
}

// weightOf names the weight of the layer that owns a parameter.
func weightOf(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[:i] + ".weight"
	}
	return name
}
