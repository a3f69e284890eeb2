// Package checkpoint reads and writes models as safetensors files under
// torchvision's vgg16_bn key names, so that a checkpoint loads into
// torchvision with load_state_dict and torchvision weights load here. The
// model configuration and training state ride in the header's metadata; the
// optimizer's momentum lives in a second file beside the weights.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/pth"
	"github.com/vgg16/vgg16/internal/safetensors"
)

// Metadata keys.
const (
	keyFormat  = "format" // "pt", as the safetensors convention for PyTorch weights
	keyConfig  = "vgg16.config"
	keyClasses = "vgg16.classes"
	keyEpoch   = "vgg16.epoch"
	keyBatch   = "vgg16.batch"
	keyStep    = "vgg16.step"
	keyBestAcc = "vgg16.best_val_acc"
	keyValAcc  = "vgg16.val_acc"
	keyFlags   = "vgg16.flags"
	keyID      = "vgg16.id"
)

// Info is what a checkpoint says about itself besides the weights.
type Info struct {
	Config  layers.Config
	Classes []string
	// Epoch is the number of completed epochs; Batch the number of batches
	// done in the next one (non-zero when a run was interrupted mid-epoch).
	Epoch, Batch int
	// Step is the model's training-step counter (it keys dropout).
	Step    uint64
	BestAcc float64 // best validation accuracy of the run so far
	ValAcc  float64 // validation accuracy of these weights (NaN if unknown)
	Flags   string  // the training options as JSON
	ID      string  // ties the weights to their optimizer file
	// Damaged, when not nil, says which of the place and scores above the
	// file holds in a form they cannot be read from (those figures are then
	// not to be trusted); never saved.
	Damaged error
}

// Checkpoint is a loaded checkpoint: weights on the host and their Info.
type Checkpoint struct {
	Info  Info
	State layers.State
}

// Save writes the model's weights and info to path atomically.
func Save(path string, m *layers.Model, info Info) error {
	return SaveState(path, m.State(), info)
}

// SaveState writes a state dict and info to path atomically.
func SaveState(path string, s layers.State, info Info) error {
	// Never over a good checkpoint: weights that went NaN in the last
	// steps before an interruption, say.
	if err := s.CheckFinite(); err != nil {
		return fmt.Errorf("%w; the file is left as it was", err)
	}
	f := &safetensors.File{Tensors: map[string]safetensors.Tensor{}, Metadata: map[string]string{keyFormat: "pt"}}
	for name, t := range s.Floats {
		f.Tensors[name] = safetensors.F32(t.Shape, t.Data)
	}
	for name, c := range s.Counts {
		f.Tensors[name] = safetensors.I64(nil, []int64{c})
	}
	cfg, err := json.Marshal(info.Config)
	if err != nil {
		return err
	}
	classes, _ := json.Marshal(info.Classes)
	md := f.Metadata
	md[keyConfig] = string(cfg)
	md[keyClasses] = string(classes)
	md[keyEpoch] = strconv.Itoa(info.Epoch)
	md[keyBatch] = strconv.Itoa(info.Batch)
	md[keyStep] = strconv.FormatUint(info.Step, 10)
	md[keyBestAcc] = strconv.FormatFloat(info.BestAcc, 'g', -1, 64)
	md[keyValAcc] = strconv.FormatFloat(info.ValAcc, 'g', -1, 64)
	md[keyFlags] = info.Flags
	md[keyID] = info.ID
	return safetensors.Write(path, f)
}

// Load reads a checkpoint written by Save, or a bare state dict (such as
// torchvision's vgg16_bn weights, as a .pth file or converted to
// safetensors), whose configuration is then inferred from the tensor shapes.
func Load(path string) (*Checkpoint, error) {
	if err := readable(path); err != nil {
		return nil, err
	}
	if !isSafetensors(path) {
		state, err := ReadWeights(path)
		if err != nil {
			return nil, err
		}
		cfg, err := InferConfig(state)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &Checkpoint{Info: Info{Config: cfg, ValAcc: math.NaN()}, State: state}, nil
	}
	f, err := safetensors.Read(path)
	if err != nil {
		return nil, err
	}
	state, err := StateFromFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ck := &Checkpoint{State: state}
	md := f.Metadata
	if raw, ok := md[keyConfig]; ok {
		if err := json.Unmarshal([]byte(raw), &ck.Info.Config); err != nil {
			return nil, fmt.Errorf("%s: metadata %s: %w", path, keyConfig, err)
		}
	} else if ck.Info.Config, err = InferConfig(state); err != nil {
		return nil, fmt.Errorf("%s: no vgg16 metadata, and %w", path, err)
	}
	if raw, ok := md[keyClasses]; ok {
		if err := json.Unmarshal([]byte(raw), &ck.Info.Classes); err != nil {
			return nil, fmt.Errorf("%s: metadata %s: %w", path, keyClasses, err)
		}
		// Printed by eval and predict: made printable, not refused (an
		// older version recorded whatever a dataset's meta file held).
		if cifar.CheckClassNames(ck.Info.Classes) != nil {
			ck.Info.Classes = cifar.PrintableNames(ck.Info.Classes)
		}
	}
	if err := parseCounts(md, &ck.Info); err != nil {
		// The weights are whole: eval and predict need no more. A resume,
		// which does, refuses the file (Info.Damaged).
		ck.Info.Damaged = fmt.Errorf("%s: %w", path, err)
	}
	ck.Info.Flags = md[keyFlags]
	ck.Info.ID = md[keyID]
	// The configuration within its bounds (CheckState validates it) and
	// matching the tensors, before any model is made: metadata that does
	// not describe them (a damaged or edited file) must not size an
	// allocation.
	if err := layers.CheckState(ck.Info.Config, ck.State); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ck, nil
}

// parseCounts reads the epoch, batch, step and accuracies a checkpoint
// records into info, each where present (a state dict saved elsewhere has
// none): a damaged or edited value is an error that names it, not a zero
// that a resume would then misread.
func parseCounts(md map[string]string, info *Info) error {
	bad := func(key, want string) error {
		return fmt.Errorf("metadata %s %q: want %s", key, md[key], want)
	}
	for _, c := range []struct {
		key string
		to  *int
	}{{keyEpoch, &info.Epoch}, {keyBatch, &info.Batch}} {
		if raw, ok := md[c.key]; ok {
			n, err := strconv.Atoi(raw)
			if err != nil || n < 0 {
				return bad(c.key, "a whole number, 0 or more")
			}
			*c.to = n
		}
	}
	if raw, ok := md[keyStep]; ok {
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return bad(keyStep, "a whole number, 0 or more")
		}
		info.Step = n
	}
	info.ValAcc = math.NaN() // unknown, unless recorded
	if raw, ok := md[keyValAcc]; ok {
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || v < 0 || v > 1 {
			return bad(keyValAcc, "an accuracy from 0 to 1, or NaN")
		}
		info.ValAcc = v
	}
	if raw, ok := md[keyBestAcc]; ok {
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || !(v == -1 || v >= 0 && v <= 1) { // -1: no validation yet
			return bad(keyBestAcc, "an accuracy from 0 to 1, or -1 (none yet)")
		}
		info.BestAcc = v
	}
	return nil
}

// StateFromFile turns a safetensors state dict into a layers.State:
// floating tensors as float32, integer ones (num_batches_tracked) as counts.
func StateFromFile(f *safetensors.File) (layers.State, error) {
	s := layers.State{Floats: map[string]layers.HostTensor{}, Counts: map[string]int64{}}
	for _, name := range f.Names() {
		t := f.Tensors[name]
		switch t.DType {
		case "I64", "I32":
			v, _, err := f.Int64(name)
			if err != nil {
				return s, err
			}
			if len(v) != 1 {
				return s, fmt.Errorf("tensor %s: integer tensor of shape %v: a VGG state dict holds integers only as scalar counts (num_batches_tracked): not a model's weights?", name, t.Shape)
			}
			s.Counts[name] = v[0]
		default:
			v, shape, err := f.Float32(name)
			if err != nil {
				return s, err
			}
			s.Floats[name] = layers.HostTensor{Shape: shape, Data: v}
		}
	}
	return s, nil
}

// InferConfig reconstructs the configuration of a bare vgg*_bn state dict
// from its shapes: convolutions and their kernel sizes from
// features.N.weight, pools from the gaps in the indices, batch norm from
// running_mean, the image size from classifier.0's input width.
func InferConfig(s layers.State) (layers.Config, error) {
	type conv struct{ idx, out, k int }
	var convs []conv
	bn := s.HasBatchNorm()
	owner := map[int]string{} // a tensor name of each features index
	for _, name := range slices.Sorted(maps.Keys(s.Floats)) {
		t := s.Floats[name]
		rest, ok := strings.CutPrefix(name, "features.")
		if !ok {
			continue
		}
		idxStr, field, _ := strings.Cut(rest, ".")
		idx, err := strconv.Atoi(idxStr)
		if err != nil {
			continue
		}
		if idx < 0 || idx > 4*layers.MaxLayers { // conv, bn, ReLU or a pool: before the gaps are filled
			return layers.Config{}, fmt.Errorf("%s: index beyond the %d layers a layer list may have", name, layers.MaxLayers)
		}
		owner[idx] = name
		if field == "weight" && len(t.Shape) == 4 {
			if t.Shape[0] < 1 || t.Shape[2] < 1 || t.Shape[2] != t.Shape[3] {
				return layers.Config{}, fmt.Errorf("%s is %v: want [out, in, k, k], each 1 or more", name, t.Shape)
			}
			convs = append(convs, conv{idx, t.Shape[0], t.Shape[2]})
		}
	}
	if len(convs) == 0 {
		return layers.Config{}, fmt.Errorf("no features.N.weight convolution tensors: not a VGG state dict")
	}
	sort.Slice(convs, func(i, j int) bool { return convs[i].idx < convs[j].idx })
	per := 2 // conv, ReLU
	if bn {
		per = 3
	}
	// The indices left are taken for max-pools, which have no tensors: one
	// that has some lost its convolution's weight.
	for _, c := range convs {
		delete(owner, c.idx)
		if bn {
			delete(owner, c.idx+1)
		}
	}
	if len(owner) > 0 {
		name := owner[slices.Min(slices.Collect(maps.Keys(owner)))]
		return layers.Config{}, fmt.Errorf("%s belongs to no convolution (is a features.N.weight missing?)", name)
	}
	var cfg layers.Cfg
	next := 0
	for _, c := range convs {
		for ; next < c.idx; next++ { // every module between blocks is a max-pool
			cfg = append(cfg, layers.Item{Kind: layers.Pool})
		}
		cfg = append(cfg, layers.Item{Kind: layers.Conv, Out: c.out, K: c.k})
		next = c.idx + per
	}
	cfg = append(cfg, layers.Item{Kind: layers.Pool}) // the last block's pool
	fc0, ok0 := s.Floats["classifier.0.weight"]
	fc3, ok3 := s.Floats["classifier.6.weight"]
	if !ok0 || !ok3 || len(fc0.Shape) != 2 || len(fc3.Shape) != 2 {
		return layers.Config{}, fmt.Errorf("classifier.0.weight / classifier.6.weight missing: not a VGG state dict")
	}
	if fc3.Shape[1] != fc0.Shape[0] {
		return layers.Config{}, fmt.Errorf("classifier.6.weight is %v: want [classes %d], classifier.0.weight being %v", fc3.Shape, fc0.Shape[0], fc0.Shape)
	}
	last := convs[len(convs)-1].out
	cells := fc0.Shape[1] / last
	side := 1
	for side*side < cells {
		side++
	}
	if side*side*last != fc0.Shape[1] {
		return layers.Config{}, fmt.Errorf("classifier.0.weight has %d inputs, not a square number of %d-channel cells", fc0.Shape[1], last)
	}
	// The side the first Linear's input cells imply (torchvision's 7x7
	// after its adaptive pool: 224), each max-pool having halved it.
	return layers.Config{Arch: cfg.Name(), Cfg: cfg, BatchNorm: bn, ImageSize: side << cfg.Count(layers.Pool), Hidden: fc0.Shape[0], Classes: fc3.Shape[0], Dropout: 0.5}, nil
}

// ReadFlags returns the training options a checkpoint records (its
// vgg16.flags metadata, "" where it has none), reading only its header.
func ReadFlags(path string) (string, error) {
	if err := readable(path); err != nil {
		return "", err
	}
	if !isSafetensors(path) { // a .pth or another file in a checkpoint's place
		return "", fmt.Errorf("%s: not a vgg16 checkpoint: not a safetensors file", path)
	}
	md, err := safetensors.ReadMetadata(path)
	if err != nil {
		return "", err
	}
	return md[keyFlags], nil
}

// ReadEpoch returns the epochs a checkpoint records done (its vgg16.epoch
// metadata, 0 where it has none), reading only its header; an error where
// its place or scores are damaged, as Load would mark them.
func ReadEpoch(path string) (int, error) {
	md, err := safetensors.ReadMetadata(path)
	if err != nil {
		return 0, err
	}
	var info Info
	if err := parseCounts(md, &info); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return info.Epoch, nil
}

// Exists reports whether path names a regular file.
func Exists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// ReadWeights reads the state dict of a weights file for transfer
// learning: a safetensors file (a vgg16 checkpoint, or any state dict saved
// with safetensors) or a PyTorch file written by torch.save (torchvision's
// vgg16_bn-*.pth, zip or legacy format), told apart by their content.
func ReadWeights(path string) (layers.State, error) {
	s, _, err := readWeights(path)
	return s, err
}

// ReadPretrained reads a weights file as ReadWeights does, with its
// configuration: where it is a vgg16 checkpoint whose recorded
// configuration fits its tensors, that one (shapes cannot tell a local
// response normalisation from a max-pool, nor say whether the layer list
// ends in one); else the one its shapes imply (InferConfig), as lenient as
// transfer learning's LoadMatching, which takes what fits (the counts may
// be missing, other tensors present).
func ReadPretrained(path string) (layers.State, layers.Config, error) {
	s, md, err := readWeights(path)
	if err != nil {
		return s, layers.Config{}, err
	}
	var recorded layers.Config
	if raw, ok := md[keyConfig]; ok && json.Unmarshal([]byte(raw), &recorded) == nil && layers.CheckState(recorded, s) == nil {
		return s, recorded, nil
	}
	cfg, err := InferConfig(s)
	if err != nil {
		return s, cfg, fmt.Errorf("%s: %w", path, err)
	}
	return s, cfg, nil
}

// readWeights is ReadWeights, with a safetensors file's metadata (nil for
// a PyTorch file).
func readWeights(path string) (layers.State, map[string]string, error) {
	if err := readable(path); err != nil {
		return layers.State{}, nil, err
	}
	if isSafetensors(path) {
		f, err := safetensors.Read(path)
		if err != nil {
			return layers.State{}, nil, err
		}
		s, err := StateFromFile(f)
		if err != nil {
			return s, nil, fmt.Errorf("%s: %w", path, err)
		}
		return s, f.Metadata, nil
	}
	ts, err := pth.Read(path)
	if errors.Is(err, pth.ErrNotPyTorch) {
		// Neither of the formats a checkpoint comes in: say both.
		return layers.State{}, nil, fmt.Errorf("%s: not a checkpoint: neither safetensors (vgg16's) nor a PyTorch .pth: %w", path, err)
	}
	if err != nil {
		return layers.State{}, nil, err
	}
	// nn.DataParallel saves every key under "module.".
	prefix := "module."
	for name := range ts {
		if !strings.HasPrefix(name, prefix) {
			prefix = ""
			break
		}
	}
	s := layers.State{Floats: map[string]layers.HostTensor{}, Counts: map[string]int64{}}
	for name, t := range ts {
		name = strings.TrimPrefix(name, prefix)
		switch {
		case t.F32 != nil:
			s.Floats[name] = layers.HostTensor{Shape: t.Shape, Data: t.F32}
		case len(t.I64) == 1:
			s.Counts[name] = t.I64[0]
		default:
			return s, nil, fmt.Errorf("%s: tensor %s: %s of shape %v, want floating point weights or a scalar count", path, name, t.DType, t.Shape)
		}
	}
	return s, nil, nil
}

// isSafetensors tells a safetensors file (an 8-byte little-endian header
// length, then a JSON object) from a PyTorch one (a zip or a pickle).
// readable says why path cannot be a weights file, before its content
// is looked at: missing, a directory, or empty.
func readable(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: no such file%w", path, noText{fs.ErrNotExist})
	case err != nil:
		return err
	case st.IsDir():
		return fmt.Errorf("%s is a directory, not a weights file", path)
	case st.Size() == 0:
		return fmt.Errorf("%s is empty, not a weights file", path)
	}
	return nil
}

// noText wraps an error for errors.Is without adding to the message.
type noText struct{ err error }

func (noText) Error() string   { return "" }
func (n noText) Unwrap() error { return n.err }

func isSafetensors(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true // let the safetensors reader report it
	}
	defer f.Close()
	var head [9]byte
	if n, _ := io.ReadFull(f, head[:]); n < 9 {
		return true
	}
	return head[8] == '{'
}
