/* Internal to ledger/chain*.c: the canonical encoding of scheme 1 (docs/auditors.md,
 * "Tamper evidence"), shared by the writer's hook and the verifier. */
#ifndef GM_CHAIN_INT_H
#define GM_CHAIN_INT_H

#include "gm_ingest.h"
#include "gm_ledger.h"

typedef struct chain__buf {
    char *p;
    size_t n, cap;
} chain__buf;

/* The fields of a batch's header record "B". */
/* Scheme 1 chains the quantities and amounts of the first four dimensions (input, cached,
 * output, gpu) in its headers and ledger records; the charge changes (C records) carry every
 * dimension of gm.charges (GM_LEDGER_DIMS), the fields of usage revision 1.1 are covered
 * through them only (docs/auditors.md, "What scheme 1 does not cover"). */
#define CHAIN_DIMS 4

typedef struct chain__head {
    const char *group_id;
    const char *topic;
    int32_t partition;
    int64_t seq;
    int64_t from_offset;
    int64_t next_offset;
    int64_t rows, rejects, duplicates, conflicts;
    gm_i128 qty[CHAIN_DIMS];        /* input, cached, output tokens, gpu_us */
    gm_i128 amount_e18[CHAIN_DIMS]; /* amount_input … amount_gpu, 10^-18 */
    const char *prev_hex;           /* 64 lowercase hex digits */
    const char *records_hex;        /* SHA-256 of the L, R and C records, hex */
} chain__head;

void chain__reserve(chain__buf *b, size_t extra);
void chain__put(chain__buf *b, const char *s, size_t len);
/* A field: "LEN:" and the bytes; chain__fs(NULL) is the NULL field "-". */
void chain__f(chain__buf *b, const char *s, size_t len);
void chain__fs(chain__buf *b, const char *s);
void chain__fi(chain__buf *b, int64_t v);
void chain__fd(chain__buf *b, gm_i128 v, int scale);
/* A field of the lowercase hex of the bytes. */
void chain__hexbytes(chain__buf *b, const void *data, size_t len);
/* Canonical decimal text: no trailing fraction zeros, no trailing point. */
size_t chain__dec_text(gm_i128 v, int scale, char *out, size_t out_len);
size_t chain__trim_dec(char *s, size_t n);
void chain__json_str(chain__buf *b, const char *s);
void chain__hex(const unsigned char d[32], char out[65]);
void chain__header(chain__buf *b, const chain__head *h);
/* The header record "P" of a replay entry (chain "replay"). */
void chain__replay_header(chain__buf *b, const char *topic, int64_t seq, int64_t rows,
                          int64_t duplicates, int64_t conflicts, const char *prev_hex,
                          const char *records_hex);

/* How the writer (ledger/batch.c) tells the hook what it keeps of a row marked 2 (conflict)
 * in gm.conflicting_events: its kind and its fingerprint. */
typedef void (*chain__conflict_fn)(const void *arg, size_t row, const char **kind,
                                   const unsigned char **fp);
void gm_chain__on_conflicts(gm_chain *c, chain__conflict_fn fn, const void *arg);

/* Replay mode of the writer (ledger/batch.c, after the rejects' marks): appends the replay's
 * entry to the chain "replay" (gm.chain_replays) in the replay's transaction. dup: per row,
 * 0 rated (ledger row written), 1 duplicate, 2 conflict. */
int gm_chain_record_replay(gm_chain *c, PGconn *conn, const gm_ledger_batch *b,
                           const unsigned char *dup, char *err, size_t err_len);

#endif
