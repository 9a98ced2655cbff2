/* `gridmeter gpu attribute`: re-processes an archive of GPU kernel records into per-tenant
 * totals per window (C reference or the CUDA bulk path), as CSV or gridmeter.gpu.v1 events.
 * The archive format is described in gpu_accounting/archive.c and docs/gpu-accounting.md.
 */
#include "cli.h"
#include "gm_common.h"
#include "gm_gpu.h"
#ifdef GM_GPU_HAVE_INGEST
#include "gm_ingest.h"
#endif

#include <errno.h>
#include <string.h>

static const char *res_name(uint8_t r)
{
    return r == GM_GPU_RES_COPY ? "copy" : "kernel";
}

static void print_csv(const gm_gpu_result *r)
{
    printf("device,resource,window_start_ns,window_end_ns,tenant,gpu_ns,gpu_us,kernels\n");
    for (size_t i = 0; i < r->n_rows; i++) {
        const gm_gpu_row *x = &r->rows[i];
        printf("%u,%s,%lld,%lld,%s,%lld,%lld,%lld\n", x->device, res_name(x->resource),
               (long long)x->window_start_ns, (long long)x->window_end_ns, x->tenant,
               (long long)x->gpu_ns, (long long)x->gpu_us, (long long)x->kernels);
    }
    printf("\ndevice,resource,window_start_ns,window_end_ns,busy_ns,busy_us,unattributed_ns,"
           "unattributed_us,pool_ns,records,unattributed_records\n");
    for (size_t i = 0; i < r->n_windows; i++) {
        const gm_gpu_window *w = &r->windows[i];
        printf("%u,%s,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld\n", w->device,
               res_name(w->resource), (long long)w->window_start_ns, (long long)w->window_end_ns,
               (long long)w->busy_ns, (long long)w->busy_us, (long long)w->unattributed_ns,
               (long long)w->unattributed_us, (long long)w->pool_ns, (long long)w->records,
               (long long)w->unattributed_records);
    }
    if (r->n_requests) {
        printf("\ntenant,request_id,gpu_ns,gpu_us\n");
        for (size_t i = 0; i < r->n_requests; i++)
            printf("%s,%s,%lld,%lld\n", r->requests[i].tenant, r->requests[i].request_id,
                   (long long)r->requests[i].gpu_ns, (long long)r->requests[i].gpu_us);
    }
}

static int print_events(const gm_gpu_result *r, const char *source, const char *site, uint64_t seq)
{
#ifdef GM_GPU_HAVE_INGEST
    char err[256], id[64];
    static char buf[GM_EVENT_MAX_BYTES + 1];
    for (size_t i = 0; i < r->n_rows; i++, seq++) {
        gm_event ev;
        snprintf(id, sizeof id, "gpu-%012llu", (unsigned long long)seq);
        if (gm_gpu_row_to_event(r, i, source, id, seq, site, &ev, err, sizeof err) ||
            gm_event_check(&ev, err, sizeof err)) {
            fprintf(stderr, "gridmeter gpu attribute: row %zu: %s\n", i, err);
            return 1;
        }
        size_t len = gm_event_encode(&ev, buf, sizeof buf);
        if (!len) {
            fprintf(stderr, "gridmeter gpu attribute: row %zu: event does not encode\n", i);
            return 1;
        }
        fwrite(buf, 1, len, stdout);
        fputc('\n', stdout);
    }
    return 0;
#else
    (void)r;
    (void)source;
    (void)site;
    (void)seq;
    fprintf(stderr, "gridmeter gpu attribute: built without gm_ingest: no events\n");
    return 2;
#endif
}

int gm_cmd_gpu(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "gpu",
        "GPU accounting. `attribute FILE` re-processes an archive of kernel records ('-' for\n"
        "stdin) into per-tenant GPU time per window, by the rules of docs/gpu-accounting.md,\n"
        "on the CPU or with --cuda on the GPU (bit-identical). Output: CSV (rows, windows,\n"
        "requests) or, with --format events, gridmeter.gpu.v1 events as JSON lines.",
        "gridmeter gpu attribute [options] FILE"};
    gm_opt opts[] = {
        {"window-ms", "gpu.window_ms", NULL, "10000", GM_OPT_INT, "window length in ms", 0, 0},
        {"window-ns", NULL, NULL, "0", GM_OPT_INT,
         "window length in ns (overrides --window-ms when > 0; for examples and tests)", 0, 0},
        {"prefill-weight", "gpu.prefill_weight", NULL, "1", GM_OPT_INT,
         "step split: weight of a prefill token", 0, 0},
        {"decode-weight", "gpu.decode_weight", NULL, "1", GM_OPT_INT,
         "step split: weight of a decode token", 0, 0},
        {"cuda", NULL, NULL, NULL, GM_OPT_FLAG, "run the sweep on the GPU (CUDA bulk path)", 0, 0},
        {"format", NULL, NULL, "csv", GM_OPT_STR, "csv or events", 0, 0},
        {"source", "node.source", "GRIDMETER_SOURCE", "", GM_OPT_STR,
         "events: CloudEvents source (edge/<site>/<node>)", 0, 0},
        {"site", "node.site", "GRIDMETER_SITE", "", GM_OPT_STR, "events: data.site", 0, 0},
        {"seq-start", NULL, NULL, "1", GM_OPT_INT, "events: data.seq of the first event", 0, 0},
        {0}};
    char err[512];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter gpu: %s\n", err), 2);
    if (npos != 2 || strcmp(argv[1], "attribute") != 0) {
        fprintf(stderr, "usage: %s\n", info.usage);
        return 2;
    }
    int64_t window_ms = gm_opt_int(opts, "window-ms"), window_ns = gm_opt_int(opts, "window-ns"),
            pw = gm_opt_int(opts, "prefill-weight"), dw = gm_opt_int(opts, "decode-weight"),
            seq = gm_opt_int(opts, "seq-start");
    const char *format = gm_opt_str(opts, "format");
    int events = strcmp(format, "events") == 0;
    if (window_ms <= 0 || window_ms > INT64_C(86400000) * 366 || window_ns < 0 ||
        window_ns > INT64_C(86400000000000) * 366 || pw < 0 || dw < 0 || pw > UINT32_MAX ||
        dw > UINT32_MAX || seq < 1 || (!events && strcmp(format, "csv"))) {
        fprintf(stderr, "gridmeter gpu attribute: --window-ms must be 1..1 year, weights "
                        "0..2^32-1, --seq-start >= 1, --format csv or events\n");
        return 2;
    }
    if (events && (!*gm_opt_str(opts, "source") || !*gm_opt_str(opts, "site"))) {
        fprintf(stderr, "gridmeter gpu attribute: --format events needs --source and --site\n");
        return 2;
    }
    const char *path = argv[2];
    FILE *in = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!in) {
        fprintf(stderr, "gridmeter gpu attribute: %s: %s\n", path, strerror(errno));
        return 1;
    }
    gm_gpu_attr_conf conf = {.window_ns = window_ns > 0 ? (uint64_t)window_ns
                                                        : (uint64_t)window_ms * 1000000u,
                             .prefill_weight = (uint32_t)pw,
                             .decode_weight = (uint32_t)dw,
                             .use_cuda = gm_opt_flag(opts, "cuda")};
    gm_gpu_attr *a = NULL;
    if (gm_gpu_attr_new(&conf, &a, err, sizeof err)) {
        fprintf(stderr, "gridmeter gpu attribute: %s\n", err);
        if (in != stdin)
            fclose(in);
        return 2;
    }
    rc = 0;
    if (gm_gpu_archive_load(a, in, path, err, sizeof err)) {
        fprintf(stderr, "gridmeter gpu attribute: %s\n", err);
        rc = 1;
    }
    if (in != stdin)
        fclose(in);
    gm_gpu_result res = {0};
    if (rc == 0 && gm_gpu_attr_run(a, &res, err, sizeof err)) {
        fprintf(stderr, "gridmeter gpu attribute: %s\n", err);
        rc = 1;
    }
    if (rc == 0) {
        if (events)
            rc = print_events(&res, gm_opt_str(opts, "source"), gm_opt_str(opts, "site"),
                              (uint64_t)seq);
        else
            print_csv(&res);
        const gm_gpu_counts *c = &res.counts;
        gm_info("gpu",
                "msg=\"attributed\" records=%lld zero_timestamps=%lld inverted=%lld empty=%lld "
                "untagged=%lld unknown_tenant=%lld missing_manifest=%lld tag_conflicts=%lld "
                "rows=%zu windows=%zu",
                (long long)c->records, (long long)c->zero_timestamps, (long long)c->inverted,
                (long long)c->empty, (long long)c->untagged, (long long)c->unknown_tenant,
                (long long)c->missing_manifest, (long long)c->tag_conflicts, res.n_rows,
                res.n_windows);
    }
    gm_gpu_result_free(&res);
    gm_gpu_attr_free(a);
    return rc;
}
