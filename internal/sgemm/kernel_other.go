//go:build !amd64

package sgemm

func best() tile { return goTile }

func tiles() []tile { return []tile{goTile} }
