package layers_test

import (
	"encoding/json"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/layers"
)

func config(t *testing.T, arch string, size int) layers.Config {
	t.Helper()
	cfg := layers.DefaultConfig()
	c, err := layers.Arch(arch)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Arch, cfg.Cfg, cfg.ImageSize = arch, c, size
	return cfg
}

// TestParamCounts pins the parameter totals of the seed's table (batch
// norm, 10 classes).
func TestParamCounts(t *testing.T) {
	for _, c := range []struct {
		arch string
		size int
		want int
	}{
		{"vgg11", 224, 128_812_810},
		{"vgg13", 224, 128_997_706},
		{"vgg16-1", 224, 129_591_370},
		{"vgg16", 224, 134_309_962},
		{"vgg19", 224, 139_622_218},
		{"vgg16", 32, 33_646_666},
	} {
		_, n, err := layers.Describe(config(t, c.arch, c.size))
		if err != nil {
			t.Fatal(err)
		}
		if n != c.want {
			t.Errorf("%s at %dx%d: %d parameters, want %d", c.arch, c.size, c.size, n, c.want)
		}
	}
	// Without batch norm: torchvision's vgg16 (138,357,544 parameters with
	// 1000 classes) with a 10-class head.
	cfg := config(t, "vgg16", 224)
	cfg.BatchNorm = false
	if _, n, _ := layers.Describe(cfg); n != 134_301_514 {
		t.Errorf("vgg16 without BN: %d parameters, want 134,301,514", n)
	}
	cfg.Classes = 1000
	if _, n, _ := layers.Describe(cfg); n != 138_357_544 {
		t.Errorf("vgg16 without BN, 1000 classes: %d parameters, want torchvision's 138,357,544", n)
	}
}

// TestStateNames checks the state-dict keys against torchvision's vgg16_bn.
func TestStateNames(t *testing.T) {
	rows, _, err := layers.Describe(config(t, "vgg16", 224))
	if err != nil {
		t.Fatal(err)
	}
	var convs, bns, pools []string
	for _, r := range rows {
		switch r.Kind {
		case "Conv2d":
			convs = append(convs, r.Name)
		case "BatchNorm2d":
			bns = append(bns, r.Name)
		case "MaxPool2d":
			pools = append(pools, r.Name)
		}
	}
	// torchvision's vgg16_bn: conv at 0,3,7,10,14,17,20,24,27,30,34,37,40.
	want := "features.0 features.3 features.7 features.10 features.14 features.17 features.20 features.24 features.27 features.30 features.34 features.37 features.40"
	if got := strings.Join(convs, " "); got != want {
		t.Errorf("convolutions at %s\nwant %s", got, want)
	}
	if len(bns) != 13 || bns[12] != "features.41" || pools[4] != "features.43" {
		t.Errorf("batch norms %v, pools %v", bns, pools)
	}
	last := rows[len(rows)-1]
	if last.Name != "classifier.6" || last.Out[0] != 10 || rows[len(rows)-7].In[0] != 512*7*7 {
		t.Errorf("classifier: %+v", rows[len(rows)-7:])
	}
}

func TestParseCfg(t *testing.T) {
	c, err := layers.ParseCfg("64, M, 1x1:32, LRN")
	if err != nil {
		t.Fatal(err)
	}
	if c.String() != "64,M,1x1:32,LRN" {
		t.Errorf("round trip: %s", c)
	}
	var j layers.Cfg
	if err := json.Unmarshal([]byte(`[8, "M", 16]`), &j); err != nil || j.String() != "8,M,16" {
		t.Errorf("json: %v %v", j, err)
	}
	for _, bad := range []string{"", "M,64", "64,x", "64,-3", "1x1:0"} {
		if _, err := layers.ParseCfg(bad); err == nil {
			t.Errorf("ParseCfg(%q) accepted", bad)
		}
	}
	// A count beyond int is Validate's bound, not "want a positive count".
	if _, err := layers.ParseCfg("99999999999999999999,M"); err == nil || !strings.Contains(err.Error(), "too many channels") {
		t.Errorf("ParseCfg of a count beyond int: %v", err)
	}
	if _, err := layers.Arch("vgg17"); err == nil || !strings.Contains(err.Error(), "vgg16") {
		t.Errorf("unknown arch error should list the names: %v", err)
	}
	// A one-entry list that is not a convolution is a list, not a name.
	for _, s := range []string{"M", "lrn", "[M]"} {
		if _, err := layers.Arch(s); err == nil || !strings.Contains(err.Error(), "must start with a convolution") {
			t.Errorf("Arch(%q): %v", s, err)
		}
	}
	cfg := config(t, "vgg16", 48)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "multiple of 32") {
		t.Errorf("size 48 accepted: %v", err)
	}
}

// TestConfigBounds: sizes no VGG has are errors that say the bound, before
// anything is allocated, and so is a model too large to hold.
func TestConfigBounds(t *testing.T) {
	pools := func(n int) func(*layers.Config) {
		return func(c *layers.Config) {
			for range n {
				c.Cfg = append(c.Cfg, layers.Item{Kind: layers.Pool})
			}
		}
	}
	for _, c := range []struct {
		edit   func(*layers.Config)
		says   string
		fields string // the ConfigError's; "" where Validate passes
	}{
		{func(c *layers.Config) { c.Cfg[0].Out = 1 << 30 }, "channels: want 1 to 16384", "Cfg"},
		{func(c *layers.Config) { c.Cfg[0].K = 5 }, "5x5 kernel", "Cfg"},
		{func(c *layers.Config) { c.ImageSize = 1 << 30 }, "image size 1073741824: want 1 to 4096", "ImageSize"},
		{func(c *layers.Config) { c.Hidden = 1 << 30 }, "hidden width", "Hidden"},
		{func(c *layers.Config) { c.Classes = 1 << 30 }, "classes: want 2 to 65536", "Classes"},
		{func(c *layers.Config) { c.Dropout = 1 }, "dropout 1 must be in [0, 1)", "Dropout"},
		// vgg11 has 5 max-pools: one more wants a multiple of 64, and 8 more,
		// 13 in all, cannot fit the largest image.
		{pools(1), "image size 32 must be a positive multiple of 64 (the layer list has 6 max-pools): 64, say", "ImageSize Cfg"},
		{func(c *layers.Config) { c.ImageSize = 48 }, "image size 48 must be a positive multiple of 32 (the layer list has 5 max-pools): 32 or 64, say", "ImageSize Cfg"},
		{func(c *layers.Config) {
			c.Cfg, c.ImageSize = layers.Cfg{{Kind: layers.Conv, Out: 8, K: 3}, {Kind: layers.Pool}}, 5
		}, "(the layer list has 1 max-pool): 4 or 6, say", "ImageSize Cfg"},
		{pools(8), "the layer list has 13 max-pools: at most 12", "Cfg"},
		{pools(70), "the layer list has 75 max-pools: at most 12", "Cfg"},
		{func(c *layers.Config) {
			for len(c.Cfg) <= layers.MaxLayers {
				c.Cfg = append(c.Cfg, layers.Item{Kind: layers.Conv, Out: 8, K: 3})
			}
		}, "at most 256", "Cfg"},
		// Allowed one by one, too large together: 4096 channels at 4096x4096
		// into the first Linear.
		{func(c *layers.Config) { c.Cfg, c.ImageSize = layers.Cfg{{Kind: layers.Conv, Out: 4096, K: 1}}, 4096 }, "in classifier.0.weight alone: its input is 68719476736 wide", ""},
		// The tensor at fault named, not always the first Linear.
		{func(c *layers.Config) {
			c.Cfg, c.ImageSize, c.Hidden = layers.Cfg{{Kind: layers.Conv, Out: 8, K: 3}, {Kind: layers.Pool}}, 2, 65536
		}, "the largest tensor is classifier.3.weight [65536 65536]: a narrower hidden layer shrinks it", ""},
	} {
		cfg := config(t, "vgg11", 32)
		c.edit(&cfg)
		_, err := layers.New(cpu.New(), cfg)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: want an error saying %q", err, c.says)
		}
		var ce *layers.ConfigError
		if got := ""; errors.As(cfg.Validate(), &ce) && strings.Join(ce.Fields, " ") != c.fields || ce == nil && c.fields != "" {
			if ce != nil {
				got = strings.Join(ce.Fields, " ")
			}
			t.Errorf("%q: Validate's fields %q, want %q", c.says, got, c.fields)
		}
	}
}

// TestInit checks torchvision's initialisation statistics.
func TestInit(t *testing.T) {
	cfg := config(t, "vgg11", 32)
	cfg.Hidden = 256
	m, err := layers.New(cpu.New(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	for _, p := range m.Params() {
		v := cpu.Data(p.W)
		var s, ss float64
		for _, x := range v {
			s += float64(x)
			ss += float64(x) * float64(x)
		}
		mean, std := s/float64(len(v)), math.Sqrt(ss/float64(len(v)))
		var want float64
		switch {
		case len(p.W.Shape) == 4:
			want = math.Sqrt(2 / float64(p.W.Shape[0]*9))
		case len(p.W.Shape) == 2:
			want = 0.01
		case strings.HasSuffix(p.Name, ".weight"): // BN
			if mean != 1 || std != 1 {
				t.Errorf("%s: BN weight not all ones", p.Name)
			}
			continue
		default: // biases
			if ss != 0 {
				t.Errorf("%s: bias not zero", p.Name)
			}
			continue
		}
		if len(v) > 1000 && (math.Abs(std/want-1) > 0.05 || math.Abs(mean) > 0.1*want) {
			t.Errorf("%s: mean %.3g std %.4g, want 0 and %.4g", p.Name, mean, std, want)
		}
	}
}

// TestStateRoundTrip saves a model's state into another and checks that
// mismatches are named.
func TestStateRoundTrip(t *testing.T) {
	be := cpu.New()
	cfg := config(t, "vgg11-lrn", 32)
	cfg.Hidden = 32
	a, _ := layers.New(be, cfg)
	a.Init(3)
	b, _ := layers.New(be, cfg)
	// Running statistics and counts of their own, not the initial ones
	// that b already holds: every tensor and count must come across.
	saved := a.State()
	n := int64(40)
	for k := range saved.Counts {
		n++
		saved.Counts[k] = n
	}
	for k, h := range saved.Floats {
		if strings.Contains(k, ".running_") {
			for j := range h.Data {
				h.Data[j] = float32(j%7) + 0.5
			}
		}
	}
	if err := b.LoadState(saved); err != nil {
		t.Fatal(err)
	}
	got := b.State()
	if len(got.Counts) == 0 || !maps.Equal(got.Counts, saved.Counts) || len(got.Floats) != len(saved.Floats) {
		t.Fatalf("counts after load %v, want %v; %d tensors, want %d", got.Counts, saved.Counts, len(got.Floats), len(saved.Floats))
	}
	for name, h := range saved.Floats {
		if !slices.Equal(got.Floats[name].Data, h.Data) {
			t.Fatalf("%s differs after load", name)
		}
	}
	cfg2 := config(t, "vgg11", 32)
	cfg2.Hidden = 32
	c, _ := layers.New(be, cfg2)
	err := c.LoadState(a.State())
	if err == nil || !strings.Contains(err.Error(), "features.5.weight: have [128 64 3 3], model wants [128]") {
		t.Fatalf("loading vgg11-lrn into vgg11: %v", err)
	}

	// Weights that are not numbers (a diverged run's, a damaged file's)
	// are refused, the first such value named, not loaded and run.
	st := a.State()
	bias := st.Floats["classifier.6.bias"]
	bias.Data = slices.Clone(bias.Data)
	bias.Data[2] = float32(math.Inf(-1))
	st.Floats["classifier.6.bias"] = bias
	err = b.LoadState(st)
	if err == nil || !strings.Contains(err.Error(), "weights that are not numbers (a diverged run's?): classifier.6.bias[2] is -Inf") {
		t.Fatalf("loading a state with an infinite bias: %v", err)
	}
	if _, _, err := b.LoadMatching(st); err == nil || !strings.Contains(err.Error(), "classifier.6.bias[2] is -Inf") {
		t.Fatalf("LoadMatching (--init, --pretrained) a state with an infinite bias: %v", err)
	}
	// So is a negative running variance, whose square root would make
	// every evaluation output NaN.
	st = a.State()
	v := st.Floats["features.1.running_var"]
	v.Data = slices.Clone(v.Data)
	v.Data[5] = -1
	st.Floats["features.1.running_var"] = v
	want := "negative running variances, which no batch gives (a damaged or edited file?): features.1.running_var[5] is -1"
	if err := b.LoadState(st); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("loading a state with a negative variance: %v", err)
	}
	if _, _, err := b.LoadMatching(st); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("LoadMatching a state with a negative variance: %v", err)
	}
}

// TestForwardBackwardShapes runs every named variant at 32x32 once.
func TestForwardBackwardShapes(t *testing.T) {
	be := cpu.New()
	for _, arch := range layers.Archs() {
		cfg := config(t, arch, 32)
		cfg.Hidden = 16
		m, err := layers.New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		x := be.New(2, 3, 32, 32)
		for i := range cpu.Data(x) {
			cpu.Data(x)[i] = float32(i%17) / 17
		}
		logits := m.Forward(x, true)
		if logits.Shape[0] != 2 || logits.Shape[1] != 10 {
			t.Fatalf("%s: logits %v", arch, logits.Shape)
		}
		dl := be.New(2, 10)
		be.Fill(dl, 0.1)
		m.Backward(dl)
		var norm float64
		for _, g := range cpu.Data(m.Grads()) {
			norm += float64(g) * float64(g)
		}
		if norm == 0 || math.IsNaN(norm) {
			t.Errorf("%s: gradient norm %g", arch, norm)
		}
		m.Free()
	}
}

// TestNoBatchNorm checks torchvision's vgg16 (without BN) names and a
// training step of it.
func TestNoBatchNorm(t *testing.T) {
	cfg := config(t, "vgg16", 32)
	cfg.BatchNorm, cfg.Hidden = false, 16
	rows, _, err := layers.Describe(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var convs []string
	for _, r := range rows {
		if r.Kind == "BatchNorm2d" {
			t.Fatalf("%s: batch norm in a model without it", r.Name)
		}
		if r.Kind == "Conv2d" {
			convs = append(convs, strings.TrimPrefix(r.Name, "features."))
		}
	}
	if got := strings.Join(convs, ","); got != "0,2,5,7,10,12,14,17,19,21,24,26,28" {
		t.Errorf("convolutions at %s, torchvision's vgg16 has them at 0,2,5,7,10,12,14,17,19,21,24,26,28", got)
	}
	be := cpu.New()
	m, err := layers.New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(2)
	x := be.New(2, 3, 32, 32)
	be.Fill(x, 0.5)
	dl := be.New(2, 10)
	be.Fill(dl, 0.1)
	m.Forward(x, true)
	m.Backward(dl)
	if len(m.Buffers()) != 0 || len(m.State().Counts) != 0 {
		t.Errorf("running statistics in a model without BN")
	}
}

// TestNumBatchesTracked: every batch norm's num_batches_tracked counts the
// training forwards, as BatchNorm2d's does (evaluations add nothing), and a
// step run again after SetStep back to the step before it (the training
// loop's rerun where a GPU's capture of the step fails) counts once.
func TestNumBatchesTracked(t *testing.T) {
	cfg := config(t, "vgg11", 32)
	cfg.Cfg, _ = layers.ParseCfg("4,M,8,M")
	cfg.ImageSize, cfg.Hidden = 8, 8
	be := cpu.New()
	m, err := layers.New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	x := be.New(2, 3, 8, 8)
	be.Fill(x, 0.5)
	counts := func(want int64, when string) {
		t.Helper()
		c := m.State().Counts
		if len(c) != 2 {
			t.Fatalf("%d num_batches_tracked, want 2: %v", len(c), c)
		}
		for k, v := range c {
			if v != want {
				t.Errorf("%s: %s = %d, want %d", when, k, v, want)
			}
		}
	}
	m.Forward(x, true)
	m.Forward(x, true)
	counts(2, "two training forwards")
	m.Forward(x, false)
	counts(2, "then an evaluation")
	s := m.Step()
	m.Forward(x, true)
	m.SetStep(s)
	m.Forward(x, true)
	counts(3, "then one step run twice")
	m.Forward(x, true)
	counts(4, "then one more step")
	m.Init(1)
	m.Forward(x, true)
	counts(1, "after Init, one training forward")
}

// TestBatchNormDefaults: a configuration that leaves the batch norm's eps
// and momentum at zero gets PyTorch's 1e-5 and 0.1 (the parity fixtures
// give theirs explicitly, so they do not pin these): one training forward
// leaves the same running statistics as those values given, and other
// ones than other values given.
func TestBatchNormDefaults(t *testing.T) {
	be := cpu.New()
	stats := func(eps, momentum float64) map[string][]float32 {
		cfg := config(t, "vgg11", 32)
		cfg.Cfg, _ = layers.ParseCfg("8,M,16,M,M,M,M")
		cfg.Arch, cfg.Hidden, cfg.BNEps, cfg.BNMomentum = cfg.Cfg.String(), 8, eps, momentum
		m, err := layers.New(be, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(5)
		x := be.New(2, 3, 32, 32)
		v := make([]float32, x.Size())
		for i := range v {
			v[i] = float32(i%13) / 7
		}
		be.Upload(x, v)
		m.Forward(x, true)
		out := map[string][]float32{}
		for name, h := range m.State().Floats {
			if strings.Contains(name, ".running_") {
				out[name] = h.Data
			}
		}
		return out
	}
	same := func(a, b map[string][]float32) bool {
		return maps.EqualFunc(a, b, func(x, y []float32) bool { return slices.Equal(x, y) })
	}
	def := stats(0, 0)
	if len(def) == 0 || !same(def, stats(1e-5, 0.1)) {
		t.Error("the defaults' running statistics differ from eps 1e-5, momentum 0.1's")
	}
	// Eps reaches the second batch norm's statistics through the first's
	// output.
	if same(def, stats(1e-5, 0.2)) || same(def, stats(1e-5, 0.01)) || same(def, stats(1e-3, 0.1)) {
		t.Error("momentum 0.2 or 0.01, or eps 1e-3, gives the defaults' running statistics: the test cannot tell them apart")
	}
}

// TestDropoutOffInEvaluation: nn.Dropout is the identity in eval mode, so
// an evaluation forward of a model with dropout 0.5 gives the logits of
// the same weights with dropout 0; in training mode it drops (and scales)
// activations, and the logits differ.
func TestDropoutOffInEvaluation(t *testing.T) {
	be := cpu.New()
	cfg := config(t, "vgg11", 32)
	cfg.Hidden, cfg.Dropout = 32, 0.5
	m, err := layers.New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	plain := cfg
	plain.Dropout = 0
	ref, err := layers.New(be, plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.LoadState(m.State()); err != nil {
		t.Fatal(err)
	}
	x := be.New(2, 3, 32, 32)
	host := make([]float32, x.Size())
	for i := range host {
		host[i] = float32(i%97)/48 - 1
	}
	be.Upload(x, host)
	logits := func(m *layers.Model, train bool) []float32 {
		out := make([]float32, 2*cfg.Classes)
		be.Download(out, m.Forward(x, train))
		return out
	}
	want := logits(ref, false)
	if got := logits(m, false); !slices.Equal(got, want) {
		t.Errorf("evaluation with dropout 0.5: logits %v, want those without dropout %v", got, want)
	}
	if got := logits(m, true); slices.Equal(got, want) {
		t.Errorf("training with dropout 0.5 gave the logits without dropout: the set-up does not exercise dropout")
	}
}
