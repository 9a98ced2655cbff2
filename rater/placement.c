/* Placement: in sharded mode every usage and GPU message must be where its source puts it.
 *
 * DESIGN. Deduplication is per shard (gm.sources and the ledger live in the shard that owns
 * the partition), so a re-send of an event that lands in a partition of another shard would
 * be charged twice. The rule that prevents it, docs/scaling.md "Placement": a message's
 * Kafka key is its event's source, and its partition is the one Kafka's Java-compatible
 * murmur2 partitioner gives for that key over the topic's partition count in the shard map.
 * The hash is librdkafka's own (rd_kafka_msg_partitioner_murmur2), the same function that
 * gridmeter's node client produces with (ingest/node.c sets partitioner=murmur2_random), so
 * producer and rater agree by construction. A message that breaks the rule is kept as a
 * reject (rule placement) and charged nowhere: its correctly placed copy is charged by its
 * own shard. Unsharded (one database) nothing is checked: dedup covers every partition. */
#include "gm_ingest.h"
#include "gm_rater.h"
#include "rater_int.h"

#include <librdkafka/rdkafka.h>
#include <string.h>

const char gm_rater__rule_placement[] = "placement";

int32_t gm_shard_partition_of(const char *source, int partitions)
{
    if (partitions <= 0)
        return -1;
    /* rkt and the opaques are not used by this partitioner: it hashes the key only */
    return rd_kafka_msg_partitioner_murmur2(NULL, source, strlen(source), partitions, NULL, NULL);
}

/* The key as it can be printed in a reason: up to 128 bytes, bytes outside printable ASCII
 * and the quote as '?'. */
static void printable_key(const void *key, size_t len, char *out, size_t cap)
{
    const unsigned char *k = key;
    size_t n = 0;
    for (size_t i = 0; i < len && i < 128 && n + 1 < cap; i++)
        out[n++] = (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '"') ? (char)k[i] : '?';
    out[n] = '\0';
}

bool gm_rater__misplaced(const gm_shard_map *map, const char *topic, const void *key,
                         size_t key_len, int32_t partition, const gm_event *ev, char *reason,
                         size_t reason_len)
{
    const gm_shard_topic *t = map ? gm_shard_map_topic(map, topic) : NULL;
    if (!t)
        return false;
    size_t n = strlen(ev->source);
    if (!key || key_len != n || memcmp(key, ev->source, n) != 0) {
        char k[132];
        printable_key(key, key ? key_len : 0, k, sizeof k);
        snprintf(reason, reason_len,
                 "event %s#%s: kafka key: must equal the event's source \"%s\" (docs/scaling.md, "
                 "\"Placement\"), got %s%s%s%s",
                 ev->source, ev->id, ev->source, key ? "\"" : "no key", k, key ? "\"" : "",
                 key && key_len > 128 ? " (first 128 bytes)" : "");
        return true;
    }
    int32_t want = gm_shard_partition_of(ev->source, t->partitions);
    if (partition != want) {
        snprintf(reason, reason_len,
                 "event %s#%s: partition: source %s belongs to partition %d of %d of topic %s "
                 "(murmur2 of the key, docs/scaling.md \"Placement\"), got %d",
                 ev->source, ev->id, ev->source, want, t->partitions, topic, partition);
        return true;
    }
    return false;
}
