# The VM suite (label vm): boots one VM with a stock Debian kernel (tests/vm/run) and runs every
# dm-labelled test inside it, in one boot (tests/vm/dm_suite.sh: a skip in there fails).
# Bounded: the VM is killed after VM_SUITE_TIMEOUT.
set(VM_SUITE_TIMEOUT 1500 CACHE STRING "Seconds the VM running the dm suite may take")
# 3 GiB of guest memory: the guest tmpfs (3/4 of it) holds every test's loop files, and the
# registry test's registry storage and pushed images on top of a 512 MiB pool.
add_test(NAME vm_dm_suite
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run --timeout ${VM_SUITE_TIMEOUT} --mem 3072 --
          bash ${CMAKE_CURRENT_LIST_DIR}/dm_suite.sh ${CMAKE_BINARY_DIR})
math(EXPR _vm_ctest_timeout "${VM_SUITE_TIMEOUT} + 120")
# RESOURCE_LOCK qemu: VMs under TCG take whole cores; two at once on a 2-core machine only make
# both slow enough to approach their timeouts. Every test that boots a VM should take it.
# FIXTURES_REQUIRED: pipeline_dm_debian's image and reference are built on the host first
# (tests/pipeline/tests.cmake; the guest has no network).
set_tests_properties(vm_dm_suite PROPERTIES LABELS vm TIMEOUT ${_vm_ctest_timeout}
  RESOURCE_LOCK qemu FIXTURES_REQUIRED debian_image)

# The harness itself: status, output, cwd and environment pass-through, guest mounts,
# timeout and SIGKILL handling (three short boots).
add_test(NAME vm_harness COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_harness.sh)
set_tests_properties(vm_harness PROPERTIES LABELS vm TIMEOUT 600 RESOURCE_LOCK qemu)

# The caches the tests fill (tests/vm/run's kernel and initramfs, tests/archive/debian.py's
# Debian tar) are atomic and self-checking: wrong entries planted in a temporary cache are
# rebuilt or refused. No VM boots (tests/vm/run --prepare only builds an initramfs).
add_test(NAME vm_caches COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_caches.sh)
set_tests_properties(vm_caches PROPERTIES LABELS unit TIMEOUT 300)
