# The blob store against a hostile disk and hostile inputs (tests/store/blob_store.sh): one
# test per case, through the real CLI, no device-mapper. The tmpfs cases need root (skipped,
# exit 77, without it).
foreach(case integrity nospace dbfull secrets relstate signal inflight)
  add_test(NAME store_${case} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/blob_store.sh
           ${CMAKE_BINARY_DIR} ${case})
  set_tests_properties(store_${case} PROPERTIES LABELS unit TIMEOUT 300 SKIP_RETURN_CODE 77)
endforeach()
