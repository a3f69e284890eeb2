package layers

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/vgg16/vgg16/internal/tensor"
)

// HostTensor is a float32 tensor copied to the host.
type HostTensor struct {
	Shape []int
	Data  []float32
}

// State is a model's state dict on the host under torchvision's key names:
// parameters and BN running statistics as float32, num_batches_tracked as
// int64 counts.
type State struct {
	Floats map[string]HostTensor
	Counts map[string]int64
}

// State copies every parameter, running statistic and batch count to the
// host.
func (m *Model) State() State { return m.StateIn(nil) }

// StateIn is State with the float tensors laid one after another in host,
// where it holds StateSize values, instead of each in memory of its own:
// a training run saves from one buffer that it keeps, and so leaves no
// copy of the model to the garbage collector at every save.
func (m *Model) StateIn(host []float32) State {
	if len(host) < m.StateSize() {
		host = nil
	}
	s := State{Floats: map[string]HostTensor{}, Counts: map[string]int64{}}
	put := func(name string, t *tensor.Tensor) {
		var data []float32 // [t.Size()]
		if host != nil {
			data, host = host[:t.Size():t.Size()], host[t.Size():]
		} else {
			data = make([]float32, t.Size())
		}
		h := HostTensor{Shape: append([]int(nil), t.Shape...), Data: data}
		m.be.Download(h.Data, t)
		s.Floats[name] = h
	}
	for _, p := range m.params {
		put(p.Name, p.W)
	}
	for _, b := range m.buffers {
		put(b.Name, b.T)
	}
	for i, mod := range m.mods {
		if n, ok := mod.(*batchNorm); ok {
			s.Counts[m.names[i]+".num_batches_tracked"] = n.numBatches
		}
	}
	return s
}

// StateSize is the number of float32s in State: the parameters and the
// running statistics.
func (m *Model) StateSize() int {
	n := 0
	for _, p := range m.params {
		n += p.W.Size()
	}
	for _, b := range m.buffers {
		n += b.T.Size()
	}
	return n
}

// LoadState copies a state dict into the model. Every tensor the model has
// must be present with its shape (the batch norms' counts may be absent);
// keys the model does not have are an error too (a checkpoint of another
// architecture), all of them listed.
func (m *Model) LoadState(s State) error {
	var missing, shapes []string
	var bad badValues
	seen := map[string]bool{}
	load := func(name string, t *tensor.Tensor) {
		seen[name] = true
		h, ok := s.Floats[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case !tensor.SameShape(h.Shape, t.Shape) || len(h.Data) != t.Size():
			shapes = append(shapes, fmt.Sprintf("%s: have %v, model wants %v", name, h.Shape, t.Shape))
		case bad.ok(name, h.Data):
			m.be.Upload(t, h.Data)
		}
	}
	for _, p := range m.params {
		load(p.Name, p.W)
	}
	for _, b := range m.buffers {
		load(b.Name, b.T)
	}
	m.loadCounts(s, seen)
	unexpected := s.unseen(seen)
	var errs []string
	if len(shapes) > 0 {
		errs = append(errs, "shape mismatch: "+Few(shapes, "; "))
	}
	if len(missing) > 0 {
		errs = append(errs, "missing: "+Few(missing, ", "))
	}
	if len(unexpected) > 0 {
		errs = append(errs, "unexpected: "+Few(unexpected, ", "))
	}
	if len(errs) > 0 {
		return fmt.Errorf("state dict does not fit %s: %s", m.Config.Label(), strings.Join(errs, "; "))
	}
	return bad.err()
}

// loadCounts copies into the model the batch norms' counts that s has,
// marking their keys seen. A dict without them (PyTorch before 0.4.1 had
// none: torchvision's vgg*_bn weights) keeps the model's, as
// load_state_dict does.
func (m *Model) loadCounts(s State, seen map[string]bool) {
	for i, mod := range m.mods {
		if n, ok := mod.(*batchNorm); ok {
			key := m.names[i] + ".num_batches_tracked"
			seen[key] = true
			if c, ok := s.Counts[key]; ok {
				n.numBatches = c
			}
		}
	}
}

// unseen is the keys of s, tensors and counts, that seen lacks, sorted.
func (s State) unseen(seen map[string]bool) []string {
	var out []string
	for _, keys := range []iter.Seq[string]{maps.Keys(s.Floats), maps.Keys(s.Counts)} {
		for k := range keys {
			if !seen[k] {
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// HasBatchNorm reports whether s holds batch norms' statistics.
func (s State) HasBatchNorm() bool {
	for k := range s.Floats {
		if strings.HasSuffix(k, ".running_mean") {
			return true
		}
	}
	return false
}

// badValues gathers, tensor by tensor, the values a state must not load:
// values that are not numbers, and negative running variances.
type badValues struct{ notFinite, negative []string }

// ok reports whether data, the tensor name, may be loaded, noting its
// first bad value where not.
func (b *badValues) ok(name string, data []float32) bool {
	return allFinite(name, data, &b.notFinite) && varianceOK(name, data, &b.negative)
}

// err names the values refused, if any.
func (b *badValues) err() error {
	return errors.Join(notNumbers(b.notFinite), negativeVariances(b.negative))
}

// allFinite reports whether data, the tensor name, holds only numbers,
// adding its first value that is not (NaN, ±Inf) to bad where not.
func allFinite(name string, data []float32, bad *[]string) bool {
	// All exponent bits set: NaN or ±Inf (a third of the time of the
	// float64 tests, on 134M weights at each save and load).
	i := slices.IndexFunc(data, func(v float32) bool { return math.Float32bits(v)&0x7f800000 == 0x7f800000 })
	if i >= 0 {
		*bad = append(*bad, fmt.Sprintf("%s[%d] is %v", name, i, data[i]))
	}
	return i < 0
}

// varianceOK reports whether data, the tensor name, is not a batch norm's
// running variance with a negative value (whose square root, taken in
// evaluation, is NaN), adding its first such value to bad where it is.
func varianceOK(name string, data []float32, bad *[]string) bool {
	if !strings.HasSuffix(name, ".running_var") {
		return true
	}
	i := slices.IndexFunc(data, func(v float32) bool { return v < 0 })
	if i >= 0 {
		*bad = append(*bad, fmt.Sprintf("%s[%d] is %v", name, i, data[i]))
	}
	return i < 0
}

// negativeVariances is the error for the variances varianceOK refused, if
// any.
func negativeVariances(bad []string) error {
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("negative running variances, which no batch gives (a damaged or edited file?): %s", Few(bad, "; "))
}

// notNumbers is the error for the weights allFinite refused, if any:
// nothing computed from them would mean anything.
func notNumbers(bad []string) error {
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("weights that are not numbers (a diverged run's?): %s", Few(bad, "; "))
}

// CheckFinite returns an error that names the first value (by tensor
// name) that is not a number, if any.
func (s State) CheckFinite() error {
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(s.Floats)) {
		allFinite(name, s.Floats[name].Data, &bad)
	}
	return notNumbers(bad)
}

// Few joins the first four items with sep and counts the rest.
func Few(items []string, sep string) string {
	if len(items) <= 4 {
		return strings.Join(items, sep)
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:4], sep), len(items)-4)
}

// Row is one line of the summary table.
type Row struct {
	Name   string // "features.0"
	Kind   string // "Conv2d"
	In     []int  // per-sample input shape
	Kernel string
	Out    []int
	Params int
	MACs   int64 // multiply-adds of a forward pass, per sample (convolutions and Linear layers)
}

// Summary lists every module with its shapes and parameter count.
func (m *Model) Summary() []Row {
	counts := map[string]int{}
	for _, p := range m.params {
		counts[p.Name[:strings.LastIndexByte(p.Name, '.')]] += p.W.Size()
	}
	shape := []int{3, m.Config.ImageSize, m.Config.ImageSize}
	rows := make([]Row, len(m.mods))
	for i, mod := range m.mods {
		out := mod.out(shape)
		rows[i] = Row{Name: m.names[i], Kind: mod.kind(), In: shape, Kernel: mod.kernel(), Out: out, Params: counts[m.names[i]]}
		switch mod := mod.(type) {
		case *conv:
			rows[i].MACs = int64(tensor.Volume(out)) * int64(shape[0]*mod.k*mod.k)
		case *linear:
			rows[i].MACs = int64(shape[0]) * int64(out[0])
		}
		shape = out
	}
	return rows
}

// LoadMatching copies into the model every tensor of s whose name and
// shape match, for transfer learning: the classifier layers whose shapes
// differ (another number of classes, another input size) keep their
// initial values and are listed in skipped. A feature-extractor tensor that
// is missing or of another shape is an error: the file is another
// architecture. unused lists the tensors of s that the model has no
// place for (a misspelt key would otherwise go unnoticed).
func (m *Model) LoadMatching(s State) (skipped, unused []string, err error) {
	var wrong []string
	var bad badValues
	seen := map[string]bool{}
	load := func(name string, t *tensor.Tensor) {
		seen[name] = true
		h, ok := s.Floats[name]
		switch {
		case ok && tensor.SameShape(h.Shape, t.Shape):
			if bad.ok(name, h.Data) {
				m.be.Upload(t, h.Data)
			}
		case strings.HasPrefix(name, "classifier."):
			why := "absent"
			if ok {
				why = fmt.Sprintf("%v in the file", h.Shape)
			}
			skipped = append(skipped, fmt.Sprintf("%s (%s, model %v)", name, why, t.Shape))
		case ok:
			wrong = append(wrong, fmt.Sprintf("%s: have %v, model wants %v", name, h.Shape, t.Shape))
		default:
			wrong = append(wrong, name+": missing")
		}
	}
	for _, p := range m.params {
		load(p.Name, p.W)
	}
	for _, b := range m.buffers {
		load(b.Name, b.T)
	}
	m.loadCounts(s, seen) // as load_state_dict: the counts too, where the file has them
	unused = s.unseen(seen)
	if len(wrong) > 0 {
		return skipped, unused, fmt.Errorf("weights do not fit %s: %s", m.Config.Label(), Few(wrong, "; "))
	}
	return skipped, unused, bad.err()
}
