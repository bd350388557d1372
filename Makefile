# Thin front over CMake. The README's two commands:
#   make run   install what is missing, build Release, start meshd (default bundle) before a demo app
#   make test  install what is missing, build Release and ASan+UBSan, run every test in both
# Other targets: build, build-asan, unit, bench (bench/run.sh: meshd vs peers), clean.
JOBS ?= $(shell nproc)
CTEST_FLAGS ?= --output-on-failure -j $(JOBS)

.PHONY: deps build build-asan run test unit bench clean

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build build/release

build-asan: deps
	@cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMESHD_SANITIZE=ON >/dev/null
	@cmake --build build/asan

run: build
	@./scripts/run-demo.sh build/release

test: build build-asan
	@echo "== Release: unit, fuzz replay, integration"
	@cd build/release && ctest $(CTEST_FLAGS)
	@echo "== ASan+UBSan: unit, fuzz replay, integration"
	@cd build/asan && ctest $(CTEST_FLAGS)

unit: build
	@cd build/release && ctest $(CTEST_FLAGS) -L 'unit|fuzz'

bench:
	@./bench/run.sh

clean:
	rm -rf build
