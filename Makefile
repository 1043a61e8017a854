# Thin wrapper over CMake so the two README commands stay short.
#   make demo   install what is missing, build, run the whole pipeline, verify
#   make test   install what is missing, build (normal + ASan/UBSan), run every test
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)

.PHONY: all deps build build-asan demo test test-unit test-asan bench fuzz smoke-container deb clean

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

# Debian package (docs/DEPLOYING.md): $(DEB_OUT)/sensegate_<version>_<arch>.deb.
# dpkg-buildpackage runs in a copy of the tree, build-deb-<arch>/sensegate, so
# its files land in build-deb-<arch>/, never in this tree or its parent.
# DEB_ARCH=arm64 cross-builds (needs the :arm64 -dev packages, see
# docs/DEPLOYING.md). DEB_CHECK=1 also builds and runs the unit tests.
DEB_ARCH  ?= $(shell dpkg --print-architecture 2>/dev/null)
DEB_OUT   ?= dist
DEB_CHECK ?= 0
DEB_SRC    = build-deb-$(DEB_ARCH)/sensegate
deb:
	scripts/install-deps.sh --deb $(if $(filter-out $(shell dpkg --print-architecture 2>/dev/null),$(DEB_ARCH)),--arm64)
	rm -rf build-deb-$(DEB_ARCH) && mkdir -p $(DEB_SRC) $(DEB_OUT)
	bash -c '. docker/podman-lib.sh && sg_source_tar .' | tar -x -C $(DEB_SRC)
	cd $(DEB_SRC) && DEB_BUILD_OPTIONS="$(if $(filter 1,$(DEB_CHECK)),,nocheck )$(DEB_BUILD_OPTIONS)" \
	  nice dpkg-buildpackage -b -us -uc -a$(DEB_ARCH) -j$(JOBS) $(if $(filter 1,$(DEB_CHECK)),,-Pnocheck)
	rm -f $(DEB_OUT)/sensegate_*_$(DEB_ARCH).deb
	cp build-deb-$(DEB_ARCH)/sensegate_*_$(DEB_ARCH).deb $(DEB_OUT)/
	@ls -l $(DEB_OUT)/sensegate_*_$(DEB_ARCH).deb

bench: build
	python3 bench/bench.py --build $(BUILD) --out $(BUILD)/bench.json

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz build-arm64 build-ci-* build-deb-* dist
