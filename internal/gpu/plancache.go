//go:build linux && cgo

package gpu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/kernels"
)

// The engine each convolution direction chose through the backend API,
// remembered on disk between runs beside the compiled kernels (Options.
// KernelCache; "off" turns both off). A later run on the same GPU model
// and cuDNN version builds that engine's plan alone instead of building
// and timing every candidate, which took most of the first step's 13 s at
// 224x224 in bf16, and runs it once to check it. Where the remembered
// engine is not offered, does not fit any more (less free memory for its
// workspace) or fails to run (then it is forgotten), the direction is
// searched as without the file. A choice that the workspace limit
// narrowed (free memory, which another run may have more of) is not
// remembered.

// enginePicks is the file's content: the engine's global index by
// planKey.
type enginePicks map[string]int64

// planCache is the backend's view of its file.
type planCache struct {
	path   string // "" when off
	loaded bool
	picks  enginePicks
}

// planCachePath is where the choices for this backend's GPU and cuDNN
// live, "" when caching is off or there is no cache directory.
func (b *Backend) planCachePath() string {
	dir := b.opt.KernelCache
	switch dir {
	case "off":
		return ""
	case "":
		base, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(base, "vgg16", "cudnn")
	}
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, fmt.Sprintf("%s-sm%d%d-%dsm-cuda%s-cudnn%s", b.info.Name, b.info.Major, b.info.Minor, b.info.SMs, b.info.CUDA, b.info.CuDNN))
	return filepath.Join(dir, "engines-"+name+".json")
}

// planKey names a direction of a geometry together with what else decides
// the choice: determinism and the workspace cap. (A pick is an engine's
// global index, its knobs left to the heuristics, which list an engine
// once.)
func (b *Backend) planKey(p *convPlan, dir cuda.ConvDir) string {
	return fmt.Sprintf("%s %s deterministic=%v workspace=%d", p.key, dir, b.opt.Deterministic, b.opt.MaxWorkspaceMiB)
}

// pickedEngine returns the engine remembered for key, if any.
func (b *Backend) pickedEngine(key string) (int64, bool) {
	c := &b.plans
	if !c.loaded {
		c.loaded, c.path = true, b.planCachePath()
		if data, err := os.ReadFile(c.path); c.path != "" && err == nil {
			// A file that does not parse is ignored, and replaced at the
			// next choice.
			_ = json.Unmarshal(data, &c.picks)
		}
	}
	e, ok := c.picks[key]
	return e, ok
}

// rememberEngine records the engine chosen for key, and forgetEngine
// drops it (it failed to run).
func (b *Backend) rememberEngine(key string, engine int64) {
	c := &b.plans
	if old, ok := b.pickedEngine(key); ok && old == engine {
		return
	}
	if c.picks == nil {
		c.picks = enginePicks{}
	}
	c.picks[key] = engine
	b.savePicks()
}

func (b *Backend) forgetEngine(key string) {
	if _, ok := b.pickedEngine(key); ok {
		delete(b.plans.picks, key)
		b.savePicks()
	}
}

// savePicks rewrites the file (kernels.WriteCache: never half a file to a
// concurrent reader; two runs choosing at once keep the last one's picks).
func (b *Backend) savePicks() {
	c := &b.plans
	if c.path == "" {
		return
	}
	if data, err := json.MarshalIndent(c.picks, "", "\t"); err == nil {
		kernels.WriteCache(c.path, append(data, '\n'))
	}
}
