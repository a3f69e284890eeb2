//go:build !cgo || windows

package cpu

// Built without cgo, or for Windows: the transforms in Go (winograd_go.go).

func simd() string { return "pure Go" }

var (
	winoFilterRange        = winoFilterGo
	winoFilterAdjointRange = winoFilterAdjointGo
	winoInputRange         = winoInputGo
	winoOutputRange        = winoOutputGo
	winoOutputAdjointRange = winoOutputAdjointGo
)

// withC says the transforms and batch norm's passes run in C.
const withC = false
