// Package layers builds the VGG family from a torchvision-style layer list
// and runs it forward and backward on any tensor.Backend. It knows nothing
// of devices: every computation is a Backend call.
package layers

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
)

// Kind is the kind of one entry of a layer list.
type Kind int

const (
	Conv Kind = iota // convolution (+ batch norm) + ReLU
	Pool             // 2x2 max-pool, stride 2
	LRN              // local response normalisation (VGG11-LRN)
)

// Item is one entry of a layer list: a convolution with Out channels and a
// K×K kernel, a max-pool, or an LRN.
type Item struct {
	Kind Kind
	Out  int
	K    int
}

func (it Item) String() string {
	switch it.Kind {
	case Pool:
		return "M"
	case LRN:
		return "LRN"
	}
	if it.K == 1 {
		return "1x1:" + strconv.Itoa(it.Out)
	}
	return strconv.Itoa(it.Out)
}

// Cfg is a layer list in torchvision's notation: a number is a 3x3
// convolution with that many output channels, "M" a max-pool; this project
// adds "1x1:N" (a 1x1 convolution, VGG16-1) and "LRN".
type Cfg []Item

func (c Cfg) String() string {
	s := make([]string, len(c))
	for i, it := range c {
		s[i] = it.String()
	}
	return strings.Join(s, ",")
}

// Count is how many of the list's entries are of kind k.
func (c Cfg) Count(k Kind) int {
	n := 0
	for _, it := range c {
		if it.Kind == k {
			n++
		}
	}
	return n
}

// MarshalJSON writes the list as torchvision writes it: numbers and "M".
func (c Cfg) MarshalJSON() ([]byte, error) {
	out := make([]any, len(c))
	for i, it := range c {
		if it.Kind == Conv && it.K == 3 {
			out[i] = it.Out
		} else {
			out[i] = it.String()
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads a list of numbers and strings, as in meta.json.
func (c *Cfg) UnmarshalJSON(b []byte) error {
	var raw []any
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("layer list: %w", err)
	}
	toks := make([]string, len(raw))
	for i, v := range raw {
		switch v := v.(type) {
		case float64:
			toks[i] = strconv.FormatFloat(v, 'f', -1, 64)
		case string:
			toks[i] = v
		default:
			return fmt.Errorf("layer list entry %d: want a number or a string, got %v", i, v)
		}
	}
	parsed, err := parseTokens(toks)
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// ParseCfg reads a comma-separated layer list such as "64,64,M,128,M".
func ParseCfg(s string) (Cfg, error) {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	if s == "" {
		return nil, fmt.Errorf("layer list is empty")
	}
	toks := strings.Split(s, ",")
	for i := range toks {
		toks[i] = strings.Trim(strings.TrimSpace(toks[i]), `"'`)
	}
	return parseTokens(toks)
}

func parseTokens(toks []string) (Cfg, error) {
	var c Cfg
	for i, t := range toks {
		switch {
		case strings.EqualFold(t, "M"):
			c = append(c, Item{Kind: Pool})
		case strings.EqualFold(t, "LRN"):
			c = append(c, Item{Kind: LRN})
		default:
			k := 3
			if rest, ok := strings.CutPrefix(t, "1x1:"); ok {
				k, t = 1, rest
			}
			n, err := strconv.Atoi(t)
			if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(t, "-") {
				// Beyond int (a 32-bit build): Validate's bound, said here.
				return nil, fmt.Errorf("layer list entry %d (from 1) %q: too many channels: want 1 to %d", i+1, toks[i], MaxChannels)
			}
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("layer list entry %d (from 1) %q: want a positive channel count, \"M\", \"1x1:N\" or \"LRN\"", i+1, toks[i])
			}
			c = append(c, Item{Kind: Conv, Out: n, K: k})
		}
	}
	if len(c) == 0 || c[0].Kind != Conv {
		return nil, fmt.Errorf("layer list %q: must start with a convolution", strings.Join(toks, ","))
	}
	return c, nil
}

// archs are the seed's variants (Simonyan & Zisserman, table 1: A, A-LRN,
// B, C, D, E), in torchvision's notation.
var archs = map[string]string{
	"vgg11":     "64,M,128,M,256,256,M,512,512,M,512,512,M",
	"vgg11-lrn": "64,LRN,M,128,M,256,256,M,512,512,M,512,512,M",
	"vgg13":     "64,64,M,128,128,M,256,256,M,512,512,M,512,512,M",
	"vgg16-1":   "64,64,M,128,128,M,256,256,1x1:256,M,512,512,1x1:512,M,512,512,1x1:512,M",
	"vgg16":     "64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512,M",
	"vgg19":     "64,64,M,128,128,M,256,256,256,256,M,512,512,512,512,M,512,512,512,512,M",
}

// Archs lists the named variants.
func Archs() []string {
	names := make([]string, 0, len(archs))
	for n := range archs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Arch returns the layer list of a named variant, or parses s as a layer
// list when it is not a name.
func Arch(s string) (Cfg, error) {
	if l, ok := archs[strings.ToLower(strings.TrimSpace(s))]; ok {
		return ParseCfg(l)
	}
	t := strings.Trim(strings.TrimSpace(s), `[]"'`)
	if strings.Contains(s, ",") || t != "" && t[0] >= '0' && t[0] <= '9' || strings.EqualFold(t, "M") || strings.EqualFold(t, "LRN") {
		return ParseCfg(s) // a layer list, even of one entry
	}
	return nil, fmt.Errorf("unknown architecture %q: want one of %s, or a layer list such as \"64,M,128,M\"", s, strings.Join(Archs(), ", "))
}

// Name is how a network of layer list c is named (Config.Arch): the name
// of the variant whose list it is ("vgg16"), however --arch spelt it, else
// the list as String writes it.
func (c Cfg) Name() string {
	for name, l := range archs {
		if a, err := ParseCfg(l); err == nil && a.String() == c.String() {
			return name
		}
	}
	return c.String()
}

// Config describes one network.
type Config struct {
	Arch      string  `json:"arch"`       // the name it was built from, informational
	Cfg       Cfg     `json:"cfg"`        // layer list
	BatchNorm bool    `json:"batch_norm"` // conv → BN → ReLU (else conv → ReLU)
	ImageSize int     `json:"image_size"` // input is 3×ImageSize×ImageSize
	Hidden    int     `json:"hidden"`     // width of the two hidden Linear layers
	Classes   int     `json:"classes"`
	Dropout   float64 `json:"dropout"` // probability, both dropout layers
	// BN's epsilon and running-statistics momentum; zero means PyTorch's
	// defaults, 1e-5 and 0.1.
	BNEps      float64 `json:"bn_eps,omitempty"`
	BNMomentum float64 `json:"bn_momentum,omitempty"`
}

// Label names the network for messages: its variant and layer list
// ("vgg16 (64,64,M,…)"), or the list alone where it is no named variant.
func (c Config) Label() string {
	if list := c.Cfg.String(); c.Arch != list {
		return fmt.Sprintf("%s (%s)", c.Arch, list)
	}
	return c.Arch
}

// bn returns the batch-norm epsilon and momentum, defaults filled in.
func (c Config) bn() (eps, momentum float64) {
	eps, momentum = c.BNEps, c.BNMomentum
	if eps == 0 {
		eps = 1e-5
	}
	if momentum == 0 {
		momentum = 0.1
	}
	return eps, momentum
}

// DefaultConfig is the seed's VGG16-BN at 224x224 for CIFAR-10.
func DefaultConfig() Config {
	cfg, _ := Arch("vgg16")
	return Config{Arch: "vgg16", Cfg: cfg, BatchNorm: true, ImageSize: 224, Hidden: 4096, Classes: 10, Dropout: 0.5}
}

// Bounds on a configuration, far above any VGG's, so that a mistyped
// flag or a damaged checkpoint is an error, not an allocation that fails.
const (
	MaxChannels  = 1 << 14
	MaxImageSize = 4096
	MaxHidden    = 1 << 16
	MaxClasses   = 1 << 16
	MaxLayers    = 256
	// MaxParams bounds the parameter count (8 GiB of float32; VGG19 at
	// 224x224 has 143.7M), within a 32-bit int.
	MaxParams = 1<<31 - 1
)

// ConfigError is Validate's refusal. Fields are the Config fields that
// could put it right ("Cfg", "ImageSize", "Hidden", "Classes", "Dropout",
// "BN"), the first the likeliest, so that a caller can name its own flags.
type ConfigError struct {
	Fields []string
	Msg    string
}

func (e *ConfigError) Error() string { return "model: " + e.Msg }

func configError(fields []string, format string, args ...any) error {
	return &ConfigError{Fields: fields, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks that the configuration describes a network that can be
// built, within the bounds above, naming the field that is wrong (a
// *ConfigError).
func (c Config) Validate() error {
	pools := c.Cfg.Count(Pool)
	for i, it := range c.Cfg {
		switch {
		case it.Kind == Conv && (it.Out <= 0 || it.Out > MaxChannels):
			return configError([]string{"Cfg"}, "layer %d (from 1) has %d channels: want 1 to %d", i+1, it.Out, MaxChannels)
		case it.Kind == Conv && it.K != 1 && it.K != 3:
			return configError([]string{"Cfg"}, "layer %d (from 1) has a %dx%d kernel: want 3x3 or 1x1", i+1, it.K, it.K)
		}
	}
	switch {
	case len(c.Cfg) == 0:
		return configError([]string{"Cfg"}, "empty layer list")
	case len(c.Cfg) > MaxLayers:
		return configError([]string{"Cfg"}, "%d layers in the list: at most %d", len(c.Cfg), MaxLayers)
	case c.ImageSize <= 0 || c.ImageSize > MaxImageSize:
		return configError([]string{"ImageSize"}, "image size %d: want 1 to %d", c.ImageSize, MaxImageSize)
	case pools >= bits.Len(MaxImageSize): // 1<<pools would overflow further on
		return configError([]string{"Cfg"}, "the layer list has %d max-pools: at most %d, which halve the largest image size, %d, to 1", pools, bits.Len(MaxImageSize)-1, MaxImageSize)
	case c.ImageSize%(1<<pools) != 0:
		m := 1 << pools
		below, above := c.ImageSize/m*m, (c.ImageSize/m+1)*m
		near := fmt.Sprintf("%d or %d", below, above)
		if below == 0 {
			near = strconv.Itoa(above)
		}
		plural := "s"
		if pools == 1 {
			plural = ""
		}
		return configError([]string{"ImageSize", "Cfg"}, "image size %d must be a positive multiple of %d (the layer list has %d max-pool%s): %s, say", c.ImageSize, m, pools, plural, near)
	case c.Hidden <= 0 || c.Hidden > MaxHidden:
		return configError([]string{"Hidden"}, "hidden width %d: want 1 to %d", c.Hidden, MaxHidden)
	case c.Classes < 2 || c.Classes > MaxClasses:
		return configError([]string{"Classes"}, "%d classes: want 2 to %d", c.Classes, MaxClasses)
	case c.Dropout < 0 || c.Dropout >= 1:
		return configError([]string{"Dropout"}, "dropout %g must be in [0, 1)", c.Dropout)
	case c.BNEps < 0 || c.BNMomentum < 0 || c.BNMomentum > 1:
		return configError([]string{"BN"}, "batch-norm eps %g and momentum %g must be in range", c.BNEps, c.BNMomentum)
	}
	return nil
}
