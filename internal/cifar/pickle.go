package cifar

import (
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/vgg16/vgg16/internal/pickle"
)

// The python version of CIFAR-10 is a set of pickles written by Python 2's
// cPickle (protocol 2): a dict with 'data' (a numpy uint8 array 10000×3072,
// pickled through numpy.core.multiarray._reconstruct), 'labels' (a list of
// ints), 'batch_label' and 'filenames'. Loading a pickle with Python runs
// whatever callables it names; here it is read as data by the pickle
// package's machine. The only globals it accepts are numpy's array and
// dtype reconstruction, and those only build inert values that are checked
// before use: nothing is ever executed.

type (
	// pyArray is what numpy's _reconstruct + __setstate__ would build.
	pyArray struct {
		shape   []int
		dtype   *pyDtype
		fortran bool
		data    []byte
		built   bool
	}
	pyDtype struct {
		str   string // as given to numpy.dtype(), e.g. "u1"
		order string // byte order from the state, e.g. "|"
		built bool
	}
)

// numpyVM reads the pickles: Python 2 str are bytes (as
// pickle.load(f, encoding="bytes") gives them) and ints are 64-bit.
var numpyVM = &pickle.VM{
	Global:       allowGlobal,
	Call:         reduce,
	Build:        build,
	BytesStrings: true,
	Int64Only:    true,
}

// unpickle decodes a file of the python version. Where it does not decode,
// the error says first what the file is: empty, not a pickle at all (the
// dataset's files, Python 2's protocol 2 and Python 3's, start with the
// protocol byte 0x80), or cut short.
func unpickle(b []byte) (any, error) {
	v, err := numpyVM.Unpickle(b)
	switch {
	case err == nil:
		return v, nil
	case len(b) == 0:
		return nil, errors.New("empty file, want a pickle")
	case b[0] != 0x80:
		return nil, fmt.Errorf("not a pickle of the python version (its files start with byte 0x80, this one with %#02x): %w", b[0], err)
	case errors.Is(err, pickle.ErrTruncated):
		return nil, fmt.Errorf("truncated (%d bytes; a partial copy?): %w", len(b), err)
	}
	return nil, err
}

// dictGet looks a text key up both as bytes and as str: the real files
// (Python 2) have bytes keys, files re-saved by Python 3 have str keys.
func dictGet(d *pickle.Dict, name string) (any, bool) {
	if v, ok := d.Get(pickle.Bytes(name)); ok {
		return v, true
	}
	return d.Get(name)
}

func typeName(v any) string {
	switch x := v.(type) {
	case pickle.Global:
		return "global"
	case *pyArray:
		return "numpy.ndarray"
	case *pyDtype:
		return "numpy.dtype"
	default:
		return pickle.TypeName(x)
	}
}

// decodeLong decodes a little-endian two's-complement integer (LONG1/LONG4)
// of at most 64 bits.
func decodeLong(s []byte) (int64, error) {
	if len(s) > 8 {
		return 0, fmt.Errorf("integer of %d bytes is too large", len(s))
	}
	return pickle.DecodeLong(s).(int64), nil
}

// allowGlobal is the whitelist: numpy's array reconstruction under its
// numpy 1 (numpy.core) and numpy 2 (numpy._core) names. Any other global is
// refused, so that a pickle can never name something to run.
func allowGlobal(mod, name string) (any, error) {
	g := pickle.Global{Module: mod, Name: name}
	switch g {
	case pickle.Global{Module: "numpy.core.multiarray", Name: "_reconstruct"},
		pickle.Global{Module: "numpy._core.multiarray", Name: "_reconstruct"},
		pickle.Global{Module: "numpy", Name: "ndarray"},
		pickle.Global{Module: "numpy", Name: "dtype"}:
		return g, nil
	}
	if g == (pickle.Global{Module: "_codecs", Name: "encode"}) {
		// How Python 3 writes bytes at protocol 2: a call, which the
		// original files (Python 2's) never make.
		return nil, errors.New("global _codecs.encode is not allowed: Python 3 wrote this at protocol 2, bytes as calls; use the original files, or pickle at protocol 3 or later")
	}
	return nil, fmt.Errorf("global %s.%s is not allowed (only numpy's ndarray reconstruction is)", mod, name)
}

func isReconstruct(g pickle.Global) bool {
	return g.Name == "_reconstruct" && (g.Module == "numpy.core.multiarray" || g.Module == "numpy._core.multiarray")
}

// reduce applies a whitelisted global to its arguments, which here only
// means recording them in an inert value.
func reduce(fn any, a []any) (any, error) {
	g, ok := fn.(pickle.Global)
	if !ok {
		return nil, fmt.Errorf("REDUCE of a %s", typeName(fn))
	}
	switch {
	case isReconstruct(g):
		// _reconstruct(numpy.ndarray, (0,), b'b'): an empty array that BUILD fills.
		if len(a) != 3 || a[0] != (pickle.Global{Module: "numpy", Name: "ndarray"}) {
			return nil, errors.New("_reconstruct arguments are not (numpy.ndarray, shape, typecode)")
		}
		return &pyArray{}, nil
	case g == pickle.Global{Module: "numpy", Name: "dtype"}:
		// dtype('u1', 0, 1)
		if len(a) < 1 {
			return nil, errors.New("numpy.dtype without arguments")
		}
		var s string
		switch v := a[0].(type) {
		case pickle.Bytes:
			s = string(v)
		case string:
			s = v
		default:
			return nil, fmt.Errorf("numpy.dtype of a %s", typeName(a[0]))
		}
		return &pyDtype{str: s}, nil
	}
	return nil, fmt.Errorf("cannot call %s.%s", g.Module, g.Name)
}

// build applies a BUILD state to an array or a dtype (numpy's __setstate__).
func build(obj, state any) error {
	st, ok := state.(pickle.Tuple)
	if !ok {
		return fmt.Errorf("BUILD state is a %s, want a tuple", typeName(state))
	}
	switch o := obj.(type) {
	case *pyDtype:
		// (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
		if len(st) < 2 {
			return errors.New("short dtype state")
		}
		switch v := st[1].(type) {
		case pickle.Bytes:
			o.order = string(v)
		case string:
			o.order = v
		default:
			return errors.New("dtype state without a byte order")
		}
		o.built = true
		return nil
	case *pyArray:
		// (version, shape, dtype, is_fortran, raw data)
		if len(st) != 5 {
			return fmt.Errorf("ndarray state has %d items, want 5", len(st))
		}
		shape, ok := st[1].(pickle.Tuple)
		if !ok {
			return errors.New("ndarray shape is not a tuple")
		}
		o.shape = make([]int, len(shape))
		for i, d := range shape {
			n, ok := d.(int64)
			if !ok || n < 0 || n > math.MaxInt32 {
				return errors.New("ndarray shape is not a tuple of sizes")
			}
			o.shape[i] = int(n)
		}
		if o.dtype, ok = st[2].(*pyDtype); !ok {
			return errors.New("ndarray dtype is missing")
		}
		f, ok := st[3].(bool)
		if !ok {
			if i, isInt := st[3].(int64); isInt && (i == 0 || i == 1) {
				f, ok = i == 1, true
			}
		}
		if !ok {
			return errors.New("ndarray fortran flag is not a bool")
		}
		o.fortran = f
		data, ok := st[4].(pickle.Bytes)
		if !ok {
			return fmt.Errorf("ndarray data is a %s, want bytes", typeName(st[4]))
		}
		o.data = data
		o.built = true
		return nil
	}
	return fmt.Errorf("BUILD on a %s", typeName(obj))
}

// ReadPickleFile reads one batch file of the python version
// (cifar-10-batches-py/data_batch_N or test_batch). Its classes are
// ClassNames.
func ReadPickleFile(path string) (*Dataset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cifar: %w", err)
	}
	ds, err := parsePickleBatch(b)
	if err != nil {
		return nil, fmt.Errorf("cifar: %s: %w", path, err)
	}
	return ds, nil
}

func parsePickleBatch(b []byte) (*Dataset, error) {
	v, err := unpickle(b)
	if err != nil {
		return nil, err
	}
	d, ok := v.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("pickle holds a %s, want a dict", typeName(v))
	}
	dv, ok := dictGet(d, "data")
	if !ok {
		return nil, errors.New("no 'data' entry")
	}
	arr, ok := dv.(*pyArray)
	if !ok || !arr.built || arr.dtype == nil || !arr.dtype.built {
		return nil, fmt.Errorf("'data' is a %s, want a numpy array", typeName(dv))
	}
	if s := arr.dtype.str; s != "u1" && s != "|u1" && s != "uint8" {
		return nil, fmt.Errorf("'data' has dtype %q, want uint8", s)
	}
	if arr.fortran {
		return nil, errors.New("'data' is in Fortran order, want C order")
	}
	// 10000×3072 in the real files; N×3×32×32 is the same layout.
	sh := arr.shape
	if !(len(sh) == 2 && sh[1] == ImageBytes) && !(len(sh) == 4 && sh[1] == 3 && sh[2] == Side && sh[3] == Side) {
		return nil, fmt.Errorf("'data' has shape %v, want [N %d]", sh, ImageBytes)
	}
	n := sh[0]
	if len(arr.data) != n*ImageBytes {
		return nil, fmt.Errorf("'data' has %d bytes, its shape %v needs %d", len(arr.data), sh, n*ImageBytes)
	}
	lv, ok := dictGet(d, "labels")
	if !ok {
		return nil, errors.New("no 'labels' entry")
	}
	var items []any
	switch l := lv.(type) {
	case *pickle.List:
		items = l.Items
	case pickle.Tuple:
		items = l
	default:
		return nil, fmt.Errorf("'labels' is a %s, want a list", typeName(lv))
	}
	if len(items) != n {
		return nil, fmt.Errorf("%d labels for %d images", len(items), n)
	}
	ds := &Dataset{Images: make([]byte, n*ImageBytes), Labels: make([]uint8, n), Classes: ClassNames}
	for i, it := range items {
		l, ok := it.(int64)
		if !ok {
			return nil, fmt.Errorf("label %d is a %s, want an int", i, typeName(it))
		}
		if l < 0 || l >= NumClasses {
			return nil, fmt.Errorf("label %d of record %d out of range 0..%d", l, i, NumClasses-1)
		}
		ds.Labels[i] = uint8(l)
	}
	copy(ds.Images, arr.data) // do not keep the whole file alive
	return ds, nil
}

// readMetaPickle reads batches.meta: a dict whose 'label_names' lists the
// class names in label order.
func readMetaPickle(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cifar: %w", err)
	}
	names, err := parseMetaPickle(b)
	if err == nil {
		err = CheckClassNames(names)
	}
	if err != nil {
		return nil, fmt.Errorf("cifar: %s: %w", path, err)
	}
	return names, nil
}

func parseMetaPickle(b []byte) ([]string, error) {
	v, err := unpickle(b)
	if err != nil {
		return nil, err
	}
	d, ok := v.(*pickle.Dict)
	if !ok {
		return nil, fmt.Errorf("pickle holds a %s, want a dict", typeName(v))
	}
	lv, ok := dictGet(d, "label_names")
	if !ok {
		return nil, errors.New("no 'label_names' entry")
	}
	l, ok := lv.(*pickle.List)
	if !ok {
		return nil, fmt.Errorf("'label_names' is a %s, want a list", typeName(lv))
	}
	if len(l.Items) != NumClasses {
		return nil, fmt.Errorf("%d label names, want %d", len(l.Items), NumClasses)
	}
	names := make([]string, len(l.Items))
	for i, it := range l.Items {
		switch s := it.(type) {
		case pickle.Bytes:
			names[i] = string(s)
		case string:
			names[i] = string(s)
		default:
			return nil, fmt.Errorf("label name %d is a %s", i, typeName(it))
		}
		if names[i] == "" {
			return nil, fmt.Errorf("label name %d is empty", i)
		}
	}
	return names, nil
}
