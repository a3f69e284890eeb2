package pth

import (
	"fmt"
	"io"

	"github.com/vgg16/vgg16/internal/pickle"
)

// The pickles are run on the pickle package's machine, which builds Python
// values as plain Go data and never imports or calls anything: GLOBAL only
// resolves names from a short allow-list (resolveGlobal), and "calling" one
// of them (REDUCE, NEWOBJ, ...) is a Go function that builds a dict or
// records a tensor view (callGlobal).

// Opcodes this package and its tests write or look for.
const (
	opMark           = pickle.OpMark
	opStop           = pickle.OpStop
	opBinInt         = pickle.OpBinInt
	opBinInt1        = pickle.OpBinInt1
	opLong           = pickle.OpLong
	opBinInt2        = pickle.OpBinInt2
	opNone           = pickle.OpNone
	opBinPersID      = pickle.OpBinPersID
	opReduce         = pickle.OpReduce
	opShortBinString = pickle.OpShortBinString
	opBinUnicode     = pickle.OpBinUnicode
	opAppends        = pickle.OpAppends
	opBuild          = pickle.OpBuild
	opGlobal         = pickle.OpGlobal
	opEmptyDict      = pickle.OpEmptyDict
	opEmptyList      = pickle.OpEmptyList
	opSetItem        = pickle.OpSetItem
	opTuple          = pickle.OpTuple
	opEmptyTuple     = pickle.OpEmptyTuple
	opSetItems       = pickle.OpSetItems
	opProto          = pickle.OpProto
	opTuple1         = pickle.OpTuple1
	opTuple3         = pickle.OpTuple3
	opNewTrue        = pickle.OpNewTrue
	opNewFalse       = pickle.OpNewFalse
	opLong1          = pickle.OpLong1
)

// load runs one pickle from r; name says which in error messages, and pl
// resolves its persistent ids (nil when none are expected).
func load(r *pickle.Reader, name string, pl func(any) (any, error)) (any, error) {
	vm := &pickle.VM{
		Name:           name,
		Global:         resolveGlobal,
		Call:           callGlobal,
		Build:          buildState,
		PersistentLoad: pl,
	}
	return vm.Load(r)
}

// buildState handles BUILD. torch sets OrderedDict._metadata (per-module
// versions) this way; it carries nothing about the tensors, so it is
// dropped.
func buildState(obj, state any) error {
	switch obj.(type) {
	case *pickle.Dict, *tensorRef:
		return nil
	}
	return fmt.Errorf("BUILD on a %s (state %s) is not supported", typeName(obj), typeName(state))
}

// typeName names a value's type for error messages. It never formats the
// value itself, which could be huge or refer to itself.
func typeName(v any) string {
	switch v.(type) {
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	}
	return pickle.TypeName(v)
}

func ioErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return pickle.ErrTruncated
	}
	return err
}
