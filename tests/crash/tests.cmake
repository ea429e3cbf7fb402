# Crash tests (label "crash"): SIGKILL injection into real processes on a real database.
thinimg_test(crash_fsm SOURCES ${CMAKE_CURRENT_LIST_DIR}/crash_fsm.c
             ${CMAKE_CURRENT_SOURCE_DIR}/testutil.c LABELS crash TIMEOUT 1200)
