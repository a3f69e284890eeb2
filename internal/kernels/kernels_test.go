//go:build linux && cgo

package kernels

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	vgg16 "github.com/vgg16/vgg16"
	"github.com/vgg16/vgg16/internal/cuda"
)

// kernelNames are the kernels Module.lookup needs.
var kernelNames = []string{"relu_forward", "relu_backward", "dropout_apply", "sgd_step", "bias_add_rows", "col_sum", "softmax_xent_rows", "mean_rows",
	"bn_stats", "bn_finish", "bn_scales", "bn_apply", "bn_infer_coef", "bn_affine", "bn_grad_stats", "bn_grad_finish", "bn_grad_apply",
	"crop_resize", "tally", "max_pool_forward", "max_pool_backward",
	"cast_f32_bf16", "cast_bf16_f32", "relu_forward_bf16", "relu_backward_bf16", "dropout_apply_bf16", "bias_add_rows_bf16", "col_sum_bf16",
	"bias_grad_finish", "softmax_xent_rows_bf16", "tally_bf16",
	"bn_stats_bf16", "bn_apply_bf16", "bn_affine_bf16", "bn_grad_stats_bf16", "bn_grad_apply_bf16",
	"crop_resize_bf16"}

func TestSourceDefinesEveryKernel(t *testing.T) {
	for _, k := range kernelNames {
		if !regexp.MustCompile(`extern "C" __global__ void ` + k + `\(`).MatchString(vgg16.KernelsSource) {
			t.Errorf("kernels.cu has no extern \"C\" kernel %s", k)
		}
	}
	if regexp.MustCompile(`(?m)^\s*#\s*include`).MatchString(vgg16.KernelsSource) {
		t.Error("kernels.cu must not #include anything: NVRTC compiles it without headers")
	}
	if !strings.Contains(vgg16.KernelsSource, fmt.Sprintf("#define RED_THREADS %d", redThreads)) {
		t.Errorf("RED_THREADS in kernels.cu differs from redThreads = %d", redThreads)
	}
}

func TestChooseTargets(t *testing.T) {
	archs := []int{75, 80, 86, 89, 90, 100, 120}
	for _, c := range []struct {
		cc   int
		want string
	}{
		{90, "[{sm_90 0} {compute_90 1} {compute_89 1}]"},
		{75, "[{sm_75 0} {compute_75 1}]"},
		{121, "[{compute_120 1}]"}, // newer than NVRTC: PTX for the newest it knows
		{87, "[{compute_86 1}]"},
	} {
		ts, err := chooseTargets(archs, c.cc)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(ts); got != c.want {
			t.Errorf("cc %d: %s, want %s", c.cc, got, c.want)
		}
	}
	if _, err := chooseTargets(archs, 70); err == nil || !strings.Contains(err.Error(), "sm_70") {
		t.Errorf("sm_70 with NVRTC from sm_75: error %v", err)
	}
}

func TestCacheName(t *testing.T) {
	a := CacheName("src", "sm_90", 13000, 13000)
	if !regexp.MustCompile(`^[0-9a-f]{24}-sm_90-nvrtc13000-driver13000\.cubin$`).MatchString(a) {
		t.Errorf("cache name %q", a)
	}
	for _, b := range []string{
		CacheName("src2", "sm_90", 13000, 13000),
		CacheName("src", "sm_80", 13000, 13000),
		CacheName("src", "sm_90", 12080, 13000),
		CacheName("src", "sm_90", 13000, 13010),
	} {
		if a == b {
			t.Errorf("cache names collide: %s", a)
		}
	}
	if !strings.HasSuffix(CacheName("src", "compute_90", 1, 1), ".ptx") {
		t.Error("PTX cache file should end in .ptx")
	}
}

// TestCompileWithNVRTC compiles kernels.cu with the NVRTC installed (or in
// $VGG16_CUDA_PATH), as Load does at run time, for every target Load may
// pick on the reference machine and on an Ampere card. It needs no GPU.
func TestCompileWithNVRTC(t *testing.T) {
	rtc, err := cuda.LoadRTC()
	if err != nil {
		t.Skipf("NVRTC not installed: %v", err)
	}
	compileAll(t, rtc)
}

// TestCompileWithOlderNVRTC compiles kernels.cu with an NVRTC 11 where one
// is installed (.ci/run installs Debian 12's libnvrtc.so.11.2, NVRTC 11.8): the
// same API, an older compiler, so a construct NVRTC refuses shows up here
// rather than on the first GPU run.
func TestCompileWithOlderNVRTC(t *testing.T) {
	var found []string
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64"} {
		m, _ := filepath.Glob(filepath.Join(dir, "libnvrtc.so.11*"))
		found = append(found, m...)
	}
	if len(found) == 0 {
		t.Skip("no libnvrtc.so.11 installed")
	}
	dir := t.TempDir()
	if err := os.Symlink(found[0], filepath.Join(dir, "libnvrtc.so.12")); err != nil {
		t.Fatal(err)
	}
	rtc, err := cuda.LoadRTCFrom([]string{dir})
	if err != nil {
		t.Skipf("%s: %v", found[0], err)
	}
	t.Logf("NVRTC from %s", found[0])
	compileAll(t, rtc)
}

// compileAll compiles kernels.cu for compute capabilities 8.0 and 9.0 (as
// far as rtc knows them) with the options Load uses, and checks that the
// PTX holds every kernel.
func compileAll(t *testing.T, rtc *cuda.RTC) {
	archs, err := rtc.SupportedArchs()
	if err != nil {
		t.Fatal(err)
	}
	for _, cc := range []int{80, 90} {
		ts, err := chooseTargets(archs, cc)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range ts {
			opts := append([]string{"--gpu-architecture=" + tg.arch}, compileOptions...)
			verbose := tg.out == cuda.CUBIN
			if verbose {
				opts = append(opts, "--ptxas-options=-v") // each kernel's registers and local memory
			}
			img, log, err := rtc.Compile(vgg16.KernelsSource, "kernels.cu", opts, tg.out)
			if err != nil && verbose {
				// An NVRTC without the option still has to compile the file.
				t.Logf("%s: with --ptxas-options=-v: %v; resources not checked", tg.arch, err)
				verbose = false
				img, log, err = rtc.Compile(vgg16.KernelsSource, "kernels.cu", opts[:len(opts)-1], tg.out)
			}
			if err != nil {
				t.Fatalf("%s: %v", tg.arch, err)
			}
			if rest := checkResources(t, tg.arch, log, verbose); rest != "" {
				t.Errorf("%s: compiler messages:\n%s", tg.arch, rest)
			}
			if len(img) == 0 {
				t.Fatalf("%s: empty image", tg.arch)
			}
			if tg.out == cuda.PTX {
				for _, k := range kernelNames {
					if !strings.Contains(string(img), ".entry "+k+"(") {
						t.Errorf("%s: PTX lacks kernel %s", tg.arch, k)
					}
				}
			}
			t.Logf("%s: %d bytes", tg.arch, len(img))
		}
	}
}

// TestCheckPool: the pooled kernels refuse an output that overlaps what
// they read (a race on a GPU, where blocks run together; the emulation
// runs them one at a time and would not see it), and take buffers that
// only touch.
func TestCheckPool(t *testing.T) {
	for _, bf16 := range []bool{false, true} {
		g := NHWCGeometry(2, 64, 8, 8, 4, bf16)
		full := cuda.DevicePtr(2 * 64 * 8 * 8 * 4) // x's bytes in float32
		if bf16 {
			full /= 2
		}
		const base = 1 << 20
		x, y := cuda.DevicePtr(base), cuda.DevicePtr(base)+full // y right after x
		for _, c := range []struct {
			name    string
			out     span
			in      []span
			overlap bool
		}{
			{"forward, touching", span{y, true}, []span{{x, false}}, false},
			{"forward, output below touching", span{x - full/4, true}, []span{{x, false}}, false},
			{"forward, in place", span{x, true}, []span{{x, false}}, true},
			{"forward, output inside x's end", span{y - 16, true}, []span{{x, false}}, true},
			{"backward, touching", span{x, false}, []span{{y, true}, {y + full/4, false}}, false},
			{"backward, dx over dy", span{x, false}, []span{{x + full - 16, true}, {y + full, false}}, true},
			{"backward, dx over x", span{x, false}, []span{{y, true}, {x, false}}, true},
		} {
			err := g.checkPool(c.out, c.in...)
			if got := err != nil && strings.Contains(err.Error(), "overlaps"); got != c.overlap || (!c.overlap && err != nil) {
				t.Errorf("bf16 %v, %s: %v, want overlap %v", bf16, c.name, err, c.overlap)
			}
		}
	}
}

var (
	ptxasKernel = regexp.MustCompile(`^ptxas info\s*: Function properties for (\w+)`)
	ptxasFrame  = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	ptxasRegs   = regexp.MustCompile(`^ptxas info\s*: Used (\d+) registers`)
	ptxasReport = regexp.MustCompile(`^ptxas( info\s*:|\s+\.)`) // -v's lines, not its warnings
)

// checkResources reads ptxas's report in a compiler log (required when
// verbose, the compile having asked for it): no kernel may use
// local memory (a stack frame or spills: an array indexed at run time, or
// too many registers), which no test on the host can see and which costs
// the memory-bound kernels their speed. It logs the kernels that use the
// most registers (at 256 threads a block, more than 128 leave one block a
// multiprocessor) and returns the log's other lines.
func checkResources(t *testing.T, arch, log string, verbose bool) (rest string) {
	t.Helper()
	kernel, kernels, local := "", 0, 0
	var most []string
	for _, line := range strings.Split(log, "\n") {
		if m := ptxasKernel.FindStringSubmatch(line); m != nil {
			kernel = m[1]
			kernels++
		}
		if m := ptxasFrame.FindStringSubmatch(line); m != nil && (m[1] != "0" || m[2] != "0" || m[3] != "0") {
			t.Errorf("%s: kernel %s uses local memory: %s", arch, kernel, m[0])
			local++
		}
		if m := ptxasRegs.FindStringSubmatch(line); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > 64 {
				most = append(most, fmt.Sprintf("%s %d", kernel, n))
			}
		}
		if line = strings.TrimSpace(line); line != "" && !ptxasReport.MatchString(line) {
			rest += line + "\n" // ptxas's warnings included
		}
	}
	if verbose && kernels == 0 {
		t.Errorf("%s: no ptxas report in the compiler's log (a new format?):\n%s", arch, log)
	}
	if kernels > 0 {
		t.Logf("%s: %d kernels, %d using local memory; over 64 registers: %s", arch, kernels, local, strings.Join(most, ", "))
	}
	return rest
}
