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

# Registry images processed end to end with real device-mapper (label dm: inside the VM, with
# the registry and skopeo run there on the loopback): layer devices shared with a dir: family
# and between gzip and zstd pushes of one image, the activation equal to GNU tar of the
# uncompressed layers, the image config shown (tests/registry/vm.py).
add_test(NAME registry_vm
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/vm.py ${CMAKE_BINARY_DIR})
set_tests_properties(registry_vm PROPERTIES LABELS dm TIMEOUT 900 SKIP_RETURN_CODE 77)
