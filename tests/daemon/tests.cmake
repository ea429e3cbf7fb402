# Daemon tests on the host (label daemon): the admin API over its socket with curl, misbehaving
# clients, metrics parsed by an independent parser, the CLI forwarding to the daemon, restarts;
# and the monitor driven in tmux. No devicemapper here: the dm part runs in the VM (dm_daemon.sh,
# label dm).
set(_daemon_env "THINIMG_BUILD_DIR=${CMAKE_BINARY_DIR};ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
add_test(NAME daemon_api COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/api.sh ${CMAKE_BINARY_DIR})
set_tests_properties(daemon_api PROPERTIES LABELS daemon TIMEOUT 300 ENVIRONMENT "${_daemon_env}")
add_test(NAME daemon_gc COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/gc.sh ${CMAKE_BINARY_DIR})
set_tests_properties(daemon_gc PROPERTIES LABELS daemon TIMEOUT 300 ENVIRONMENT "${_daemon_env}")
add_test(NAME daemon_monitor COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/monitor.sh ${CMAKE_BINARY_DIR})
set_tests_properties(daemon_monitor PROPERTIES LABELS daemon TIMEOUT 300 ENVIRONMENT "${_daemon_env}")

# With real device-mapper (label dm: inside the VM, through vm_dm_suite).
add_test(NAME daemon_dm COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/dm_daemon.sh ${CMAKE_BINARY_DIR})
set_tests_properties(daemon_dm PROPERTIES LABELS dm TIMEOUT 900 SKIP_RETURN_CODE 77
  ENVIRONMENT "${_daemon_env}")
# gc through the daemon while it works, orphans of kill -9 collected when idle, none on an
# unhealthy host (issue 22; dm-faults: it writes a thin-pool line into the kernel log, so the VM
# suite runs it with the other pool breakers, last). Needs the fault-matrix images.
add_test(NAME daemon_dm_gc COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/dm_gc.sh ${CMAKE_BINARY_DIR})
set_tests_properties(daemon_dm_gc PROPERTIES LABELS "dm;dm-faults" TIMEOUT 900 SKIP_RETURN_CODE 77
  ENVIRONMENT "${_daemon_env}")
