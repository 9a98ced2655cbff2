/* The rater's Prometheus endpoint: counters, commit latency histogram, consumer lag. */
#include "gm_rating.h"
#include "rater_int.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

gm_rater_metrics_t gm_rater_metrics;

/* Upper bounds of the commit-latency buckets, in microseconds. */
static const int64_t bucket_le_us[12] = {1000,   2500,   5000,   10000,   25000,   50000,
                                         100000, 250000, 500000, 1000000, 2500000, 5000000};

static struct {
    rd_kafka_t *rk;
    const char *topic;
    const int64_t *stored;
    const bool *owned;
    int n;
    struct MHD_Daemon *mhd;
} m;

void gm_rater_metrics_batch(const gm_ledger_result *res, size_t messages, int64_t commit_us)
{
    gm_rater_metrics.batches++;
    gm_rater_metrics.accepted += res->accepted;
    gm_rater_metrics.duplicates += res->duplicates;
    gm_rater_metrics.rejected += res->rejected;
    gm_rater_metrics.conflicts += res->conflicts;
    gm_rater_metrics.slow_path_batches += res->slow_path;
    gm_rater_metrics.last_batch_messages = messages;
    gm_rater_metrics.commit_us_sum += (uint64_t)commit_us;
    for (size_t i = 0; i < GM_ARRAY_LEN(bucket_le_us); i++)
        if (commit_us <= bucket_le_us[i])
            gm_rater_metrics.commit_buckets[i]++;
}

void gm_rater_metrics_set_rk(rd_kafka_t *rk, const char *topic, const int64_t *stored,
                             const bool *owned, int n_partitions)
{
    m.rk = rk;
    m.topic = topic;
    m.stored = stored;
    m.owned = owned;
    m.n = n_partitions;
    if (!gm_rater_metrics.started_us)
        gm_rater_metrics.started_us = gm_now_us();
}

typedef struct {
    char *p;
    size_t n, cap;
} out_buf;

static void put(out_buf *b, const char *fmt, ...) GM_PRINTF(2, 3);
static void put(out_buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(k > 0 ? k : 0);
        b->p = gm_xrealloc(b->p, b->cap);
    }
}

static char *render(size_t *len)
{
    const gm_rater_metrics_t *g = &gm_rater_metrics;
    out_buf b = {gm_xmalloc(8192), 0, 8192};
    put(&b,
        "# HELP gridmeter_rater_messages_total Kafka messages rated, by outcome.\n"
        "# TYPE gridmeter_rater_messages_total counter\n"
        "gridmeter_rater_messages_total{outcome=\"accepted\"} %llu\n"
        "gridmeter_rater_messages_total{outcome=\"duplicate\"} %llu\n"
        "gridmeter_rater_messages_total{outcome=\"rejected\"} %llu\n"
        "gridmeter_rater_messages_total{outcome=\"conflict\"} %llu\n"
        "# HELP gridmeter_rater_poison_messages_total Messages PostgreSQL refused alone, found "
        "by bisecting a failing batch and kept as rejects (rule poison).\n"
        "# TYPE gridmeter_rater_poison_messages_total counter\n"
        "gridmeter_rater_poison_messages_total %llu\n"
        "# HELP gridmeter_rater_misplaced_messages_total Messages of a sharded topic whose Kafka "
        "key is not their source or whose partition is not their source's (docs/scaling.md, "
        "Placement): kept as rejects (rule placement), never charged; by consumer.\n"
        "# TYPE gridmeter_rater_misplaced_messages_total counter\n"
        "gridmeter_rater_misplaced_messages_total{consumer=\"usage\"} %llu\n"
        "gridmeter_rater_misplaced_messages_total{consumer=\"gpu\"} %llu\n",
        (unsigned long long)g->accepted, (unsigned long long)g->duplicates,
        (unsigned long long)g->rejected, (unsigned long long)g->conflicts,
        (unsigned long long)g->poison, (unsigned long long)g->misplaced,
        (unsigned long long)g->gpu_misplaced);
    put(&b,
        "# HELP gridmeter_rater_gpu_windows_billed_total Attributed GPU windows (kernel-share-v1) "
        "charged by the GPU consumer, by the tenant's contract gpu_basis (requests: charged at 0, "
        "GPU time billed from the requests' gpu_us).\n"
        "# TYPE gridmeter_rater_gpu_windows_billed_total counter\n"
        "gridmeter_rater_gpu_windows_billed_total{gpu_basis=\"windows\"} %llu\n"
        "gridmeter_rater_gpu_windows_billed_total{gpu_basis=\"requests\"} %llu\n"
        "# HELP gridmeter_rater_gpu_window_billed_us_total GPU-microseconds of the charged "
        "windows, by gpu_basis.\n"
        "# TYPE gridmeter_rater_gpu_window_billed_us_total counter\n"
        "gridmeter_rater_gpu_window_billed_us_total{gpu_basis=\"windows\"} %llu\n"
        "gridmeter_rater_gpu_window_billed_us_total{gpu_basis=\"requests\"} %llu\n"
        "# HELP gridmeter_rater_gpu_windows_unpriced_total kernel-share-v1 windows that no "
        "card priced (no default card, no card version in force): stored, not charged.\n"
        "# TYPE gridmeter_rater_gpu_windows_unpriced_total counter\n"
        "gridmeter_rater_gpu_windows_unpriced_total %llu\n",
        (unsigned long long)g->gpu_windows_charged[GM_GPU_BASIS_WINDOWS],
        (unsigned long long)g->gpu_windows_charged[GM_GPU_BASIS_REQUESTS],
        (unsigned long long)g->gpu_window_us_charged[GM_GPU_BASIS_WINDOWS],
        (unsigned long long)g->gpu_window_us_charged[GM_GPU_BASIS_REQUESTS],
        (unsigned long long)g->gpu_windows_unpriced);
    put(&b,
        "# HELP gridmeter_rater_batches_total Batches committed to PostgreSQL.\n"
        "# TYPE gridmeter_rater_batches_total counter\n"
        "gridmeter_rater_batches_total %llu\n"
        "# HELP gridmeter_rater_batch_failures_total Batches rolled back or of unknown outcome "
        "(the rater resumed from PostgreSQL's offsets).\n"
        "# TYPE gridmeter_rater_batch_failures_total counter\n"
        "gridmeter_rater_batch_failures_total %llu\n"
        "# HELP gridmeter_rater_slow_path_batches_total Batches where the ledger's unique key "
        "caught a duplicate.\n"
        "# TYPE gridmeter_rater_slow_path_batches_total counter\n"
        "gridmeter_rater_slow_path_batches_total %llu\n"
        "# TYPE gridmeter_rater_rebalances_total counter\n"
        "gridmeter_rater_rebalances_total %llu\n"
        "# TYPE gridmeter_rater_pg_reconnects_total counter\n"
        "gridmeter_rater_pg_reconnects_total %llu\n"
        "# HELP gridmeter_rater_offset_gaps_total Times a partition's next message was past "
        "the stored offset.\n"
        "# TYPE gridmeter_rater_offset_gaps_total counter\n"
        "gridmeter_rater_offset_gaps_total %llu\n"
        "# HELP gridmeter_rater_partition_failures_total Failed attempts to create ledger "
        "partitions ahead (rows then land in gm.ledger_default).\n"
        "# TYPE gridmeter_rater_partition_failures_total counter\n"
        "gridmeter_rater_partition_failures_total %llu\n"
        "# HELP gridmeter_rater_watermark_failures_total Offset holes whose low-watermark "
        "query failed (never accepted as gaps; the partition seeks back).\n"
        "# TYPE gridmeter_rater_watermark_failures_total counter\n"
        "gridmeter_rater_watermark_failures_total %llu\n"
        "# HELP gridmeter_rater_assign_failures_total Partition assignments librdkafka refused "
        "(the rater leaves and rejoins its group).\n"
        "# TYPE gridmeter_rater_assign_failures_total counter\n"
        "gridmeter_rater_assign_failures_total %llu\n"
        "# HELP gridmeter_rater_gpu_offset_gaps_total Offset gaps the GPU window consumer "
        "accepted (the broker said the messages are gone, or three answered seeks found none).\n"
        "# TYPE gridmeter_rater_gpu_offset_gaps_total counter\n"
        "gridmeter_rater_gpu_offset_gaps_total %llu\n"
        "# HELP gridmeter_rater_gpu_watermark_failures_total Offset holes of the GPU topic whose "
        "low-watermark query failed (never accepted as gaps; the partition seeks back).\n"
        "# TYPE gridmeter_rater_gpu_watermark_failures_total counter\n"
        "gridmeter_rater_gpu_watermark_failures_total %llu\n"
        "# HELP gridmeter_rater_gpu_assign_failures_total GPU topic partition assignments "
        "librdkafka refused (the GPU consumer leaves and rejoins its group).\n"
        "# TYPE gridmeter_rater_gpu_assign_failures_total counter\n"
        "gridmeter_rater_gpu_assign_failures_total %llu\n"
        "# HELP gridmeter_rater_batch_size Messages in the last committed batch.\n"
        "# TYPE gridmeter_rater_batch_size gauge\n"
        "gridmeter_rater_batch_size %llu\n",
        (unsigned long long)g->batches, (unsigned long long)g->batch_failures,
        (unsigned long long)g->slow_path_batches, (unsigned long long)g->rebalances,
        (unsigned long long)g->pg_reconnects, (unsigned long long)g->offset_gaps,
        (unsigned long long)g->partition_failures, (unsigned long long)g->watermark_failures,
        (unsigned long long)g->assign_failures, (unsigned long long)g->gpu_offset_gaps,
        (unsigned long long)g->gpu_watermark_failures, (unsigned long long)g->gpu_assign_failures,
        (unsigned long long)g->last_batch_messages);
    put(&b,
        "# HELP gridmeter_rater_pipelined_batches_total Batches polled, decoded and priced while "
        "the batch before them was being committed (--pipeline 1).\n"
        "# TYPE gridmeter_rater_pipelined_batches_total counter\n"
        "gridmeter_rater_pipelined_batches_total %llu\n"
        "# HELP gridmeter_rater_pipeline_drops_total Prepared batches dropped because the batch "
        "before them failed to commit (their messages are read again from PostgreSQL's "
        "offsets).\n"
        "# TYPE gridmeter_rater_pipeline_drops_total counter\n"
        "gridmeter_rater_pipeline_drops_total %llu\n",
        (unsigned long long)g->pipelined_batches, (unsigned long long)g->pipeline_drops);
    put(&b, "# HELP gridmeter_rater_commit_seconds Time to write and commit one batch.\n"
            "# TYPE gridmeter_rater_commit_seconds histogram\n");
    for (size_t i = 0; i < GM_ARRAY_LEN(bucket_le_us); i++)
        put(&b, "gridmeter_rater_commit_seconds_bucket{le=\"%lld.%06lld\"} %llu\n",
            (long long)(bucket_le_us[i] / 1000000), (long long)(bucket_le_us[i] % 1000000),
            (unsigned long long)g->commit_buckets[i]);
    put(&b,
        "gridmeter_rater_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
        "gridmeter_rater_commit_seconds_sum %llu.%06llu\n"
        "gridmeter_rater_commit_seconds_count %llu\n",
        (unsigned long long)g->batches, (unsigned long long)(g->commit_us_sum / 1000000),
        (unsigned long long)(g->commit_us_sum % 1000000), (unsigned long long)g->batches);
    put(&b, "# HELP gridmeter_rater_consumer_lag Messages between the broker's high watermark "
            "and the offset committed in PostgreSQL, per owned partition.\n"
            "# TYPE gridmeter_rater_consumer_lag gauge\n");
    for (int p = 0; m.rk && m.owned && p < m.n; p++) {
        if (!m.owned[p])
            continue;
        int64_t lo = 0, hi = 0;
        if (rd_kafka_get_watermark_offsets(m.rk, m.topic, p, &lo, &hi) != 0 || hi < 0)
            continue;
        int64_t at = m.stored[p] >= 0 ? m.stored[p] : lo;
        put(&b, "gridmeter_rater_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n", m.topic, p,
            (long long)(hi > at ? hi - at : 0));
        put(&b, "gridmeter_rater_committed_offset{topic=\"%s\",partition=\"%d\"} %lld\n", m.topic,
            p, (long long)m.stored[p]);
    }
    put(&b,
        "# TYPE gridmeter_rater_start_time_seconds gauge\n"
        "gridmeter_rater_start_time_seconds %lld\n",
        (long long)(gm_rater_metrics.started_us / GM_US_PER_SEC));
    *len = b.n;
    return b.p;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **state)
{
    (void)cls;
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)state;
    struct MHD_Response *resp;
    unsigned status = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0) {
        static const char msg[] = "only GET\n";
        resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (!strcmp(url, "/metrics")) {
        size_t len;
        char *body = render(&len);
        resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
        MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    } else if (!strcmp(url, "/healthz")) {
        static const char ok[] = "ok\n";
        resp = MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
    } else {
        static const char nf[] = "not found: try /metrics or /healthz\n";
        resp = MHD_create_response_from_buffer(sizeof nf - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    }
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int gm_rater_metrics_start(const char *addr, char *err, size_t err_len)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon - addr >= (long)sizeof host)
        return gm_fail(err, err_len, GM_ECONFIG, "metrics address \"%s\": must be HOST:PORT", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    int64_t port;
    if (gm_parse_i64(colon + 1, strlen(colon + 1), &port) || port < 0 || port > 65535)
        return gm_fail(err, err_len, GM_ECONFIG, "metrics address \"%s\": bad port", addr);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return gm_fail(err, err_len, GM_ECONFIG,
                       "metrics address \"%s\": host must be an IPv4 address", addr);
    m.mhd =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL,
                         NULL, handle, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT,
                         64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m.mhd)
        return gm_fail(err, err_len, GM_EUNAVAIL, "metrics: cannot listen on %s", addr);
    gm_info("rater", "msg=\"metrics listening\" url=http://%s/metrics", addr);
    return 0;
}

void gm_rater_metrics_stop(void)
{
    if (m.mhd)
        MHD_stop_daemon(m.mhd);
    m.mhd = NULL;
}
