//go:build linux && cgo

package cuda

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>

static void* vg_dlopen(const char* name, int global) {
	return dlopen(name, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
}
static const char* vg_dlerror(void) { return dlerror(); }
static void* vg_dlsym(void* h, const char* name) {
	dlerror();
	return dlsym(h, name);
}
// vg_dlpath is the file the loader actually opened for h.
static const char* vg_dlpath(void* h) {
	struct link_map* lm = NULL;
	if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL) return NULL;
	return lm->l_name;
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"
)

// lib is one library opened with dlopen.
type lib struct {
	name string // the soname that was asked for, e.g. "libcudnn.so.9"
	path string // the file the loader opened
	h    unsafe.Pointer
	// fallbacks are searched, in order, for symbols that h lacks (cuDNN 9's
	// sub-libraries).
	fallbacks []*lib
}

// libSpec says where a library may be found and what to tell the user when
// it is not.
type libSpec struct {
	names []string // sonames, most wanted first
	what  string   // "cuDNN 9"
	hint  string   // how to get it
	// companions are sonames (glob patterns, "{major}" standing for the
	// major version of the name being opened) opened RTLD_GLOBAL from the
	// same directory before the library, so that its own dlopen of them
	// (NVRTC's builtins, cuBLAS's cuBLASLt, cuDNN's sub-libraries) finds
	// them when the directory is not on the loader's path, and finds those
	// of its own version.
	companions []string
}

// searchDirs are the directories of $VGG16_CUDA_PATH.
func searchDirs() []string {
	var dirs []string
	for _, d := range strings.Split(os.Getenv("VGG16_CUDA_PATH"), ":") {
		if d = strings.TrimSpace(d); d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func dlopen(path string, global bool) (unsafe.Pointer, error) {
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	h := C.vg_dlopen(cs, boolInt(global))
	if h == nil {
		return nil, fmt.Errorf("%s", C.GoString(C.vg_dlerror()))
	}
	return h, nil
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// openLib opens the first of spec.names found, in dirs first and then (when
// system is set) through the loader's search path. A file that exists but
// fails to load is reported as such, since that is a different problem
// (wrong architecture, a missing dependency) from the library being absent.
func openLib(spec libSpec, dirs []string, system bool) (*lib, error) {
	var failures []string
	for _, dir := range dirs {
		for _, name := range spec.names {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			preloadCompanions(dir, spec.companions, soMajor(name))
			h, err := dlopen(p, false)
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s exists but did not load: %v", p, err))
				continue
			}
			return newLib(name, h), nil
		}
	}
	if system {
		for _, name := range spec.names {
			h, err := dlopen(name, false)
			if err != nil {
				if !strings.Contains(err.Error(), "No such file") && !strings.Contains(err.Error(), "cannot open shared object file") {
					failures = append(failures, err.Error())
				}
				continue
			}
			return newLib(name, h), nil
		}
	}
	where := "the system library path"
	if len(dirs) > 0 {
		where = "VGG16_CUDA_PATH=" + strings.Join(dirs, ":")
		if system {
			where += " and the system library path"
		}
	}
	msg := fmt.Sprintf("%s not found (looked in %s): %s, or run with --device cpu", strings.Join(spec.names, " or "), where, spec.hint)
	if len(failures) > 0 {
		msg += "; " + strings.Join(failures, "; ")
	}
	return nil, &LoadError{Lib: spec.what, Msg: msg}
}

func preloadCompanions(dir string, patterns []string, major string) {
	for _, pat := range patterns {
		if major == "" && strings.Contains(pat, "{major}") {
			continue // not every version's
		}
		matches, _ := filepath.Glob(filepath.Join(dir, strings.ReplaceAll(pat, "{major}", major)))
		for _, m := range matches {
			dlopen(m, true) // best effort: the library's own error says more
		}
	}
}

// soMajor is the version after ".so." in a soname: "13" for
// libcublas.so.13, "" where there is none.
func soMajor(name string) string {
	_, v, ok := strings.Cut(name, ".so.")
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, ".")
	return v
}

// forDriver is s without the names of libraries of a CUDA newer than the
// driver supports (version as cuDriverGetVersion gives it: 12040 for
// 12.4): CUDA 13's cuBLAS does not start on a CUDA 12 driver, nor does
// code that NVRTC 13 compiled load, where CUDA 12's libraries beside them
// would work. Where that leaves no name, s is kept, its hint naming the
// driver's version.
func (s libSpec) forDriver(version int) libSpec {
	var keep []string
	for _, n := range s.names {
		if m, err := strconv.Atoi(soMajor(n)); err != nil || m*1000 <= version {
			keep = append(keep, n)
		}
	}
	if len(keep) == 0 {
		s.hint += fmt.Sprintf(" (this driver supports CUDA %d.%d only: update the driver)", version/1000, version%1000/10)
		return s
	}
	s.names = keep
	return s
}

func newLib(name string, h unsafe.Pointer) *lib {
	l := &lib{name: name, h: h, path: name}
	if p := C.vg_dlpath(h); p != nil {
		l.path = C.GoString(p)
	}
	return l
}

// sym looks name up in l and then in its fallbacks.
func (l *lib) sym(name string) (unsafe.Pointer, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if p := C.vg_dlsym(l.h, cs); p != nil {
		return p, nil
	}
	for _, f := range l.fallbacks {
		if p := C.vg_dlsym(f.h, cs); p != nil {
			return p, nil
		}
	}
	return nil, &LoadError{Lib: l.name, Msg: fmt.Sprintf("symbol %s not found in %s (%s): the library is older than this program needs", name, l.name, l.path)}
}

// symbol is one entry of a library's function table.
type symbol struct {
	name     string
	p        *unsafe.Pointer
	optional bool // newer or informational functions the code can do without
}

// resolve fills every entry of table from l.
func (l *lib) resolve(table []symbol) error {
	for _, s := range table {
		p, err := l.sym(s.name)
		if err != nil {
			if s.optional {
				continue
			}
			return err
		}
		*s.p = p
	}
	return nil
}

// LoadError says that a library or one of its functions could not be
// loaded.
type LoadError struct {
	Lib string // "CUDA driver", "cuBLAS", "cuDNN 9", "NVRTC" or a soname
	Msg string
}

func (e *LoadError) Error() string { return e.Msg }
