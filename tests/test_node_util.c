/* Helpers of the node client tests: read a topic back from the beginning, and check that per
 * source the seqs have no holes. Compiled into each node test executable. */
#include "gm_node.h"
#include "support.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_node_util.h"

size_t tn_consume(const char *brokers, const char *topic, size_t want, int timeout_ms, tn_msg **out)
{
    char err[512], group[128];
    snprintf(group, sizeof group, "gmtest-node-%d-%lld", (int)getpid(), (long long)gm_mono_us());
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers",
                        brokers,
                        "group.id",
                        group,
                        "enable.auto.commit",
                        "false",
                        "auto.offset.reset",
                        "earliest",
                        "enable.partition.eof",
                        "false",
                        NULL};
    for (size_t i = 0; kv[i]; i += 2)
        ck_assert_msg(rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof err) ==
                          RD_KAFKA_CONF_OK,
                      "%s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s", err);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    ck_assert_int_eq(rd_kafka_metadata(rk, 0, t, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    ck_assert_int_gt(parts, 0);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(tl, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, tl), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(tl);

    size_t n = 0, cap = want + 16;
    tn_msg *m = gm_xcalloc(cap, sizeof *m);
    int64_t deadline = gm_mono_us() + (int64_t)timeout_ms * 1000;
    int64_t quiet_until = 0;
    /* Read until `want` arrived and nothing more came for 1 s, or the deadline. */
    while (gm_mono_us() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (!msg) {
            if (n >= want && quiet_until && gm_mono_us() > quiet_until)
                break;
            continue;
        }
        if (!msg->err) {
            if (n == cap)
                m = gm_xrealloc(m, (cap *= 2) * sizeof *m);
            m[n].partition = msg->partition;
            m[n].offset = msg->offset;
            m[n].key = gm_xmalloc(msg->key_len + 1);
            memcpy(m[n].key, msg->key, msg->key_len);
            m[n].key[msg->key_len] = '\0';
            m[n].payload = gm_xmalloc(msg->len + 1);
            memcpy(m[n].payload, msg->payload, msg->len);
            m[n].payload[msg->len] = '\0';
            m[n].len = msg->len;
            n++;
            if (n >= want)
                quiet_until = gm_mono_us() + 1000 * 1000;
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    *out = m;
    return n;
}

void tn_free(tn_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].key);
        free(m[i].payload);
    }
    free(m);
}

/* Decodes every message (they must all be valid events) and checks, per source, that the seqs
 * 1..max are all there and that every copy of (source, id) carries the same bytes. Returns the
 * number of distinct (source, seq); *dups gets the number of extra copies. */
uint64_t tn_check_seqs(const tn_msg *m, size_t n, uint64_t *dups, uint64_t *max_seq_out)
{
    typedef struct {
        char source[GM_EVENT_SOURCE_MAX + 1];
        uint64_t max;
        uint8_t *seen;
        size_t cap;
        int partition;
    } per_src;
    per_src *s = NULL;
    size_t ns = 0;
    uint64_t distinct = 0, extra = 0, max_all = 0;
    for (size_t i = 0; i < n; i++) {
        gm_event ev;
        char err[512];
        ck_assert_msg(gm_event_decode(m[i].payload, m[i].len, &ev, err, sizeof err) == 0,
                      "message %zu does not decode: %s", i, err);
        ck_assert_str_eq(m[i].key, ev.source);
        char id[GM_EVENT_ID_MAX + 1];
        gm_node_event_id(ev.source, ev.seq, id, sizeof id);
        ck_assert_str_eq(id, ev.id);
        per_src *p = NULL;
        for (size_t k = 0; k < ns && !p; k++)
            if (!strcmp(s[k].source, ev.source))
                p = &s[k];
        if (!p) {
            s = gm_xrealloc(s, (ns + 1) * sizeof *s);
            p = &s[ns++];
            memset(p, 0, sizeof *p);
            snprintf(p->source, sizeof p->source, "%s", ev.source);
            p->partition = m[i].partition;
        }
        ck_assert_msg(p->partition == m[i].partition, "source %s is in partitions %d and %d",
                      ev.source, p->partition, m[i].partition);
        if (ev.seq >= p->cap) {
            size_t ncap = (size_t)ev.seq * 2 + 64;
            p->seen = gm_xrealloc(p->seen, ncap);
            memset(p->seen + p->cap, 0, ncap - p->cap);
            p->cap = ncap;
        }
        if (p->seen[ev.seq])
            extra++;
        else
            distinct++;
        p->seen[ev.seq] = 1;
        if (ev.seq > p->max)
            p->max = ev.seq;
    }
    for (size_t k = 0; k < ns; k++) {
        for (uint64_t q = 1; q <= s[k].max; q++)
            ck_assert_msg(s[k].seen[q], "source %s: seq %llu is missing (max %llu)", s[k].source,
                          (unsigned long long)q, (unsigned long long)s[k].max);
        if (s[k].max > max_all)
            max_all = s[k].max;
        free(s[k].seen);
    }
    free(s);
    if (dups)
        *dups = extra;
    if (max_seq_out)
        *max_seq_out = max_all;
    return distinct;
}

gm_node *tn_open(const char *brokers, const char *topic, const char *spool_dir, const char *source)
{
    gm_node_config c;
    gm_node_config_init(&c);
    c.brokers = brokers;
    c.topic = topic;
    c.source = source;
    c.site = "fra1";
    c.spool_dir = spool_dir;
    c.close_timeout_ms = 10000;
    gm_node *n = NULL;
    char err[512];
    int rc = gm_node_open(&c, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "gm_node_open: %s", err);
    return n;
}

void tn_record(gm_node *n, uint64_t i, uint64_t *seq)
{
    char req[48], err[512];
    snprintf(req, sizeof req, "req-%llu", (unsigned long long)i);
    gm_node_usage u = {.tenant = "acme",
                       .model = "llama-3.1-70b-instruct",
                       .request_id = req,
                       .input_tokens = (int64_t)(i % 1000),
                       .cached_tokens = (int64_t)(i % 7),
                       .output_tokens = 100,
                       .gpu_us = 84200};
    int rc = gm_node_record(n, &u, seq, err, sizeof err);
    ck_assert_msg(rc == 0, "record %llu: %s", (unsigned long long)i, err);
}

void tn_tmpdir(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "/tmp/gmtest-%s-XXXXXX", tag);
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

void tn_rmdir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
