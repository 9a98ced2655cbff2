# webhook: the signature against a reference HMAC, the backoff, and delivery from the outbox of
# a real PostgreSQL to a real local HTTP receiver that is down, fails, is slow and comes back.
gm_add_test(NAME test_webhooks SOURCES test_webhooks.c LIBS gm_webhook gm_ledger PkgConfig::MHD
            PkgConfig::LIBCRYPTO Threads::Threads LABELS integration TIMEOUT 120)
