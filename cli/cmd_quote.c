/* `gridmeter quote`: prices usage events (JSON lines on stdin) against rate cards and
 * contracts and prints, as JSON, each event's exact list amount and the invoice lines and
 * total per tenant and month. Finance asks it "what would this cost"; tests use it as an
 * oracle. Events are decoded by the strict ingest decoder (gm_event_decode); an event whose
 * (source, id) was already seen is a duplicate and is dropped, as the rater drops it. Invoice
 * lines are billing's (gm_billing_from_rating): the same lines, units and renderings as the
 * REST API's invoices. */
#include "cli.h"
#include "gm_common.h"
#include "gm_ingest.h"
#include "gm_billing.h"
#include "gm_rating.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- A small JSON writer: strings escaped, numbers only as integers or decimal text ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void json_key(FILE *f, bool *first, const char *k)
{
    fputs(*first ? "" : ",", f);
    *first = false;
    json_str(f, k);
    fputc(':', f);
}

static void json_kv_str(FILE *f, bool *first, const char *k, const char *v)
{
    json_key(f, first, k);
    json_str(f, v);
}

static void json_kv_dec(FILE *f, bool *first, const char *k, gm_i128 v, int scale)
{
    char buf[64];
    gm_dec_format(v, scale, buf, sizeof buf);
    json_kv_str(f, first, k, buf);
}

static void json_kv_int(FILE *f, bool *first, const char *k, long long v)
{
    json_key(f, first, k);
    fprintf(f, "%lld", v);
}

static void json_kv_time(FILE *f, bool *first, const char *k, int64_t us)
{
    char buf[40];
    gm_time_format(us, buf, sizeof buf);
    json_kv_str(f, first, k, buf);
}

static void json_flags(FILE *f, bool *first, unsigned flags)
{
    static const char *names[] = {"unknown_tenant", "default_model",    "default_site",
                                  "contract_price", "unlisted_variant", "gpu_windows"};
    json_key(f, first, "flags");
    fputc('[', f);
    bool any = false;
    for (unsigned i = 0; i < GM_ARRAY_LEN(names); i++)
        if ((flags & (1u << i)) && names[i]) {
            fputs(any ? "," : "", f);
            json_str(f, names[i]);
            any = true;
        }
    fputc(']', f);
}

/* Adds every file of a comma-separated list as cards (contract = false) or contracts. */
static int load_list(gm_rating_book *book, const char *list, bool contract, char *err,
                     size_t err_len)
{
    char *copy = gm_xstrdup(list), *save = NULL;
    int rc = 0;
    for (char *path = strtok_r(copy, ",", &save); path && !rc; path = strtok_r(NULL, ",", &save)) {
        size_t len;
        char why[768];
        char *text = gm_read_file(path, &len, err, err_len);
        if (!text) {
            rc = GM_EIO;
            break;
        }
        rc = contract ? gm_rating_book_add_contract(book, text, len, why, sizeof why)
                      : gm_rating_book_add_card(book, text, len, why, sizeof why);
        if (rc)
            gm_fail(err, err_len, rc, "%s: %s", path, why);
        free(text);
    }
    free(copy);
    return rc;
}

/* ---- Seen (source, id) pairs: a re-sent event is a duplicate, dropped as the rater does -- */
typedef struct {
    char **keys;
    size_t *lines;
    size_t cap, n;
} seen_set;

/* 0 when new (now remembered); otherwise the input line that had it first. */
static size_t seen_add(seen_set *s, const char *source, const char *id, size_t line)
{
    if (2 * (s->n + 1) > s->cap) {
        seen_set g = {gm_xcalloc(s->cap ? 2 * s->cap : 1024, sizeof(char *)),
                      gm_xcalloc(s->cap ? 2 * s->cap : 1024, sizeof(size_t)),
                      s->cap ? 2 * s->cap : 1024, 0};
        for (size_t i = 0; i < s->cap; i++)
            if (s->keys[i]) {
                uint64_t h = 1469598103934665603ull;
                for (const char *c = s->keys[i]; *c; c++)
                    h = (h ^ (unsigned char)*c) * 1099511628211ull;
                size_t k = h % g.cap;
                while (g.keys[k])
                    k = (k + 1) % g.cap;
                g.keys[k] = s->keys[i];
                g.lines[k] = s->lines[i];
                g.n++;
            }
        free(s->keys);
        free(s->lines);
        *s = g;
    }
    size_t len = strlen(source) + strlen(id) + 2;
    char *key = gm_xmalloc(len);
    snprintf(key, len, "%s%c%s", source, '\x1f', id);
    uint64_t h = 1469598103934665603ull;
    for (const char *c = key; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    size_t k = h % s->cap;
    while (s->keys[k]) {
        if (!strcmp(s->keys[k], key)) {
            free(key);
            return s->lines[k];
        }
        k = (k + 1) % s->cap;
    }
    s->keys[k] = key;
    s->lines[k] = line;
    s->n++;
    return 0;
}

static void seen_free(seen_set *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->keys[i]);
    free(s->keys);
    free(s->lines);
}

/* ---- Periods per tenant and month ------------------------------------------------------ */

typedef struct {
    char tenant[GM_EVENT_TENANT_MAX + 1];
    int64_t month_us;
    gm_rating_period *period;
} quote_period;

static int cmp_period(const void *a, const void *b)
{
    const quote_period *x = a, *y = b;
    int c = strcmp(x->tenant, y->tenant);
    if (c)
        return c;
    return x->month_us < y->month_us ? -1 : x->month_us > y->month_us;
}

static void print_invoice(FILE *f, const gm_invoice *inv)
{
    int mu = inv->minor_units;
    bool first = true;
    fputc('{', f);
    json_kv_str(f, &first, "tenant", inv->tenant);
    json_kv_time(f, &first, "period_start", inv->period_start_us);
    json_kv_time(f, &first, "period_end", inv->period_end_us);
    json_kv_str(f, &first, "currency", inv->currency);
    json_kv_int(f, &first, "minor_units", mu);
    json_kv_str(f, &first, "card_id", inv->card_id);
    json_flags(f, &first, inv->flags);
    json_key(f, &first, "lines");
    fputc('[', f);
    gm_billing_invoice *bi = gm_billing_from_rating(inv);
    for (size_t i = 0; i < bi->n_lines; i++) {
        cJSON *j = gm_billing_line_json(&bi->lines[i], mu);
        char *txt = cJSON_PrintUnformatted(j);
        fputs(i ? ",\n    " : "\n    ", f);
        fputs(txt, f);
        free(txt);
        cJSON_Delete(j);
    }
    gm_billing_invoice_free(bi);
    fputs(inv->n_lines ? "\n  ]" : "]", f);
    json_kv_dec(f, &first, "usage", inv->usage_minor, mu);
    json_kv_dec(f, &first, "usage_exact", inv->exact_usage_e18, 18);
    json_kv_dec(f, &first, "allowance", inv->allowance_minor, mu);
    json_kv_dec(f, &first, "discount", inv->discount_minor, mu);
    json_kv_dec(f, &first, "commitment_minimum", inv->commitment_due_minor, mu);
    json_kv_dec(f, &first, "commitment", inv->commitment_minor, mu);
    json_kv_dec(f, &first, "credit", inv->credit_minor, mu);
    json_kv_dec(f, &first, "total", inv->total_minor, mu);
    json_kv_dec(f, &first, "credit_balance_after", inv->credit_balance_after_minor, mu);
    /* A total over a term (term_commitment) holding this month: its progress. */
    json_key(f, &first, "term_commitment");
    if (inv->has_term) {
        bool tf = true;
        fputc('{', f);
        json_kv_dec(f, &tf, "total", inv->term_total_minor, mu);
        json_kv_dec(f, &tf, "spent_in_term", inv->term_spent_minor, mu);
        json_kv_dec(f, &tf, "remaining", inv->term_remaining_minor, mu);
        json_key(f, &tf, "last_month");
        fputs(inv->term_last_month ? "true" : "false", f);
        fputc('}', f);
    } else {
        fputs("null", f);
    }
    fputc('}', f);
}

int gm_cmd_quote(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "quote",
        "Price usage events (CloudEvents JSON, one per line on stdin) against rate cards and "
        "contracts, and print JSON: each event's exact list amount per dimension, then the "
        "invoice lines and total for each tenant and month (tiers, free allowances, discount, "
        "minimum commitment pro-rated over its term or a total over a term trued up in its last "
        "month, and prepaid credits applied; one half-even "
        "rounding per line; credits "
        "carried from month to month). Invalid or unpriceable events are listed under "
        "\"rejected\" and make the exit status 1. Formats: docs/rating.md.",
        "gridmeter quote --rate-card FILE[,FILE...] [--contract FILE[,FILE...]] < events.jsonl"};
    gm_opt opts[] = {{"rate-card", "quote.rate_card", "GRIDMETER_RATE_CARD", NULL, GM_OPT_STR,
                      "rate card version(s), comma-separated JSON files (required)", NULL, NULL},
                     {"contract", "quote.contract", NULL, NULL, GM_OPT_STR,
                      "tenant contract(s), comma-separated JSON files", NULL, NULL},
                     {"events", NULL, NULL, "true", GM_OPT_FLAG,
                      "print each event's price (--no-events: invoices only)", NULL, NULL},
                     {0}};
    char err[1024];
    int rc = gm_opts_parse(&info, opts, argc, argv, NULL, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter quote: %s\n", err), 2);
    const char *cards = gm_opt_str(opts, "rate-card"), *contracts = gm_opt_str(opts, "contract");
    bool show_events = gm_opt_flag(opts, "events");
    if (!cards) {
        fprintf(stderr, "gridmeter quote: --rate-card FILE is required (see --help)\n");
        return 2;
    }
    gm_rating_book *book = gm_rating_book_new();
    /* The book is checked as `ratecard validate` checks it (a contract's multipliers x the
     * card's prices and back, the card it names, the models of its prices and tier rules):
     * refused up front, not event by event. */
    if ((rc = load_list(book, cards, false, err, sizeof err)) ||
        (contracts && (rc = load_list(book, contracts, true, err, sizeof err))) ||
        (rc = gm_rating_book_check_contracts(book, err, sizeof err))) {
        fprintf(stderr, "gridmeter quote: %s\n", err);
        gm_rating_book_free(book);
        return 2;
    }

    FILE *out = stdout;
    size_t n_per = 0, cap_per = 0, n_rejected = 0, n_priced = 0;
    quote_period *per = NULL;
    char *line = NULL, **rejected = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t line_no = 0;
    gm_event ev;
    seen_set seen = {0};
    char **dups = NULL;
    size_t n_dups = 0;
    fputs("{\"events\":[", out);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        size_t len = (size_t)n;
        while (len > 0 && strchr("\r\n", line[len - 1]))
            len--;
        size_t i = 0;
        while (i < len && strchr(" \t", line[i]))
            i++;
        if (i == len)
            continue;
        char why[1024];
        gm_event_price p;
        rc = gm_event_decode(line, len, &ev, why, sizeof why);
        if (!rc) {
            size_t first_line = seen_add(&seen, ev.source, ev.id, (size_t)line_no);
            if (first_line) {
                char *d = gm_xmalloc(strlen(ev.source) + strlen(ev.id) + 96);
                sprintf(d, "%" PRIu64 "\x1f%zu\x1f%s\x1f%s", line_no, first_line, ev.source, ev.id);
                dups = gm_xrealloc(dups, (n_dups + 1) * sizeof *dups);
                dups[n_dups++] = d;
                continue;
            }
        }
        quote_period *qp = NULL;
        /* gm_service_tier and gm_rating_svc share one order (standard, batch, priority) */
        gm_usage u = {
            ev.tenant,
            ev.model,
            ev.site,
            ev.time_us,
            {0},
            ev.type == GM_EVENT_GPU ? GM_RATING_SVC_STANDARD : (gm_rating_svc)ev.service_tier};
        if (!rc && ev.type == GM_EVENT_GPU) {
            /* An attributed GPU window: charged as the rater's GPU consumer charges it
             * (model "*", at the hour of window_start, kernel-share-v1 only; docs/rating.md,
             * "GPU billing basis"). */
            if (strcmp(ev.policy, "kernel-share-v1"))
                continue; /* copy-engine time is reconciled, never charged */
            u.model = GM_GPU_WINDOW_MODEL;
            u.time_us = ev.window_start_us;
            u.qty[GM_DIM_GPU] = ev.gpu_us;
        } else {
            gm_rating_usage_tokens(u.qty, ev.input_tokens, ev.cached_tokens, ev.cache_write_tokens,
                                   ev.output_tokens, ev.reasoning_tokens, ev.gpu_us);
        }
        if (!rc) {
            int64_t month = gm_month_start(u.time_us);
            for (size_t k = 0; k < n_per && !qp; k++)
                if (per[k].month_us == month && !strcmp(per[k].tenant, ev.tenant))
                    qp = &per[k];
            if (!qp) {
                if (n_per == cap_per) {
                    cap_per = cap_per ? 2 * cap_per : 16;
                    per = gm_xrealloc(per, cap_per * sizeof *per);
                }
                qp = &per[n_per++];
                snprintf(qp->tenant, sizeof qp->tenant, "%s", ev.tenant);
                qp->month_us = month;
                qp->period = gm_rating_period_new(book, ev.tenant, month);
            }
            rc = gm_rating_period_add_event(qp->period, &u, &p, why, sizeof why);
        }
        if (rc) {
            rejected = gm_xrealloc(rejected, (n_rejected + 1) * sizeof *rejected);
            size_t need = strlen(why) + 64;
            rejected[n_rejected] = gm_xmalloc(need);
            snprintf(rejected[n_rejected], need, "%" PRIu64 "\x1f%s", line_no, why);
            n_rejected++;
            continue;
        }
        n_priced++;
        if (!show_events)
            continue;
        bool first = true;
        fputs(n_priced > 1 ? ",\n  {" : "\n  {", out);
        json_kv_int(out, &first, "line", (long long)line_no);
        json_kv_str(out, &first, "source", ev.source);
        json_kv_str(out, &first, "id", ev.id);
        json_kv_str(out, &first, "tenant", ev.tenant);
        json_kv_time(out, &first, "time", u.time_us);
        json_kv_str(out, &first, "model", u.model);
        json_kv_str(out, &first, "site", ev.site);
        json_kv_str(out, &first, "site_tier", p.site_tier);
        json_kv_str(out, &first, "card_id", p.card_id);
        json_kv_int(out, &first, "card_version", (long long)p.card_version);
        json_kv_str(out, &first, "currency", p.currency);
        json_flags(out, &first, p.flags);
        /* the priced quantity of each dimension (output: the non-reasoning part; request: 1,
         * or 0 where no fee applies, as on the invoice) */
        json_key(out, &first, "quantities");
        bool f2 = true;
        fputc('{', out);
        for (int d = 0; d < GM_DIM_COUNT; d++)
            json_kv_int(out, &f2, gm_dim_name((gm_dim)d),
                        d == GM_DIM_REQUEST && !p.unit_price_p[d] ? 0 : (long long)u.qty[d]);
        fputc('}', out);
        json_kv_str(out, &first, "service_tier", gm_service_tier_name(ev.service_tier));
        json_kv_str(out, &first, "variant", p.variant ? p.variant : "");
        json_key(out, &first, "unit_prices");
        f2 = true;
        fputc('{', out);
        for (int d = 0; d < GM_DIM_COUNT; d++)
            json_kv_dec(out, &f2, gm_dim_name((gm_dim)d), p.unit_price_p[d], 12);
        fputc('}', out);
        json_key(out, &first, "amounts");
        f2 = true;
        fputc('{', out);
        for (int d = 0; d < GM_DIM_COUNT; d++)
            json_kv_dec(out, &f2, gm_dim_name((gm_dim)d), p.amount_e18[d], 18);
        fputc('}', out);
        gm_i128 total;
        if (gm_event_price_total(&p, &total) == 0)
            json_kv_dec(out, &first, "amount", total, 18);
        fputc('}', out);
    }
    bool read_error = ferror(stdin);
    free(line);
    fputs(n_priced && show_events ? "\n ],\n \"rejected\":[" : "],\n \"rejected\":[", out);
    for (size_t k = 0; k < n_rejected; k++) {
        char *sep = strchr(rejected[k], '\x1f');
        *sep = '\0';
        fprintf(out, "%s\n  {\"line\":%s,\"error\":", k ? "," : "", rejected[k]);
        json_str(out, sep + 1);
        fputc('}', out);
        free(rejected[k]);
    }
    free(rejected);
    fputs(n_rejected ? "\n ],\n \"duplicates\":[" : "],\n \"duplicates\":[", out);
    for (size_t k = 0; k < n_dups; k++) {
        char *f1 = strchr(dups[k], '\x1f');
        *f1++ = 0;
        char *f2 = strchr(f1, '\x1f');
        *f2++ = 0;
        char *f3 = strchr(f2, '\x1f');
        *f3++ = 0;
        fprintf(out, "%s\n  {\"line\":%s,\"first_line\":%s,\"source\":", k ? "," : "", dups[k], f1);
        json_str(out, f2);
        fputs(",\"id\":", out);
        json_str(out, f3);
        fputc('}', out);
        free(dups[k]);
    }
    free(dups);
    seen_free(&seen);
    fputs(n_dups ? "\n ],\n \"invoices\":[" : "],\n \"invoices\":[", out);
    /* Tenants in name order, months in order; prepaid credit carries from month to month. */
    if (n_per)
        qsort(per, n_per, sizeof *per, cmp_period);
    int status = n_rejected ? 1 : 0;
    gm_invoice_opts iopts = {0};
    for (size_t k = 0; k < n_per; k++) {
        if (k == 0 || strcmp(per[k].tenant, per[k - 1].tenant)) {
            iopts.has_credit_balance = false;
            iopts.has_term_spent = true; /* a total over a term: its spend carries on too */
            iopts.term_spent_before_minor = 0;
        }
        gm_invoice *inv;
        char why[1024];
        if (gm_rating_period_invoice(per[k].period, &iopts, &inv, why, sizeof why)) {
            fprintf(stderr, "gridmeter quote: invoice of %s: %s\n", per[k].tenant, why);
            status = 2;
        } else {
            fputs(k ? ",\n  " : "\n  ", out);
            print_invoice(out, inv);
            iopts.has_credit_balance = true;
            iopts.credit_balance_minor = inv->credit_balance_after_minor;
            if (inv->has_term)
                iopts.term_spent_before_minor = inv->term_spent_minor;
            gm_invoice_free(inv);
        }
        gm_rating_period_free(per[k].period);
    }
    fputs(n_per ? "\n ]}\n" : "]}\n", out);
    free(per);
    gm_rating_book_free(book);
    if (read_error) {
        fprintf(stderr, "gridmeter quote: reading stdin failed\n");
        return 2;
    }
    return status;
}
