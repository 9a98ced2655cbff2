/* Helpers shared by the node client tests (tests/test_node_util.c). */
#ifndef GM_TEST_NODE_UTIL_H
#define GM_TEST_NODE_UTIL_H

#include "gm_node.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tn_msg {
    int32_t partition;
    int64_t offset;
    char *key;
    char *payload;
    size_t len;
} tn_msg;

/* Reads `topic` from the beginning until `want` messages came and then 1 s of quiet, or until
 * timeout_ms. Returns the count; *out is freed with tn_free. */
size_t tn_consume(const char *brokers, const char *topic, size_t want, int timeout_ms,
                  tn_msg **out);
void tn_free(tn_msg *m, size_t n);
/* Every message must decode; per source, seq 1..max has no holes and stays in one partition.
 * Returns the distinct (source, seq) count. */
uint64_t tn_check_seqs(const tn_msg *m, size_t n, uint64_t *dups, uint64_t *max_seq);
gm_node *tn_open(const char *brokers, const char *topic, const char *spool_dir, const char *source);
/* Records usage number i (request_id "req-<i>"); fails the test on error. */
void tn_record(gm_node *n, uint64_t i, uint64_t *seq);
void tn_tmpdir(char *buf, size_t len, const char *tag);
void tn_rmdir(const char *dir);

#endif
