# billing: the invoice library without HTTP against a real PostgreSQL (throw-away databases):
# invariants after every operation, properties over random months, re-rating, the close, and
# the regression tests of issue 18.
gm_add_test(NAME test_billing SOURCES test_billing.c LIBS gm_billing gm_ledger gm_rating
            LABELS integration TIMEOUT 600)
target_include_directories(test_billing PRIVATE ${PROJECT_SOURCE_DIR}/billing)
