# The VM suite (label vm): boots one VM with a stock Debian kernel (tests/vm/run) and runs every
# dm-labelled test inside it, in one boot. Bounded: the VM is killed after VM_SUITE_TIMEOUT.
set(VM_SUITE_TIMEOUT 1500 CACHE STRING "Seconds the VM running the dm suite may take")
add_test(NAME vm_dm_suite
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run --timeout ${VM_SUITE_TIMEOUT} --
          ctest --test-dir ${CMAKE_BINARY_DIR} -L "^dm$" --output-on-failure --no-tests=error)
math(EXPR _vm_ctest_timeout "${VM_SUITE_TIMEOUT} + 120")
set_tests_properties(vm_dm_suite PROPERTIES LABELS vm TIMEOUT ${_vm_ctest_timeout})
