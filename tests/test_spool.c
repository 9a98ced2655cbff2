/* Unit tests of the node spool: framing and CRC, torn and corrupt tails, the bound, seq that
 * survives restarts, and the hand-out/acknowledge window. No servers. */
#include "gm_node.h"
#include "support.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern bool spool__crc_force_sw;

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gmtest-spool-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static gm_spool *open_spool(uint64_t max_bytes, uint64_t seg_bytes)
{
    gm_spool_config c = {.dir = dir, .max_bytes = max_bytes, .segment_bytes = seg_bytes};
    gm_spool *sp = NULL;
    char err[512];
    int rc = gm_spool_open(&c, &sp, err, sizeof err);
    ck_assert_msg(rc == 0, "open: %s", err);
    return sp;
}

static void check(gm_spool *sp)
{
    char err[512];
    ck_assert_msg(gm_spool_check(sp, err, sizeof err) == 0, "%s", err);
}

static void append_n(gm_spool *sp, int n, int from)
{
    char err[256], msg[64];
    for (int i = 0; i < n; i++) {
        int len = snprintf(msg, sizeof msg, "message %d", from + i);
        ck_assert_msg(gm_spool_append_raw(sp, "k", msg, (size_t)len, NULL, err, sizeof err) == 0,
                      "%s", err);
    }
}

static size_t sync_take(gm_spool *sp, gm_spool_rec *recs, size_t max)
{
    char err[256];
    ck_assert_msg(gm_spool_sync(sp, err, sizeof err) == 0, "%s", err);
    return gm_spool_take(sp, recs, max);
}

/* The one segment file of a fresh spool. */
static void segment_path(char *buf, size_t len, int idx)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls %s/seg-*.spool | sed -n %dp", dir, idx + 1);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(fgets(buf, (int)len, p));
    buf[strcspn(buf, "\n")] = '\0';
    pclose(p);
}

static off_t file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

START_TEST(test_crc32c_matches_the_standard_check_value_in_both_implementations)
{
    ck_assert_uint_eq(gm_crc32c(0, "123456789", 9), 0xE3069283u);
    unsigned char buf[1031];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t len = 0; len < sizeof buf; len += 97) {
        spool__crc_force_sw = false;
        uint32_t hw = gm_crc32c(0, buf, len);
        spool__crc_force_sw = true;
        uint32_t sw = gm_crc32c(0, buf, len);
        spool__crc_force_sw = false;
        ck_assert_uint_eq(hw, sw);
    }
}
END_TEST

START_TEST(test_only_durable_records_are_handed_out)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 5, 0);
    gm_spool_rec recs[16];
    ck_assert_uint_eq(gm_spool_take(sp, recs, 16), 0);
    ck_assert_uint_eq(sync_take(sp, recs, 16), 5);
    for (int i = 0; i < 5; i++) {
        char want[32];
        snprintf(want, sizeof want, "message %d", i);
        ck_assert_uint_eq(recs[i].lsn, (uint64_t)i + 1);
        ck_assert_uint_eq(recs[i].payload_len, strlen(want));
        ck_assert(memcmp(recs[i].payload, want, recs[i].payload_len) == 0);
        ck_assert(recs[i].key_len == 1 && recs[i].key[0] == 'k');
    }
    check(sp);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_failed_delivery_hands_the_record_out_again)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 3, 0);
    gm_spool_rec recs[8];
    ck_assert_uint_eq(sync_take(sp, recs, 8), 3);
    gm_spool_ack(sp, 1, true);
    gm_spool_ack(sp, 2, false);
    gm_spool_untake(sp, 3); /* queue full */
    ck_assert_uint_eq(gm_spool_take(sp, recs, 8), 2);
    ck_assert_uint_eq(recs[0].lsn, 2);
    ck_assert_uint_eq(recs[1].lsn, 3);
    gm_spool_ack(sp, 3, true);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.acked_lsn, 1); /* 2 is still in flight */
    gm_spool_ack(sp, 2, true);
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.acked_lsn, 3);
    ck_assert_uint_eq(st.unacked, 0);
    gm_spool_reset_inflight(sp);
    ck_assert_uint_eq(gm_spool_take(sp, recs, 8), 0);
    check(sp);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_restart_resends_exactly_what_was_not_acknowledged)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 100, 0);
    gm_spool_rec recs[128];
    ck_assert_uint_eq(sync_take(sp, recs, 128), 100);
    for (uint64_t l = 1; l <= 40; l++)
        gm_spool_ack(sp, l, true);
    gm_spool_ack(sp, 77, true); /* acknowledged, but above a hole: sent again, harmlessly */
    gm_spool_close(sp);

    sp = open_spool(1 << 20, 64 << 10);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.recovered, 60);
    ck_assert_uint_eq(st.acked_lsn, 40);
    ck_assert_uint_eq(st.next_lsn, 101);
    ck_assert_uint_eq(gm_spool_take(sp, recs, 128), 60);
    ck_assert_uint_eq(recs[0].lsn, 41);
    ck_assert(memcmp(recs[0].payload, "message 40", 10) == 0);
    ck_assert_uint_eq(recs[59].lsn, 100);
    check(sp);
    gm_spool_close(sp);
}
END_TEST

static size_t enc_cb(void *arg, uint64_t seq, char *buf, size_t buf_len, char *err, size_t err_len)
{
    (void)arg;
    (void)err;
    (void)err_len;
    return (size_t)snprintf(buf, buf_len, "{\"seq\":%llu}", (unsigned long long)seq);
}

static uint64_t append_seq(gm_spool *sp, const char *key)
{
    uint64_t seq = 0, lsn = 0;
    char err[256];
    ck_assert_msg(gm_spool_append(sp, key, true, enc_cb, NULL, &seq, &lsn, err, sizeof err) == 0,
                  "%s", err);
    return seq;
}

START_TEST(test_seq_continues_after_restart_even_when_every_segment_was_deleted)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    for (uint64_t i = 1; i <= 10; i++)
        ck_assert_uint_eq(append_seq(sp, "edge/a/n1"), i);
    ck_assert_uint_eq(append_seq(sp, "edge/b/n2"), 1);
    gm_spool_rec recs[16];
    ck_assert_uint_eq(sync_take(sp, recs, 16), 11);
    ck_assert_uint_eq(recs[10].seq, 1);
    for (uint64_t l = 1; l <= 11; l++)
        gm_spool_ack(sp, l, true);
    gm_spool_close(sp); /* seals the segment and deletes it: all acknowledged */

    char cmd[400];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls %s/seg-*.spool 2>/dev/null)\"", dir);
    ck_assert_int_eq(system(cmd), 0);

    sp = open_spool(1 << 20, 64 << 10);
    ck_assert_uint_eq(gm_spool_last_seq(sp, "edge/a/n1"), 10);
    ck_assert_uint_eq(append_seq(sp, "edge/a/n1"), 11);
    ck_assert_uint_eq(append_seq(sp, "edge/b/n2"), 2);
    ck_assert_uint_eq(append_seq(sp, "edge/c/n3"), 1);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.next_lsn, 15); /* lsns go on too */
    check(sp);
    gm_spool_close(sp);

    /* seqs that are only in a segment (not yet in the state file) count too */
    sp = open_spool(1 << 20, 64 << 10);
    ck_assert_uint_eq(gm_spool_last_seq(sp, "edge/a/n1"), 11);
    ck_assert_uint_eq(gm_spool_last_seq(sp, "edge/c/n3"), 1);
    gm_spool_close(sp);
}
END_TEST

/* Epochs (docs/node-client.md "State loss and epochs"): a new directory has no state, and
 * opening it writes none (the node client saves it once it decided); a new epoch starts every
 * seq at 1 again and is durable; records of the old epoch still in the spool are still handed
 * out but count for no seq after a restart, whether in a segment or deleted into the state
 * file; an epoch never goes back. */
START_TEST(test_new_epoch_restarts_seqs_and_survives_restarts)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    ck_assert(!gm_spool_had_state(sp));
    ck_assert_uint_eq(gm_spool_epoch(sp), 0);
    gm_spool_close(sp);
    sp = open_spool(1 << 20, 64 << 10); /* opening writes nothing: still no state */
    ck_assert(!gm_spool_had_state(sp));
    char err[256];
    ck_assert_int_eq(gm_spool_save_state(sp, err, sizeof err), 0);
    for (uint64_t i = 1; i <= 3; i++)
        ck_assert_uint_eq(append_seq(sp, "edge/a/n1"), i);
    gm_spool_close(sp);

    sp = open_spool(1 << 20, 64 << 10);
    ck_assert(gm_spool_had_state(sp));
    ck_assert_int_eq(gm_spool_new_epoch(sp, 1795867200, err, sizeof err), 0);
    ck_assert_uint_eq(gm_spool_epoch(sp), 1795867200);
    ck_assert_uint_eq(gm_spool_last_seq(sp, "edge/a/n1"), 0);
    ck_assert_uint_eq(append_seq(sp, "edge/a/n1"), 1);
    ck_assert_uint_eq(append_seq(sp, "edge/a/n1"), 2);
    ck_assert_int_eq(gm_spool_new_epoch(sp, 1795867200, err, sizeof err), GM_EINVAL);
    ck_assert_msg(strstr(err, "must be higher than the current one (1795867200)"), "%s", err);
    gm_spool_rec recs[16];
    ck_assert_uint_eq(sync_take(sp, recs, 16), 5); /* the old epoch's 3 are still sent */
    gm_spool_close(sp);

    /* the old records are in a segment, unacknowledged: they count for no seq */
    sp = open_spool(1 << 20, 64 << 10);
    ck_assert_uint_eq(gm_spool_epoch(sp), 1795867200);
    ck_assert_uint_eq(gm_spool_last_seq(sp, "edge/a/n1"), 2);
    ck_assert_uint_eq(sync_take(sp, recs, 16), 5);
    for (uint64_t l = 1; l <= 5; l++)
        gm_spool_ack(sp, l, true);
    gm_spool_close(sp); /* all acknowledged: segments deleted, seqs into the state file */

    sp = open_spool(1 << 20, 64 << 10);
    ck_assert_uint_eq(gm_spool_epoch(sp), 1795867200);
    ck_assert_uint_eq(gm_spool_last_seq(sp, "edge/a/n1"), 2);
    ck_assert_uint_eq(append_seq(sp, "edge/a/n1"), 3);
    check(sp);
    gm_spool_close(sp);
}
END_TEST

/* Runs fn with stderr captured into buf. */
static void capture_stderr_open(int *saved, char *path)
{
    strcpy(path, "/tmp/gmtest-spool-log-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    *saved = dup(2);
    dup2(fd, 2);
    close(fd);
}

static char *capture_stderr_close(int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    return buf;
}

START_TEST(test_torn_tail_is_truncated_to_the_last_whole_record_and_logged)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 10, 0);
    gm_spool_close(sp);
    char seg[512];
    segment_path(seg, sizeof seg, 0);
    off_t whole = file_size(seg);

    /* A torn write: the header and half the payload of an 11th record. */
    sp = open_spool(1 << 20, 64 << 10);
    gm_spool_close(sp);
    int fd = open(seg, O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    unsigned char torn[37] = {60, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 11};
    for (size_t i = 9; i < sizeof torn; i++)
        torn[i] = (unsigned char)i;
    ck_assert_int_eq(write(fd, torn, sizeof torn), (ssize_t)sizeof torn);
    close(fd);

    int saved;
    char logpath[64];
    capture_stderr_open(&saved, logpath);
    sp = open_spool(1 << 20, 64 << 10);
    char *log = capture_stderr_close(saved, logpath);
    ck_assert_msg(strstr(log, "bytes_cut=37") != NULL, "log was: %s", log);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.truncated_bytes, 37);
    ck_assert_uint_eq(st.recovered, 10);
    ck_assert_int_eq(file_size(seg), whole);
    /* appending goes on at lsn 11 */
    append_n(sp, 1, 10);
    gm_spool_rec recs[16];
    ck_assert_uint_eq(sync_take(sp, recs, 16), 11);
    ck_assert_uint_eq(recs[10].lsn, 11);
    check(sp);
    gm_spool_close(sp);

    sp = open_spool(1 << 20, 64 << 10);
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.truncated_bytes, 0);
    ck_assert_uint_eq(st.recovered, 11);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_a_record_cut_short_is_dropped_with_what_follows)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 10, 0);
    gm_spool_close(sp);
    char seg[512];
    segment_path(seg, sizeof seg, 0);
    off_t whole = file_size(seg);
    ck_assert_int_eq(truncate(seg, whole - 10), 0); /* 6 bytes of padding and 4 of payload */
    sp = open_spool(1 << 20, 64 << 10);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.recovered, 9);
    ck_assert_uint_eq(st.next_lsn, 10);
    ck_assert_uint_gt(st.truncated_bytes, 0);
    check(sp);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_crc_mismatch_is_detected_and_cut)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 10, 0);
    gm_spool_close(sp);
    char seg[512];
    segment_path(seg, sizeof seg, 0);
    off_t whole = file_size(seg);
    /* Every record here is 48 bytes (32 header + 1 key + 9 payload, padded to 8): flip one
     * payload byte of the 6th record. */
    int fd = open(seg, O_RDWR);
    ck_assert_int_ge(fd, 0);
    off_t at = 5 * 48 + 34;
    unsigned char b;
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x20;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
    sp = open_spool(1 << 20, 64 << 10);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.recovered, 5);
    /* the cut counts the bytes of the bad records, not the last record's zero padding */
    ck_assert_uint_eq(st.truncated_bytes, (uint64_t)(whole - 5 * 48 - 6));
    ck_assert_int_eq(file_size(seg), 5 * 48);
    check(sp);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_full_spool_refuses_with_efull_and_keeps_every_record)
{
    gm_spool *sp = open_spool(256 << 10, 64 << 10);
    char err[512], msg[1000];
    memset(msg, 'x', sizeof msg);
    int ok = 0, rc;
    while ((rc = gm_spool_append_raw(sp, "k", msg, sizeof msg, NULL, err, sizeof err)) == 0)
        ok++;
    ck_assert_int_eq(rc, GM_EFULL);
    ck_assert_msg(strstr(err, "full") && strstr(err, "acknowledged"), "%s", err);
    ck_assert_int_gt(ok, 200);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_le(st.bytes, 256 << 10);
    ck_assert_uint_eq(st.unacked, (uint64_t)ok);
    check(sp);
    /* everything before the refusal is there */
    gm_spool_rec *recs = gm_xcalloc((size_t)ok + 1, sizeof *recs);
    ck_assert_uint_eq(sync_take(sp, recs, (size_t)ok + 1), (size_t)ok);
    /* acknowledging frees the space */
    for (int i = 0; i < ok; i++)
        gm_spool_ack(sp, recs[i].lsn, true);
    ck_assert_int_eq(gm_spool_append_raw(sp, "k", msg, sizeof msg, NULL, err, sizeof err), 0);
    check(sp);
    free(recs);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_empty_segment_left_by_a_crash_is_removed_and_new_records_survive)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 3, 0);
    gm_spool_close(sp);
    /* a crash right after creating the next segment (lsn 4) left it empty */
    char path[400];
    snprintf(path, sizeof path, "%s/seg-%020d.spool", dir, 4);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
    sp = open_spool(1 << 20, 64 << 10);
    append_n(sp, 2, 3); /* lsn 4 and 5: a new segment named seg-...4 */
    check(sp);
    gm_spool_close(sp);
    sp = open_spool(1 << 20, 64 << 10);
    gm_spool_stats st;
    gm_spool_stats_get(sp, &st);
    ck_assert_uint_eq(st.recovered, 5);
    gm_spool_rec recs[8];
    ck_assert_uint_eq(gm_spool_take(sp, recs, 8), 5);
    ck_assert(memcmp(recs[4].payload, "message 4", 9) == 0);
    check(sp);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_second_process_cannot_open_the_same_spool)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    pid_t pid = fork();
    if (pid == 0) {
        gm_spool_config c = {.dir = dir};
        gm_spool *sp2 = NULL;
        char err[256];
        _exit(gm_spool_open(&c, &sp2, err, sizeof err) == GM_EUNAVAIL ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    gm_spool_close(sp);
}
END_TEST

START_TEST(test_corrupt_state_file_refuses_to_open)
{
    gm_spool *sp = open_spool(1 << 20, 64 << 10);
    append_seq(sp, "a");
    gm_spool_rec rec;
    ck_assert_uint_eq(sync_take(sp, &rec, 1), 1);
    gm_spool_ack(sp, rec.lsn, true);
    gm_spool_close(sp); /* writes the state file */
    char path[400];
    snprintf(path, sizeof path, "%s/spool.state", dir);
    FILE *f = fopen(path, "r+");
    ck_assert_ptr_nonnull(f);
    fseek(f, 30, SEEK_SET);
    fputc('9', f);
    fclose(f);
    gm_spool_config c = {.dir = dir};
    char err[512];
    ck_assert_int_eq(gm_spool_open(&c, &sp, err, sizeof err), GM_ECORRUPT);
    ck_assert_msg(strstr(err, "spool.state") != NULL, "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spool");
    TCase *tc = tcase_create("spool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_crc32c_matches_the_standard_check_value_in_both_implementations);
    tcase_add_test(tc, test_only_durable_records_are_handed_out);
    tcase_add_test(tc, test_failed_delivery_hands_the_record_out_again);
    tcase_add_test(tc, test_restart_resends_exactly_what_was_not_acknowledged);
    tcase_add_test(tc, test_seq_continues_after_restart_even_when_every_segment_was_deleted);
    tcase_add_test(tc, test_torn_tail_is_truncated_to_the_last_whole_record_and_logged);
    tcase_add_test(tc, test_a_record_cut_short_is_dropped_with_what_follows);
    tcase_add_test(tc, test_crc_mismatch_is_detected_and_cut);
    tcase_add_test(tc, test_full_spool_refuses_with_efull_and_keeps_every_record);
    tcase_add_test(tc, test_empty_segment_left_by_a_crash_is_removed_and_new_records_survive);
    tcase_add_test(tc, test_second_process_cannot_open_the_same_spool);
    tcase_add_test(tc, test_corrupt_state_file_refuses_to_open);
    tcase_add_test(tc, test_new_epoch_restarts_seqs_and_survives_restarts);
    suite_add_tcase(s, tc);
    return gm_test_run(s);
}
