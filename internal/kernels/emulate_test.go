//go:build linux && cgo

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	vgg16 "github.com/vgg16/vgg16"
	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/tensor"
)

// The emulation tests compile kernels.cu for the host: testdata/emu.h maps
// the CUDA built-ins the file uses onto C++ threads (one std::thread per
// CUDA thread, one block at a time, so a static array serves as __shared__
// memory and a std::barrier as __syncthreads), and emuMain runs one kernel
// on files of raw little-endian values. The results are compared with the
// CPU backend, which the GPU backend must match.

const emuMain = `
#include <fstream>
#include <iostream>
#include <string>

template <typename F> void launch(unsigned grid, unsigned block, F f) { launch_threads(grid, block, f); }

template <typename T> std::vector<T> rd(const std::string& p) {
	std::ifstream in(p, std::ios::binary);
	std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	std::vector<T> v(raw.size() / sizeof(T));
	std::memcpy(v.data(), raw.data(), v.size() * sizeof(T));
	return v;
}
template <typename T> void wr(const std::string& p, const std::vector<T>& v) {
	std::ofstream out(p, std::ios::binary);
	out.write((const char*)v.data(), v.size() * sizeof(T));
}

int main(int argc, char** argv) {
	std::string op = argv[1], d = std::string(argv[2]) + "/";
	auto arg = [&](int i) { return std::string(argv[3 + i]); };
	unsigned grid = std::stoul(arg(0));
	if (op == "relu") {
		auto x = rd<float>(d + "x"), dy = rd<float>(d + "dy");
		std::vector<float> y(x.size()), dx(x.size());
		launch(grid, 64, [&] { relu_forward(y.data(), x.data(), x.size()); });
		launch(grid, 64, [&] { relu_backward(dx.data(), dy.data(), y.data(), x.size()); });
		wr(d + "y", y); wr(d + "dx", dx);
	} else if (op == "dropout") {
		auto x = rd<float>(d + "x");
		std::vector<float> y(x.size());
		u64 key = std::stoull(arg(1)); u32 thr = std::stoul(arg(2)); float scale = std::stof(arg(3));
		// "at": the key read from memory, a wrong one passed by value
		bool at = arg(4) == "at";
		u64 box = key;
		launch(grid, 64, [&] { dropout_apply(y.data(), x.data(), x.size(), at ? ~key : key, at ? &box : nullptr, thr, scale); });
		wr(d + "y", y);
	} else if (op == "sgd") {
		auto p = rd<float>(d + "p"), g = rd<float>(d + "g"), m = rd<float>(d + "m"), h = rd<float>(d + "h");
		// h[6] != 0: the rate read from memory, NaN passed by value
		bool at = h[6] != 0;
		float box = h[0];
		launch(grid, 64, [&] { sgd_step(p.data(), g.data(), m.data(), p.size(), at ? NAN : h[0], at ? &box : nullptr, h[1], h[2], h[3], (int)h[4], (int)h[5]); });
		wr(d + "p", p); wr(d + "m", m);
	} else if (op == "linear") {
		auto y = rd<float>(d + "y"), b = rd<float>(d + "b"), dy = rd<float>(d + "dy");
		u64 rows = std::stoull(arg(1)), cols = b.size();
		std::vector<float> db(cols);
		launch(grid, 64, [&] { bias_add_rows(y.data(), b.data(), rows, cols); });
		launch(grid, 64, [&] { col_sum(db.data(), dy.data(), rows, cols); });
		wr(d + "y", y); wr(d + "db", db);
	} else if (op == "xent") {
		auto logits = rd<float>(d + "logits"), labels = rd<float>(d + "labels");
		u64 n = labels.size(), c = logits.size() / n;
		double smoothing = std::stod(arg(1));
		bool grad = arg(2) == "1";
		std::vector<double> rows(n);
		std::vector<float> dl(logits.size(), -7.0f), loss(1);
		launch(grid, RED_THREADS, [&] { softmax_xent_rows(rows.data(), grad ? dl.data() : nullptr, logits.data(), labels.data(), n, c, smoothing); });
		launch(1, RED_THREADS, [&] { mean_rows(loss.data(), rows.data(), n); });
		wr(d + "dlogits", dl); wr(d + "loss", loss);
	} else if (op == "bnrelu") {
		// args: grid n c hw splits eps momentum relu
		auto x = rd<float>(d + "x"), gamma = rd<float>(d + "gamma"), beta = rd<float>(d + "beta");
		auto rm = rd<float>(d + "rm"), rv = rd<float>(d + "rv"), dy = rd<float>(d + "dy");
		u64 n = std::stoull(arg(1)), c = std::stoull(arg(2)), hw = std::stoull(arg(3));
		u32 splits = std::stoul(arg(4));
		double eps = std::stod(arg(5)), mom = std::stod(arg(6));
		int relu = std::stoi(arg(7));
		std::vector<double> part(2 * c * splits);
		std::vector<float> y(x.size()), sm(c), si(c), scale(c), shift(c), yi(x.size()), dx(x.size()), dg(c), db(c), coef(3 * c);
		launch_threads(c * splits, RED_THREADS, [&] { bn_stats(part.data(), x.data(), n, c, hw, splits); });
		launch(grid, 64, [&] { bn_finish(sm.data(), si.data(), rm.data(), rv.data(), scale.data(), gamma.data(), nullptr, part.data(), c, splits, n * hw, eps, mom); });
		launch(grid, 64, [&] { bn_apply(y.data(), x.data(), sm.data(), scale.data(), beta.data(), n, c, hw, relu); });
		launch(grid, 64, [&] { bn_infer_coef(scale.data(), shift.data(), gamma.data(), beta.data(), rm.data(), rv.data(), c, eps); });
		launch(grid, 64, [&] { bn_affine(yi.data(), x.data(), scale.data(), shift.data(), n, c, hw, relu); });
		launch_threads(c * splits, RED_THREADS, [&] { bn_grad_stats(part.data(), dy.data(), x.data(), sm.data(), si.data(), gamma.data(), beta.data(), n, c, hw, splits, relu); });
		launch(grid, 64, [&] { bn_grad_finish(dg.data(), db.data(), coef.data(), gamma.data(), si.data(), part.data(), c, splits, n * hw); });
		launch(grid, 64, [&] { bn_grad_apply(dx.data(), dy.data(), x.data(), sm.data(), si.data(), coef.data(), beta.data(), n, c, hw, relu); });
		wr(d + "y", y); wr(d + "sm", sm); wr(d + "si", si); wr(d + "rm", rm); wr(d + "rv", rv);
		wr(d + "yi", yi); wr(d + "dx", dx); wr(d + "dg", dg); wr(d + "db", db);
	} else if (op == "crop") {
		// args: grid n s side
		auto raw = rd<unsigned char>(d + "images");
		auto crops = rd<int>(d + "crops");
		auto table = rd<float>(d + "table");
		u64 n = std::stoull(arg(1));
		u32 s = std::stoul(arg(2)), side = std::stoul(arg(3));
		std::vector<float> y(n * 3 * s * s, -7.0f);
		launch(grid, 64, [&] { crop_resize(y.data(), raw.data(), crops.data(), table.data(), n, s, side); });
		wr(d + "y", y);
	} else if (op == "bf16cast") {
		// f: float32 -> bf16 "fb"; h: bf16 -> float32 "hf"
		auto f = rd<float>(d + "f"); auto h = rd<bf16>(d + "h");
		std::vector<bf16> fb(f.size()); std::vector<float> hf(h.size());
		launch(grid, 64, [&] { cast_f32_bf16(fb.data(), f.data(), f.size()); });
		launch(grid, 64, [&] { cast_bf16_f32(hf.data(), h.data(), h.size()); });
		wr(d + "fb", fb); wr(d + "hf", hf);
	} else if (op == "bf16relu") {
		auto x = rd<bf16>(d + "x"), dy = rd<bf16>(d + "dy");
		std::vector<bf16> y(x.size()), dx(x.size());
		launch(grid, 64, [&] { relu_forward_bf16(y.data(), x.data(), x.size()); });
		launch(grid, 64, [&] { relu_backward_bf16(dx.data(), dy.data(), y.data(), x.size()); });
		wr(d + "y", y); wr(d + "dx", dx);
	} else if (op == "bf16dropout") {
		auto x = rd<bf16>(d + "x");
		std::vector<bf16> y(x.size());
		u64 key = std::stoull(arg(1)); u32 thr = std::stoul(arg(2)); float scale = std::stof(arg(3));
		bool at = arg(4) == "at";
		u64 box = key;
		launch(grid, 64, [&] { dropout_apply_bf16(y.data(), x.data(), x.size(), at ? ~key : key, at ? &box : nullptr, thr, scale); });
		wr(d + "y", y);
	} else if (op == "bf16bias") {
		// args: grid n c hw: y [n, c, hw] += b per row (cols c·hw, b "br");
		// db of dy per column and per channel
		auto y = rd<bf16>(d + "y"), dy = rd<bf16>(d + "dy");
		auto br = rd<float>(d + "br");
		u64 n = std::stoull(arg(1)), c = std::stoull(arg(2)), hw = std::stoull(arg(3));
		auto yr = y;
		std::vector<float> dbr(c * hw), dbc(c, -7.0f);
		launch(grid, 64, [&] { bias_add_rows_bf16(yr.data(), br.data(), n, c * hw); });
		launch(grid, 64, [&] { col_sum_bf16(dbr.data(), dy.data(), n, c * hw); });
		u32 splits = 3;  // as the launcher does: bn_stats_bf16's sums, then the finish
		std::vector<double> part(2 * c * splits);
		launch_threads(c * splits, RED_THREADS, [&] { bn_stats_bf16(part.data(), dy.data(), n, c, hw, splits); });
		launch(grid, 64, [&] { bias_grad_finish(dbc.data(), part.data(), c, splits); });
		wr(d + "yr", yr); wr(d + "dbr", dbr); wr(d + "dbc", dbc);
	} else if (op == "bf16xent") {
		auto logits = rd<bf16>(d + "logits"); auto labels = rd<float>(d + "labels");
		u64 n = labels.size(), c = logits.size() / n;
		double smoothing = std::stod(arg(1));
		bool grad = arg(2) == "1";
		std::vector<double> rows(n);
		std::vector<bf16> dl(logits.size(), 0xc0e0);  // -7
		std::vector<float> loss(1);
		launch(grid, RED_THREADS, [&] { softmax_xent_rows_bf16(rows.data(), grad ? dl.data() : nullptr, logits.data(), labels.data(), n, c, smoothing); });
		launch(1, RED_THREADS, [&] { mean_rows(loss.data(), rows.data(), n); });
		wr(d + "dlogits", dl); wr(d + "loss", loss);
	} else if (op == "bf16tally") {
		auto acc = rd<float>(d + "acc"), loss = rd<float>(d + "loss"), labels = rd<float>(d + "labels");
		auto logits = rd<bf16>(d + "logits");
		u64 n = labels.size(), c = logits.size() / n;
		launch(1, RED_THREADS, [&] { tally_bf16(acc.data(), loss.data(), logits.data(), labels.data(), n, c); });
		wr(d + "acc", acc);
	} else if (op == "bf16bnrelu") {
		// as bnrelu, with bf16 x, dy, y, yi and dx
		auto x = rd<bf16>(d + "x"), dy = rd<bf16>(d + "dy");
		auto gamma = rd<float>(d + "gamma"), beta = rd<float>(d + "beta"), rm = rd<float>(d + "rm"), rv = rd<float>(d + "rv");
		u64 n = std::stoull(arg(1)), c = std::stoull(arg(2)), hw = std::stoull(arg(3));
		u32 splits = std::stoul(arg(4));
		double eps = std::stod(arg(5)), mom = std::stod(arg(6));
		int relu = std::stoi(arg(7));
		std::vector<double> part(2 * c * splits);
		std::vector<bf16> y(x.size()), yi(x.size()), dx(x.size());
		std::vector<float> sm(c), si(c), scale(c), shift(c), dg(c), db(c), coef(3 * c);
		launch_threads(c * splits, RED_THREADS, [&] { bn_stats_bf16(part.data(), x.data(), n, c, hw, splits); });
		launch(grid, 64, [&] { bn_finish(sm.data(), si.data(), rm.data(), rv.data(), scale.data(), gamma.data(), nullptr, part.data(), c, splits, n * hw, eps, mom); });
		launch(grid, 64, [&] { bn_apply_bf16(y.data(), x.data(), sm.data(), scale.data(), beta.data(), n, c, hw, relu); });
		launch(grid, 64, [&] { bn_infer_coef(scale.data(), shift.data(), gamma.data(), beta.data(), rm.data(), rv.data(), c, eps); });
		launch(grid, 64, [&] { bn_affine_bf16(yi.data(), x.data(), scale.data(), shift.data(), n, c, hw, relu); });
		launch_threads(c * splits, RED_THREADS, [&] { bn_grad_stats_bf16(part.data(), dy.data(), x.data(), sm.data(), si.data(), gamma.data(), beta.data(), n, c, hw, splits, relu); });
		launch(grid, 64, [&] { bn_grad_finish(dg.data(), db.data(), coef.data(), gamma.data(), si.data(), part.data(), c, splits, n * hw); });
		launch(grid, 64, [&] { bn_grad_apply_bf16(dx.data(), dy.data(), x.data(), sm.data(), si.data(), coef.data(), beta.data(), n, c, hw, relu); });
		wr(d + "y", y); wr(d + "sm", sm); wr(d + "si", si); wr(d + "rm", rm); wr(d + "rv", rv);
		wr(d + "yi", yi); wr(d + "dx", dx); wr(d + "dg", dg); wr(d + "db", db);
	} else if (op == "pool") {
		// args: grid planes h w k s
		auto x = rd<float>(d + "x"), dy = rd<float>(d + "dy");
		u64 planes = std::stoull(arg(1));
		u32 h = std::stoul(arg(2)), w = std::stoul(arg(3)), k = std::stoul(arg(4)), s = std::stoul(arg(5));
		std::vector<float> y(dy.size(), -7.0f), dx(x.size(), -7.0f);  // every element must be written
		launch(grid, 64, [&] { max_pool_forward(y.data(), x.data(), planes, h, w, k, s); });
		launch(grid, 64, [&] { max_pool_backward(dx.data(), dy.data(), x.data(), planes, h, w, k, s); });
		wr(d + "y", y); wr(d + "dx", dx);
	} else if (op == "bf16crop") {
		auto raw = rd<unsigned char>(d + "images");
		auto crops = rd<int>(d + "crops");
		auto table = rd<float>(d + "table");
		u64 n = std::stoull(arg(1));
		u32 s = std::stoul(arg(2)), side = std::stoul(arg(3));
		std::vector<bf16> y(n * 3 * s * s, 0xc0e0);
		launch(grid, 64, [&] { crop_resize_bf16(y.data(), raw.data(), crops.data(), table.data(), n, s, side); });
		wr(d + "y", y);
	} else {
		std::cerr << "unknown op " << op << "\n";
		return 2;
	}
	return 0;
}
`

// TestMain removes the emulator's build directory once the tests are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if emu.dir != "" {
		os.RemoveAll(emu.dir)
	}
	os.Exit(code)
}

var emu struct {
	once sync.Once
	dir  string // the build directory, removed by TestMain
	bin  string
	err  error
}

// emulator builds the host program once per test binary.
func emulator(t *testing.T) string {
	t.Helper()
	emu.once.Do(func() {
		cxx, err := exec.LookPath("g++")
		if err != nil {
			emu.err = fmt.Errorf("g++ not installed")
			return
		}
		dir, err := os.MkdirTemp("", "kernels-emu")
		if err != nil {
			emu.err = err
			return
		}
		emu.dir = dir
		src := filepath.Join(dir, "emu.cpp")
		header, err := os.ReadFile(filepath.Join("testdata", "emu.h"))
		if err != nil {
			emu.err = fmt.Errorf("skip: %v (run the test from its package directory)", err)
			return
		}
		text := string(header) + vgg16.KernelsSource + emuMain
		if err := os.WriteFile(src, []byte(text), 0o644); err != nil {
			emu.err = err
			return
		}
		emu.bin = filepath.Join(dir, "emu")
		// -ffp-contract=off: no fused multiply-add, like --fmad=false; #pragma unroll is nvcc's.
		out, err := exec.Command(cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas", "-o", emu.bin, src).CombinedOutput()
		if err != nil {
			emu.err = fmt.Errorf("compiling kernels.cu for the host: %v\n%s", err, out)
		} else if len(out) > 0 {
			emu.err = fmt.Errorf("warnings compiling kernels.cu for the host:\n%s", out)
		}
	})
	if emu.err != nil {
		if strings.HasPrefix(emu.err.Error(), "g++ not installed") {
			t.Skip("g++ not installed: cannot emulate the kernels")
		}
		if msg, ok := strings.CutPrefix(emu.err.Error(), "skip: "); ok {
			t.Skip(msg)
		}
		t.Fatal(emu.err)
	}
	return emu.bin
}

// run runs one op of the emulator in dir.
func run(t *testing.T, dir, op string, args ...any) {
	t.Helper()
	cmd := []string{op, dir}
	for _, a := range args {
		cmd = append(cmd, fmt.Sprint(a))
	}
	if out, err := exec.Command(emulator(t), cmd...).CombinedOutput(); err != nil {
		t.Fatalf("emulator %v: %v\n%s", cmd, err, out)
	}
}

func writeF32(t *testing.T, path string, v []float32) {
	t.Helper()
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func randn(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// onCPU runs f on CPU tensors holding the given host slices and returns
// their contents afterwards.
func onCPU(data [][]float32, f func(be *cpu.Backend, ts []*tensor.Tensor)) [][]float32 {
	be := cpu.New()
	ts := make([]*tensor.Tensor, len(data))
	for i, d := range data {
		ts[i] = be.New(len(d))
		be.Upload(ts[i], d)
	}
	f(be, ts)
	out := make([][]float32, len(ts))
	for i, t := range ts {
		out[i] = append([]float32(nil), cpu.Data(t)...)
	}
	return out
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d] = %v (%#x), want %v (%#x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func TestEmulatedReLU(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x, dy := randn(r, 1000), randn(r, 1000)
	x[3], x[4], x[5] = float32(math.NaN()), float32(math.Copysign(0, -1)), 0
	dir := t.TempDir()
	writeF32(t, filepath.Join(dir, "x"), x)
	writeF32(t, filepath.Join(dir, "dy"), dy)
	run(t, dir, "relu", 3)
	want := onCPU([][]float32{x, dy, make([]float32, len(x)), make([]float32, len(x))}, func(be *cpu.Backend, ts []*tensor.Tensor) {
		be.ReLUForward(ts[2], ts[0])
		be.ReLUBackward(ts[3], ts[1], ts[2])
	})
	sameBits(t, "y", readF32(t, filepath.Join(dir, "y")), want[2])
	sameBits(t, "dx", readF32(t, filepath.Join(dir, "dx")), want[3])
}

func TestEmulatedDropoutMatchesCPUMask(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range []float64{0.5, 0.1, 0} {
		for _, keyFrom := range []string{"value", "at"} { // the key as an argument, or read from memory
			x := randn(r, 5000)
			key := tensor.DropoutKey(42, 7, 1)
			dir := t.TempDir()
			writeF32(t, filepath.Join(dir, "x"), x)
			scale := float32(1 / (1 - p))
			run(t, dir, "dropout", 5, key, tensor.DropoutThreshold(p), fmt.Sprintf("%.9g", scale), keyFrom)
			want := onCPU([][]float32{x, make([]float32, len(x))}, func(be *cpu.Backend, ts []*tensor.Tensor) {
				be.DropoutForward(ts[1], ts[0], p, key)
			})
			sameBits(t, fmt.Sprintf("dropout p=%g, key by %s", p, keyFrom), readF32(t, filepath.Join(dir, "y")), want[1])
		}
	}
}

func TestEmulatedSGD(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, h := range []tensor.SGD{
		{LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4},
		{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4, Nesterov: true},
		{LR: 0.01, Momentum: 0.8, Dampening: 0.3},
		{LR: 0.2},
	} {
		for i, first := range []bool{true, false, false} {
			lrAt := i == 2 // the rate read from memory
			p, g, m := randn(r, 777), randn(r, 777), randn(r, 777)
			dir := t.TempDir()
			writeF32(t, filepath.Join(dir, "p"), p)
			writeF32(t, filepath.Join(dir, "g"), g)
			writeF32(t, filepath.Join(dir, "m"), m)
			writeF32(t, filepath.Join(dir, "h"), []float32{float32(h.LR), float32(h.Momentum), float32(h.WeightDecay), float32(1 - h.Dampening), float32(b2i(h.Nesterov)), float32(b2i(first)), float32(b2i(lrAt))})
			run(t, dir, "sgd", 4)
			want := onCPU([][]float32{p, g, m}, func(be *cpu.Backend, ts []*tensor.Tensor) {
				be.SGDStep(ts[0], ts[1], ts[2], h, first)
			})
			what := fmt.Sprintf("%+v first=%v lr from memory=%v", h, first, lrAt)
			sameBits(t, what+" p", readF32(t, filepath.Join(dir, "p")), want[0])
			sameBits(t, what+" m", readF32(t, filepath.Join(dir, "m")), want[2])
		}
	}
}

func TestEmulatedLinearBias(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	rows, cols := 9, 37
	y, b, dy := randn(r, rows*cols), randn(r, cols), randn(r, rows*cols)
	dir := t.TempDir()
	writeF32(t, filepath.Join(dir, "y"), y)
	writeF32(t, filepath.Join(dir, "b"), b)
	writeF32(t, filepath.Join(dir, "dy"), dy)
	run(t, dir, "linear", 2, rows)
	gotY, gotDB := readF32(t, filepath.Join(dir, "y")), readF32(t, filepath.Join(dir, "db"))
	for i := range y {
		if want := y[i] + b[i%cols]; gotY[i] != want {
			t.Fatalf("y[%d] = %v, want %v", i, gotY[i], want)
		}
	}
	// The CPU backend's Linear bias gradient: a float64 sum in row order.
	for c := 0; c < cols; c++ {
		var s float64
		for i := 0; i < rows; i++ {
			s += float64(dy[i*cols+c])
		}
		if gotDB[c] != float32(s) {
			t.Fatalf("db[%d] = %v, want %v", c, gotDB[c], float32(s))
		}
	}
}

func TestEmulatedSoftmaxCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		n, classes int
		smoothing  float64
		grad       bool
		equal      float32 // every logit this, where not 0
	}{
		{7, 10, 0, true, 0}, {5, 300, 0.1, true, 0}, {4, 3, 0.2, false, 0}, {130, 10, 0, true, 0},
		{3, 10, 0, true, 1e36}, // the loss ln 10, however large the logits
	} {
		logits := randn(r, c.n*c.classes)
		for i := range logits {
			logits[i] *= 4
			if c.equal != 0 {
				logits[i] = c.equal
			}
		}
		labels := make([]float32, c.n)
		for i := range labels {
			labels[i] = float32(r.IntN(c.classes))
		}
		dir := t.TempDir()
		writeF32(t, filepath.Join(dir, "logits"), logits)
		writeF32(t, filepath.Join(dir, "labels"), labels)
		run(t, dir, "xent", 3, c.smoothing, b2i(c.grad))
		want := onCPU([][]float32{logits, labels, {0}, make([]float32, len(logits))}, func(be *cpu.Backend, ts []*tensor.Tensor) {
			be.SoftmaxCrossEntropy(ts[2], ts[3].Reshape(c.n, c.classes), ts[0].Reshape(c.n, c.classes), ts[1], c.smoothing)
		})
		what := fmt.Sprintf("n=%d c=%d eps=%g", c.n, c.classes, c.smoothing)
		loss := readF32(t, filepath.Join(dir, "loss"))[0]
		if d := math.Abs(float64(loss-want[2][0])) / math.Abs(float64(want[2][0])); d > 1e-6 {
			t.Errorf("%s: loss %v, CPU %v", what, loss, want[2][0])
		}
		if c.equal != 0 && math.Abs(float64(loss)-math.Log(float64(c.classes))) > 1e-6 { // not only as the CPU has it
			t.Errorf("%s: equal logits give loss %v, want ln %d", what, loss, c.classes)
		}
		dl := readF32(t, filepath.Join(dir, "dlogits"))
		for i := range dl {
			w := want[3][i]
			if !c.grad {
				w = -7 // untouched
			}
			if math.Abs(float64(dl[i]-w)) > 1e-7*max(1, math.Abs(float64(w))) {
				t.Fatalf("%s: dlogits[%d] = %v, CPU %v", what, i, dl[i], w)
			}
		}
	}
}

func TestEmulatedBadLabelGivesNaN(t *testing.T) {
	dir := t.TempDir()
	writeF32(t, filepath.Join(dir, "logits"), []float32{1, 2, 3, 4, 5, 6})
	writeF32(t, filepath.Join(dir, "labels"), []float32{1, 3})
	run(t, dir, "xent", 1, 0, 1)
	if loss := readF32(t, filepath.Join(dir, "loss"))[0]; !math.IsNaN(float64(loss)) {
		t.Errorf("loss %v with label 3 of 3 classes, want NaN", loss)
	}
	dl := readF32(t, filepath.Join(dir, "dlogits"))
	if math.IsNaN(float64(dl[0])) || !math.IsNaN(float64(dl[3])) {
		t.Errorf("dlogits %v: want NaN in the bad row only", dl)
	}
}

// TestEmulatedBatchNormReLU runs the fused batch-norm kernels against the
// CPU backend's BatchNormTrain, BatchNormInfer and BatchNormBackward
// followed or preceded by ReLU, over shapes from one element per plane
// (the 2x2 maps of a 32x32 VGG, N·HW below the block size) to more
// elements per channel than a block takes, with one and several blocks
// per channel. The sums are ordered differently from the CPU's, so the
// statistics and gradients are compared to a relative 1e-5; the
// inference path is the CPU's arithmetic and must match bit for bit.
func TestEmulatedBatchNormReLU(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct{ n, ch, hw, splits int }{
		{3, 5, 1, 1}, {4, 3, 4, 2}, {2, 4, 37, 3}, {5, 2, 300, 7}, {1, 1, 2000, 1},
	} {
		for _, relu := range []bool{true, false} {
			name := fmt.Sprintf("n%d c%d hw%d splits%d relu %v", c.n, c.ch, c.hw, c.splits, relu)
			size := c.n * c.ch * c.hw
			x, dy := randn(r, size), randn(r, size)
			for i := range x {
				x[i] = 3*x[i] + 1.5 // a mean and a spread far from (0, 1)
			}
			gamma, beta, rm, rv := randn(r, c.ch), randn(r, c.ch), randn(r, c.ch), randn(r, c.ch)
			for i := range rv {
				rv[i] = 1 + rv[i]*rv[i]
			}
			dir := t.TempDir()
			for f, v := range map[string][]float32{"x": x, "dy": dy, "gamma": gamma, "beta": beta, "rm": rm, "rv": rv} {
				writeF32(t, filepath.Join(dir, f), v)
			}
			const eps, mom = 1e-5, 0.1
			run(t, dir, "bnrelu", 3, c.n, c.ch, c.hw, c.splits, eps, mom, b2i(relu))
			want := cpuBNReLU(x, gamma, beta, rm, rv, dy, c.n, c.ch, c.hw, relu, mom, eps)
			for _, o := range []struct {
				file string
				want []float32
			}{{"y", want[5]}, {"sm", want[6]}, {"si", want[7]}, {"rm", want[3]}, {"rv", want[4]}, {"dx", want[10]}, {"dg", want[11]}, {"db", want[12]}} {
				if e := relErr(readF32(t, filepath.Join(dir, o.file)), o.want); !(e <= 1e-5) {
					t.Errorf("%s: %s relative error %.3g", name, o.file, e)
				}
			}
			sameBits(t, name+" inference", readF32(t, filepath.Join(dir, "yi")), want[8])
		}
	}
}

// shaped is host data and the shape of the CPU tensor to hold it.
type shaped struct {
	data  []float32
	shape []int
}

// onCPUShaped is onCPU with shaped tensors.
func onCPUShaped(data []shaped, f func(be *cpu.Backend, ts []*tensor.Tensor)) [][]float32 {
	be := cpu.New()
	ts := make([]*tensor.Tensor, len(data))
	for i, d := range data {
		ts[i] = be.New(d.shape...)
		be.Upload(ts[i], d.data)
	}
	f(be, ts)
	out := make([][]float32, len(ts))
	for i, t := range ts {
		out[i] = append([]float32(nil), cpu.Data(t)...)
	}
	return out
}

// relErr is ‖got − want‖ / ‖want‖; NaN when either has a NaN.
func relErr(got, want []float32) float64 {
	var d, n float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		d += e * e
		n += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(d / n)
}

// crop_resize gives cifar.ApplyCrop's floats bit for bit: crops drawn by
// every transform (windows inside the image, shifted into the padding,
// resized up and down, flipped), through each transform's table.
func TestEmulatedCropResize(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const N = 5
	images := make([]byte, N*cifar.ImageBytes)
	for i := range images {
		images[i] = byte(r.Uint32())
	}
	for _, tf := range []cifar.Planner{cifar.SeedTransform{Size: 48}, cifar.SeedTransform{Size: 20}, cifar.CIFARTransform{},
		cifar.CIFARTransform{Size: 36}, cifar.EvalTransform{Size: 32, Norm: cifar.CIFARNorm}, cifar.EvalTransform{Size: 64}} {
		s := tf.OutputSize()
		const n = 12
		dir := t.TempDir()
		want := cropInputs(t, dir, r, tf, images, n)
		run(t, dir, "crop", 7, n, s, cifar.Side)
		sameBits(t, fmt.Sprintf("%T size %d", tf, s), readF32(t, filepath.Join(dir, "y")), want)
	}
}

func b2n(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---- bfloat16 activations ---------------------------------------------------
//
// The _bf16 kernels against the CPU backend run on the same inputs rounded
// to bf16 (tensor.RoundBF16): element-wise results must be the CPU's
// float32 results rounded to bf16 (tensor.ToBF16) bit for bit; sums are
// compared to a stated tolerance.

func writeBF16(t *testing.T, path string, v []uint16) {
	t.Helper()
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readBF16(t *testing.T, path string) []uint16 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]uint16, len(b)/2)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return v
}

// toBF16 is tensor.ToBF16 of each element.
func toBF16(v []float32) []uint16 {
	h := make([]uint16, len(v))
	for i, x := range v {
		h[i] = tensor.ToBF16(x)
	}
	return h
}

// roundBF16 rounds v to bf16 precision in place and returns it.
func roundBF16(v []float32) []float32 {
	for i, x := range v {
		v[i] = tensor.RoundBF16(x)
	}
	return v
}

func sameBF16(t *testing.T, what string, got, want []uint16) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s[%d] = %v (%#04x), want %v (%#04x)", what, i, tensor.FromBF16(got[i]), got[i], tensor.FromBF16(want[i]), want[i])
		}
	}
}

// oneNaN replaces every NaN of v by the quiet NaN 0x7fc0, in place.
func oneNaN(v []uint16) []uint16 {
	for i, h := range v {
		if h&0x7fff > 0x7f80 {
			v[i] = 0x7fc0
		}
	}
	return v
}

// bf16ULPs is how many bf16 steps apart a and b are (0 for +0 and -0);
// a NaN is 1<<20 away from anything but another NaN.
func bf16ULPs(a, b uint16) int {
	na, nb := a&0x7fff > 0x7f80, b&0x7fff > 0x7f80
	if na || nb {
		if na && nb {
			return 0
		}
		return 1 << 20
	}
	ord := func(h uint16) int {
		if h&0x8000 != 0 {
			return -int(h & 0x7fff)
		}
		return int(h)
	}
	d := ord(a) - ord(b)
	return max(d, -d)
}

// nearBF16 checks that every got is at most one bf16 step from want.
func nearBF16(t *testing.T, what string, got, want []uint16) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	off := 0
	for i := range got {
		switch d := bf16ULPs(got[i], want[i]); {
		case d > 1:
			t.Fatalf("%s[%d] = %v (%#04x), want %v (%#04x): %d bf16 steps apart", what, i,
				tensor.FromBF16(got[i]), got[i], tensor.FromBF16(want[i]), want[i], d)
		case d == 1:
			off++
		}
	}
	t.Logf("%s: %d of %d values one bf16 step off", what, off, len(got))
}

// nearRel checks |got - want| <= tol·|want| element by element (NaN only
// where want is NaN).
func nearRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		if !(math.Abs(g-w) <= tol*math.Abs(w)) {
			t.Fatalf("%s[%d] = %v, want %v (relative tolerance %g)", what, i, got[i], want[i], tol)
		}
	}
}

// The casts are tensor.ToBF16 and tensor.FromBF16 bit for bit: every bf16
// value, and float32 values of every kind: random bits, ties (the low 16
// bits 0x8000, either parity), the largest values (which round to
// infinity), subnormals, signed zeros, infinities and NaNs (signalling and
// quiet, of either sign).
func TestEmulatedBF16Casts(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	h := make([]uint16, 1<<16)
	for i := range h {
		h[i] = uint16(i)
	}
	var f []float32
	for _, b := range []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001,
		0x7fbfffff, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff, 0x00000001, 0x00008000, 0x00018000, 0x807fffff,
		0x3f808000, 0x3f818000, 0x3f80ffff, 0x3f817fff, 0x3f7f8000, 0xbf808000, 0xbf818000} {
		f = append(f, math.Float32frombits(b))
	}
	for range 100000 {
		f = append(f, math.Float32frombits(r.Uint32()))
	}
	for range 1000 {
		f = append(f, math.Float32frombits(r.Uint32()&^0xffff|0x8000)) // a tie
	}
	f = append(f, randn(r, 1000)...)
	dir := t.TempDir()
	writeF32(t, filepath.Join(dir, "f"), f)
	writeBF16(t, filepath.Join(dir, "h"), h)
	run(t, dir, "bf16cast", 7)
	sameBF16(t, "cast_f32_bf16", readBF16(t, filepath.Join(dir, "fb")), toBF16(f))
	want := make([]float32, len(h))
	for i, v := range h {
		want[i] = tensor.FromBF16(v)
	}
	sameBits(t, "cast_bf16_f32", readF32(t, filepath.Join(dir, "hf")), want)
}

func TestEmulatedBF16ReLU(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	x, dy := roundBF16(randn(r, 1000)), roundBF16(randn(r, 1000))
	x[3], x[4], x[5], x[6] = float32(math.NaN()), float32(math.Copysign(0, -1)), 0, float32(math.Inf(-1))
	dir := t.TempDir()
	writeBF16(t, filepath.Join(dir, "x"), toBF16(x))
	writeBF16(t, filepath.Join(dir, "dy"), toBF16(dy))
	run(t, dir, "bf16relu", 3)
	want := onCPU([][]float32{x, dy, make([]float32, len(x)), make([]float32, len(x))}, func(be *cpu.Backend, ts []*tensor.Tensor) {
		be.ReLUForward(ts[2], ts[0])
		be.ReLUBackward(ts[3], ts[1], ts[2])
	})
	sameBF16(t, "y", readBF16(t, filepath.Join(dir, "y")), toBF16(want[2]))
	sameBF16(t, "dx", readBF16(t, filepath.Join(dir, "dx")), toBF16(want[3]))
}

// dropout_apply_bf16 keeps the CPU's mask and rounds its x·scale to bf16;
// the last p puts the threshold exactly on element 17's hash, which must
// be kept (hash >= threshold).
func TestEmulatedBF16Dropout(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	key := tensor.DropoutKey(42, 7, 3)
	for _, p := range []float64{0.5, 0.1, 0.3, 0, float64(tensor.DropoutHash(key, 17)) / (1 << 32)} {
		for _, keyFrom := range []string{"value", "at"} {
			x := roundBF16(randn(r, 5000))
			dir := t.TempDir()
			writeBF16(t, filepath.Join(dir, "x"), toBF16(x))
			scale := float32(1 / (1 - p))
			run(t, dir, "bf16dropout", 5, key, tensor.DropoutThreshold(p), fmt.Sprintf("%.9g", scale), keyFrom)
			want := onCPU([][]float32{x, make([]float32, len(x))}, func(be *cpu.Backend, ts []*tensor.Tensor) {
				be.DropoutForward(ts[1], ts[0], p, key)
			})
			sameBF16(t, fmt.Sprintf("dropout p=%g, key by %s", p, keyFrom), readBF16(t, filepath.Join(dir, "y")), toBF16(want[1]))
		}
	}
}

// The biases of Linear (bias_add_rows_bf16, col_sum_bf16) and a
// convolution's bias gradient (bn_stats_bf16 then bias_grad_finish) on bf16
// y and dy [n, c, hw]. The addition is the CPU's float32 addition rounded
// to bf16, bit for bit; col_sum_bf16 adds in col_sum's order (a double sum in
// row order, the CPU Linear's) and must match exactly; the bias gradient
// adds in another order than the CPU's ConvBackwardFilter and must match
// to a relative 1e-6. Grids from one block (many channels each) to more
// blocks than channels.
func TestEmulatedBF16Bias(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	for _, c := range []struct{ n, ch, hw, grid int }{{2, 3, 5, 1}, {4, 7, 33, 3}, {3, 5, 300, 9}, {130, 2, 1, 2}} {
		name := fmt.Sprintf("n%d c%d hw%d grid%d", c.n, c.ch, c.hw, c.grid)
		size, cols := c.n*c.ch*c.hw, c.ch*c.hw
		y, dy := roundBF16(randn(r, size)), randn(r, size)
		for i := range dy {
			// Magnitudes from 2^-12 to 2^12: a float32 sum would round
			// where the double sums are exact.
			dy[i] = tensor.RoundBF16(dy[i] * float32(math.Ldexp(1, r.IntN(25)-12)))
		}
		y[1] = float32(math.NaN())
		br := randn(r, cols)
		dir := t.TempDir()
		writeBF16(t, filepath.Join(dir, "y"), toBF16(y))
		writeBF16(t, filepath.Join(dir, "dy"), toBF16(dy))
		writeF32(t, filepath.Join(dir, "br"), br)
		run(t, dir, "bf16bias", c.grid, c.n, c.ch, c.hw)
		yr := make([]float32, size)
		for i := range y {
			yr[i] = y[i] + br[i%cols]
		}
		sameBF16(t, name+" bias_add_rows_bf16", readBF16(t, filepath.Join(dir, "yr")), toBF16(yr))
		dbr := make([]float32, cols)
		for j := range cols {
			var s float64
			for i := range c.n {
				s += float64(dy[i*cols+j])
			}
			dbr[j] = float32(s)
		}
		sameBits(t, name+" col_sum_bf16", readF32(t, filepath.Join(dir, "dbr")), dbr)
		// The CPU's convolution bias gradient, through a 1x1 convolution of
		// one input channel.
		want := onCPUShaped([]shaped{{make([]float32, c.ch), []int{c.ch, 1, 1, 1}}, {make([]float32, c.ch), []int{c.ch}},
			{randn(r, c.n*c.hw), []int{c.n, 1, 1, c.hw}}, {dy, []int{c.n, c.ch, 1, c.hw}}},
			func(be *cpu.Backend, ts []*tensor.Tensor) { be.ConvBackwardFilter(ts[0], ts[1], ts[2], ts[3], 0) })
		nearRel(t, name+" bias gradient", readF32(t, filepath.Join(dir, "dbc")), want[1], 1e-6)
	}
}

// softmax_xent_rows_bf16 with mean_rows against the CPU's
// SoftmaxCrossEntropy on the rounded logits: the loss to a relative 1e-6,
// dlogits at most one bf16 step from the CPU's rounded to bf16 (the CPU
// and the kernel compute it in double, then round to float32 and bf16; a
// last-bit difference in exp can move a value across a rounding boundary).
func TestEmulatedBF16SoftmaxCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	for _, c := range []struct {
		n, classes int
		smoothing  float64
		grad       bool
	}{
		{7, 10, 0, true}, {5, 300, 0.1, true}, {4, 3, 0.2, false}, {130, 10, 0, true}, {3, 1000, 0.1, true},
	} {
		logits := randn(r, c.n*c.classes)
		for i := range logits {
			logits[i] *= 4
		}
		roundBF16(logits)
		labels := make([]float32, c.n)
		for i := range labels {
			labels[i] = float32(r.IntN(c.classes))
		}
		dir := t.TempDir()
		writeBF16(t, filepath.Join(dir, "logits"), toBF16(logits))
		writeF32(t, filepath.Join(dir, "labels"), labels)
		run(t, dir, "bf16xent", 3, c.smoothing, b2i(c.grad))
		want := onCPU([][]float32{logits, labels, {0}, make([]float32, len(logits))}, func(be *cpu.Backend, ts []*tensor.Tensor) {
			be.SoftmaxCrossEntropy(ts[2], ts[3].Reshape(c.n, c.classes), ts[0].Reshape(c.n, c.classes), ts[1], c.smoothing)
		})
		what := fmt.Sprintf("n=%d c=%d eps=%g", c.n, c.classes, c.smoothing)
		nearRel(t, what+" loss", readF32(t, filepath.Join(dir, "loss")), want[2], 1e-6)
		dl := readBF16(t, filepath.Join(dir, "dlogits"))
		if !c.grad {
			for i := range dl {
				if dl[i] != tensor.ToBF16(-7) {
					t.Fatalf("%s: dlogits[%d] = %#04x without a gradient, want it untouched", what, i, dl[i])
				}
			}
			continue
		}
		nearBF16(t, what+" dlogits", dl, toBF16(want[3]))
	}
	// A label outside [0, c): NaN in that row only.
	dir := t.TempDir()
	writeBF16(t, filepath.Join(dir, "logits"), toBF16([]float32{1, 2, 3, 4, 5, 6}))
	writeF32(t, filepath.Join(dir, "labels"), []float32{1, 3})
	run(t, dir, "bf16xent", 1, 0, 1)
	if loss := readF32(t, filepath.Join(dir, "loss"))[0]; !math.IsNaN(float64(loss)) {
		t.Errorf("loss %v with label 3 of 3 classes, want NaN", loss)
	}
	if dl := readBF16(t, filepath.Join(dir, "dlogits")); dl[0]&0x7fff > 0x7f80 || dl[3]&0x7fff <= 0x7f80 {
		t.Errorf("dlogits %#04x: want NaN in the bad row only", dl)
	}
}

// tally_bf16 against the CPU's Tally on the rounded logits, which has the
// same arithmetic (an exact count, one float32 product and sum): bit for
// bit. The logits are small integers, so that rows often have several
// maxima (the first one counts).
func TestEmulatedBF16Tally(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, c := range []struct{ n, classes int }{{7, 10}, {300, 10}, {5, 1000}, {129, 3}} {
		logits := make([]float32, c.n*c.classes)
		for i := range logits {
			logits[i] = float32(r.IntN(5))
		}
		labels := make([]float32, c.n)
		for i := range labels {
			labels[i] = float32(r.IntN(c.classes))
		}
		acc, loss := []float32{12.5, 3}, []float32{2.3456}
		dir := t.TempDir()
		writeBF16(t, filepath.Join(dir, "logits"), toBF16(logits))
		writeF32(t, filepath.Join(dir, "labels"), labels)
		writeF32(t, filepath.Join(dir, "acc"), acc)
		writeF32(t, filepath.Join(dir, "loss"), loss)
		run(t, dir, "bf16tally", 1)
		want := onCPUShaped([]shaped{{acc, []int{2}}, {loss, []int{1}}, {logits, []int{c.n, c.classes}}, {labels, []int{c.n}}},
			func(be *cpu.Backend, ts []*tensor.Tensor) { be.Tally(ts[0], ts[1], ts[2], ts[3]) })
		sameBits(t, fmt.Sprintf("n=%d c=%d acc", c.n, c.classes), readF32(t, filepath.Join(dir, "acc")), want[0])
	}
}

// The fused batch norm and ReLU with bf16 activations (BN.BF16) against
// the CPU backend on the rounded x and dy, over TestEmulatedBatchNormReLU's
// shapes. The statistics, running statistics and parameter gradients are
// double sums of the same bf16 inputs in another order: to a relative
// 1e-6. The inference output is the CPU's float32 arithmetic and must be
// its result rounded to bf16, bit for bit. The training output y and dx
// are computed in float32 by the kernels and in float64 by the CPU: at
// most one bf16 step from the CPU's rounded to bf16.
func TestEmulatedBF16BatchNormReLU(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, c := range []struct{ n, ch, hw, splits int }{
		{3, 5, 1, 1}, {4, 3, 4, 2}, {2, 4, 37, 3}, {5, 2, 300, 7}, {1, 1, 2000, 1},
	} {
		for _, relu := range []bool{true, false} {
			name := fmt.Sprintf("n%d c%d hw%d splits%d relu %v", c.n, c.ch, c.hw, c.splits, relu)
			size := c.n * c.ch * c.hw
			x, dy := randn(r, size), roundBF16(randn(r, size))
			for i := range x {
				x[i] = 3*x[i] + 1.5
			}
			roundBF16(x)
			gamma, beta, rm, rv := randn(r, c.ch), randn(r, c.ch), randn(r, c.ch), randn(r, c.ch)
			for i := range rv {
				rv[i] = 1 + rv[i]*rv[i]
			}
			dir := t.TempDir()
			writeBF16(t, filepath.Join(dir, "x"), toBF16(x))
			writeBF16(t, filepath.Join(dir, "dy"), toBF16(dy))
			for f, v := range map[string][]float32{"gamma": gamma, "beta": beta, "rm": rm, "rv": rv} {
				writeF32(t, filepath.Join(dir, f), v)
			}
			const eps, mom = 1e-5, 0.1
			run(t, dir, "bf16bnrelu", 3, c.n, c.ch, c.hw, c.splits, eps, mom, b2i(relu))
			want := cpuBNReLU(x, gamma, beta, rm, rv, dy, c.n, c.ch, c.hw, relu, mom, eps)
			for _, o := range []struct {
				file string
				want []float32
			}{{"sm", want[6]}, {"si", want[7]}, {"rm", want[3]}, {"rv", want[4]}, {"dg", want[11]}, {"db", want[12]}} {
				nearRel(t, name+" "+o.file, readF32(t, filepath.Join(dir, o.file)), o.want, 1e-6)
			}
			nearBF16(t, name+" y", readBF16(t, filepath.Join(dir, "y")), toBF16(want[5]))
			nearBF16(t, name+" dx", readBF16(t, filepath.Join(dir, "dx")), toBF16(want[10]))
			sameBF16(t, name+" inference", readBF16(t, filepath.Join(dir, "yi")), toBF16(want[8]))
		}
	}
}

// firstMaxPoolBackward is the CPU backend's MaxPoolBackward rule (its
// general path): each window's gradient goes to the window's first
// maximum in row-major order, a NaN winning only as the first element.
// The CPU's 2x2 stride-2 path differs for windows holding a NaN (it sends
// their gradient to the last element), so the test takes this for them.
func firstMaxPoolBackward(dx, dy, x []float32, planes, h, w, k, s int) {
	oh, ow := (h-k)/s+1, (w-k)/s+1
	clear(dx)
	for p := range planes {
		src, dsrc, g := x[p*h*w:][:h*w], dx[p*h*w:][:h*w], dy[p*oh*ow:][:oh*ow]
		for oy := range oh {
			for ox := range ow {
				best, m := -1, float32(0)
				for ki := range k {
					for kj := range k {
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
}

// max_pool_forward and max_pool_backward against the CPU's MaxPoolForward
// and MaxPoolBackward, bit for bit (y compared through bf16, exact for
// these values, so that any NaN matches any NaN):
// VGG's 2x2 windows of stride 2 and overlapping 3x3 windows of stride 2,
// on planes whose last rows and columns no window covers (their dx must
// be 0). x holds small integers, so windows often have several maxima
// (the first in row-major order takes the gradient), and NaNs: first in
// a window, inside a window, and where two windows overlap.
func TestEmulatedMaxPool(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	nan := float32(math.NaN())
	for _, c := range []struct {
		planes, h, w, k, s int
		nans               bool
	}{
		{3, 8, 8, 2, 2, false}, {2, 7, 9, 2, 2, false}, {3, 8, 8, 2, 2, true},
		{3, 9, 9, 3, 2, false}, {2, 8, 11, 3, 2, false}, {2, 9, 9, 3, 2, true}, {4, 5, 6, 3, 1, true},
	} {
		name := fmt.Sprintf("planes%d %dx%d k%d s%d NaN %v", c.planes, c.h, c.w, c.k, c.s, c.nans)
		oh, ow := (c.h-c.k)/c.s+1, (c.w-c.k)/c.s+1
		x := make([]float32, c.planes*c.h*c.w)
		for i := range x {
			x[i] = float32(r.IntN(5) - 2)
			if r.IntN(4) == 0 {
				x[i] = tensor.RoundBF16(float32(r.NormFloat64()))
			}
		}
		x[c.w+1] = float32(math.Inf(-1))
		if c.nans {
			x[0] = nan                          // the first element of the first window
			x[c.h*c.w+c.w+1] = nan              // inside a window of plane 1
			x[c.h*c.w+2*c.w+2] = nan            // on the edge of windows (both overlap it when k=3, s=2)
			x[len(x)-c.w*(c.h-c.k+1)/2-2] = nan // somewhere in the last plane
		}
		dy := roundBF16(randn(r, c.planes*oh*ow))
		dir32 := t.TempDir()
		writeF32(t, filepath.Join(dir32, "x"), x)
		writeF32(t, filepath.Join(dir32, "dy"), dy)
		run(t, dir32, "pool", 3, c.planes, c.h, c.w, c.k, c.s)
		in, out := []int{c.planes, 1, c.h, c.w}, []int{c.planes, 1, oh, ow}
		want := onCPUShaped([]shaped{{x, in}, {make([]float32, len(dy)), out}, {dy, out}, {make([]float32, len(x)), in}},
			func(be *cpu.Backend, ts []*tensor.Tensor) {
				be.MaxPoolForward(ts[1], ts[0], c.k, c.s)
				be.MaxPoolBackward(ts[3], ts[2], ts[0], ts[1], c.k, c.s)
			})
		ref := make([]float32, len(x))
		firstMaxPoolBackward(ref, dy, x, c.planes, c.h, c.w, c.k, c.s)
		if c.nans && c.k == 2 && c.s == 2 {
			want[3] = ref
		} else {
			sameBits(t, name+" CPU MaxPoolBackward against the test's rule", want[3], ref)
		}
		// Any NaN for a NaN: Go's max, in the CPU's 2x2 path, returns NaNs
		// with other operands' bits in the payload.
		sameBF16(t, name+" float32 y", oneNaN(toBF16(readF32(t, filepath.Join(dir32, "y")))), oneNaN(toBF16(want[1])))
		sameBits(t, name+" float32 dx", readF32(t, filepath.Join(dir32, "dx")), want[3])
	}
}

// crop_resize_bf16 gives cifar.ApplyCrop's floats rounded to bf16, bit for
// bit, for TestEmulatedCropResize's transforms.
func TestEmulatedBF16CropResize(t *testing.T) {
	r := rand.New(rand.NewPCG(37, 38))
	const N = 5
	images := make([]byte, N*cifar.ImageBytes)
	for i := range images {
		images[i] = byte(r.Uint32())
	}
	for _, tf := range []cifar.Planner{cifar.SeedTransform{Size: 48}, cifar.SeedTransform{Size: 20}, cifar.CIFARTransform{},
		cifar.CIFARTransform{Size: 36}, cifar.EvalTransform{Size: 32, Norm: cifar.CIFARNorm}, cifar.EvalTransform{Size: 64}} {
		s := tf.OutputSize()
		const n = 12
		dir := t.TempDir()
		want := cropInputs(t, dir, r, tf, images, n)
		run(t, dir, "bf16crop", 7, n, s, cifar.Side)
		// The bf16 batch is channels-last.
		sameBF16(t, fmt.Sprintf("%T size %d", tf, s), readBF16(t, filepath.Join(dir, "y")), toBF16(toNHWC(want, n, 3, s*s)))
	}
}

// toNHWC reorders images x [n, c, hw] to [n, hw, c].
func toNHWC(x []float32, n, c, hw int) []float32 {
	y := make([]float32, len(x))
	for i := range n {
		for ch := range c {
			for p := range hw {
				y[(i*hw+p)*c+ch] = x[(i*c+ch)*hw+p]
			}
		}
	}
	return y
}

// cpuBNReLU is the CPU backend's batch norm (+ ReLU when relu) on x [n, ch,
// hw] with the given parameters and running statistics, its inference with
// the updated statistics, and its backward from dy: the results in the
// order x, gamma, beta, running mean, running var, y, saved mean, saved
// 1/std, inference y, dy (after ReLU's backward), dx, dgamma, dbeta.
func cpuBNReLU(x, gamma, beta, rm, rv, dy []float32, n, ch, hw int, relu bool, mom, eps float64) [][]float32 {
	shape, per := []int{n, ch, 1, hw}, []int{ch}
	size := n * ch * hw
	return onCPUShaped([]shaped{{x, shape}, {gamma, per}, {beta, per}, {rm, per}, {rv, per},
		{make([]float32, size), shape}, {make([]float32, ch), per}, {make([]float32, ch), per},
		{make([]float32, size), shape}, {dy, shape}, {make([]float32, size), shape}, {make([]float32, ch), per},
		{make([]float32, ch), per}},
		func(be *cpu.Backend, ts []*tensor.Tensor) {
			X, G, B, RM, RV, Y, SM, SI, YI, DY, DX, DG, DB := ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ts[6], ts[7], ts[8], ts[9], ts[10], ts[11], ts[12]
			be.BatchNormTrain(Y, X, G, B, RM, RV, SM, SI, nil, mom, eps)
			if relu {
				be.ReLUForward(Y, Y)
				be.ReLUBackward(DY, DY, Y)
			}
			be.BatchNormInfer(YI, X, G, B, RM, RV, eps)
			if relu {
				be.ReLUForward(YI, YI)
			}
			be.BatchNormBackward(DX, DG, DB, DY, X, G, SM, SI)
		})
}

// cropInputs draws n crops of the images (one flipped at least) with tf,
// writes the images, the crops and tf's table into dir for the emulator's
// crop ops, and returns what cifar.ApplyCrop makes of them.
func cropInputs(t *testing.T, dir string, r *rand.Rand, tf cifar.Planner, images []byte, n int) []float32 {
	t.Helper()
	s := tf.OutputSize()
	crops := make([]byte, 4*CropWords*n)
	want := make([]float32, n*3*s*s)
	for k := range n {
		img := r.IntN(len(images) / cifar.ImageBytes)
		c := tf.Plan(r)
		if k == 0 {
			c.Flip = true
		}
		for w, v := range []int{img, c.Top, c.Left, c.H, c.W, b2n(c.Flip)} {
			binary.LittleEndian.PutUint32(crops[4*(CropWords*k+w):], uint32(int32(v)))
		}
		cifar.ApplyCrop(want[k*3*s*s:(k+1)*3*s*s], images[img*cifar.ImageBytes:(img+1)*cifar.ImageBytes], c, s, tf.Table())
	}
	if err := os.WriteFile(filepath.Join(dir, "images"), images, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "crops"), crops, 0o644); err != nil {
		t.Fatal(err)
	}
	tab := tf.Table()
	writeF32(t, filepath.Join(dir, "table"), append(append(tab[0][:], tab[1][:]...), tab[2][:]...))
	return want
}

// TestEmulatorCatchesDivergentBarrier: a kernel in which one thread of a
// block returns before a __syncthreads the others reach (undefined on a
// GPU) stops the emulator with a message, instead of its barrier pairing
// with the block's end unnoticed; the same kernel with every thread at
// the barrier runs.
func TestEmulatorCatchesDivergentBarrier(t *testing.T) {
	cxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ not installed: cannot emulate the kernels")
	}
	header, err := os.ReadFile(filepath.Join("testdata", "emu.h"))
	if err != nil {
		t.Fatal(err)
	}
	const prog = `
static int out[64];
__global__ void kernel(unsigned skipper) {
	if (threadIdx.x == skipper) return;
	__syncthreads();
	out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}
int main(int argc, char** argv) {
	unsigned skipper = (unsigned)std::atoi(argv[1]);
	launch_threads(3, 8, [=] { kernel(skipper); });
	return 0;
}
`
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "divergent.cpp"), filepath.Join(dir, "divergent")
	if err := os.WriteFile(src, append(header, prog...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cxx, "-std=c++20", "-O1", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compiling: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "99").CombinedOutput(); err != nil { // no thread 99: every thread at the barrier
		t.Errorf("a kernel whose threads all reach the barrier: %v\n%s", err, out)
	}
	for _, skipper := range []string{"0", "5"} {
		out, err := exec.Command(bin, skipper).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "a barrier not every thread of a block reaches") {
			t.Errorf("thread %s skipping the barrier: %v\n%s", skipper, err, out)
		}
	}
}
