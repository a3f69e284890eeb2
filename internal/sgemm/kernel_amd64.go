package sgemm

import "golang.org/x/sys/cpu"

var haveKernel = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kernel6x16 is kernel in assembly (kernel_amd64.s).
//
//go:noescape
func kernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)
