# The error table (label daemon: it starts a daemon on the host, and an S3 server): wrong uses
# through the CLI and the admin API, each checked against docs/cli.md's exit-code table
# (tests/errors/table.py). Needs root (runuser, a tmpfs remounted read-only): skipped (77)
# without it.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
add_test(NAME errors_table COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/table.py
         ${CMAKE_BINARY_DIR})
set_tests_properties(errors_table PROPERTIES LABELS "daemon" TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "THINIMG_BUILD_DIR=${CMAKE_BINARY_DIR};ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
