# billing: the invoice library without HTTP against a real PostgreSQL (throw-away databases):
# invariants after every operation, properties over random months, re-rating, the close, and
# the regression tests of issue 18.
gm_add_test(NAME test_billing SOURCES test_billing.c LIBS gm_billing gm_ledger gm_rating
            LABELS integration TIMEOUT 600)
target_include_directories(test_billing PRIVATE ${PROJECT_SOURCE_DIR}/billing)
# End to end through the real services and the gridmeter binary: loadgen -> Kafka -> rater ->
# close -> backdated card -> rerate (dry run, applied) -> next invoice -> reconciliation.
gm_add_test(NAME test_billing_e2e SOURCES test_billing_e2e.c LIBS gm_rater_harness gm_billing
            gm_ledger gm_rating PkgConfig::CJSON LABELS integration TIMEOUT 600)
add_dependencies(test_billing_e2e gridmeter)
# Free allowances and a commitment term (pro-rated partial months) through Kafka, the rater
# and `gridmeter close`, hand-computed totals.
gm_add_test(NAME test_billing_terms_e2e SOURCES test_billing_terms_e2e.c LIBS gm_rater_harness
            gm_billing gm_ledger gm_rating LABELS integration TIMEOUT 600)
add_dependencies(test_billing_terms_e2e gridmeter)
# A total over a term (term_commitment) through Kafka, the rater, `gridmeter close` and
# `gridmeter quote`: progress, the true-up in the term's last month, a late event that moves it.
gm_add_test(NAME test_billing_term_total_e2e SOURCES test_billing_term_total_e2e.c
            LIBS gm_rater_harness gm_billing gm_ledger gm_rating PkgConfig::CJSON
            LABELS integration TIMEOUT 600)
add_dependencies(test_billing_term_total_e2e gridmeter)
gm_add_test(NAME test_billing_variants_e2e SOURCES test_billing_variants_e2e.c
            LIBS gm_rater_harness gm_billing gm_ledger gm_rating LABELS integration TIMEOUT 600)
add_dependencies(test_billing_variants_e2e gridmeter)
