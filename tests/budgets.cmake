# budgets: the month's spend, alerts and their webhook outbox kept by triggers on gm.charges
# (sql/0009), against a real PostgreSQL with concurrent charging connections.
gm_add_test(NAME test_budgets SOURCES test_budgets.c LIBS gm_ledger Threads::Threads
            LABELS integration TIMEOUT 120)
