//go:build linux && cgo

package gpu

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vgg16/vgg16/internal/cuda"
	"github.com/vgg16/vgg16/internal/gpu/gputest"
)

// graphEngines returns, for every convolution direction run so far on be,
// the engine index of its backend-API plan, or -1 where it runs through
// the legacy API; want checks each key.
func graphEngines(t *testing.T, be *Backend, want func(k convKey, dir cuda.ConvDir, engine int64, why string)) {
	t.Helper()
	if len(be.desc.convs) == 0 {
		t.Fatal("no convolution ran")
	}
	for k, p := range be.desc.convs {
		for dir := range p.graph {
			g := p.graph[dir]
			switch {
			case g != nil && g.plan != 0:
				want(k, cuda.ConvDir(dir), g.info.Index, "")
			case g != nil:
				t.Errorf("%s %s: a plan built but never chosen", k, cuda.ConvDir(dir))
			case p.found[dir] || p.graphWhy[dir] != "" || p.none[dir]:
				want(k, cuda.ConvDir(dir), -1, p.graphWhy[dir])
			}
		}
	}
}

// kWorkspace0Fake is the workspace the stand-in's engine 0 asks for
// (kWorkspace0 in fakecuda.cpp).
const kWorkspace0Fake = 4096

// TestFakeCUDAConvGraph: with precision tf32 every convolution direction
// runs through the backend API by default, matches the CPU, and gives the
// same numbers as the legacy API; the candidates are timed and the
// fastest kept: the stand-in's engine 3, which only its FALLBACK list
// offers (its runs cost the least simulated time), unless Deterministic
// is set (engine 0, the deterministic one that builds without compiling);
// ConvAPI "legacy" never builds a plan.
func TestFakeCUDAConvGraph(t *testing.T) {
	for _, c := range []struct {
		name string
		opt  Options
		want int64 // the engine every direction must run, -1 for legacy
	}{
		{"default", Options{}, 3},
		{"channels-last", Options{ChannelsLast: true}, 3}, // NHWC operand strides
		{"deterministic", Options{Deterministic: true}, 0},
		{"legacy", Options{ConvAPI: "Legacy"}, -1},
		{"fp32", Options{Precision: "fp32"}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opt.Sync = true
			be := fakeBackend(t, c.opt)
			tol := 5e-3
			if c.opt.Precision == "fp32" {
				tol = 1e-4
			}
			testConvolution(t, be, tol)
			graphEngines(t, be, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
				if engine != c.want {
					t.Errorf("%s %s: engine %d (%s), want %d", k, dir, engine, why, c.want)
				}
				if c.want < 0 && why != "" {
					t.Errorf("%s %s: legacy for %q, want it by choice", k, dir, why)
				}
			})
			// The chosen engines need no workspace: the candidate that
			// wanted one was timed in scratch freed afterwards.
			if c.want == 3 && be.mem.ws.bytes != 0 {
				t.Errorf("shared cuDNN workspace of %d bytes where the engines chosen need none", be.mem.ws.bytes)
			}
			if c.want == 0 && be.mem.ws.bytes < kWorkspace0Fake {
				t.Errorf("shared cuDNN workspace of %d bytes, want at least the chosen engine's %d", be.mem.ws.bytes, kWorkspace0Fake)
			}
			if c.want >= 0 {
				for _, s := range be.ConvEngines() {
					if !strings.Contains(s, "graph engine") {
						t.Errorf("ConvEngines: %s", s)
					}
				}
			}
		})
	}
}

// TestFakeCUDAConvGraphTimedAtMost: no more than maxGraphTimed plans are
// built and timed a direction, mode A's first: with one, the stand-in's
// mode A favourite (engine 1) runs, not FALLBACK's faster engine 3.
func TestFakeCUDAConvGraphTimedAtMost(t *testing.T) {
	defer func(n int) { maxGraphTimed = n }(maxGraphTimed)
	maxGraphTimed = 1
	be := fakeBackend(t, Options{Sync: true})
	testConvolution(t, be, 5e-3)
	graphEngines(t, be, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
		if engine != 1 {
			t.Errorf("%s %s: engine %d (%s), want 1", k, dir, engine, why)
		}
	})
}

// TestFakeCUDAConvGraphMatchesLegacy runs the same convolutions on a
// backend through each API: the stand-in computes both with one
// reference, so the results must be identical, bit for bit — which checks
// the operand order, strides, alpha and beta the graph path hands over.
func TestFakeCUDAConvGraphMatchesLegacy(t *testing.T) {
	for _, prec := range []string{"tf32", "bf16"} {
		t.Run(prec, func(t *testing.T) {
			g := fakeBackend(t, Options{Precision: prec, Sync: true})
			l := fakeBackend(t, Options{Precision: prec, Sync: true, ConvAPI: "legacy"})
			a, b := runConvs(t, g), runConvs(t, l)
			for name, va := range a {
				vb := b[name]
				for i := range va {
					if math.Float32bits(va[i]) != math.Float32bits(vb[i]) {
						t.Errorf("%s[%d]: %v through the graph API, %v through the legacy one", name, i, va[i], vb[i])
						break
					}
				}
			}
			graphEngines(t, g, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
				if engine < 0 {
					t.Errorf("%s %s: legacy (%s) on the graph backend", k, dir, why)
				}
			})
		})
	}
}

// runConvs runs the three directions of a few geometries on be from fixed
// inputs and returns every output.
func runConvs(t *testing.T, be *Backend) map[string][]float32 {
	out := map[string][]float32{}
	w := newTwin(t, be, 7)
	for _, s := range []struct{ n, ci, h, wd, co, k, pad int }{{2, 3, 6, 6, 8, 3, 1}, {2, 8, 5, 7, 4, 1, 0}} {
		oh, ow := s.h+2*s.pad-s.k+1, s.wd+2*s.pad-s.k+1
		x := w.act(w.normal(s.n*s.ci*s.h*s.wd, 1), s.n, s.ci, s.h, s.wd)
		wt := w.put(w.normal(s.co*s.ci*s.k*s.k, 0.3), s.co, s.ci, s.k, s.k)
		bias := w.put(w.normal(s.co, 1), s.co)
		y := w.act(make([]float32, s.n*s.co*oh*ow), s.n, s.co, oh, ow)
		dy := w.act(w.normal(s.n*s.co*oh*ow, 1), s.n, s.co, oh, ow)
		dx := w.act(make([]float32, s.n*s.ci*s.h*s.wd), s.n, s.ci, s.h, s.wd)
		dw, db := w.zeros(s.co, s.ci, s.k, s.k), w.zeros(s.co)
		be.ConvForward(y.g, x.g, wt.g, bias.g, s.pad)
		be.ConvBackwardData(dx.g, dy.g, wt.g, s.pad)
		be.ConvBackwardFilter(dw.g, db.g, x.g, dy.g, s.pad)
		for name, p := range map[string]pair{"y": y, "dx": dx, "dw": dw, "db": db} {
			_, v := w.host(p)
			out[fmt.Sprint(p.c.Shape)+name] = v
		}
	}
	return out
}

// convSuites are the op tests whose convolutions the graph-API tests
// check, per precision.
var convSuites = []struct {
	prec string
	test func(t *testing.T, be *Backend)
}{
	{"tf32", func(t *testing.T, be *Backend) { testConvolution(t, be, 5e-3) }},
	{"bf16", func(t *testing.T, be *Backend) { testHalfOps(t, be, bf16Tol) }},
}

// TestFakeCUDAConvGraphFallback: where the backend API builds no plan (the
// stand-in refuses fewer than 8 input channels: every engine of
// heuristics mode A fails to finalize, FALLBACK has none) that direction
// runs through the legacy API, says why, and the results still match the
// CPU; the other geometries keep the graph path. With bf16 the legacy
// search then finds bf16 algorithms as before.
func TestFakeCUDAConvGraphFallback(t *testing.T) {
	t.Setenv("FAKECUDA_GRAPH_MIN_C", "8")
	for _, c := range convSuites {
		t.Run(c.prec, func(t *testing.T) {
			be := fakeBackend(t, Options{Precision: c.prec, Sync: true})
			c.test(t, be)
			fell, kept := 0, 0
			graphEngines(t, be, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
				switch {
				case k.ci < 8 && engine >= 0:
					t.Errorf("%s %s: graph engine %d, which the stand-in refuses", k, dir, engine)
				case k.ci < 8:
					fell++
					if !strings.Contains(why, "no usable engine") || !strings.Contains(why, "heuristics FALLBACK") {
						t.Errorf("%s %s: legacy because %q", k, dir, why)
					}
					if p := be.desc.convs[k]; !p.found[dir] {
						t.Errorf("%s %s: no legacy algorithm either", k, dir)
					}
				case engine < 0:
					t.Errorf("%s %s: legacy (%s), want the graph path", k, dir, why)
				default:
					kept++
				}
			})
			if fell == 0 || kept == 0 {
				t.Errorf("%d directions fell back, %d kept the graph path: want some of each", fell, kept)
			}
		})
	}
}

// TestFakeCUDAConvAPIOption: a ConvAPI other than graph or legacy is
// refused, naming the value and the choices.
func TestFakeCUDAConvAPIOption(t *testing.T) {
	_, err := New(Options{ConvAPI: "fast"})
	if err == nil || !strings.Contains(err.Error(), `cuDNN API "fast": want graph (the default) or legacy`) {
		t.Errorf("ConvAPI fast: %v", err)
	}
	for _, api := range []string{"", "graph", "legacy", "GRAPH"} {
		if err := parseConvAPI(api); err != nil {
			t.Errorf("ConvAPI %q: %v", api, err)
		}
	}
}

// TestConvGraphGPU, on a real GPU (skipped elsewhere): in tf32 and bf16
// every convolution direction of the op tests builds a backend-API plan
// (a fallback to the legacy API fails the test, with cuDNN's reason: a
// wrong enum or attribute shows here first) and matches the CPU; the
// engines chosen are logged.
func TestConvGraphGPU(t *testing.T) {
	for _, c := range convSuites {
		t.Run(c.prec, func(t *testing.T) {
			be := gpuBackend(t, c.prec)
			if !be.dnn.HasGraph() {
				t.Fatalf("%s: cuDNN without the backend API", be.Name())
			}
			c.test(t, be)
			for _, s := range be.ConvEngines() {
				t.Log(s)
			}
			graphEngines(t, be, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
				switch {
				case engine >= 0 || k.half != (c.prec == "bf16"):
				case k.half && k.ci < 8: // cuDNN may lack bf16 engines for so few channels
					t.Logf("%s %s: legacy API: %s", k, dir, why)
				default:
					t.Errorf("%s %s: legacy API: %s", k, dir, why)
				}
			})
		})
	}
}

// TestFakeCUDAConvGraphRemembered: the engines chosen by timing are kept
// in a file beside the compiled kernels, and a later backend on the same
// GPU builds each remembered engine alone (run once to check it), with the
// same results; a file naming engines the heuristics no longer offer, or
// one that does not parse, sends every direction back to the full search,
// and so does a remembered engine that fails to run, which is forgotten.
func TestFakeCUDAConvGraphRemembered(t *testing.T) {
	libs, err := cuda.LoadDirs([]string{gputest.BuildFakeCUDA(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// run convolves on a new backend and checks that every direction ran
	// engine want, remembered from an earlier run or not.
	run := func(stage string, want int64, remembered bool) map[string][]float32 {
		be, err := newWithLibs(libs, Options{Sync: true, KernelCache: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		out := runConvs(t, be)
		// What the search cost, as vgg16 bench reports it: every direction
		// searched through the graph API, remembered or not, at least one
		// plan each, none through the legacy API. A remembered engine that
		// fails counts as a search of its own before the full one.
		dirs := 0
		for _, p := range be.desc.convs {
			dirs += len(p.graph)
		}
		s := be.EngineSearch()
		rem := 0
		if remembered {
			rem = dirs
		}
		if os.Getenv("FAKECUDA_ENGINE_FAILS") != "" {
			rem = dirs
			dirs *= 2
		}
		if s["directions"] != float64(dirs) || s["remembered"] != float64(rem) || s["plans"] < float64(dirs) || s["legacy"] != 0 || !(s["build_s"] > 0) || !(s["timing_s"] > 0) {
			t.Errorf("%s: EngineSearch %v; want %d directions, %d remembered, a plan or more each, no legacy search, some time", stage, s, dirs, rem)
		}
		for k, p := range be.desc.convs {
			for d, g := range p.graph {
				if g == nil {
					t.Errorf("%s: %s %s: not through the graph API (%s)", stage, k, cuda.ConvDir(d), p.graphWhy[d])
					continue
				}
				if g.info.Index != want || g.remembered != remembered {
					t.Errorf("%s: %s %s: engine %d, remembered %v; want %d, %v", stage, k, cuda.ConvDir(d), g.info.Index, g.remembered, want, remembered)
				}
			}
		}
		return out
	}
	picks := func() (string, map[string]int64) {
		files, _ := filepath.Glob(filepath.Join(dir, "engines-*.json"))
		if len(files) != 1 {
			t.Fatalf("engine files %v, want one", files)
		}
		data, err := os.ReadFile(files[0])
		var m map[string]int64
		if err == nil {
			err = json.Unmarshal(data, &m)
		}
		if err != nil || len(m) == 0 {
			t.Fatalf("engine file %s: %v %s", files[0], err, data)
		}
		return files[0], m
	}
	first := run("first run", 3, false) // the stand-in's fastest
	file, m := picks()
	again := run("second run", 3, true)
	for name, v := range first {
		for i := range v {
			if math.Float32bits(v[i]) != math.Float32bits(again[name][i]) {
				t.Fatalf("%s[%d]: %v, then %v with the remembered engine", name, i, v[i], again[name][i])
			}
		}
	}

	for k := range m {
		m[k] = 99 // an engine the stand-in does not have
	}
	data, _ := json.Marshal(m)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run("engines no longer offered", 3, false)
	if err := os.WriteFile(file, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("a file that does not parse", 3, false)

	// Engine 3 breaks: its remembered choice is tried, fails, and the
	// search picks the next fastest, engine 1, which the file then holds.
	t.Setenv("FAKECUDA_ENGINE_FAILS", "3")
	run("the remembered engine fails", 1, false)
	for k, e := range func() map[string]int64 { _, m := picks(); return m }() {
		if e != 1 {
			t.Errorf("after engine 3 failed: %s remembered as %d, want 1", k, e)
		}
	}
}

// TestFakeCUDAConvGraphTightNotRemembered: a choice made while the
// workspace limit left an engine out (here engine 0, made to want 2 MiB
// against a 1 MiB cap) holds for that limit only and is not remembered:
// the next run searches again.
func TestFakeCUDAConvGraphTightNotRemembered(t *testing.T) {
	t.Setenv("FAKECUDA_ENGINE0_WORKSPACE", fmt.Sprint(2<<20))
	libs, err := cuda.LoadDirs([]string{gputest.BuildFakeCUDA(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, stage := range []string{"first run", "second run"} {
		be, err := newWithLibs(libs, Options{Sync: true, KernelCache: dir, MaxWorkspaceMiB: 1})
		if err != nil {
			t.Fatal(err)
		}
		runConvs(t, be)
		graphEngines(t, be, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
			if engine != 3 {
				t.Errorf("%s: %s %s: engine %d (%s), want 3", stage, k, dir, engine, why)
			}
		})
		for k, p := range be.desc.convs {
			for d, g := range p.graph {
				if g != nil && (!g.tight || g.remembered) {
					t.Errorf("%s: %s %s: tight %v, remembered %v; want a tight choice, searched", stage, k, cuda.ConvDir(d), g.tight, g.remembered)
				}
			}
		}
		be.Close()
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "engines-*.json")); len(files) != 0 {
		t.Errorf("tight choices written to %v", files)
	}
}

// TestFakeCUDAConvGraphTimedWhereMemoryIsShort: a candidate that the
// workspace limit admits (half the free memory plus the shared workspace)
// but that does not fit beside the shared workspace is timed after the
// shared workspace is let go, and the shared workspace is made again for
// the plan chosen. Here the first direction's choice, engine 3, holds
// half the free memory as the shared workspace; engine 0, skipped there,
// wants 60% of it, which the later directions' limit admits.
func TestFakeCUDAConvGraphTimedWhereMemoryIsShort(t *testing.T) {
	t.Setenv("FAKECUDA_TOTAL_MEM", fmt.Sprint(512<<20))
	be := fakeBackend(t, Options{Sync: true})
	free, _, err := be.drv.MemGetInfo()
	if err != nil {
		t.Fatal(err)
	}
	a, b := (free/2)&^(1<<20-1)-1<<20, free*6/10
	t.Setenv("FAKECUDA_ENGINE3_WORKSPACE", fmt.Sprint(a))
	t.Setenv("FAKECUDA_ENGINE0_WORKSPACE", fmt.Sprint(b))
	runConvs(t, be)
	timed0 := false
	for k, p := range be.desc.convs {
		for d, g := range p.graph {
			if g == nil {
				continue
			}
			if g.info.Index != 3 {
				t.Errorf("%s %s: engine %d, want 3", k, cuda.ConvDir(d), g.info.Index)
			}
			timed0 = timed0 || !g.tight
		}
	}
	if !timed0 {
		t.Error("engine 0 was never a candidate: the test does not reach the short memory")
	}
	if be.mem.ws.bytes < a {
		t.Errorf("shared workspace %d bytes after the search, want engine 3's %d", be.mem.ws.bytes, a)
	}
}

// TestFakeCUDAConvGraphWorkspaceKept: a later search that lets the shared
// workspace go (a candidate wants more than it holds) makes it again as
// large as the plans chosen before need, and those plans still run on it.
// Engine 3, the fastest, wants 8 MiB for the first geometry and 1 MiB for
// the second, whose search also times engine 0 at 16 MiB.
func TestFakeCUDAConvGraphWorkspaceKept(t *testing.T) {
	be := fakeBackend(t, Options{Sync: true})
	w := newTwin(t, be, 7)
	conv := func(ci, h int) func() {
		x := w.actRandn(1, 2, ci, h, h)
		wt, bias := w.randn(0.3, 8, ci, 3, 3), w.randn(1, 8)
		y := w.actZeros(2, 8, h, h)
		return func() {
			be.ConvForward(y.g, x.g, wt.g, bias.g, 1)
			w.c.ConvForward(y.c, x.c, wt.c, bias.c, 1)
			w.check(fmt.Sprintf("conv %d channels %dx%d", ci, h, h), y, 5e-3)
		}
	}
	first, second := conv(8, 6), conv(16, 4)
	t.Setenv("FAKECUDA_ENGINE3_WORKSPACE", fmt.Sprint(8<<20))
	first()
	t.Setenv("FAKECUDA_ENGINE3_WORKSPACE", fmt.Sprint(1<<20))
	t.Setenv("FAKECUDA_ENGINE0_WORKSPACE", fmt.Sprint(16<<20))
	second()
	if be.mem.ws.bytes < 8<<20 {
		t.Errorf("shared workspace %d bytes after the second search, want the first plan's 8 MiB", be.mem.ws.bytes)
	}
	first()
	for k, p := range be.desc.convs {
		if g := p.graph[cuda.ConvForward]; g == nil || g.info.Index != 3 {
			t.Errorf("%s: forward plan %+v, want engine 3's", k, g)
		}
	}
}

// TestFakeCUDAConvGraphLoneCandidateFails: a direction with one candidate
// (Deterministic leaves the stand-in's engine 0 alone) runs it once before
// it is kept, so that an engine that builds but fails to run sends the
// direction to the legacy API instead of failing the step.
func TestFakeCUDAConvGraphLoneCandidateFails(t *testing.T) {
	t.Setenv("FAKECUDA_ENGINE_FAILS", "0")
	be := fakeBackend(t, Options{Sync: true, Deterministic: true})
	runConvs(t, be)
	n := 0
	graphEngines(t, be, func(k convKey, dir cuda.ConvDir, engine int64, why string) {
		n++
		if engine >= 0 || !strings.Contains(why, "fails to run") {
			t.Errorf("%s %s: engine %d (%s), want the legacy API after engine 0 failed", k, dir, engine, why)
		}
	})
	if n == 0 {
		t.Error("no direction searched")
	}
}
