# The docker:// source against a real registry (label s3): Debian's docker-registry (CNCF
# distribution) on 127.0.0.1 with storage in a temporary folder, images pushed by skopeo from
# OCI layouts built by the driver (tests/registry/real.py): gzip and zstd layers, a
# two-platform index, htpasswd Basic auth. Skipped (77) when docker-registry or skopeo is
# missing: scripts/install-deps.sh installs them.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
add_test(NAME registry_real
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/real.py)
set_tests_properties(registry_real PROPERTIES LABELS s3 TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "THINIMG_BIN=$<TARGET_FILE:thinimg>;ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
