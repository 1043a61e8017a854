# Thin wrapper over CMake so the two README commands stay short.
#   make demo   install what is missing, build, run the whole pipeline, verify
#   make test   install what is missing, build (normal + ASan/UBSan), run every test
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)

.PHONY: all deps build build-asan demo test test-unit test-asan bench fuzz smoke-container clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSG_WERROR=ON

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSG_SANITIZE=address,undefined -DSG_WERROR=ON

build-asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS)

demo: build
	python3 scripts/demo.py --build $(BUILD)

test-unit: build
	cd $(BUILD) && ctest -L unit --output-on-failure

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j2

test: build build-asan
	cd $(BUILD) && ctest --output-on-failure -j2
	$(MAKE) --no-print-directory test-asan

FUZZ_SECONDS ?= 30
fuzz:
	scripts/install-deps.sh --dev
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run

smoke-container: build
	SG_BUILD_DIR=$(BUILD) docker/ci-smoke

# arm64 without hardware (docs/ARM64.md): cross-build into build-arm64, unit
# tests and one end-to-end scenario under qemu-user.
.PHONY: cross-arm64
cross-arm64:
	BUILD=$(BUILD) scripts/ci-arm64

bench: build
	python3 bench/bench.py --build $(BUILD) --out $(BUILD)/bench.json

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
