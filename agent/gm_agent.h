/* The node agent (gm_agent, `gridmeter agent`): a local sidecar that an inference server in any
 * language talks to over a Unix socket or a loopback HTTP port, with the node client's
 * guarantees. docs/node-agent.md is the operator's and integrator's guide.
 *
 * Every event of a request is completed (gm_event_complete: source, time, site, id and seq)
 * and checked by the strict decoder; the accepted ones are recorded through the node client
 * (ingest/gm_node.h: spool, idempotent producer keyed by source, delete after delivery) and
 * are in the spool, durable as the durability setting says, before the answer lists them.
 * The answer names every refused event by index, field and rule. When the spool cannot take a
 * request, the answer is 429 with Retry-After and nothing of it is recorded.
 *
 * GPU accounting joins it in the same process: the CUPTI collector (when the agent runs
 * inside the server's process) or a feed of the server's step timings over the socket; step
 * manifests over the socket in both cases. gridmeter.gpu.v1 windows go to their topic through
 * a second node client (its own spool), and a usage event without data.gpu_us gets the
 * request's GPU time, once every window up to its arrival has closed.
 *
 * Invariants (checked by gm_agent_check, which the tests call):
 *   1. accepted + rejected = the events of the requests answered so far (a request refused as
 *      a whole, 400/413/415, holds no events: it is counted in requests_bad).
 *   2. Every event answered as accepted was recorded: recorded = accepted (usage node).
 *   3. Per source, the seqs the agent gave out are 1..last with no hole: the seq ranges of
 *      the answers are contiguous and never reused (the node client's epoch rules apply).
 *   4. No request waits for GPU time once the collector has closed every window up to its
 *      arrival (the waiting list only holds arrivals after closed_until), nor longer than
 *      gpu_max_wait_ms (2 x (window + grace + flush period) + 30 s): a collector that stopped
 *      closing windows
 *      does not hold answers for ever (those requests get the GPU time known so far, and are
 *      counted in gpu_wait_timeouts and logged).
 */
#ifndef GM_AGENT_H
#define GM_AGENT_H

#include "gm_common.h"
#include "gm_gpu.h"
#include "gm_node.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gm_agent gm_agent;

typedef enum {
    /* An accepted event is in the spool file (memory-mapped: in the page cache) before the
     * answer: it survives the agent being killed (kill -9, a crash), not a power loss or a
     * kernel crash before the next fsync (the pump fsyncs before it produces). */
    GM_AGENT_DURABLE_SPOOL = 0,
    /* ... and on disk: the answer comes after an fsync of the spool that covers it (one fsync
     * for all the requests waiting at that moment: group commit). Survives a power loss. */
    GM_AGENT_DURABLE_DISK,
} gm_agent_durability;

typedef enum {
    GM_AGENT_GPU_OFF = 0, /* no GPU accounting: events must carry data.gpu_us */
    GM_AGENT_GPU_CUPTI,   /* the CUPTI collector in this process (when the agent runs inside the
                           * server's process); manifests over the socket */
    GM_AGENT_GPU_FEED,    /* the server posts its steps (timings, tenants, manifests) */
} gm_agent_gpu_mode;

typedef struct gm_agent_config {
    /* The usage events' node client: brokers, topic, source, site, spool_dir (required),
     * spool bounds, linger, close timeout. fsync is set by the agent (BATCH). */
    gm_node_config node;
    /* Listeners: at least one. */
    const char *socket_path; /* Unix socket (HTTP over it); NULL: none */
    int socket_mode;         /* permissions of the socket file; 0: 0660 */
    const char *listen_addr; /* loopback address ("127.0.0.1", "::1"); NULL: no TCP port */
    int listen_port;         /* 0: the kernel picks (gm_agent_port tells) */
    int threads;             /* HTTP worker threads; 0: 2 */
    int max_connections;     /* 0: 256 */
    gm_agent_durability durability;
    int sync_timeout_ms;      /* DURABLE_DISK: how long an answer waits for the fsync; 0: 5000 */
    size_t max_body_bytes;    /* 0: 4 MiB */
    size_t max_events;        /* per request; 0: 10000 */
    bool allow_other_sources; /* events may name another source than node.source (a gateway) */
    int retry_after_s;        /* Retry-After of a 429; 0: 1 */
    bool progress;            /* a status line on stderr every second (on a terminal) */
    /* GPU accounting */
    gm_agent_gpu_mode gpu;
    const char *gpu_topic;          /* NULL: gridmeter.gpu.v1 */
    const char *gpu_source;         /* source of the gpu.v1 events; NULL: "<node.source>/gpu" */
    const char *gpu_spool_dir;      /* NULL: "<node.spool_dir>/gpu" */
    uint64_t gpu_spool_max_bytes;   /* 0: 256 MiB */
    gm_gpu_collector_conf gpu_conf; /* window, grace, flush, weights, cupti_path (on_windows
                                     * and arg are the agent's) */
    int gpu_max_wait_ms;   /* the longest a usage event waits for its windows; 0: 2 x (window +
                            * grace + flush period) + 30 s (invariant 4) */
    int gpu_request_ttl_s; /* per-request GPU time not claimed by a usage event is
                            * dropped from memory after this; 0: 600 */
    /* Test seam: starts the CUPTI collector (NULL: gm_gpu_collector_start). */
    int (*gpu_start)(const gm_gpu_collector_conf *conf, gm_gpu_collector **out, char *err,
                     size_t err_len);
} gm_agent_config;

/* Defaults; then set node.brokers, node.source, node.site, node.spool_dir and a listener. */
void gm_agent_config_init(gm_agent_config *cfg);

/* Opens the node clients (recovering their spools), starts GPU accounting (a collector that
 * is unavailable is logged and the agent serves usage events without it) and the listeners.
 * *out is set on success only. */
int gm_agent_open(const gm_agent_config *cfg, gm_agent **out, char *err,
                  size_t err_len) GM_MUSTCHECK;
/* Stops listening, answers what is in progress (GPU waits included: the collector's last close
 * reports every window), tries for node.close_timeout_ms to deliver, closes the spools (what is
 * not delivered stays there for the next start). NULL is fine. */
void gm_agent_close(gm_agent *a);

/* The TCP port the agent listens on (0 when none). */
int gm_agent_port(const gm_agent *a);

/* One request as the HTTP layer hands it over: the same answer as POST `path` with this
 * content type, query (e.g. "atomic=true") and body would get. In-process callers (embedding,
 * tests, the benchmark's baseline) use it directly. *status is the HTTP status, *answer a
 * malloc'd JSON text (the caller frees it), *retry_after_s > 0 for a 429. Blocks while the
 * request waits for GPU time. */
void gm_agent_submit(gm_agent *a, const char *path, const char *content_type, const char *query,
                     const char *body, size_t len, int *status, char **answer, int *retry_after_s);

/* The collector (CUPTI or feed), for in-process tagging (gm_gpu_tenant_push, …); NULL when GPU
 * accounting is off or unavailable. */
gm_gpu_collector *gm_agent_gpu_collector(gm_agent *a);

typedef struct gm_agent_stats {
    uint64_t requests;            /* answered requests (every path) */
    uint64_t accepted;            /* events recorded and answered as accepted */
    uint64_t rejected;            /* events answered as refused (invalid, or no room) */
    uint64_t rejected_full;       /* of which because the spool was full */
    uint64_t requests_full;       /* 429 answers */
    uint64_t requests_bad;        /* requests refused as a whole (400, 413, 415) */
    uint64_t gpu_filled;          /* usage events whose gpu_us the agent filled from GPU time */
    uint64_t gpu_unmatched;       /* of those, with no GPU time for their request (gpu_us 0) */
    uint64_t gpu_events;          /* gridmeter.gpu.v1 events recorded */
    uint64_t gpu_steps;           /* step manifests accepted */
    uint64_t gpu_waiting;         /* requests waiting for GPU time now */
    uint64_t gpu_wait_timeouts;   /* requests answered after the longest wait (invariant 4) */
    bool gpu_running;             /* a collector runs */
    gm_node_stats node, gpu_node; /* gpu_node zero when there is none */
} gm_agent_stats;

void gm_agent_stats_get(gm_agent *a, gm_agent_stats *out);
/* Checks the numbered invariants above; 0 or GM_ECORRUPT naming the broken one. */
int gm_agent_check(gm_agent *a, char *err, size_t err_len) GM_MUSTCHECK;

#endif /* GM_AGENT_H */
