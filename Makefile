# thinimg: convenience targets. The README's two commands are `make demo` and `make check`.
#
#   make build   release build in build/ (gcc)
#   make check   install deps, build with ASan/UBSan (clang, with libFuzzer targets) in
#                build-check/ and run every test, the VM (real dm-thin) suite included
#   make demo    install deps, build, and run process-image on the bundled example image
#                (inside a VM when this kernel has no dm-thin)
#   make bench   run the benchmarks (release build) and print ratios against baselines
#   make format  clang-format the sources

JOBS ?= $(shell nproc)
CHECK_DIR ?= build-check

.PHONY: deps build check demo bench format tidy clean

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j$(JOBS)

check: deps
	@CC=clang cmake -S . -B $(CHECK_DIR) -DCMAKE_BUILD_TYPE=Debug -DTHINIMG_SANITIZE=ON \
		-DTHINIMG_FUZZ=ON >/dev/null
	@cmake --build $(CHECK_DIR) -j$(JOBS)
	@ctest --test-dir $(CHECK_DIR) -LE '^dm$$' -j2 --output-on-failure --timeout 1800

demo: build
	@scripts/demo.sh

bench: build
	@bench/run-all.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

tidy: build
	@clang-tidy -p build --quiet $$(git ls-files 'src/*.c')

clean:
	rm -rf build build-check
