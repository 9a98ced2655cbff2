/* Internals shared by the agent's files: the agent struct, requests, GPU accounting state and
 * the histograms of /metrics. Not for users of gm_agent.h. */
#ifndef GM_AGENT_INTERNAL_H
#define GM_AGENT_INTERNAL_H

#include "gm_agent.h"

#include <pthread.h>
#include <stdatomic.h>

#define AGENT_COMP "agent"

/* ---- histograms (seconds, Prometheus buckets) ---------------------------------------- */
#define AGENT_HIST_BUCKETS 16
typedef struct agent__hist {
    _Atomic uint64_t bucket[AGENT_HIST_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
} agent__hist;
extern const double agent__hist_le_s[AGENT_HIST_BUCKETS];
void agent__hist_observe(agent__hist *h, int64_t us);

/* ---- requests ------------------------------------------------------------------------ */
enum { ROUTE_EVENTS = 0, ROUTE_GPU_STEPS, ROUTE_HEALTHZ, ROUTE_METRICS, ROUTE_OTHER, N_ROUTES };

enum { ITEM_OK = 0, ITEM_BAD, ITEM_FULL, ITEM_IO };

typedef struct agent__item {
    gm_event ev;
    unsigned filled; /* GM_EVENT_FILLED_* */
    uint8_t state;   /* ITEM_* */
    uint32_t line;   /* 1-based line of a JSON-lines body, else 0 */
    int err;         /* index into the request's errors, -1 */
} agent__item;

typedef struct agent__error {
    size_t index;
    uint32_t line;
    gm_event_error e;
    bool retry; /* not recorded for lack of room or an I/O error: send this event again */
} agent__error;

typedef struct agent__req agent__req;
struct agent__req {
    gm_agent *a;
    int route;
    int64_t t0_us; /* gm_mono_us at arrival */
    bool atomic;   /* all or nothing: one invalid event refuses the request */
    agent__item *items;
    size_t n_items;
    agent__error *errors;
    size_t n_errors, cap_errors;
    size_t n_bad;          /* items refused by the rules */
    size_t n_gpu;          /* items whose gpu_us the agent fills */
    uint64_t wait_ns;      /* wait until the collector's closed_until reaches this */
    int64_t wait_until_us; /* gm_mono_us: answered by then whatever the collector does */
    /* the answer */
    int status;
    char *answer;
    int retry_after_s;
    /* completion: called once the answer is set (from the thread that finished it) */
    void (*done)(agent__req *r, void *arg);
    void *done_arg;
    agent__req *next; /* the GPU waiting list */
};

/* ---- the agent ----------------------------------------------------------------------- */
typedef struct agent__src_seq {
    char *source;
    uint64_t last; /* the last seq the agent gave this source in this run */
} agent__src_seq;

typedef struct agent__lat {
    uint64_t lsn;
    int64_t t_us;
} agent__lat;

typedef struct agent__http agent__http;

typedef struct agent__gpu_req {
    char *key; /* tenant "\n" request_id */
    int64_t gpu_ns;
    int64_t touched_us; /* gm_mono_us of the last row */
} agent__gpu_req;

struct gm_agent {
    gm_agent_config cfg;
    char *source, *site, *spool_dir, *gpu_source, *gpu_spool_dir, *gpu_topic, *socket_path;
    char *listen_addr;
    gm_node *node, *gpu_node;
    agent__http *http;
    int port;

    pthread_mutex_t rec_mu; /* one request records at a time: its seqs are contiguous */
    agent__src_seq *seqs;
    size_t n_seqs, cap_seqs;
    uint64_t seq_violations; /* invariant 3 */

    atomic_bool closing;
    pthread_t ticker;
    bool ticker_started;
    pthread_mutex_t tick_mu;
    pthread_cond_t tick_cv;
    bool tick_stop;

    /* delivery latency: (last lsn of a request, answer time), in lsn order */
    pthread_mutex_t lat_mu;
    agent__lat *lat;
    size_t lat_head, lat_len, lat_cap;
    uint64_t lat_unsampled;

    /* GPU */
    pthread_mutex_t gpu_mu; /* collector pointer, waiting list, request map */
    gm_gpu_collector *gc;
    char gpu_why[320]; /* why GPU accounting is unavailable */
    agent__req *wait_head, *wait_tail;
    bool gpu_final; /* the collector's last close is done: nothing more will come */
    agent__gpu_req *greq;
    size_t greq_cap, greq_n, greq_tombs;
    int64_t greq_expiry_us;
    uint32_t next_corr;
    _Atomic uint64_t gpu_rows_lost;

    /* counters */
    _Atomic uint64_t requests, accepted, rejected, rejected_full, requests_full, requests_bad;
    _Atomic uint64_t gpu_filled, gpu_unmatched, gpu_events, gpu_steps, gpu_waiting;
    _Atomic uint64_t gpu_wait_timeouts;
    _Atomic uint64_t route_status[N_ROUTES][6]; /* 2xx..5xx by class; [0]: other */
    _Atomic uint64_t events_seen;               /* invariant 1: events of answered requests */
    agent__hist request_s, delivery_s;
    bool was_full;
    int64_t last_progress_us;
    bool progress;
};

/* agent.c */
agent__req *agent__req_new(gm_agent *a, int route);
void agent__req_free(agent__req *r);
/* Parses and checks a POST /v1/events request (no side effect). Returns true when it is
 * finished (answer set), false when it must wait for GPU time (then agent__gpu_wait). */
bool agent__events_begin(agent__req *r, const char *content_type, const char *query,
                         const char *body, size_t len);
/* Records the request's accepted events and sets its answer. */
void agent__events_finish(agent__req *r);
/* Answers for the other routes. */
void agent__healthz(gm_agent *a, agent__req *r);
void agent__metrics(gm_agent *a, agent__req *r);
void agent__answer_error(agent__req *r, int status, const char *field, const char *rule);
void agent__count(agent__req *r);
/* a growable text buffer */
typedef struct agent__buf {
    char *p;
    size_t len, cap;
} agent__buf;
void agent__buf_put(agent__buf *b, const char *s, size_t n);
void agent__buf_printf(agent__buf *b, const char *fmt, ...) GM_PRINTF(2, 3);
/* a string literal, its length from sizeof */
#define agent__buf_lit(b, lit) agent__buf_put((b), (lit), sizeof(lit) - 1)
void agent__buf_json_str(agent__buf *b, const char *s);

/* gpu.c */
int agent__gpu_open(gm_agent *a, char *err, size_t err_len);
/* Stops the collector (its last close reports every window) and finishes every waiting
 * request. */
void agent__gpu_close(gm_agent *a);
/* Queues a request that waits for GPU time (or finishes it now when nothing is to wait for). */
void agent__gpu_wait(agent__req *r);
/* The ticker's part: finishes the requests whose windows have closed, expires old request
 * times. */
void agent__gpu_tick(gm_agent *a);
/* Fills gpu_us of the request's flagged items (GPU time of their request; 0 when none). */
void agent__gpu_fill(agent__req *r);
/* The collector's clock now (0 when no collector). */
uint64_t agent__gpu_now_ns(gm_agent *a);
/* POST /v1/gpu/steps */
void agent__gpu_steps(agent__req *r, const char *content_type, const char *body, size_t len);

/* http.c */
int agent__http_start(gm_agent *a, char *err, size_t err_len);
/* Stops accepting, waits (bounded) for the requests in progress, stops the daemons. */
void agent__http_stop(gm_agent *a);
int agent__http_port(const gm_agent *a);

#endif /* GM_AGENT_INTERNAL_H */
