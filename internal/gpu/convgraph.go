//go:build linux && cgo

package gpu

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vgg16/vgg16/internal/cuda"
)

// Convolutions through cuDNN's backend (graph) API (Options.ConvAPI
// "graph", the default for tf32 and bf16). cuDNN 9 serves the legacy
// calls (conv.go) from a few engines only; the backend API reaches all of
// them, Hopper's implicit-GEMM kernels included, as PyTorch does. Each
// (geometry, direction) gets one execution plan, chosen the first time
// that direction runs as cuDNN's Find chooses: the heuristics' candidates
// that finalize, fit the workspace limit and honour Deterministic, timed
// on the real operands, the fastest kept. A direction for which no plan
// builds runs through the legacy API instead (remembered, and said in
// convPlan.graphWhy); strict fp32 always does, keeping CUDNN_FMA_MATH.

// Tensor unique ids of a convolution's operation graph, whatever the
// direction: x [N,Ci,H,W], w [Co,Ci,K,K], y [N,Co,OH,OW].
const (
	uidX = 1
	uidW = 2
	uidY = 3
)

// maxGraphCandidates is how many configurations each heuristics mode is
// asked for (A, then FALLBACK for engines A did not offer), and
// maxGraphTimed how many plans are built and timed in all (PyTorch's
// cudnn.benchmark_limit is 10): a slow candidate at 224x224 costs the
// first step tens of milliseconds.
const maxGraphCandidates = 8

var maxGraphTimed = 10 // a variable for the tests

// graphRuns is how many times each candidate runs to be timed, after one
// untimed run.
const graphRuns = 3

// convGraph is one direction of a geometry through the backend API: the
// descriptors its plan was built from (kept alive with it), the
// candidates built, and once timed the one chosen.
type convGraph struct {
	descs []cuda.BackendDesc // x, w, y tensors, convolution, operation, operation graph
	cands []graphCand        // built, not yet timed; emptied once chosen
	plan  cuda.BackendDesc   // the chosen plan, 0 until chosen
	ws    int64              // its workspace
	info  cuda.EngineInfo    // its engine
	ms    float32            // its measured time (0 when it was the only candidate)
	// remembered: the one candidate is the engine an earlier run chose
	// (plancache.go); tight: the workspace limit left candidates out, so
	// that the choice holds for this run's free memory only and is not
	// remembered.
	remembered, tight bool
}

// graphCand is one finalized execution plan.
type graphCand struct {
	plan cuda.BackendDesc
	ws   int64
	info cuda.EngineInfo
}

// graphAPI reports whether convolutions go through the backend API where
// a plan builds: not in strict fp32, not when Options.ConvAPI says
// legacy, not on a cuDNN without it.
func (b *Backend) graphAPI() bool {
	return !b.strict && !strings.EqualFold(b.opt.ConvAPI, "legacy") && b.dnn.HasGraph()
}

// graphReady reports whether direction dir of p runs through the backend
// API, building its candidate plans the first time it is asked. It must
// be asked before the operands are staged: a false answer sends the
// caller to the legacy search, which for bf16 may widen to float32.
func (b *Backend) graphReady(p *convPlan, dir cuda.ConvDir) bool {
	if !b.graphAPI() || p.graphWhy[dir] != "" {
		return false
	}
	if p.graph[dir] != nil {
		return true
	}
	// Building runs cuDNN's heuristics and finalizes plans, and timing
	// synchronises: neither may happen while a step is being captured.
	b.notInStep("choosing a cuDNN convolution engine for " + p.key.String())
	start := time.Now()
	g, why := b.buildGraph(p, dir)
	b.search.build += time.Since(start)
	if g != nil {
		b.search.directions++
		b.search.plans += len(g.cands)
		if g.remembered {
			b.search.remembered++
		}
	}
	if g == nil {
		p.graphWhy[dir] = why
		return false
	}
	p.graph[dir] = g
	return true
}

// graphOperands are a direction's pointers, in the argument order of
// run (forward x, w, y; backward data w, dy, dx; backward filter x, dy,
// dw), as the unique ids uidX, uidW, uidY want them.
func graphOperands(dir cuda.ConvDir, a, bb, o cuda.DevicePtr) []cuda.DevicePtr {
	switch dir {
	case cuda.ConvForward:
		return []cuda.DevicePtr{a, bb, o}
	case cuda.ConvBackwardData:
		return []cuda.DevicePtr{o, a, bb}
	}
	return []cuda.DevicePtr{a, o, bb}
}

var graphUIDs = []int64{uidX, uidW, uidY}

// graphRun runs direction dir of p (graphReady said yes) on its operands,
// choosing the plan first if this is its first run. It reports false,
// leaving nothing queued, when every candidate failed to run: the caller
// then goes to the legacy API.
func (b *Backend) graphRun(p *convPlan, dir cuda.ConvDir, a, bb, o cuda.DevicePtr) bool {
	ptrs := graphOperands(dir, a, bb, o)
	if g := p.graph[dir]; g.plan == 0 && !b.chooseGraph(p, dir, g, ptrs) {
		return false
	}
	g := p.graph[dir] // chooseGraph replaces a remembered engine that failed
	// The plan is never told the workspace's size: it must hold the plan's
	// need whatever happened to it since the plan was chosen (chooseGraph
	// lets it go while timing; a failure there may not have restored it).
	// A no-op in steady state, and so allowed inside a recorded step.
	b.grow(&b.mem.ws, g.ws, "the cuDNN workspace")
	b.must(b.dnn.Execute(b.dnnH, g.plan, graphUIDs, ptrs, b.mem.ws.ptr), p.key.String()+" "+dir.String())
	return true
}

// buildGraph makes the operation graph of direction dir of p and its
// candidate plans: heuristics mode A, then FALLBACK if A gave none that
// finalizes and fits. It returns nil and the reason when there is none.
func (b *Backend) buildGraph(p *convPlan, dir cuda.ConvDir) (*convGraph, string) {
	k := p.key
	dt := cuda.DNNFloat
	if k.half {
		dt = cuda.DNNBFloat16
	}
	oh, ow := k.h+2*k.pad-k.k+1, k.w+2*k.pad-k.k+1
	g := &convGraph{}
	fail := func(err error) (*convGraph, string) {
		b.destroyGraph(g)
		return nil, "cuDNN graph API: " + err.Error()
	}
	var tens [3]cuda.BackendDesc
	for i, dims := range [3][]int64{
		{int64(k.n), int64(k.ci), int64(k.h), int64(k.w)},  // x
		{int64(k.co), int64(k.ci), int64(k.k), int64(k.k)}, // w
		{int64(k.n), int64(k.co), int64(oh), int64(ow)},    // y
	} {
		t, err := b.dnn.NewGraphTensor(graphUIDs[i], dt, k.nhwc, dims...)
		if err != nil {
			return fail(err)
		}
		g.descs = append(g.descs, t)
		tens[i] = t
	}
	conv, err := b.dnn.NewGraphConv(k.pad)
	if err != nil {
		return fail(err)
	}
	g.descs = append(g.descs, conv)
	op, err := b.dnn.NewConvOp(dir, tens[0], tens[1], tens[2], conv, 1, 0)
	if err != nil {
		return fail(err)
	}
	g.descs = append(g.descs, op)
	graph, err := b.dnn.NewOpGraph(b.dnnH, op)
	if err != nil {
		return fail(err)
	}
	g.descs = append(g.descs, graph)

	// The engine an earlier run chose, alone, when it is still offered and
	// fits (plancache.go).
	limit := b.workspaceLimit()
	if engine, ok := b.pickedEngine(b.planKey(p, dir)); ok {
		for _, mode := range []int{cuda.HeurModeA, cuda.HeurModeFallback} {
			if cfgs, err := b.dnn.EngineConfigs(graph, mode, maxGraphCandidates); err == nil {
				if c, _, _ := b.candidates(cfgs, limit, nil, true, 1, engine); len(c) == 1 {
					g.cands, g.remembered = c, true
					return g, ""
				}
			}
		}
	}

	// Mode A's best guesses, then the FALLBACK list's other engines, all
	// timed: as PyTorch's cudnn.benchmark does, since mode A's ranking
	// missed engines PyTorch finds (32x32 weight gradients took 3x its time).
	var notes []string
	seen := map[int64]bool{}
	for _, mode := range []int{cuda.HeurModeA, cuda.HeurModeFallback} {
		cfgs, err := b.dnn.EngineConfigs(graph, mode, maxGraphCandidates)
		if err != nil {
			notes = append(notes, fmt.Sprintf("heuristics %s: %v", heurName(mode), err))
			continue
		}
		c, why, tight := b.candidates(cfgs, limit, seen, len(g.cands) == 0, maxGraphTimed-len(g.cands), -1)
		g.tight = g.tight || tight
		notes = append(notes, fmt.Sprintf("heuristics %s: %s", heurName(mode), why))
		for _, x := range c {
			seen[x.info.Index] = true
		}
		g.cands = append(g.cands, c...)
	}
	if len(g.cands) > 0 {
		return g, ""
	}
	b.destroyGraph(g)
	return nil, fmt.Sprintf("cuDNN graph API: no usable engine (workspace limit %s; %s)", formatBytes(limit), strings.Join(notes, "; "))
}

func heurName(mode int) string {
	if mode == cuda.HeurModeA {
		return "A"
	}
	return "FALLBACK"
}

// candidates finalizes the plans of engine configurations cfgs (which it
// destroys) that honour the options and fit limit, at most most of them,
// leaving out the engines in seen (candidates already), and all but
// engine only unless only is -1. Engines that compile their kernels at run
// time are taken only when compile is true and no other one is usable:
// finalizing them takes seconds. It also says what it skipped and why, and
// whether it left any out for their workspace.
func (b *Backend) candidates(cfgs []cuda.BackendDesc, limit int64, seen map[int64]bool, compile bool, most int, only int64) ([]graphCand, string, bool) {
	defer func() {
		for _, c := range cfgs {
			b.dnn.DestroyBackend(c)
		}
	}()
	var skipped []string
	tight := false
	usable := make([]bool, len(cfgs))
	infos := make([]cuda.EngineInfo, len(cfgs))
	for i, c := range cfgs {
		info, err := b.dnn.Engine(c)
		switch {
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("config %d: %v", i, err))
		case seen[info.Index], only >= 0 && info.Index != only:
			// a candidate already, or not the one wanted
		case b.opt.Deterministic && info.Has(cuda.NoteNondeterministic):
			skipped = append(skipped, fmt.Sprintf("engine %d: nondeterministic", info.Index))
		case info.Has(cuda.NoteDownConvertInputs):
			// Rounds the inputs to a narrower type: more than TF32 gives away.
			skipped = append(skipped, fmt.Sprintf("engine %d: down-converts its inputs", info.Index))
		default:
			usable[i] = true
		}
		infos[i] = info
	}
	var out []graphCand
	passes := 1
	if compile {
		passes = 2
	}
	for pass := range passes {
		for i, c := range cfgs {
			if !usable[i] || infos[i].Compiles() != (pass == 1) || len(out) >= most {
				continue
			}
			plan, ws, err := b.dnn.NewExecPlan(b.dnnH, c)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("engine %d: %v", infos[i].Index, err))
				continue
			}
			if ws > limit {
				tight = true
				b.dnn.DestroyBackend(plan)
				skipped = append(skipped, fmt.Sprintf("engine %d: workspace %s", infos[i].Index, formatBytes(ws)))
				continue
			}
			out = append(out, graphCand{plan: plan, ws: ws, info: infos[i]})
		}
		if len(out) > 0 {
			break
		}
	}
	why := fmt.Sprintf("%d configurations, %d built", len(cfgs), len(out))
	if len(skipped) > 0 {
		why += " (" + strings.Join(skipped, "; ") + ")"
	}
	return out, why, tight
}

// chooseGraph times g's candidates on the operands ptrs (outputs are
// overwritten: every direction writes with beta 0, and the real run comes
// after) and keeps the fastest. A lone candidate is run (and timed) once
// too: a plan that builds can still fail to run on the real engines (a
// runtime-compiled kernel that does not launch, say), and its direction
// then goes to the legacy API rather than failing the step; an engine an
// earlier run chose that fails is forgotten and the direction searched
// anew. The candidates run in scratch of their own where the shared
// workspace is too small for them, freed once timed, so that the shared
// workspace, held for the run, grows only to the plans chosen (growing it
// to every candidate's need took the peak memory past PyTorch's). The
// shared workspace is let go meanwhile (workspaceLimit counts it as
// free) and made again at least as large, as the plans chosen before
// need. It reports false, and marks the direction legacy, when none runs.
func (b *Backend) chooseGraph(p *convPlan, dir cuda.ConvDir, g *convGraph, ptrs []cuda.DevicePtr) bool {
	best, bestMs := -1, float32(0)
	var errs []error
	shared := b.mem.ws.bytes // what the shared workspace must hold again afterwards
	var need int64
	for _, c := range g.cands {
		need = max(need, c.ws)
	}
	var scratch devBuf
	ws := b.mem.ws.ptr
	if need > b.mem.ws.bytes {
		b.release(&b.mem.ws)
		b.grow(&scratch, need, "timing cuDNN's convolution plans")
		ws = scratch.ptr
	}
	start := time.Now()
	defer func() { b.search.timing += time.Since(start) }()
	t, err := b.NewTimer()
	b.must(err, "")
	for i, c := range g.cands {
		ms, err := b.timeGraph(t, c.plan, ptrs, ws)
		if err != nil {
			errs = append(errs, fmt.Errorf("engine %d: %w", c.info.Index, err))
			continue
		}
		if best < 0 || ms < bestMs {
			best, bestMs = i, ms
		}
	}
	b.must(t.Close(), "")
	b.must(b.drv.StreamSynchronize(b.stream), "")
	b.free(scratch.ptr, scratch.bytes) // before the shared workspace grows
	for i, c := range g.cands {
		if i != best {
			b.dnn.DestroyBackend(c.plan)
		}
	}
	if best < 0 {
		b.grow(&b.mem.ws, shared, "the cuDNN workspace")
		remembered := g.remembered
		g.cands = nil
		b.destroyGraph(g)
		p.graph[dir] = nil
		if remembered {
			b.forgetEngine(b.planKey(p, dir))
			if b.graphReady(p, dir) {
				return b.chooseGraph(p, dir, p.graph[dir], ptrs)
			}
			return false
		}
		p.graphWhy[dir] = "cuDNN graph API: no candidate ran: " + errors.Join(errs...).Error()
		return false
	}
	c := g.cands[best]
	g.plan, g.ws, g.info, g.ms, g.cands = c.plan, c.ws, c.info, bestMs, nil
	b.grow(&b.mem.ws, max(shared, c.ws), "the cuDNN workspace")
	if !g.tight {
		b.rememberEngine(b.planKey(p, dir), c.info.Index)
	}
	return true
}

// timeGraph runs plan once untimed (a failure there is the candidate's),
// then graphRuns times between the timer's events, with workspace ws: the
// mean in ms.
func (b *Backend) timeGraph(t *Timer, plan cuda.BackendDesc, ptrs []cuda.DevicePtr, ws cuda.DevicePtr) (float32, error) {
	if err := b.dnn.Execute(b.dnnH, plan, graphUIDs, ptrs, ws); err != nil {
		return 0, err
	}
	if err := t.Start(); err != nil {
		return 0, err
	}
	for range graphRuns {
		if err := b.dnn.Execute(b.dnnH, plan, graphUIDs, ptrs, ws); err != nil {
			t.Stop() // the events stay usable for the next candidate
			return 0, err
		}
	}
	d, err := t.Stop()
	return float32(d.Seconds()*1e3) / graphRuns, err
}

// destroyGraph destroys g's plans and descriptors.
func (b *Backend) destroyGraph(g *convGraph) error {
	var errs []error
	for _, c := range g.cands {
		errs = append(errs, b.dnn.DestroyBackend(c.plan))
	}
	errs = append(errs, b.dnn.DestroyBackend(g.plan))
	// The operation graph before the operation, before its tensors.
	for i := len(g.descs) - 1; i >= 0; i-- {
		errs = append(errs, b.dnn.DestroyBackend(g.descs[i]))
	}
	*g = convGraph{}
	return errors.Join(errs...)
}

// closeConvGraphs destroys every plan of the backend API (Close).
func (b *Backend) closeConvGraphs() error {
	var errs []error
	for _, p := range b.desc.convs {
		for dir, g := range p.graph {
			if g != nil {
				errs = append(errs, b.destroyGraph(g))
				p.graph[dir] = nil
			}
		}
	}
	return errors.Join(errs...)
}

// ConvEngines describes, per geometry and direction run so far, which API
// and engine each convolution runs: for tests, benchmarks and debugging.
func (b *Backend) ConvEngines() []string {
	var out []string
	for k, p := range b.desc.convs {
		for dir := range p.graph {
			d := cuda.ConvDir(dir)
			switch g := p.graph[dir]; {
			case g != nil && g.plan != 0:
				out = append(out, fmt.Sprintf("%s %s: graph engine %d, workspace %s, %.3f ms", k, d, g.info.Index, formatBytes(g.ws), g.ms))
			case p.graphWhy[dir] != "" || p.found[dir]:
				s := fmt.Sprintf("%s %s: legacy", k, d)
				if p.found[dir] {
					s += fmt.Sprintf(" algo %d", p.algo[dir])
				}
				if p.graphWhy[dir] != "" {
					s += " (" + p.graphWhy[dir] + ")"
				}
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}

// searchCost is what choosing convolution algorithms has cost a backend:
// the bulk of a run's first step at 224x224 (13 s on an H100 in bf16).
type searchCost struct {
	directions, remembered, plans int           // graph-API directions searched, of them remembered, plans finalized
	build, timing                 time.Duration // heuristics and plan finalization; timing the candidates
	legacy                        int           // directions searched by cudnnFindConvolution*
	legacyTime                    time.Duration
}

// EngineSearch reports what choosing convolution algorithms has cost so
// far (vgg16 bench's engine_search): directions searched through the
// graph API (one whose remembered engine failed counts twice), how many
// of them took an earlier run's choice, plans
// finalized, seconds building and timing them, and the legacy API's
// searches and seconds.
func (b *Backend) EngineSearch() map[string]float64 {
	s := b.search
	return map[string]float64{
		"directions": float64(s.directions), "remembered": float64(s.remembered), "plans": float64(s.plans),
		"build_s": s.build.Seconds(), "timing_s": s.timing.Seconds(),
		"legacy": float64(s.legacy), "legacy_s": s.legacyTime.Seconds(),
	}
}
