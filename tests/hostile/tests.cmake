# Hostile sources (label s3): thinimg's s3://, http:// and dir: sources against a server that
# misbehaves on purpose (tests/hostile/server.py: Python stdlib, 127.0.0.1 only, stops by
# itself) and folders holding FIFOs. One driver, one case per failure mode; each asserts exit
# code, message, blobs, a time bound and the child's peak RSS (tests/hostile/sources.py).
find_package(Python3 REQUIRED COMPONENTS Interpreter)
add_test(NAME hostile_sources
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/sources.py)
set_tests_properties(hostile_sources PROPERTIES LABELS s3 TIMEOUT 600
  ENVIRONMENT "THINIMG_BIN=$<TARGET_FILE:thinimg>;THINIMG_BUILD_DIR=${CMAKE_BINARY_DIR};ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
