# The fault matrix (issue 7): kill -9 at every transition, a full pool, read-only and
# needs_check pools, two processes at once, an unhealthy host, and devices changed behind
# thinimg's back. Label dm: they run inside the VM, in the one boot of vm_dm_suite. The ones
# that break pools or write trouble into the kernel log also carry dm-faults (run last there).
# See docs/safety.md, "The fault matrix".
#
# The kill matrix and the locks test also run against the overlay backend (issue 17; the same
# scripts, THINIMG_BACKEND=overlay: tests/faults/lib.sh): natively, as root on a kernel with
# overlayfs (labels overlay and faults; they skip, exit 77, without them). See docs/overlay.md.

# Their image sources, generated at build time (deterministic; see make-images.py).
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/faults-src/expect.sh
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/make-images.py ${CMAKE_BINARY_DIR}/faults-src faults
  DEPENDS ${CMAKE_CURRENT_LIST_DIR}/make-images.py
  COMMENT "Building the fault-matrix image sources")
add_custom_target(faults-src ALL DEPENDS ${CMAKE_BINARY_DIR}/faults-src/expect.sh)

# faults_test NAME SCRIPT TIMEOUT LABELS [BACKEND]: BACKEND (THINIMG_BACKEND) defaults to dm-thin.
function(faults_test name script timeout labels)
  set(backend dm-thin)
  if(ARGC GREATER 4)
    set(backend ${ARGV4})
  endif()
  add_test(NAME ${name} COMMAND bash ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/${script} ${CMAKE_BINARY_DIR})
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT ${timeout}
    ENVIRONMENT "THINIMG_BACKEND=${backend};ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  if(NOT backend STREQUAL "dm-thin")
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
endfunction()

faults_test(faults_kill_matrix kill_matrix.sh 2400 "dm")
faults_test(faults_pool pool_faults.sh 900 "dm;dm-faults")
faults_test(faults_locks locks.sh 600 "dm")
faults_test(faults_guard guard.sh 600 "dm;dm-faults")
faults_test(faults_behind behind.sh 600 "dm")
faults_test(faults_kill_matrix_overlay kill_matrix.sh 600 "overlay;faults" overlay)
faults_test(faults_locks_overlay locks.sh 300 "overlay;faults" overlay)
