/* The node's local append-only spool: CRC-framed records in memory-mapped segment files,
 * per-source seq counters, and the acknowledgement window that decides what may be deleted.
 *
 * DESIGN. Appends go into the active segment, a file preallocated to segment_bytes and
 * mapped shared: a record is in the page cache (and so survives kill -9) the moment the
 * append returns, without a system call. gm_spool_sync() msyncs what was appended since the
 * last sync; only durable records are handed to the producer (invariant 3 in gm_node.h), so
 * that Kafka never holds an event whose seq the spool could forget and give out again after
 * a power loss. A full segment is sealed (truncated to its records) and a new one started.
 *
 * Every record has an lsn. The window is a ring over [acked_lsn + 1, next_lsn) holding each
 * record's state (PENDING: to be handed out; INFLIGHT: handed out, no delivery report yet;
 * ACKED) and a pointer to it. A delivery report marks a record ACKED, and acked_lsn moves
 * over the ACKED prefix. Reclaim writes the state file (acked_lsn, next_lsn, and for each
 * source the highest seq among deleted records) atomically, then deletes the segments that
 * hold only acknowledged records.
 *
 * EPOCHS. The state file also names the node's epoch (docs/node-client.md "State loss and
 * epochs") and the first lsn of that epoch: records below it belong to an earlier epoch and
 * do not count towards seqs (they are still sent, with the epoch their payload states). A
 * state file without these lines (written before epochs) is epoch 0 from lsn 1. A spool
 * opened with neither a state file nor a segment has no state (gm_spool_had_state): the
 * node client decides whether that is a first start (gm_spool_save_state: the next open finds
 * state), a refusal (nothing written) or a new epoch.
 *
 * Recovery (open) scans the segments in lsn order and checks each frame (length, CRC-32C,
 * lsn). The first bad frame ends the segment: the file is truncated there and a log line
 * says how many non-zero bytes were cut. Records above acked_lsn come back as PENDING.
 */
#include "gm_node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COMP            "spool"
#define REC_HDR         32u
#define REC_LEN_MIN     24u
#define KEY_MAX         1024u
#define SEG_MIN         (64u * 1024u)
#define SEG_DEFAULT_MAX (64u * 1024u * 1024u)
#define STATE_FILE      "spool.state"
#define STATE_TMP       "spool.state.tmp"
#define STATE_MAGIC     "gridmeter-spool-state 1"
#define STATE_EVERY_US  (1 * GM_US_PER_SEC)

enum { ST_PENDING = 0, ST_INFLIGHT = 1, ST_ACKED = 2 };

typedef struct seg {
    int fd;
    uint8_t *map;
    size_t map_len;     /* mapped length (>= file size) */
    size_t file_len;    /* size of the file */
    size_t used;        /* bytes of whole records */
    size_t synced;      /* bytes known durable */
    uint64_t first_lsn; /* from the file name */
    uint64_t last_lsn;  /* 0 when empty */
    bool active;
    char path[];
} seg;

typedef struct src {
    char *name;
    uint64_t last_seq;      /* highest seq given out or found */
    uint64_t persisted_seq; /* highest seq among deleted records (goes to the state file) */
} src;

struct gm_spool {
    pthread_mutex_t mu;
    pthread_cond_t acked_cv;
    int acked_waiters;
    char *dir;
    int dir_fd, lock_fd;
    uint64_t max_bytes, seg_bytes;
    bool sync_each;

    seg **segs;
    size_t n_segs, cap_segs;
    uint64_t bytes; /* sum of file_len */

    /* window over [acked_lsn + 1, next_lsn) */
    uint8_t *st;
    const uint8_t **recp;
    size_t win_cap, win_head, win_len, win_acked;
    uint64_t acked_lsn, next_lsn, synced_lsn, fresh_lsn;
    uint64_t resend_min;
    size_t resend_cnt;

    /* sources: open addressing, power-of-two capacity */
    src *srcs;
    size_t src_cap, src_n;

    uint64_t epoch;           /* the node's epoch (state file "epoch") */
    uint64_t epoch_lsn;       /* first lsn of the epoch; lower records do not count for seqs */
    bool had_state;           /* a state file or a segment was found at open */
    uint64_t state_acked_lsn; /* acked_lsn in the state file on disk */
    int64_t state_written_us;
    uint64_t recovered, truncated_bytes;
};

static int reclaim_locked(gm_spool *sp, char *err, size_t err_len);

/* ---- small helpers ---------------------------------------------------------------------*/
static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline size_t rec_size(size_t key_len, size_t payload_len)
{
    return (REC_HDR + key_len + payload_len + 7u) & ~(size_t)7u;
}

static uint64_t hash_str(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static src *src_find(gm_spool *sp, const char *name, size_t len, bool create)
{
    if (create && (sp->src_n + 1) * 2 > sp->src_cap) {
        size_t ncap = sp->src_cap ? sp->src_cap * 2 : 64;
        src *n = gm_xcalloc(ncap, sizeof *n);
        for (size_t i = 0; i < sp->src_cap; i++) {
            if (!sp->srcs[i].name)
                continue;
            size_t j = hash_str(sp->srcs[i].name, strlen(sp->srcs[i].name)) & (ncap - 1);
            while (n[j].name)
                j = (j + 1) & (ncap - 1);
            n[j] = sp->srcs[i];
        }
        free(sp->srcs);
        sp->srcs = n;
        sp->src_cap = ncap;
    }
    if (!sp->src_cap)
        return NULL;
    size_t j = hash_str(name, len) & (sp->src_cap - 1);
    while (sp->srcs[j].name) {
        if (strlen(sp->srcs[j].name) == len && !memcmp(sp->srcs[j].name, name, len))
            return &sp->srcs[j];
        j = (j + 1) & (sp->src_cap - 1);
    }
    if (!create)
        return NULL;
    sp->srcs[j].name = gm_xmalloc(len + 1);
    memcpy(sp->srcs[j].name, name, len);
    sp->srcs[j].name[len] = '\0';
    sp->src_n++;
    return &sp->srcs[j];
}

/* ---- window ----------------------------------------------------------------------------*/
static inline size_t win_idx(const gm_spool *sp, uint64_t lsn)
{
    return (sp->win_head + (size_t)(lsn - sp->acked_lsn - 1)) & (sp->win_cap - 1);
}

static void win_push(gm_spool *sp, uint8_t state, const uint8_t *rec)
{
    if (sp->win_len == sp->win_cap) {
        size_t ncap = sp->win_cap ? sp->win_cap * 2 : 4096;
        uint8_t *nst = gm_xmalloc(ncap);
        const uint8_t **nrec = gm_xmalloc(ncap * sizeof *nrec);
        for (size_t i = 0; i < sp->win_len; i++) {
            size_t k = (sp->win_head + i) & (sp->win_cap - 1);
            nst[i] = sp->st[k];
            nrec[i] = sp->recp[k];
        }
        free(sp->st);
        free(sp->recp);
        sp->st = nst;
        sp->recp = nrec;
        sp->win_cap = ncap;
        sp->win_head = 0;
    }
    size_t k = (sp->win_head + sp->win_len) & (sp->win_cap - 1);
    sp->st[k] = state;
    sp->recp[k] = rec;
    sp->win_len++;
    if (state == ST_ACKED)
        sp->win_acked++;
}

/* Moves acked_lsn over the acknowledged prefix. */
static void win_advance(gm_spool *sp)
{
    uint64_t before = sp->acked_lsn;
    while (sp->win_len && sp->st[sp->win_head] == ST_ACKED) {
        sp->win_head = (sp->win_head + 1) & (sp->win_cap - 1);
        sp->win_len--;
        sp->win_acked--;
        sp->acked_lsn++;
    }
    if (sp->fresh_lsn <= sp->acked_lsn)
        sp->fresh_lsn = sp->acked_lsn + 1;
    if (sp->acked_lsn != before && sp->acked_waiters)
        pthread_cond_broadcast(&sp->acked_cv);
}

/* ---- files -----------------------------------------------------------------------------*/
static int sync_dir(gm_spool *sp, char *err, size_t err_len)
{
    if (fsync(sp->dir_fd))
        return gm_fail(err, err_len, GM_EIO, "spool %s: fsync of the directory: %s", sp->dir,
                       strerror(errno));
    return 0;
}

static seg *seg_alloc(const char *dir, uint64_t first_lsn)
{
    size_t n = strlen(dir) + 48;
    seg *s = gm_xcalloc(1, sizeof *s + n);
    snprintf(s->path, n, "%s/seg-%020" PRIu64 ".spool", dir, first_lsn);
    s->fd = -1;
    s->first_lsn = first_lsn;
    return s;
}

static void seg_free(seg *s)
{
    if (!s)
        return;
    if (s->map && s->map_len)
        munmap(s->map, s->map_len);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static void segs_push(gm_spool *sp, seg *s)
{
    if (sp->n_segs == sp->cap_segs) {
        sp->cap_segs = sp->cap_segs ? sp->cap_segs * 2 : 16;
        sp->segs = gm_xrealloc(sp->segs, sp->cap_segs * sizeof *sp->segs);
    }
    sp->segs[sp->n_segs++] = s;
    sp->bytes += s->file_len;
}

/* Starts a new active segment at next_lsn. */
static int seg_create(gm_spool *sp, char *err, size_t err_len)
{
    seg *s = seg_alloc(sp->dir, sp->next_lsn);
    s->fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        int e = errno;
        seg_free(s);
        return gm_fail(err, err_len, GM_EIO, "spool segment %s: cannot create: %s", s->path,
                       strerror(e));
    }
    int rc = posix_fallocate(s->fd, 0, (off_t)sp->seg_bytes);
    if (rc) {
        unlink(s->path);
        int code = rc == ENOSPC ? GM_EFULL : GM_EIO;
        gm_fail(err, err_len, code, "spool segment %s: cannot allocate %" PRIu64 " bytes: %s",
                s->path, sp->seg_bytes, strerror(rc));
        seg_free(s);
        return code;
    }
    s->map = mmap(NULL, sp->seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (s->map == MAP_FAILED) {
        int e = errno;
        s->map = NULL;
        unlink(s->path);
        gm_fail(err, err_len, GM_EIO, "spool segment %s: mmap: %s", s->path, strerror(e));
        seg_free(s);
        return GM_EIO;
    }
    s->map_len = s->file_len = sp->seg_bytes;
    s->active = true;
    rc = sync_dir(sp, err, err_len);
    if (rc) {
        unlink(s->path);
        seg_free(s);
        return rc;
    }
    segs_push(sp, s);
    return 0;
}

/* Seals the active segment: the file keeps only its records. */
static void seg_seal(gm_spool *sp, seg *s)
{
    if (!s->active)
        return;
    s->active = false;
    if (s->used < s->file_len && ftruncate(s->fd, (off_t)s->used) == 0) {
        sp->bytes -= s->file_len - s->used;
        s->file_len = s->used;
    }
}

static seg *active_seg(gm_spool *sp)
{
    if (sp->n_segs && sp->segs[sp->n_segs - 1]->active)
        return sp->segs[sp->n_segs - 1];
    return NULL;
}

/* ---- state file ------------------------------------------------------------------------*/
static int state_write(gm_spool *sp, char *err, size_t err_len)
{
    size_t cap = 256 + sp->src_n * (GM_EVENT_SOURCE_MAX + 40), n = 0;
    char *buf = gm_xmalloc(cap);
    n += (size_t)snprintf(buf + n, cap - n,
                          STATE_MAGIC "\nacked_lsn %" PRIu64 "\nnext_lsn %" PRIu64
                                      "\nepoch %" PRIu64 "\nepoch_lsn %" PRIu64 "\n",
                          sp->acked_lsn, sp->next_lsn, sp->epoch, sp->epoch_lsn);
    for (size_t i = 0; i < sp->src_cap; i++) {
        const src *s = &sp->srcs[i];
        if (s->name && s->persisted_seq) {
            size_t need = strlen(s->name) + 40;
            if (n + need + 32 > cap) {
                cap = cap * 2 + need;
                buf = gm_xrealloc(buf, cap);
            }
            n += (size_t)snprintf(buf + n, cap - n, "source %" PRIu64 " %s\n", s->persisted_seq,
                                  s->name);
        }
    }
    uint32_t crc = gm_crc32c(0, buf, n);
    n += (size_t)snprintf(buf + n, cap - n, "end %08x\n", crc);

    int fd = openat(sp->dir_fd, STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0) {
        rc = gm_fail(err, err_len, GM_EIO, "spool %s: cannot write %s: %s", sp->dir, STATE_TMP,
                     strerror(errno));
    } else {
        ssize_t w = write(fd, buf, n);
        if (w != (ssize_t)n || fdatasync(fd))
            rc = gm_fail(err, err_len, GM_EIO, "spool %s: writing %s: %s", sp->dir, STATE_TMP,
                         w < 0 ? strerror(errno) : "short write");
        close(fd);
        if (!rc && renameat(sp->dir_fd, STATE_TMP, sp->dir_fd, STATE_FILE))
            rc = gm_fail(err, err_len, GM_EIO, "spool %s: rename %s: %s", sp->dir, STATE_TMP,
                         strerror(errno));
        if (!rc)
            rc = sync_dir(sp, err, err_len);
    }
    free(buf);
    if (!rc) {
        sp->state_acked_lsn = sp->acked_lsn;
        sp->state_written_us = gm_mono_us();
    }
    return rc;
}

/* Reads the state file if there is one. A state file that exists but does not check out
 * refuses the open: guessing could hand out a seq a second time. */
static int state_read(gm_spool *sp, uint64_t *acked, uint64_t *next, char *err, size_t err_len)
{
    *acked = 0;
    *next = 1;
    int fd = openat(sp->dir_fd, STATE_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return gm_fail(err, err_len, GM_EIO, "spool %s: cannot read %s: %s", sp->dir, STATE_FILE,
                       strerror(errno));
    }
    sp->had_state = true;
    struct stat stt;
    if (fstat(fd, &stt)) {
        close(fd);
        return gm_fail(err, err_len, GM_EIO, "spool %s: stat %s: %s", sp->dir, STATE_FILE,
                       strerror(errno));
    }
    size_t len = (size_t)stt.st_size;
    char *buf = gm_xmalloc(len + 1);
    ssize_t r = read(fd, buf, len);
    close(fd);
    int rc = 0;
    if (r != (ssize_t)len) {
        rc = gm_fail(err, err_len, GM_EIO, "spool %s: short read of %s", sp->dir, STATE_FILE);
        goto out;
    }
    buf[len] = '\0';
    char *endl = len >= 14 ? strstr(buf, "\nend ") : NULL;
    unsigned crc_file = 0;
    if (!endl || sscanf(endl + 5, "%8x", &crc_file) != 1 ||
        gm_crc32c(0, buf, (size_t)(endl + 1 - buf)) != crc_file ||
        strncmp(buf, STATE_MAGIC "\n", sizeof STATE_MAGIC)) {
        rc = gm_fail(err, err_len, GM_ECORRUPT,
                     "spool %s: %s fails its checksum or format: refusing to open, because "
                     "the per-source seq it holds cannot be guessed (move the directory away "
                     "to start a new spool)",
                     sp->dir, STATE_FILE);
        goto out;
    }
    endl[1] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        uint64_t v;
        char name[GM_EVENT_SOURCE_MAX * 8 + 1];
        if (sscanf(line, "acked_lsn %" SCNu64, &v) == 1)
            *acked = v;
        else if (sscanf(line, "next_lsn %" SCNu64, &v) == 1)
            *next = v;
        else if (sscanf(line, "epoch_lsn %" SCNu64, &v) == 1)
            sp->epoch_lsn = v;
        else if (sscanf(line, "epoch %" SCNu64, &v) == 1)
            sp->epoch = v;
        else if (sscanf(line, "source %" SCNu64 " %1024s", &v, name) == 2) {
            src *s = src_find(sp, name, strlen(name), true);
            if (v > s->persisted_seq)
                s->persisted_seq = v;
            if (v > s->last_seq)
                s->last_seq = v;
        }
    }
    sp->state_acked_lsn = *acked;
out:
    free(buf);
    return rc;
}

/* ---- recovery --------------------------------------------------------------------------*/
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Validates the frame at off; returns its size or 0 when it is not a whole, correct record
 * with lsn `want` (want 0: any lsn). */
static size_t frame_check(const uint8_t *p, size_t avail, uint64_t want)
{
    if (avail < REC_HDR)
        return 0;
    uint32_t len = rd32(p);
    if (len < REC_LEN_MIN || (size_t)len + 8 > avail)
        return 0;
    uint16_t key_len = rd16(p + 24);
    uint32_t payload_len = rd32(p + 28);
    if ((size_t)REC_LEN_MIN + key_len + payload_len != len)
        return 0;
    if (gm_crc32c(0, p + 8, len) != rd32(p + 4))
        return 0;
    if (want && rd64(p + 8) != want)
        return 0;
    size_t sz = rec_size(key_len, payload_len);
    return sz <= avail ? sz : (size_t)len + 8;
}

static int recover_segment(gm_spool *sp, seg *s, bool last, char *err, size_t err_len)
{
    struct stat stt;
    s->fd = open(s->path, O_RDWR | O_CLOEXEC);
    if (s->fd < 0 || fstat(s->fd, &stt))
        return gm_fail(err, err_len, GM_EIO, "spool segment %s: cannot open: %s", s->path,
                       strerror(errno));
    s->file_len = (size_t)stt.st_size;
    if (s->file_len) {
        s->map = mmap(NULL, s->file_len, PROT_READ, MAP_SHARED, s->fd, 0);
        if (s->map == MAP_FAILED) {
            s->map = NULL;
            return gm_fail(err, err_len, GM_EIO, "spool segment %s: mmap: %s", s->path,
                           strerror(errno));
        }
        s->map_len = s->file_len;
    }
    size_t off = 0;
    uint64_t want = s->first_lsn;
    while (off < s->file_len) {
        if (s->file_len - off >= 4 && rd32(s->map + off) == 0)
            break; /* end of data; the rest should be preallocated zeros */
        size_t sz = frame_check(s->map + off, s->file_len - off, want);
        if (!sz)
            break;
        const uint8_t *p = s->map + off;
        uint64_t seq = rd64(p + 16);
        uint16_t key_len = rd16(p + 24);
        if (seq && want >= sp->epoch_lsn) { /* a record of an earlier epoch counts for none */
            src *so = src_find(sp, (const char *)p + REC_HDR, key_len, true);
            if (seq > so->last_seq)
                so->last_seq = seq;
        }
        if (want > sp->acked_lsn) {
            while (sp->acked_lsn + 1 + sp->win_len < want)
                win_push(sp, ST_ACKED, NULL); /* lost in a corrupt middle: nothing to send */
            win_push(sp, ST_PENDING, p);
            sp->recovered++;
        }
        s->last_lsn = want;
        want++;
        off += sz;
    }
    /* Bytes after the last whole record that are not zero belong to a torn or corrupt
     * record: cut them (zero padding of a preallocated segment is dropped silently). */
    size_t nz_end = s->file_len;
    while (nz_end > off && s->map[nz_end - 1] == 0)
        nz_end--;
    if (nz_end > off) {
        size_t cut = nz_end - off;
        sp->truncated_bytes += cut;
        if (last)
            gm_warn(COMP,
                    "msg=\"spool tail was torn or corrupt: truncated to the last whole "
                    "record\" segment=%s offset=%zu bytes_cut=%zu",
                    s->path, off, cut);
        else
            gm_error(COMP,
                     "msg=\"corrupt record in the middle of the spool: the rest of this "
                     "segment is lost\" segment=%s offset=%zu bytes_cut=%zu",
                     s->path, off, cut);
    }
    if (off < s->file_len) {
        if (ftruncate(s->fd, (off_t)off))
            return gm_fail(err, err_len, GM_EIO, "spool segment %s: truncate: %s", s->path,
                           strerror(errno));
        s->file_len = off;
    }
    s->used = s->synced = off;
    /* What was in the page cache when the last process died is made durable before it is
     * handed out (invariant 3). */
    if (off && s->last_lsn > sp->acked_lsn && fdatasync(s->fd))
        return gm_fail(err, err_len, GM_EIO, "spool segment %s: fdatasync: %s", s->path,
                       strerror(errno));
    return 0;
}

static int recover(gm_spool *sp, char *err, size_t err_len)
{
    uint64_t state_acked, state_next;
    int rc = state_read(sp, &state_acked, &state_next, err, err_len);
    if (rc)
        return rc;
    DIR *d = opendir(sp->dir);
    if (!d)
        return gm_fail(err, err_len, GM_EIO, "spool %s: opendir: %s", sp->dir, strerror(errno));
    uint64_t *firsts = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t first;
        char tail[16];
        if (sscanf(de->d_name, "seg-%20" SCNu64 ".%15s", &first, tail) == 2 &&
            !strcmp(tail, "spool") && strlen(de->d_name) == 30) {
            if (n == cap)
                firsts = gm_xrealloc(firsts, (cap = cap ? cap * 2 : 16) * sizeof *firsts);
            firsts[n++] = first;
        }
    }
    closedir(d);
    if (n) {
        qsort(firsts, n, sizeof *firsts, cmp_u64);
        sp->had_state = true;
    }
    sp->acked_lsn = state_acked;
    for (size_t i = 0; i < n && !rc; i++) {
        seg *s = seg_alloc(sp->dir, firsts[i]);
        rc = recover_segment(sp, s, i + 1 == n, err, err_len);
        if (rc) {
            seg_free(s);
            break;
        }
        if (!s->used) {
            /* Nothing whole in it (created just before a crash): delete it now, or a new
             * segment starting at the same lsn would get its name. */
            if (unlink(s->path) && errno != ENOENT) {
                rc = gm_fail(err, err_len, GM_EIO, "spool segment %s: cannot delete: %s", s->path,
                             strerror(errno));
                seg_free(s);
                break;
            }
            seg_free(s);
            continue;
        }
        segs_push(sp, s);
    }
    free(firsts);
    if (rc)
        return rc;
    uint64_t last = sp->acked_lsn + sp->win_len;
    for (size_t i = 0; i < sp->n_segs; i++)
        if (sp->segs[i]->last_lsn > last)
            last = sp->segs[i]->last_lsn;
    sp->next_lsn = last + 1 > state_next ? last + 1 : state_next;
    /* lsns between the window's end and next_lsn (records deleted before a crash lost the
     * newest state, or cut from a tail) have nothing to send. */
    while (sp->acked_lsn + 1 + sp->win_len < sp->next_lsn)
        win_push(sp, ST_ACKED, NULL);
    sp->synced_lsn = sp->next_lsn - 1;
    sp->fresh_lsn = sp->acked_lsn + 1;
    win_advance(sp);
    for (size_t i = 0; i < sp->src_cap; i++) /* seqs never go back */
        if (sp->srcs[i].name && sp->srcs[i].persisted_seq > sp->srcs[i].last_seq)
            sp->srcs[i].last_seq = sp->srcs[i].persisted_seq;
    if (sp->recovered || sp->truncated_bytes)
        gm_info(COMP,
                "msg=\"spool recovered\" dir=%s segments=%zu unacked=%" PRIu64 " bytes_cut=%" PRIu64
                " next_lsn=%" PRIu64,
                sp->dir, sp->n_segs, sp->recovered, sp->truncated_bytes, sp->next_lsn);
    return 0;
}

/* ---- open / close ----------------------------------------------------------------------*/
static int mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return -1;
    return 0;
}

int gm_spool_open(const gm_spool_config *cfg, gm_spool **out, char *err, size_t err_len)
{
    if (!cfg->dir || !*cfg->dir)
        return gm_fail(err, err_len, GM_ECONFIG, "spool: the spool directory is not set");
    gm_spool *sp = gm_xcalloc(1, sizeof *sp);
    pthread_mutex_init(&sp->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sp->acked_cv, &ca);
    pthread_condattr_destroy(&ca);
    sp->dir = gm_xstrdup(cfg->dir);
    sp->dir_fd = sp->lock_fd = -1;
    sp->max_bytes = cfg->max_bytes ? cfg->max_bytes : (uint64_t)1 << 30;
    sp->seg_bytes = cfg->segment_bytes;
    if (!sp->seg_bytes) {
        sp->seg_bytes = sp->max_bytes / 8;
        if (sp->seg_bytes > SEG_DEFAULT_MAX)
            sp->seg_bytes = SEG_DEFAULT_MAX;
    }
    if (sp->seg_bytes < SEG_MIN)
        sp->seg_bytes = SEG_MIN;
    sp->seg_bytes = (sp->seg_bytes + 4095) & ~(uint64_t)4095;
    sp->sync_each = cfg->sync_each;
    sp->resend_min = UINT64_MAX;
    int rc;
    if (sp->max_bytes < sp->seg_bytes) {
        rc = gm_fail(err, err_len, GM_ECONFIG,
                     "spool %s: max_bytes %" PRIu64 " must be at least one segment (%" PRIu64
                     " bytes)",
                     sp->dir, sp->max_bytes, sp->seg_bytes);
        goto fail;
    }
    if (mkdir_p(sp->dir)) {
        rc = gm_fail(err, err_len, GM_EIO, "spool %s: cannot create the directory: %s", sp->dir,
                     strerror(errno));
        goto fail;
    }
    sp->dir_fd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dir_fd < 0) {
        rc = gm_fail(err, err_len, GM_EIO, "spool %s: open: %s", sp->dir, strerror(errno));
        goto fail;
    }
    sp->lock_fd = openat(sp->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (sp->lock_fd < 0 || flock(sp->lock_fd, LOCK_EX | LOCK_NB)) {
        rc = gm_fail(err, err_len, GM_EUNAVAIL,
                     "spool %s: in use by another process (the lock file is held): %s", sp->dir,
                     strerror(errno));
        goto fail;
    }
    rc = recover(sp, err, err_len);
    if (rc)
        goto fail;
    *out = sp;
    return 0;
fail:
    gm_spool_close(sp);
    return rc;
}

void gm_spool_close(gm_spool *sp)
{
    if (!sp)
        return;
    if (sp->dir_fd >= 0 && sp->lock_fd >= 0) {
        char err[256];
        pthread_mutex_lock(&sp->mu);
        seg *a = active_seg(sp);
        if (a)
            seg_seal(sp, a);
        if (reclaim_locked(sp, err, sizeof err))
            gm_warn(COMP, "msg=\"spool close: reclaim failed\" reason=\"%s\"", err);
        else if (sp->state_acked_lsn != sp->acked_lsn && state_write(sp, err, sizeof err))
            gm_warn(COMP, "msg=\"spool close: state not written\" reason=\"%s\"", err);
        pthread_mutex_unlock(&sp->mu);
    }
    for (size_t i = 0; i < sp->n_segs; i++) {
        seg *s = sp->segs[i];
        if (s->used && s->synced < s->used)
            msync(s->map, s->used, MS_SYNC);
        seg_free(s);
    }
    free(sp->segs);
    for (size_t i = 0; i < sp->src_cap; i++)
        free(sp->srcs[i].name);
    free(sp->srcs);
    free(sp->st);
    free(sp->recp);
    if (sp->lock_fd >= 0)
        close(sp->lock_fd);
    if (sp->dir_fd >= 0)
        close(sp->dir_fd);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->acked_cv);
    free(sp->dir);
    free(sp);
}

/* ---- append ----------------------------------------------------------------------------*/
/* Deletes segments that hold only acknowledged records, after the state file is durable.
 * Called with the lock held. */
static int reclaim_locked(gm_spool *sp, char *err, size_t err_len)
{
    size_t del = 0;
    for (size_t i = 0; i < sp->n_segs; i++) {
        seg *s = sp->segs[i];
        if (s->active)
            break;
        if (s->last_lsn && s->last_lsn > sp->acked_lsn)
            break;
        del++;
    }
    bool state_due = sp->acked_lsn != sp->state_acked_lsn &&
                     gm_mono_us() - sp->state_written_us >= STATE_EVERY_US;
    if (!del && !state_due)
        return 0;
    /* The deleted records' seqs move into the state file. */
    for (size_t i = 0; i < del; i++) {
        seg *s = sp->segs[i];
        for (size_t off = 0; off < s->used;) {
            const uint8_t *p = s->map + off;
            uint64_t seq = rd64(p + 16);
            uint16_t key_len = rd16(p + 24);
            if (seq && rd64(p + 8) >= sp->epoch_lsn) {
                src *so = src_find(sp, (const char *)p + REC_HDR, key_len, true);
                if (seq > so->persisted_seq)
                    so->persisted_seq = seq;
            }
            off += rec_size(key_len, rd32(p + 28));
        }
    }
    int rc = state_write(sp, err, err_len);
    if (rc)
        return rc;
    for (size_t i = 0; i < del; i++) {
        seg *s = sp->segs[i];
        if (unlink(s->path) && errno != ENOENT)
            gm_warn(COMP,
                    "msg=\"spool: cannot delete an acknowledged segment\" segment=%s "
                    "reason=\"%s\"",
                    s->path, strerror(errno));
        sp->bytes -= s->file_len;
        seg_free(s);
    }
    memmove(sp->segs, sp->segs + del, (sp->n_segs - del) * sizeof *sp->segs);
    sp->n_segs -= del;
    return 0;
}

int gm_spool_reclaim(gm_spool *sp, char *err, size_t err_len)
{
    pthread_mutex_lock(&sp->mu);
    int rc = reclaim_locked(sp, err, err_len);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

/* Makes room for a record of up to `need` bytes in the active segment. Lock held. */
static int reserve(gm_spool *sp, size_t need, seg **out, char *err, size_t err_len)
{
    seg *a = active_seg(sp);
    if (a && a->file_len - a->used >= need) {
        *out = a;
        return 0;
    }
    if (need > sp->seg_bytes)
        return gm_fail(err, err_len, GM_EINVAL,
                       "spool %s: a record of %zu bytes does not fit a segment of %" PRIu64
                       " bytes",
                       sp->dir, need, sp->seg_bytes);
    if (a)
        seg_seal(sp, a);
    if (sp->bytes + sp->seg_bytes > sp->max_bytes) {
        int rc = reclaim_locked(sp, err, err_len);
        if (rc)
            return rc;
    }
    if (sp->bytes + sp->seg_bytes > sp->max_bytes)
        return gm_fail(err, err_len, GM_EFULL,
                       "spool %s is full: %" PRIu64 " of %" PRIu64
                       " bytes hold %zu events that Kafka has not acknowledged yet (is the "
                       "broker reachable?); nothing was recorded, retry later",
                       sp->dir, sp->bytes, sp->max_bytes, sp->win_len - sp->win_acked);
    int rc = seg_create(sp, err, err_len);
    if (rc)
        return rc;
    *out = active_seg(sp);
    return 0;
}

static int append_locked(gm_spool *sp, const char *key, size_t key_len, bool assign_seq,
                         gm_spool_encode_fn fn, void *arg, const void *raw, size_t raw_len,
                         uint64_t *seq_out, uint64_t *lsn_out, char *err, size_t err_len)
{
    size_t max_payload = fn ? GM_EVENT_MAX_BYTES + 1 : raw_len;
    seg *s = NULL;
    int rc = reserve(sp, rec_size(key_len, max_payload), &s, err, err_len);
    if (rc)
        return rc;
    src *so = NULL;
    uint64_t seq = 0;
    if (assign_seq) {
        so = src_find(sp, key, key_len, true);
        seq = so->last_seq + 1;
    }
    uint8_t *p = s->map + s->used;
    size_t payload_len;
    if (fn) {
        payload_len = fn(arg, seq, (char *)p + REC_HDR + key_len, max_payload, err, err_len);
        if (!payload_len)
            return GM_EINVAL;
        if (payload_len >= max_payload)
            return gm_fail(err, err_len, GM_EINVAL, "spool: the encoder overran its buffer");
    } else {
        memcpy(p + REC_HDR + key_len, raw, raw_len);
        payload_len = raw_len;
    }
    memcpy(p + REC_HDR, key, key_len);
    uint32_t len = (uint32_t)(REC_LEN_MIN + key_len + payload_len);
    uint64_t lsn = sp->next_lsn;
    uint16_t kl = (uint16_t)key_len, flags = 0;
    uint32_t pl = (uint32_t)payload_len;
    memcpy(p + 8, &lsn, 8);
    memcpy(p + 16, &seq, 8);
    memcpy(p + 24, &kl, 2);
    memcpy(p + 26, &flags, 2);
    memcpy(p + 28, &pl, 4);
    size_t sz = rec_size(key_len, payload_len);
    memset(p + 8 + len, 0, sz - 8 - len);
    uint32_t crc = gm_crc32c(0, p + 8, len);
    memcpy(p + 4, &crc, 4);
    /* The length word last: a record is either whole or (after a crash) detectably torn. */
    __atomic_store_n((uint32_t *)(void *)p, len, __ATOMIC_RELEASE);
    s->used += sz;
    s->last_lsn = lsn;
    sp->next_lsn++;
    win_push(sp, ST_PENDING, p);
    if (so)
        so->last_seq = seq;
    if (sp->sync_each) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uint8_t *from = (uint8_t *)((uintptr_t)(s->map + s->synced) & ~(page - 1));
        if (msync(from, (size_t)(s->map + s->used - from), MS_SYNC))
            return gm_fail(err, err_len, GM_EIO, "spool segment %s: msync: %s", s->path,
                           strerror(errno));
        s->synced = s->used;
        sp->synced_lsn = lsn;
    }
    if (seq_out)
        *seq_out = seq;
    if (lsn_out)
        *lsn_out = lsn;
    return 0;
}

int gm_spool_append(gm_spool *sp, const char *key, bool assign_seq, gm_spool_encode_fn fn,
                    void *arg, uint64_t *seq_out, uint64_t *lsn_out, char *err, size_t err_len)
{
    size_t key_len = strlen(key);
    if (key_len > KEY_MAX)
        return gm_fail(err, err_len, GM_EINVAL, "spool: key of %zu bytes is over %u", key_len,
                       KEY_MAX);
    pthread_mutex_lock(&sp->mu);
    int rc = append_locked(sp, key, key_len, assign_seq, fn, arg, NULL, 0, seq_out, lsn_out, err,
                           err_len);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int gm_spool_append_raw(gm_spool *sp, const char *key, const void *payload, size_t len,
                        uint64_t *lsn_out, char *err, size_t err_len)
{
    size_t key_len = strlen(key);
    if (key_len > KEY_MAX)
        return gm_fail(err, err_len, GM_EINVAL, "spool: key of %zu bytes is over %u", key_len,
                       KEY_MAX);
    if (len > GM_NODE_RAW_MAX)
        return gm_fail(err, err_len, GM_EINVAL,
                       "spool: a raw message of %zu bytes is over the limit of %u", len,
                       GM_NODE_RAW_MAX);
    pthread_mutex_lock(&sp->mu);
    int rc = append_locked(sp, key, key_len, false, NULL, NULL, payload, len, NULL, lsn_out, err,
                           err_len);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

int gm_spool_save_state(gm_spool *sp, char *err, size_t err_len)
{
    pthread_mutex_lock(&sp->mu);
    int rc = state_write(sp, err, err_len);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

bool gm_spool_had_state(gm_spool *sp)
{
    return sp->had_state; /* set at open, never changed */
}

uint64_t gm_spool_epoch(gm_spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    uint64_t e = sp->epoch;
    pthread_mutex_unlock(&sp->mu);
    return e;
}

int gm_spool_new_epoch(gm_spool *sp, uint64_t epoch, char *err, size_t err_len)
{
    pthread_mutex_lock(&sp->mu);
    int rc = 0;
    if (epoch <= sp->epoch) {
        rc = gm_fail(err, err_len, GM_EINVAL,
                     "spool %s: a new epoch must be higher than the current one (%" PRIu64
                     "), got %" PRIu64,
                     sp->dir, sp->epoch, epoch);
    } else {
        uint64_t old_epoch = sp->epoch, old_lsn = sp->epoch_lsn;
        sp->epoch = epoch;
        sp->epoch_lsn = sp->next_lsn;
        rc = state_write(sp, err, err_len); /* durable before a seq of the epoch is given */
        if (rc) {
            sp->epoch = old_epoch;
            sp->epoch_lsn = old_lsn;
        } else {
            for (size_t i = 0; i < sp->src_cap; i++)
                if (sp->srcs[i].name)
                    sp->srcs[i].last_seq = sp->srcs[i].persisted_seq = 0;
        }
    }
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

uint64_t gm_spool_last_seq(gm_spool *sp, const char *key)
{
    pthread_mutex_lock(&sp->mu);
    src *s = src_find(sp, key, strlen(key), false);
    uint64_t v = s ? s->last_seq : 0;
    pthread_mutex_unlock(&sp->mu);
    return v;
}

/* ---- sync, take, ack -------------------------------------------------------------------*/
int gm_spool_sync(gm_spool *sp, char *err, size_t err_len)
{
    typedef struct {
        seg *s;
        size_t from, to;
    } range;
    range r[64];
    size_t n = 0;
    pthread_mutex_lock(&sp->mu);
    uint64_t target = sp->next_lsn - 1;
    if (target <= sp->synced_lsn) {
        pthread_mutex_unlock(&sp->mu);
        return 0;
    }
    for (size_t i = 0; i < sp->n_segs && n < GM_ARRAY_LEN(r); i++) {
        seg *s = sp->segs[i];
        if (s->synced < s->used)
            r[n++] = (range){s, s->synced, s->used};
    }
    if (n == GM_ARRAY_LEN(r)) /* more unsynced segments than ranges: sync what we have */
        target = r[n - 1].s->last_lsn;
    pthread_mutex_unlock(&sp->mu);
    /* Segments with unsynced records are not acknowledged, so they are not deleted while
     * this runs without the lock; appends past `to` do not disturb msync. */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < n; i++) {
        uint8_t *from = (uint8_t *)((uintptr_t)(r[i].s->map + r[i].from) & ~(page - 1));
        if (msync(from, (size_t)(r[i].s->map + r[i].to - from), MS_SYNC))
            return gm_fail(err, err_len, GM_EIO, "spool segment %s: msync: %s", r[i].s->path,
                           strerror(errno));
    }
    pthread_mutex_lock(&sp->mu);
    for (size_t i = 0; i < n; i++)
        if (r[i].s->synced < r[i].to)
            r[i].s->synced = r[i].to;
    if (target > sp->synced_lsn)
        sp->synced_lsn = target;
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

static void fill_rec(gm_spool_rec *o, uint64_t lsn, const uint8_t *p)
{
    o->lsn = lsn;
    o->seq = rd64(p + 16);
    o->key_len = rd16(p + 24);
    o->key = (const char *)p + REC_HDR;
    o->payload_len = rd32(p + 28);
    o->payload = o->key + o->key_len;
}

size_t gm_spool_take(gm_spool *sp, gm_spool_rec *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&sp->mu);
    if (sp->resend_cnt) {
        uint64_t lsn = sp->resend_min > sp->acked_lsn ? sp->resend_min : sp->acked_lsn + 1;
        for (; lsn < sp->fresh_lsn && n < max && sp->resend_cnt; lsn++) {
            size_t k = win_idx(sp, lsn);
            if (sp->st[k] == ST_PENDING && sp->recp[k]) {
                sp->st[k] = ST_INFLIGHT;
                sp->resend_cnt--;
                fill_rec(&out[n++], lsn, sp->recp[k]);
            }
        }
        sp->resend_min = sp->resend_cnt ? lsn : UINT64_MAX;
    }
    while (n < max && sp->fresh_lsn <= sp->synced_lsn && sp->fresh_lsn < sp->next_lsn) {
        size_t k = win_idx(sp, sp->fresh_lsn);
        if (sp->st[k] == ST_PENDING && sp->recp[k]) {
            sp->st[k] = ST_INFLIGHT;
            fill_rec(&out[n++], sp->fresh_lsn, sp->recp[k]);
        }
        sp->fresh_lsn++;
    }
    pthread_mutex_unlock(&sp->mu);
    return n;
}

static void to_pending(gm_spool *sp, uint64_t lsn, size_t k)
{
    sp->st[k] = ST_PENDING;
    sp->resend_cnt++;
    if (lsn < sp->resend_min)
        sp->resend_min = lsn;
}

void gm_spool_untake(gm_spool *sp, uint64_t lsn)
{
    pthread_mutex_lock(&sp->mu);
    if (lsn > sp->acked_lsn && lsn < sp->fresh_lsn) {
        size_t k = win_idx(sp, lsn);
        if (sp->st[k] == ST_INFLIGHT)
            to_pending(sp, lsn, k);
    }
    pthread_mutex_unlock(&sp->mu);
}

void gm_spool_ack(gm_spool *sp, uint64_t lsn, bool ok)
{
    pthread_mutex_lock(&sp->mu);
    if (lsn > sp->acked_lsn && lsn < sp->fresh_lsn) {
        size_t k = win_idx(sp, lsn);
        if (ok && sp->st[k] != ST_ACKED) {
            if (sp->st[k] == ST_PENDING)
                sp->resend_cnt--; /* a late success for a record queued to go again */
            sp->st[k] = ST_ACKED;
            sp->win_acked++;
            if (lsn == sp->acked_lsn + 1)
                win_advance(sp);
        } else if (!ok && sp->st[k] == ST_INFLIGHT) {
            to_pending(sp, lsn, k);
        }
        if (!sp->resend_cnt)
            sp->resend_min = UINT64_MAX;
    }
    pthread_mutex_unlock(&sp->mu);
}

void gm_spool_ack_many(gm_spool *sp, const uint64_t *lsns, size_t n)
{
    pthread_mutex_lock(&sp->mu);
    bool advance = false;
    for (size_t i = 0; i < n; i++) {
        uint64_t lsn = lsns[i];
        if (lsn <= sp->acked_lsn || lsn >= sp->fresh_lsn)
            continue;
        size_t k = win_idx(sp, lsn);
        if (sp->st[k] == ST_ACKED)
            continue;
        if (sp->st[k] == ST_PENDING)
            sp->resend_cnt--;
        sp->st[k] = ST_ACKED;
        sp->win_acked++;
        advance |= lsn == sp->acked_lsn + 1;
    }
    if (advance)
        win_advance(sp);
    if (!sp->resend_cnt)
        sp->resend_min = UINT64_MAX;
    pthread_mutex_unlock(&sp->mu);
}

void gm_spool_reset_inflight(gm_spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    for (uint64_t lsn = sp->acked_lsn + 1; lsn < sp->fresh_lsn; lsn++) {
        size_t k = win_idx(sp, lsn);
        if (sp->st[k] == ST_INFLIGHT)
            to_pending(sp, lsn, k);
    }
    pthread_mutex_unlock(&sp->mu);
}

bool gm_spool_wait_acked(gm_spool *sp, uint64_t lsn, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&sp->mu);
    sp->acked_waiters++;
    while (sp->acked_lsn < lsn)
        if (pthread_cond_timedwait(&sp->acked_cv, &sp->mu, &ts) == ETIMEDOUT)
            break;
    sp->acked_waiters--;
    bool ok = sp->acked_lsn >= lsn;
    pthread_mutex_unlock(&sp->mu);
    return ok;
}

uint64_t gm_spool_backlog(gm_spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    uint64_t v = (sp->next_lsn - sp->fresh_lsn) + sp->resend_cnt;
    pthread_mutex_unlock(&sp->mu);
    return v;
}

void gm_spool_stats_get(gm_spool *sp, gm_spool_stats *o)
{
    pthread_mutex_lock(&sp->mu);
    o->first_lsn = sp->n_segs ? sp->segs[0]->first_lsn : sp->next_lsn;
    o->next_lsn = sp->next_lsn;
    o->acked_lsn = sp->acked_lsn;
    o->synced_lsn = sp->synced_lsn;
    o->unacked = sp->win_len - sp->win_acked;
    o->bytes = sp->bytes;
    o->max_bytes = sp->max_bytes;
    o->segments = sp->n_segs;
    o->recovered = sp->recovered;
    o->truncated_bytes = sp->truncated_bytes;
    pthread_mutex_unlock(&sp->mu);
}

int gm_spool_check(gm_spool *sp, char *err, size_t err_len)
{
    int rc = 0;
    pthread_mutex_lock(&sp->mu);
    uint64_t bytes = 0, prev_last = 0;
    for (size_t i = 0; i < sp->n_segs && !rc; i++) {
        const seg *s = sp->segs[i];
        bytes += s->file_len;
        if (s->last_lsn && prev_last && s->first_lsn != prev_last + 1)
            rc = gm_fail(err, err_len, GM_ECORRUPT,
                         "invariant 1: segment %s starts at lsn %" PRIu64 ", expected %" PRIu64,
                         s->path, s->first_lsn, prev_last + 1);
        if (s->last_lsn)
            prev_last = s->last_lsn;
        if (s->active && i + 1 != sp->n_segs)
            rc = gm_fail(err, err_len, GM_ECORRUPT, "segment %s is active but not the last",
                         s->path);
    }
    if (!rc && bytes != sp->bytes)
        rc =
            gm_fail(err, err_len, GM_ECORRUPT,
                    "byte count %" PRIu64 " differs from the segments' %" PRIu64, sp->bytes, bytes);
    if (!rc && sp->bytes > sp->max_bytes)
        rc = gm_fail(err, err_len, GM_ECORRUPT,
                     "invariant 4: %" PRIu64 " bytes of segments over the bound of %" PRIu64,
                     sp->bytes, sp->max_bytes);
    if (!rc && sp->acked_lsn + sp->win_len + 1 != sp->next_lsn)
        rc = gm_fail(err, err_len, GM_ECORRUPT,
                     "window [%" PRIu64 ", +%zu) does not end at %" PRIu64, sp->acked_lsn + 1,
                     sp->win_len, sp->next_lsn);
    if (!rc && sp->win_len && sp->st[sp->win_head] == ST_ACKED)
        rc = gm_fail(err, err_len, GM_ECORRUPT,
                     "invariant 2: lsn %" PRIu64 " is acknowledged but "
                     "acked_lsn was not moved over it",
                     sp->acked_lsn + 1);
    if (!rc && sp->fresh_lsn > sp->synced_lsn + 1)
        rc = gm_fail(err, err_len, GM_ECORRUPT,
                     "invariant 3: lsn %" PRIu64 " was handed out but only %" PRIu64 " is durable",
                     sp->fresh_lsn - 1, sp->synced_lsn);
    size_t acked = 0;
    for (size_t i = 0; i < sp->win_len; i++)
        acked += sp->st[(sp->win_head + i) & (sp->win_cap - 1)] == ST_ACKED;
    if (!rc && acked != sp->win_acked)
        rc = gm_fail(err, err_len, GM_ECORRUPT, "acked count %zu differs from the window's %zu",
                     sp->win_acked, acked);
    pthread_mutex_unlock(&sp->mu);
    return rc;
}
