package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// availableBytes is MemAvailable from /proc/meminfo, or 0 when unknown.
func availableBytes() (int64, string) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10, "available"
			}
		}
	}
	return 0, ""
}
