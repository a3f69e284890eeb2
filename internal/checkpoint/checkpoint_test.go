package checkpoint

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/fixtures"
	"github.com/vgg16/vgg16/internal/layers"
	"github.com/vgg16/vgg16/internal/pth"
	"github.com/vgg16/vgg16/internal/safetensors"
)

func model(t *testing.T, cfg string, size int, bn bool) *layers.Model {
	t.Helper()
	c, err := layers.ParseCfg(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := layers.New(cpu.New(), layers.Config{Arch: "t", Cfg: c, BatchNorm: bn, ImageSize: size, Hidden: 24, Classes: 7, Dropout: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	m.Init(5)
	return m
}

func TestSaveLoad(t *testing.T) {
	m := model(t, "8,8,M,16,M,1x1:16,M,16,M,16,M", 64, true)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	info := Info{Config: m.Config, Classes: []string{"a", "b", "c", "d", "e", "f", "g"}, Epoch: 3, Batch: 2, Step: 99, BestAcc: 0.5, ValAcc: 0.25, Flags: `{"x":1}`, ID: "abc-7"}
	if err := Save(path, m, info); err != nil {
		t.Fatal(err)
	}
	ck, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got := ck.Info
	if got.Config.Cfg.String() != m.Config.Cfg.String() || got.Epoch != 3 || got.Batch != 2 || got.Step != 99 || got.BestAcc != 0.5 || got.ValAcc != 0.25 || got.ID != "abc-7" || got.Classes[6] != "g" || got.Flags != `{"x":1}` {
		t.Errorf("info round trip: %+v", got)
	}
	m2 := model(t, "8,8,M,16,M,1x1:16,M,16,M,16,M", 64, true)
	if err := m2.LoadState(ck.State); err != nil {
		t.Fatal(err)
	}
	for i, p := range m.Params() {
		a, b := cpu.Data(p.W), cpu.Data(m2.Params()[i].W)
		for j := range a {
			if a[j] != b[j] {
				t.Fatalf("%s differs after save and load", p.Name)
			}
		}
	}
	// Integer buffers are written as torchvision writes them.
	f, _ := safetensors.Read(path)
	if tt := f.Tensors["features.1.num_batches_tracked"]; tt.DType != "I64" || len(tt.Shape) != 0 {
		t.Errorf("num_batches_tracked stored as %s %v", tt.DType, tt.Shape)
	}
	// Counts of their own come back as saved.
	st := m.State()
	n := int64(7)
	for k := range st.Counts {
		n++
		st.Counts[k] = n
	}
	if err := SaveState(path, st, info); err != nil {
		t.Fatal(err)
	}
	if ck, err := Load(path); err != nil || len(st.Counts) == 0 || !maps.Equal(ck.State.Counts, st.Counts) {
		t.Errorf("counts after save and load: %v (%v), saved %v", ck.State.Counts, err, st.Counts)
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata format %q", f.Metadata["format"])
	}
}

// TestInferConfig reads bare state dicts (as converted from torchvision)
// back into the configuration that wrote them, with or without the batch
// norms' counts (torchvision's vgg*_bn weights predate them).
func TestInferConfig(t *testing.T) {
	for _, c := range []struct {
		cfg    string
		size   int
		bn     bool
		counts bool
	}{
		{"8,8,M,16,M,16,16,M,16,M,16,M", 64, true, true},
		{"8,M,16,M,16,M,16,M,16,M", 32, false, true},
		{"8,8,M,16,M,16,1x1:16,M,16,M,16,M", 96, true, true},
		{"8,M,16,M,16,M,16,M,16,M", 32, true, false},
	} {
		m := model(t, c.cfg, c.size, c.bn)
		path := filepath.Join(t.TempDir(), "bare.safetensors")
		// A bare state dict: weights only, no vgg16 metadata.
		f := &safetensors.File{Tensors: map[string]safetensors.Tensor{}}
		s := m.State()
		for name, h := range s.Floats {
			f.Tensors[name] = safetensors.F32(h.Shape, h.Data)
		}
		for name, n := range s.Counts {
			if c.counts {
				f.Tensors[name] = safetensors.I64(nil, []int64{n + 3})
			}
		}
		if err := safetensors.Write(path, f); err != nil {
			t.Fatal(err)
		}
		ck, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.counts && c.bn && len(ck.State.Counts) == 0 {
			t.Errorf("%s: no counts read", c.cfg)
		}
		for name, n := range ck.State.Counts {
			if c.counts && n != 3 {
				t.Errorf("%s: %s is %d, the file's 3", c.cfg, name, n)
			}
		}
		if !c.counts {
			loaded := model(t, c.cfg, c.size, c.bn)
			if err := loaded.LoadState(ck.State); err != nil {
				t.Errorf("%s without the counts: %v", c.cfg, err)
			}
		}
		got := ck.Info.Config
		if got.Cfg.String() != c.cfg || got.ImageSize != c.size || got.BatchNorm != c.bn || got.Hidden != 24 || got.Classes != 7 {
			t.Errorf("%s at %d (bn %v): inferred %s at %d (bn %v), hidden %d, classes %d", c.cfg, c.size, c.bn, got.Cfg, got.ImageSize, got.BatchNorm, got.Hidden, got.Classes)
		}
	}
	if _, err := InferConfig(layers.State{Floats: map[string]layers.HostTensor{"fc.weight": {Shape: []int{2, 2}}}}); err == nil || !strings.Contains(err.Error(), "not a VGG") {
		t.Errorf("a non-VGG state dict: %v", err)
	}
	// A dict that lost a convolution's weight, or whose last Linear is
	// transposed, is named as such, not taken for another layer list.
	s := model(t, "8,8,M,16,M", 32, true).State()
	delete(s.Floats, "features.3.weight")
	delete(s.Floats, "features.3.bias")
	if cfg, err := InferConfig(s); err == nil || !strings.Contains(err.Error(), "features.4.weight belongs to no convolution") {
		t.Errorf("a dict without features.3.weight: %v, %s", err, cfg.Cfg)
	}
	// Shapes that would divide by zero, or indices that would fill
	// gigabytes with max-pools, are refused first.
	for name, h := range map[string]layers.HostTensor{
		"features.0.weight":         {Shape: []int{0, 3, 3, 3}},
		"features.100000000.weight": {Shape: []int{4, 3, 3, 3}, Data: make([]float32, 108)},
	} {
		s := layers.State{Floats: map[string]layers.HostTensor{name: h,
			"classifier.0.weight": {Shape: []int{4, 4}, Data: make([]float32, 16)}, "classifier.6.weight": {Shape: []int{10, 4}, Data: make([]float32, 40)}}}
		if _, err := InferConfig(s); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s %v: %v", name, h.Shape, err)
		}
	}
	s = model(t, "8,8,M,16,M", 32, true).State()
	s.Floats["classifier.6.weight"] = layers.HostTensor{Shape: []int{24, 7}, Data: s.Floats["classifier.6.weight"].Data}
	if cfg, err := InferConfig(s); err == nil || !strings.Contains(err.Error(), "classifier.6.weight is [24 7]: want [classes 24]") {
		t.Errorf("a transposed classifier.6.weight: %v, %d classes", err, cfg.Classes)
	}
}

// TestReadWeightsPTH reads the fixture's torch.save file and its
// safetensors twin: the same state dict.
func TestReadWeightsPTH(t *testing.T) {
	dir := os.Getenv("VGG16_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "fixtures")
	}
	dir = filepath.Join(dir, "vgg-small-32")
	if _, err := os.Stat(filepath.Join(dir, "init.pth")); err != nil {
		fixtures.Missing(t, "fixture not found: %v (set VGG16_FIXTURES)", err)
	}
	a, err := ReadWeights(filepath.Join(dir, "init.pth"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReadWeights(filepath.Join(dir, "init.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Floats) != len(b.Floats) || len(a.Counts) != len(b.Counts) || len(a.Floats) == 0 {
		t.Fatalf(".pth has %d+%d tensors, .safetensors %d+%d", len(a.Floats), len(a.Counts), len(b.Floats), len(b.Counts))
	}
	for name, tb := range b.Floats {
		ta := a.Floats[name]
		if len(ta.Data) != len(tb.Data) {
			t.Fatalf("%s: %d values against %d", name, len(ta.Data), len(tb.Data))
		}
		for i := range tb.Data {
			if ta.Data[i] != tb.Data[i] {
				t.Fatalf("%s[%d]: %g against %g", name, i, ta.Data[i], tb.Data[i])
			}
		}
	}
	// The fixture's weights initialise a model built from its meta.json.
	m := model(t, "8,8,M,16,16,M,32,32,32,M,64,64,64,M,64,64,64,M", 32, true)
	n := int64(40)
	for k := range a.Counts { // counts of a trained model, each its own
		n++
		a.Counts[k] = n
	}
	a.Floats["features.99.wieght"] = layers.HostTensor{Shape: []int{1}, Data: []float32{1}} // misspelt: said, not used
	skipped, unused, err := m.LoadMatching(a)
	if err != nil || len(skipped) != 6 || !slices.Equal(unused, []string{"features.99.wieght"}) {
		// hidden 24 and 7 classes here: the three Linear layers differ.
		t.Fatalf("LoadMatching: %v, skipped %v, unused %v", err, skipped, unused)
	}
	// The batch norms' counts come too, as load_state_dict copies them.
	if got := m.State().Counts; !maps.Equal(got, a.Counts) {
		t.Errorf("counts after LoadMatching %v, the file's %v", got, a.Counts)
	}
}

// TestLoadPTH loads a torch.save state dict as a checkpoint: the
// configuration comes from the shapes.
func TestLoadPTH(t *testing.T) {
	dir := os.Getenv("VGG16_FIXTURES")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "fixtures")
	}
	path := filepath.Join(dir, "vgg-small-32", "init.pth")
	if _, err := os.Stat(path); err != nil {
		fixtures.Missing(t, "fixture not found: %v (set VGG16_FIXTURES)", err)
	}
	ck, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c := ck.Info.Config
	if c.Cfg.String() != "8,8,M,16,16,M,32,32,32,M,64,64,64,M,64,64,64,M" || c.ImageSize != 32 || c.Hidden != 128 || c.Classes != 10 || !c.BatchNorm {
		t.Errorf("inferred %+v", c)
	}
	m, err := layers.New(cpu.New(), c)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadState(ck.State); err != nil {
		t.Fatal(err)
	}
}

// TestNotAWeightsFile: a missing file, a directory and an empty file are
// named as such by Load, ReadWeights and ConvertPTH (not taken for a
// safetensors file whose reader then fails).
func TestNotAWeightsFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "e.pth")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "o.safetensors")
	for path, want := range map[string]string{filepath.Join(dir, "nope.pth"): "no such file", dir: "is a directory", empty: "is empty"} {
		_, lerr := Load(path)
		_, rerr := ReadWeights(path)
		_, cerr := ConvertPTH(path, out)
		for i, err := range []error{lerr, rerr, cerr} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s, call %d: %v; want %q", path, i, err, want)
			}
		}
	}
	// A file of neither format (a run's metrics.jsonl given by mistake) is
	// named as no checkpoint, not only as no .pth.
	text := filepath.Join(dir, "metrics.jsonl")
	if err := os.WriteFile(text, []byte(`{"epoch":1,"train_loss":2.1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, lerr := Load(text)
	_, rerr := ReadWeights(text)
	for i, err := range []error{lerr, rerr} {
		if want := text + ": not a checkpoint: neither safetensors (vgg16's) nor a PyTorch .pth"; err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, pth.ErrNotPyTorch) {
			t.Errorf("call %d: %v; want %q", i, err, want)
		}
	}
}

// imageSizeBeyondInt is what an image size beyond int is called: by
// Validate's bound, or on a 32-bit build by JSON's decoder, which names the
// field.
func imageSizeBeyondInt() string {
	if strconv.IntSize == 32 {
		return "image_size"
	}
	return "image size"
}

// TestLoadDistrustsMetadata: a checkpoint whose vgg16.config was edited
// (or damaged) so that it no longer describes its tensors is an error that
// names the file, before any model is made from it.
func TestLoadDistrustsMetadata(t *testing.T) {
	m := model(t, "8,M,16,M", 32, true)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	if err := Save(path, m, Info{Config: m.Config}); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	good := f.Metadata["vgg16.config"]
	for _, c := range []struct{ from, to, says string }{
		{`"cfg":[8,"M",16,"M"]`, `"cfg":[99999999999999,"M",16,"M"]`, "channels"},
		{`"classes":7`, `"classes":99999999999999`, "classes"},
		{`"image_size":32`, `"image_size":9999999999968`, imageSizeBeyondInt()},
		{`"image_size":32`, `"image_size":4096`, "classifier.0.weight: have [24 1024], model wants [24 16777216]"},
		{`"hidden":24`, `"hidden":48`, "classifier.3.weight"},
		{`"cfg":[8,"M",16,"M"]`, `"cfg":[8,"M",16,"M",32]`, "missing"},
	} {
		if !strings.Contains(good, c.from) {
			t.Fatalf("metadata %s has no %s", good, c.from)
		}
		f.Metadata["vgg16.config"] = strings.Replace(good, c.from, c.to, 1)
		edited := filepath.Join(t.TempDir(), "edited.safetensors")
		if err := safetensors.Write(edited, f); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(edited); err == nil || !strings.Contains(err.Error(), edited) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("config %s: %v, want an error naming the file and saying %q", c.to, err, c.says)
		}
	}
}

// TestReadPretrained: --pretrained's reading takes a bare safetensors state
// dict as leniently as LoadMatching loads it (no counts, a tensor more), its
// image size from the first Linear's input for any number of max-pools, and
// a vgg16 checkpoint's own recorded size.
func TestReadPretrained(t *testing.T) {
	dir := t.TempDir()
	m := model(t, "8,M,16,M,16,M", 32, true) // three max-pools: 4x4 cells at 32x32
	bare := m.State()
	bare.Counts = nil
	bare.Floats["aux.weight"] = layers.HostTensor{Shape: []int{2}, Data: []float32{1, 2}}
	f := &safetensors.File{Tensors: map[string]safetensors.Tensor{}}
	for name, h := range bare.Floats {
		f.Tensors[name] = safetensors.F32(h.Shape, h.Data)
	}
	path := filepath.Join(dir, "bare.safetensors")
	if err := safetensors.Write(path, f); err != nil {
		t.Fatal(err)
	}
	_, cfg, err := ReadPretrained(path)
	if err != nil || cfg.ImageSize != 32 || !cfg.BatchNorm || cfg.Cfg.String() != "8,M,16,M,16,M" {
		t.Errorf("a bare state dict, three max-pools: %v, %+v", err, cfg)
	}
	// A checkpoint's recorded size wins over the shapes' (which a larger
	// image with more cells would also give): here the same.
	saved := filepath.Join(dir, "ck.safetensors")
	if err := Save(saved, m, Info{Config: m.Config}); err != nil {
		t.Fatal(err)
	}
	if _, cfg, err := ReadPretrained(saved); err != nil || cfg.ImageSize != 32 {
		t.Errorf("a vgg16 checkpoint: %v, image size %d", err, cfg.ImageSize)
	}
	// A recorded configuration that its tensors contradict (edited to
	// 4096x4096, which the first Linear's 4x4 cells deny) is not trusted.
	f, err = safetensors.Read(saved)
	if err != nil {
		t.Fatal(err)
	}
	f.Metadata["vgg16.config"] = strings.Replace(f.Metadata["vgg16.config"], `"image_size":32`, `"image_size":4096`, 1)
	if err := safetensors.Write(saved, f); err != nil {
		t.Fatal(err)
	}
	if _, cfg, err := ReadPretrained(saved); err != nil || cfg.ImageSize != 32 || !strings.Contains(f.Metadata["vgg16.config"], "4096") {
		t.Errorf("a checkpoint whose recorded size its shapes deny: %v, image size %d", err, cfg.ImageSize)
	}
	// A checkpoint's layers are the ones it records where its shapes
	// cannot tell them: an LRN (which InferConfig takes for a max-pool) and
	// a list that does not end in a max-pool (InferConfig adds one).
	for _, c := range []string{"8,LRN,M,16,M", "8,M,16"} {
		m := model(t, c, 32, true)
		if err := Save(saved, m, Info{Config: m.Config}); err != nil {
			t.Fatal(err)
		}
		if _, cfg, err := ReadPretrained(saved); err != nil || cfg.Cfg.String() != c || cfg.ImageSize != 32 {
			t.Errorf("a vgg16 checkpoint of %s: %v, %s at %d", c, err, cfg.Cfg, cfg.ImageSize)
		}
	}
	// torchvision's layout (five max-pools, 7x7 cells) is 224x224.
	tv := model(t, "8,M,8,M,8,M,8,M,8,M", 224, true)
	if cfg, err := InferConfig(tv.State()); err != nil || cfg.ImageSize != 224 {
		t.Errorf("five max-pools, 7x7 cells: %v, image size %d", err, cfg.ImageSize)
	}
}

// TestLoadPrintableClasses: class names that eval and predict could not
// print as they are (recorded by an older version from a dataset's meta
// file) are made printable, the checkpoint still loaded.
func TestLoadPrintableClasses(t *testing.T) {
	m := model(t, "8,M,16,M", 32, true)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	long := strings.Repeat("é", 100) // 200 bytes
	if err := Save(path, m, Info{Config: m.Config, Classes: []string{"cat", "\x1b[31mdog", "cat", "", "bird", "bird #5", "bird", long}}); err != nil {
		t.Fatal(err)
	}
	ck, err := Load(path)
	if want := []string{"cat", `"\x1b[31mdog"`, "cat #2", "3", "bird", "bird #5", "bird #6", strings.Repeat("é", 58) + "…"}; err != nil || !slices.Equal(ck.Info.Classes, want) {
		t.Errorf("Load: %v, classes %q, want %q", err, ck.Info.Classes, want)
	}
	if err := cifar.CheckClassNames(ck.Info.Classes); err != nil {
		t.Errorf("the names made printable: %v", err)
	}
}

// TestLoadDamagedCounts: each figure a checkpoint records about its place
// and scores is held to its range, the key and value named in
// Info.Damaged; the weights still load (eval and predict need no more).
func TestLoadDamagedCounts(t *testing.T) {
	m := model(t, "8,M,16,M", 32, true)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	for _, c := range []struct{ key, value, want string }{
		{"vgg16.epoch", "abc", `"abc": want`}, {"vgg16.batch", "-2", `"-2": want`}, {"vgg16.step", "-1", `"-1": want`},
		{"vgg16.val_acc", "5", `"5": want`}, {"vgg16.best_val_acc", "NaN", `"NaN": want`},
	} {
		key, value := c.key, c.value
		if err := Save(path, m, Info{Config: m.Config, ValAcc: 0.5, BestAcc: -1}); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path); err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Metadata[key] = value
		if err := safetensors.Write(path, f); err != nil {
			t.Fatal(err)
		}
		ck, err := Load(path)
		if err != nil {
			t.Fatalf("%s %q: %v", key, value, err)
		}
		if ck.Info.Damaged == nil || !strings.Contains(ck.Info.Damaged.Error(), path+": metadata "+key) || !strings.Contains(ck.Info.Damaged.Error(), c.want) {
			t.Errorf("%s %q: %v, damaged: %v", key, value, err, ck.Info.Damaged)
		}
	}
}
