# Thin wrapper over meson/ninja. See README.md.
BUILD ?= build
B ?=

.PHONY: all deps build check demo bench format clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD)
	@ninja -C $(BUILD)

check:
	@scripts/check.sh

demo: build
	@scripts/demo.sh

bench: build
	@bench/run.sh $(B)

format:
	@git ls-files '*.c' '*.h' | grep -v '^tests/guests/.*\.S$$' | xargs clang-format -i

clean:
	rm -rf build build-asan build-clang build-*.log
