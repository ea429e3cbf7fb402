# Tests that need real device-mapper (label dm). They only run inside the VM: the vm test in
# tests/vm/tests.cmake boots it and runs the dm label there; `make check` excludes the label on
# the host. Where the kernel has no device-mapper they exit 77 (skipped).
#
# These two also carry the label dm-faults: they fill pools, exhaust metadata and load
# needs_check/read-only pools on purpose, which leaves thin-pool trouble in the kernel log of
# the VM. The health checks of later tests in the same boot would rightly refuse to work, so
# tests/vm/dm_suite.sh runs every other dm test first and the dm-faults ones last.
thinimg_test(test_dm_thin SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dm_thin.c
             ${CMAKE_CURRENT_LIST_DIR}/dm_fixture.c ${CMAKE_CURRENT_LIST_DIR}/../testutil.c LABELS dm dm-faults TIMEOUT 600)
set_tests_properties(test_dm_thin PROPERTIES SKIP_RETURN_CODE 77)

add_test(NAME test_dm_setup_pool COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_setup_pool.sh)
set_tests_properties(test_dm_setup_pool PROPERTIES LABELS "dm;dm-faults" TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "THINIMG_BIN=$<TARGET_FILE:thinimg>;ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")

# Benchmark helper for bench/dm.sh (built with the tests, not a test).
add_executable(dm_bench_snapshot ${CMAKE_SOURCE_DIR}/bench/dm_snapshot.c)
target_link_libraries(dm_bench_snapshot PRIVATE thinimg_core)

# The pool lifecycle (issue 20): host-side parsing and thin_check on files (unit), and the
# VM scenario: grow under a mounted, written activation; corrupted metadata refused at
# assembly and by `thinimg pool check` (dm, dm-faults: a damaged pool leaves kernel log lines).
thinimg_test(test_pool_life_unit SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pool_life_unit.c
             ${CMAKE_CURRENT_LIST_DIR}/../testutil.c)
add_test(NAME test_dm_pool_life COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_pool_life.sh)
set_tests_properties(test_dm_pool_life PROPERTIES LABELS "dm;dm-faults" TIMEOUT 900 SKIP_RETURN_CODE 77
  ENVIRONMENT "THINIMG_BIN=$<TARGET_FILE:thinimg>;ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")

# Exclusive and shared bytes (issue 13): a two-layer image and two activations written with
# known amounts; list-snapshots / list-images --json show the figures thin_ls reads, within a
# pool block, kept until the pool changes; readers of the metadata snapshot take turns.
thinimg_test(test_dm_usage SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dm_usage.c
             ${CMAKE_CURRENT_LIST_DIR}/dm_fixture.c ${CMAKE_CURRENT_LIST_DIR}/../testutil.c LABELS dm TIMEOUT 600)
set_tests_properties(test_dm_usage PROPERTIES SKIP_RETURN_CODE 77)

# Autoextend on the pool's low-water event (issue 20): the daemon, with its fallback poll set to
# 10 minutes, grows a pool within seconds of a write crossing the threshold, names the event in
# its log and /metrics, reloads the mark for the new size, and stops promptly while its event
# thread waits in the kernel. Label dm only: the pool never fills.
add_test(NAME test_dm_pool_lowwater COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_pool_lowwater.sh)
set_tests_properties(test_dm_pool_lowwater PROPERTIES LABELS dm TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "THINIMG_BIN=$<TARGET_FILE:thinimg>;ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")

# The pool's thin ids read in-process from a live pool (issue 15): the same ids as thin_ls, a
# device deleted behind thinimg's back noticed even when the pool's figures do not change.
thinimg_test(test_dm_thin_meta SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dm_thin_meta.c
             ${CMAKE_CURRENT_LIST_DIR}/dm_fixture.c ${CMAKE_CURRENT_LIST_DIR}/../testutil.c LABELS dm TIMEOUT 300)
set_tests_properties(test_dm_thin_meta PROPERTIES SKIP_RETURN_CODE 77)
