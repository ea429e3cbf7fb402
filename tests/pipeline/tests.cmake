# Pipeline tests with real device-mapper (label dm: they run inside the VM via vm_dm_suite).
add_test(NAME pipeline_e2e COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/e2e.sh ${CMAKE_BINARY_DIR})
set_tests_properties(pipeline_e2e PROPERTIES LABELS dm TIMEOUT 900)

# Across a reboot: two VM boots sharing a state directory and pool files on the host.
add_test(NAME pipeline_reboot COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/reboot.sh ${CMAKE_BINARY_DIR})
set_tests_properties(pipeline_reboot PROPERTIES LABELS vm TIMEOUT 1900 RESOURCE_LOCK qemu)

# The overlay backend, natively (root and overlayfs; no device-mapper, no VM).
add_test(NAME pipeline_overlay COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/overlay.sh ${CMAKE_BINARY_DIR})
set_tests_properties(pipeline_overlay PROPERTIES LABELS overlay TIMEOUT 600 SKIP_RETURN_CODE 77)

# A real Debian image (mmdebstrap minbase + a layer of whiteouts, opaque dirs, hardlinks...)
# compared with umoci's unpack: on the overlay backend natively, on dm-thin in the VM. The
# fixture builds the image and the reference once on the host (cached; the VM has no network).
add_test(NAME pipeline_debian_image
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/debian_image.py)
set_tests_properties(pipeline_debian_image PROPERTIES LABELS "overlay;vm" TIMEOUT 900
  FIXTURES_SETUP debian_image)
add_test(NAME pipeline_overlay_debian
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/debian.sh ${CMAKE_BINARY_DIR} overlay)
set_tests_properties(pipeline_overlay_debian PROPERTIES LABELS overlay TIMEOUT 600
  SKIP_RETURN_CODE 77 FIXTURES_REQUIRED debian_image)
add_test(NAME pipeline_dm_debian
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/debian.sh ${CMAKE_BINARY_DIR} dm)
set_tests_properties(pipeline_dm_debian PROPERTIES LABELS dm TIMEOUT 900 SKIP_RETURN_CODE 77)
