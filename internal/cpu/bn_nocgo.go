//go:build !cgo || windows

package cpu

// Built without cgo, or for Windows: batch norm's passes in Go (bn.go).

var (
	bnStats     = bnStatsGo
	bnApply     = bnApplyGo
	bnGradSums  = bnGradSumsGo
	bnGradApply = bnGradApplyGo
)
