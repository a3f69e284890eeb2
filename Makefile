# vgg16: one Go binary that trains VGG networks on CIFAR-10.
GO      ?= go
BIN     ?= ./vgg16

.PHONY: build test run bench fuzz race vet portable kernels-check gpu-build clean

build:
	$(GO) build -o $(BIN) ./cmd/vgg16

# The main job: train on CIFAR-10 (downloaded if missing; the embedded demo
# sample when offline), with settings that suit the machine.
run: build
	$(BIN) train --auto-settings

# go vet, and gofmt: a file gofmt would change fails, named.
vet:
	$(GO) vet ./...
	@unformatted=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(find . -name '*.go' -not -path './.gpu/*')) || exit 1; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi

# Unit tests, gradient checks, PyTorch parity (../shared/fixtures), GPU tests
# (skipped without a GPU; the stand-in CUDA libraries otherwise), the race
# detector over the concurrent packages, then a short run of every fuzz target.
# -timeout: the stand-in GPU suite alone takes ~6 of go test's default 10
# minutes on a 2-core machine.
test: vet
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory race
	$(MAKE) --no-print-directory portable
	$(MAKE) --no-print-directory fuzz

# The concurrent parts (loader, training loop, signals, CLI) under the race
# detector. -timeout: cmd/vgg16 alone took 6 minutes of the default 10 on a
# loaded 2-core machine.
race:
	$(GO) test -race -count=1 -timeout 30m ./cmd/vgg16 ./internal/train ./internal/cifar ./internal/cpu ./internal/sgemm ./internal/device ./internal/pickle

# Other platforms and builds. The pure-Go build (CGO_ENABLED=0: what
# `go install` makes where there is no C compiler) runs every test; macOS,
# Windows (with and without cgo: its CPU backend is pure Go either way),
# Linux on arm64 and 32-bit x86 are type-checked, tests included, and
# 32-bit x86 also runs every test where the kernel runs its binaries. Where the
# tools are installed (.ci/run installs them), the CPU backend's C is
# tested as clang compiles it (macOS's compiler) and on arm64 under qemu,
# where the whole binary also trains, resumes and evaluates
# (scripts/arm64-smoke.sh).
# Not covered: the C as macOS's SDK builds it.
ARM64_SYSROOT ?= /usr/aarch64-linux-gnu
portable:
	CGO_ENABLED=0 $(GO) test -count=1 ./...
	for t in darwin/arm64 windows/amd64 linux/arm64 linux/386; do \
		GOOS=$${t%/*} GOARCH=$${t#*/} CGO_ENABLED=0 $(GO) vet ./... || exit 1; done
	@if probe=$$(GOARCH=386 CGO_ENABLED=0 $(GO) test -count=1 -run "^$$" ./internal/tensor 2>&1); then \
		echo "GOARCH=386 go test ./..."; GOARCH=386 CGO_ENABLED=0 $(GO) test -count=1 ./... || exit 1; \
	elif echo "$$probe" | grep "exec format error" >/dev/null; then \
		echo "portable: this kernel does not run 32-bit x86 binaries: their tests are type-checked only"; \
	else echo "$$probe"; exit 1; fi
	GOOS=windows GOARCH=amd64 CGO_ENABLED=1 $(GO) vet ./...
	@if command -v clang >/dev/null; then \
		echo "CC=clang go test ./internal/cpu"; CC=clang $(GO) test -count=1 ./internal/cpu || exit 1; \
	else echo "portable: clang not installed: the CPU backend's C is not tested as clang builds it"; fi
	@if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then \
		echo "GOARCH=arm64 go test ./internal/cpu ./internal/sgemm (qemu)"; \
		CC=aarch64-linux-gnu-gcc GOARCH=arm64 CGO_ENABLED=1 $(GO) test -count=1 \
			-exec "qemu-aarch64 -L $(ARM64_SYSROOT)" ./internal/cpu ./internal/sgemm || exit 1; \
		GO=$(GO) ARM64_SYSROOT=$(ARM64_SYSROOT) bash scripts/arm64-smoke.sh || exit 1; \
	else echo "portable: aarch64-linux-gnu-gcc or qemu-aarch64 missing: the CPU backend is not tested on arm64"; fi

# Execution counts, not durations: with a duration, Go 1.26's fuzz
# coordinator can fail a clean run with "context deadline exceeded" when the
# clock runs out mid-call on a busy machine (golang/go#75804). Each count is
# about 5-15 s on the 2-core build machines.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=300000x ./internal/safetensors
	$(GO) test -run='^$$' -fuzz='^FuzzReadBin$$' -fuzztime=200000x ./internal/cifar
	$(GO) test -run='^$$' -fuzz='^FuzzReadPickle$$' -fuzztime=200000x ./internal/cifar
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=300000x ./internal/pth
	$(GO) test -run='^$$' -fuzz='^FuzzPickle$$' -fuzztime=300000x ./internal/pth
	$(GO) test -run='^$$' -fuzz='^FuzzVM$$' -fuzztime=300000x ./internal/pickle

bench:
	$(GO) test -run='^$$' -bench=. -benchtime=3x ./internal/cpu ./internal/sgemm ./internal/cifar

# Compile kernels.cu with nvcc where the CUDA toolkit is installed.
kernels-check:
	@command -v nvcc >/dev/null || { echo "nvcc not found: kernels-check needs the CUDA toolkit"; exit 1; }
	nvcc -arch=sm_90 -std=c++17 -cubin -o /dev/null kernels.cu

# Binaries and data for a GPU machine without Go: run scripts/gpu-check.sh
# there. Fixtures and 5,000 images of the CIFAR-10 sample travel along.
SHARED ?= ../shared
gpu-build:
	mkdir -p .gpu/cifar-sample
	$(GO) build -ldflags="-s -w" -o .gpu/vgg16 ./cmd/vgg16
	for p in gpu cuda kernels; do $(GO) test -c -ldflags="-s -w" -o .gpu/$$p.test ./internal/$$p || exit 1; done
	rm -rf .gpu/fixtures && cp -r $(SHARED)/fixtures .gpu/fixtures && chmod -R u+w .gpu/fixtures
	head -c $$((5000*3073)) $(SHARED)/cifar-10-sample/data_batch_1.bin > .gpu/cifar-sample/data_batch_1.bin
	du -sh .gpu

clean:
	rm -rf $(BIN) .gpu
