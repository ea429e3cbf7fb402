# S3 suite (label "s3"): the s3:// and http(s):// sources against a real S3 server (s3rver,
# npm, pinned in tests/s3/package-lock.json) and the fault-injecting proxy in
# tests/s3/harness.js, both on 127.0.0.1 with random ports. Each test_*.c here is one test;
# fetch_fixture.c is the set-up the `thinimg fetch` tests share.
file(GLOB S3_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_*.c)
foreach(src ${S3_TESTS})
  get_filename_component(name ${src} NAME_WE)
  thinimg_test(${name} SOURCES ${src} ${CMAKE_CURRENT_LIST_DIR}/s3harness.c
    ${CMAKE_CURRENT_LIST_DIR}/fetch_fixture.c
    ${CMAKE_SOURCE_DIR}/tests/testutil.c LABELS s3 TIMEOUT 600)
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_LIST_DIR})
endforeach()
