# Archive suite (label "archive"): the hostile corpus, legitimate tricky content, names as bytes
# and stream ends vs GNU tar, the limit options, and a real Debian root filesystem, all through
# `thinimg extract`. Python 3 generates the archives at test time (tests/archive/*.py);
# nothing here needs devicemapper.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
foreach(t hostile legit debian bytes limits memory onepass)
  add_test(NAME archive_${t}
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/${t}.py)
  set_tests_properties(archive_${t} PROPERTIES LABELS archive TIMEOUT 900 SKIP_RETURN_CODE 77
    ENVIRONMENT "THINIMG_BIN=$<TARGET_FILE:thinimg>;THINIMG_SANITIZE=${THINIMG_SANITIZE};THINIMG_BUILD_DIR=${CMAKE_BINARY_DIR};ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endforeach()
