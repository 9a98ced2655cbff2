# dashboard: the web dashboard end to end in Debian's headless Chromium (tests/e2e/run.sh):
# its own throw-away database filled by loadgen + rater, `gridmeter api` on an ephemeral port,
# playwright-core (pinned in tests/e2e/package-lock.json, `npm ci` on first run). Missing
# chromium/node/npm fail the test (scripts/setup.sh installs them). Screenshots and downloads:
# <build>/tests/e2e-artifacts/.
if(TARGET gridmeter)
    add_test(NAME test_dashboard_e2e
             COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/e2e/run.sh $<TARGET_FILE:gridmeter>
                     ${CMAKE_CURRENT_BINARY_DIR}/e2e-artifacts)
    set_tests_properties(test_dashboard_e2e PROPERTIES LABELS integration TIMEOUT 300)
endif()
