package pickle

import "fmt"

// Opcodes of pickle protocols 0 to 5 (names as in Python's pickletools).
const (
	OpMark           = '('
	OpStop           = '.'
	OpPop            = '0'
	OpPopMark        = '1'
	OpDup            = '2'
	OpFloat          = 'F'
	OpInt            = 'I'
	OpBinInt         = 'J'
	OpBinInt1        = 'K'
	OpLong           = 'L'
	OpBinInt2        = 'M'
	OpNone           = 'N'
	OpPersID         = 'P'
	OpBinPersID      = 'Q'
	OpReduce         = 'R'
	OpString         = 'S'
	OpBinString      = 'T'
	OpShortBinString = 'U'
	OpUnicode        = 'V'
	OpBinUnicode     = 'X'
	OpAppend         = 'a'
	OpBuild          = 'b'
	OpGlobal         = 'c'
	OpDict           = 'd'
	OpEmptyDict      = '}'
	OpAppends        = 'e'
	OpGet            = 'g'
	OpBinGet         = 'h'
	OpInst           = 'i'
	OpLongBinGet     = 'j'
	OpList           = 'l'
	OpEmptyList      = ']'
	OpObj            = 'o'
	OpPut            = 'p'
	OpBinPut         = 'q'
	OpLongBinPut     = 'r'
	OpSetItem        = 's'
	OpTuple          = 't'
	OpEmptyTuple     = ')'
	OpSetItems       = 'u'
	OpBinFloat       = 'G'

	// Protocol 2.
	OpProto    = 0x80
	OpNewObj   = 0x81
	OpExt1     = 0x82
	OpExt2     = 0x83
	OpExt4     = 0x84
	OpTuple1   = 0x85
	OpTuple2   = 0x86
	OpTuple3   = 0x87
	OpNewTrue  = 0x88
	OpNewFalse = 0x89
	OpLong1    = 0x8a
	OpLong4    = 0x8b

	// Protocol 3.
	OpBinBytes      = 'B'
	OpShortBinBytes = 'C'

	// Protocol 4.
	OpShortBinUnicode = 0x8c
	OpBinUnicode8     = 0x8d
	OpBinBytes8       = 0x8e
	OpEmptySet        = 0x8f
	OpAddItems        = 0x90
	OpFrozenSet       = 0x91
	OpNewObjEx        = 0x92
	OpStackGlobal     = 0x93
	OpMemoize         = 0x94
	OpFrame           = 0x95

	// Protocol 5.
	OpByteArray8     = 0x96
	OpNextBuffer     = 0x97
	OpReadOnlyBuffer = 0x98
)

var opNames = map[byte]string{
	OpMark: "MARK", OpStop: "STOP", OpPop: "POP", OpPopMark: "POP_MARK", OpDup: "DUP",
	OpFloat: "FLOAT", OpInt: "INT", OpBinInt: "BININT", OpBinInt1: "BININT1", OpLong: "LONG",
	OpBinInt2: "BININT2", OpNone: "NONE", OpPersID: "PERSID", OpBinPersID: "BINPERSID",
	OpReduce: "REDUCE", OpString: "STRING", OpBinString: "BINSTRING",
	OpShortBinString: "SHORT_BINSTRING", OpUnicode: "UNICODE", OpBinUnicode: "BINUNICODE",
	OpAppend: "APPEND", OpBuild: "BUILD", OpGlobal: "GLOBAL", OpDict: "DICT",
	OpEmptyDict: "EMPTY_DICT", OpAppends: "APPENDS", OpGet: "GET", OpBinGet: "BINGET",
	OpInst: "INST", OpLongBinGet: "LONG_BINGET", OpList: "LIST", OpEmptyList: "EMPTY_LIST",
	OpObj: "OBJ", OpPut: "PUT", OpBinPut: "BINPUT", OpLongBinPut: "LONG_BINPUT",
	OpSetItem: "SETITEM", OpTuple: "TUPLE", OpEmptyTuple: "EMPTY_TUPLE", OpSetItems: "SETITEMS",
	OpBinFloat: "BINFLOAT", OpProto: "PROTO", OpNewObj: "NEWOBJ", OpExt1: "EXT1", OpExt2: "EXT2",
	OpExt4: "EXT4", OpTuple1: "TUPLE1", OpTuple2: "TUPLE2", OpTuple3: "TUPLE3",
	OpNewTrue: "NEWTRUE", OpNewFalse: "NEWFALSE", OpLong1: "LONG1", OpLong4: "LONG4",
	OpBinBytes: "BINBYTES", OpShortBinBytes: "SHORT_BINBYTES",
	OpShortBinUnicode: "SHORT_BINUNICODE", OpBinUnicode8: "BINUNICODE8", OpBinBytes8: "BINBYTES8",
	OpEmptySet: "EMPTY_SET", OpAddItems: "ADDITEMS", OpFrozenSet: "FROZENSET",
	OpNewObjEx: "NEWOBJ_EX", OpStackGlobal: "STACK_GLOBAL", OpMemoize: "MEMOIZE", OpFrame: "FRAME",
	OpByteArray8: "BYTEARRAY8", OpNextBuffer: "NEXT_BUFFER", OpReadOnlyBuffer: "READONLY_BUFFER",
}

// OpName names an opcode as pickletools does, or gives its byte value.
func OpName(op byte) string {
	if s, ok := opNames[op]; ok {
		return s
	}
	return fmt.Sprintf("opcode 0x%02x", op)
}
