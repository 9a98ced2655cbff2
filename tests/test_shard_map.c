/* The shard map file (rater/shard.c; docs/scaling.md, "The shard map"): what it accepts,
 * and that each rule it refuses is named with the line; placement (rater/placement.c): the
 * partition of a source, and the reasons of a misplaced message. */
#include "gm_ingest.h"
#include "gm_rater.h"
#include "rater_int.h"
#include "support.h"

#include <string.h>

static const char *const ok_map = "version 1\n"
                                  "# comment\n"
                                  "topic gridmeter.usage.v1 6\n"
                                  "topic gridmeter.gpu.v1 6   # co-located\n"
                                  "shard s1 host=db1 port=5432 dbname=gm user=gm_rater\n"
                                  "shard s-2   host=db2 dbname=gm  \n"
                                  "\n"
                                  "assign s1 gridmeter.usage.v1 0-2\r\n"
                                  "assign s-2 gridmeter.usage.v1 3,4,5\n"
                                  "assign s1 gridmeter.gpu.v1 0,1-2\n"
                                  "assign s-2 gridmeter.gpu.v1 5,3-4\n";

START_TEST(test_map_assigns_each_partition_to_one_shard)
{
    gm_shard_map *m = NULL;
    char err[512];
    ck_assert_int_eq(gm_shard_map_parse(ok_map, strlen(ok_map), "m", &m, err, sizeof err), 0);
    ck_assert_uint_eq(m->n_shards, 2);
    ck_assert_str_eq(m->shards[0].conninfo, "host=db1 port=5432 dbname=gm user=gm_rater");
    ck_assert_str_eq(m->shards[1].conninfo, "host=db2 dbname=gm");
    ck_assert_int_eq(gm_shard_map_find(m, "s-2"), 1);
    ck_assert_int_eq(gm_shard_map_find(m, "s3"), -1);
    const gm_shard_topic *t = gm_shard_map_topic(m, "gridmeter.gpu.v1");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_null(gm_shard_map_topic(m, "other"));
    int32_t p[8];
    ck_assert_uint_eq(gm_shard_map_partitions(t, 1, p, 8), 3);
    ck_assert_int_eq(p[0], 3);
    ck_assert_int_eq(p[2], 5);
    gm_shard_map_free(m);
    gm_shard_map_free(NULL);
}
END_TEST

static void refused(const char *text, const char *want)
{
    gm_shard_map *m = (gm_shard_map *)1;
    char err[512] = "";
    ck_assert_int_eq(gm_shard_map_parse(text, strlen(text), "f.map", &m, err, sizeof err),
                     GM_EINVAL);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, want), "map %s: expected \"%s\" in: %s", text, want, err);
}

START_TEST(test_map_refuses_broken_rules_with_line_and_rule)
{
    refused("", "empty");
    refused("topic t 2\n", "f.map:1: a shard map starts with \"version 1\"");
    refused("version 2\n", "f.map:1: version");
    refused("version 1\nversion 1\n", "f.map:2: version");
    refused("version 1\ntopic t 0\n", "1..4096 partitions");
    refused("version 1\ntopic t x\n", "1..4096 partitions");
    refused("version 1\ntopic bad/name 2\n", "Kafka topic name");
    refused("version 1\ntopic t 2\ntopic t 3\n", "f.map:3: topic t: declared twice");
    refused("version 1\ntopic t 2\nshard S1 dbname=x\n", "the name must be");
    refused("version 1\ntopic t 2\nshard s1\n", "needs a libpq conninfo");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nshard s1 dbname=b\n", "declared twice");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nassign s2 t 0-1\n", "s2 is not declared");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nassign s1 u 0-1\n", "u is not declared");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nassign s1 t 0-2\n",
            "f.map:4: partition 2: topic t has partitions 0..1");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nassign s1 t 1-0\n", "runs backwards");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nassign s1 t 0,\n", "ends with a number");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nassign s1 t +1\n", "such as 0,1,4-7");
    refused("version 1\ntopic t 2\nshard s1 dbname=a\nshard s2 dbname=b\n"
            "assign s1 t 0-1\nassign s2 t 1\n",
            "f.map:6: partition 1 of topic t: already assigned to shard s1");
    refused("version 1\ntopic t 3\nshard s1 dbname=a\nassign s1 t 0,2\n",
            "partition 1 of topic t is assigned to no shard");
    refused("version 1\ntopic t 2\n", "no shard declared");
    refused("version 1\nshard s1 dbname=a\n", "no topic declared");
    refused("version 1\ntopic t 2\ntopic g 2\nshard s1 dbname=a\nshard s2 dbname=b\n"
            "assign s1 t 0\nassign s2 t 1\nassign s2 g 0\nassign s1 g 1\n",
            "topic g: must have the partitions of topic t");
    refused("version 1\nshards s1 dbname=a\n", "unknown keyword \"shards\"");
}
END_TEST

START_TEST(test_map_nul_byte_is_refused)
{
    static const char text[] = "version 1\ntopic t 2\0\n";
    gm_shard_map *m = NULL;
    char err[256];
    ck_assert_int_eq(gm_shard_map_parse(text, sizeof text - 1, "f", &m, err, sizeof err),
                     GM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "NUL byte"));
}
END_TEST

/* Kafka's Java client: partition = (murmur2(key) & 0x7fffffff) % partitions; the hashes
 * are those of Kafka's own murmur2 test (clients UtilsTest: "21" -973932308, "foobar"
 * -790332482, "abc" 479470107, "a-little-bit-longer-string" -1486304829). */
START_TEST(test_partition_of_a_source_is_javas_murmur2)
{
    ck_assert_int_eq(gm_shard_partition_of("21", 60), 0);
    ck_assert_int_eq(gm_shard_partition_of("21", 7), 3);
    ck_assert_int_eq(gm_shard_partition_of("foobar", 60), 6);
    ck_assert_int_eq(gm_shard_partition_of("foobar", 4), 2);
    ck_assert_int_eq(gm_shard_partition_of("abc", 60), 27);
    ck_assert_int_eq(gm_shard_partition_of("abc", 7), 4);
    ck_assert_int_eq(gm_shard_partition_of("a-little-bit-longer-string", 60), 59);
    ck_assert_int_eq(gm_shard_partition_of("x", 1), 0);
    ck_assert_int_eq(gm_shard_partition_of("x", 0), -1);
}
END_TEST

START_TEST(test_misplaced_message_names_the_rule)
{
    gm_shard_map *m = NULL;
    char err[256];
    ck_assert_int_eq(gm_shard_map_parse(ok_map, strlen(ok_map), "f", &m, err, sizeof err), 0);
    gm_event ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.source, sizeof ev.source, "foobar");
    snprintf(ev.id, sizeof ev.id, "e1");
    int32_t p = gm_shard_partition_of("foobar", 6);
    char why[512] = "";
    /* where it belongs, keyed by its source: no reason */
    ck_assert(!gm_rater__misplaced(m, "gridmeter.usage.v1", "foobar", 6, p, &ev, why, sizeof why));
    /* a topic the map does not shard, or no map (one database): not checked */
    ck_assert(!gm_rater__misplaced(m, "other", "k", 1, p + 1, &ev, why, sizeof why));
    ck_assert(
        !gm_rater__misplaced(NULL, "gridmeter.usage.v1", "k", 1, p + 1, &ev, why, sizeof why));
    ck_assert(gm_rater__misplaced(m, "gridmeter.usage.v1", "foobar", 6, (p + 1) % 6, &ev, why,
                                  sizeof why));
    char want[300];
    snprintf(want, sizeof want,
             "event foobar#e1: partition: source foobar belongs to partition %d of 6 of topic "
             "gridmeter.usage.v1 (murmur2 of the key, docs/scaling.md \"Placement\"), got %d",
             p, (p + 1) % 6);
    ck_assert_str_eq(why, want);
    /* the key is checked first, even in the right partition */
    ck_assert(gm_rater__misplaced(m, "gridmeter.gpu.v1", "foo\"\nbar", 8, p, &ev, why, sizeof why));
    ck_assert_str_eq(why, "event foobar#e1: kafka key: must equal the event's source \"foobar\" "
                          "(docs/scaling.md, \"Placement\"), got \"foo??bar\"");
    ck_assert(gm_rater__misplaced(m, "gridmeter.gpu.v1", "fooba", 5, p, &ev, why, sizeof why));
    ck_assert(gm_rater__misplaced(m, "gridmeter.gpu.v1", NULL, 0, p, &ev, why, sizeof why));
    ck_assert_str_eq(why, "event foobar#e1: kafka key: must equal the event's source \"foobar\" "
                          "(docs/scaling.md, \"Placement\"), got no key");
    gm_shard_map_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shard_map");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, test_map_assigns_each_partition_to_one_shard);
    tcase_add_test(tc, test_map_refuses_broken_rules_with_line_and_rule);
    tcase_add_test(tc, test_map_nul_byte_is_refused);
    tcase_add_test(tc, test_partition_of_a_source_is_javas_murmur2);
    tcase_add_test(tc, test_misplaced_message_names_the_rule);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
