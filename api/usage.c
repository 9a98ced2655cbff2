/* Customers' views: usage time series (minute buckets from the ledger, hour and day buckets
 * from the hourly charges) and month-to-date spend with its projection to month end. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

/* Bounds on what one usage request may cost (security review): the rows of one answer, and
 * the size of a body kept in the response cache (1,024 slots: at most 64 MiB held). */
#define USAGE_MAX_ROWS       200000
#define USAGE_CACHE_MAX_BODY (64 * 1024)

bool api__parse_group_by(api_req *r, const char *s, const char *const *allowed, int n,
                         unsigned *mask);

static bool time_param(api_req *r, const char *name, int64_t *us)
{
    const char *s = api__query(r, name);
    char why[256];
    if (!s) {
        api__problem(r, 400, "invalid-parameter", name, "%s: required, an RFC 3339 date-time",
                     name);
        return false;
    }
    if (gm_time_parse(s, strlen(s), us, why, sizeof why)) {
        api__problem(r, 400, "invalid-parameter", name, "%s: %s", name, why);
        return false;
    }
    return true;
}

/* A dimension's name -> its gm_dim number (0-based, the order of gm_dim). */
#define DIM_INDEX                                                                                  \
    "array_position(ARRAY['input', 'cached', 'output', 'gpu', 'cache_write', 'reasoning',"         \
    " 'request'], dimension::text) - 1"

typedef struct {
    char bucket[40], model[160], site[160];
    gm_i128 qty[GM_DIM_COUNT];
    gm_i128 amount_e18;
    bool used;
} usage_row;

static void emit_row(cJSON *series, const usage_row *u, unsigned mask, int mu)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "bucket_start", u->bucket);
    if (mask & 1)
        cJSON_AddStringToObject(o, "model", u->model);
    if (mask & 2)
        cJSON_AddStringToObject(o, "site", u->site);
    /* output_tokens: the output dimension, i.e. output other than reasoning (docs/api.md) */
    static const char *names[GM_DIM_COUNT] = {
        "input_tokens",       "cached_tokens",    "output_tokens", "gpu_us",
        "cache_write_tokens", "reasoning_tokens", "requests"};
    for (int d = 0; d < GM_DIM_COUNT; d++)
        api__add_i128(o, names[d], u->qty[d]);
    api__add_e18(o, "amount_exact", u->amount_e18);
    api__add_minor(o, "amount", gm_rating_round_e18(u->amount_e18, mu), mu);
    cJSON_AddItemToArray(series, o);
}

void api__h_usage(api_req *r)
{
    int64_t from, to;
    if (!api__valid_tenant(r->param[0])) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s",
                     api__tenant_rule(r->param[0]));
        return;
    }
    if (!time_param(r, "from", &from) || !time_param(r, "to", &to))
        return;
    if (to <= from) {
        api__problem(r, 400, "invalid-parameter", "to", "to: must be after from");
        return;
    }
    const char *bucket = api__query(r, "bucket");
    if (!bucket)
        bucket = "hour";
    int64_t unit, max_span;
    if (!strcmp(bucket, "minute"))
        unit = 60 * GM_US_PER_SEC, max_span = GM_US_PER_DAY;
    else if (!strcmp(bucket, "hour"))
        unit = GM_US_PER_HOUR, max_span = 93 * GM_US_PER_DAY;
    else if (!strcmp(bucket, "day"))
        unit = GM_US_PER_DAY, max_span = 366 * GM_US_PER_DAY;
    else {
        api__problem(r, 400, "invalid-parameter", "bucket", "bucket: must be minute, hour or day");
        return;
    }
    if (from % unit || to % unit) {
        api__problem(r, 400, "invalid-parameter", from % unit ? "from" : "to",
                     "%s: must fall on a whole %s (UTC) for bucket=%s", from % unit ? "from" : "to",
                     bucket, bucket);
        return;
    }
    if (to - from > max_span) {
        api__problem(r, 400, "invalid-parameter", "to",
                     "to: at most %lld days after from for bucket=%s",
                     (long long)(max_span / GM_US_PER_DAY), bucket);
        return;
    }
    static const char *const gcols[] = {"model", "site", "dimension"};
    unsigned mask;
    if (!api__parse_group_by(r, api__query(r, "group_by"), gcols, 3, &mask))
        return;
    bool minute = bucket[0] == 'm';
    /* The cache key is the normalized request: tenant, range, bucket, groups. */
    char ckey[512];
    snprintf(ckey, sizeof ckey, "%s|%lld|%lld|%s|%u", r->param[0], (long long)from, (long long)to,
             bucket, mask);
    int ttl_ms = api__config(r->srv)->usage_cache_ms;
    uint64_t h = 1469598103934665603ull;
    for (const char *c = ckey; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    pthread_mutex_t *cache_mu;
    api_cached *slot = &api__usage_cache(r->srv, &cache_mu)[h % API_USAGE_CACHE_SLOTS];
    if (ttl_ms > 0) {
        pthread_mutex_lock(cache_mu);
        if (slot->key && slot->expires_us <= gm_mono_us()) { /* expired: free it now */
            free(slot->key);
            free(slot->body);
            slot->key = slot->body = NULL;
        }
        if (slot->key && !strcmp(slot->key, ckey)) {
            char *copy = gm_xmalloc(slot->len + 1);
            memcpy(copy, slot->body, slot->len + 1);
            size_t len = slot->len;
            pthread_mutex_unlock(cache_mu);
            api__text(r, 200, "application/json", copy, len);
            return;
        }
        pthread_mutex_unlock(cache_mu);
    }
    /* SQL from fixed text only; values are parameters. Rows always carry the dimension; when
     * the caller does not group by it, C folds the dimensions of a (bucket, model, site) into
     * one row (ORDER BY makes them adjacent). */
    char sql[2048];
    const char *m = mask & 1 ? "model" : "''";
    const char *s = mask & 2 ? "site" : "''";
    if (minute)
        snprintf(sql, sizeof sql,
                 "SELECT "
                 "coalesce((extract(epoch FROM date_trunc('minute', l.event_time)) *"
                 " 1000000)::bigint, 0) b, %s, %s, d.dim, sum(d.qty)::text, sum(d.amt)::text,"
                 " l.currency FROM gm.ledger l CROSS JOIN LATERAL (VALUES (0, l.input_tokens,"
                 " l.amount_input), (1, l.cached_tokens, l.amount_cached), (2, l.output_tokens"
                 " - l.reasoning_tokens, l.amount_output), (3, l.gpu_us, l.amount_gpu),"
                 " (4, l.cache_write_tokens, l.amount_cache_write), (5, l.reasoning_tokens,"
                 " l.amount_reasoning), (6, (l.amount_request <> 0)::int, l.amount_request))"
                 " d(dim, qty, amt)"
                 " WHERE l.tenant = $1 AND l.event_time >= $2 AND l.event_time < $3"
                 " AND (d.dim < 4 OR d.qty <> 0 OR d.amt <> 0)" /* new dims: only when used */
                 " GROUP BY 1, 2, 3, 4, 7 ORDER BY 1, 2, 3, 4",
                 m, s);
    else if (bucket[0] == 'h')
        snprintf(sql, sizeof sql,
                 "SELECT coalesce((extract(epoch FROM hour) * 1000000)::bigint, 0) b, %s, %s,"
                 " " DIM_INDEX ", sum(quantity)::text, sum(amount)::text, currency FROM gm.charges"
                 " WHERE tenant = $1 AND hour >= $2 AND hour < $3"
                 " GROUP BY 1, 2, 3, 4, 7 ORDER BY 1, 2, 3, 4",
                 m, s);
    else if (!(mask & 2)) /* day buckets without site: the day x model rollup (sql/0008) */
        snprintf(sql, sizeof sql,
                 "SELECT coalesce((extract(epoch FROM day) * 1000000)::bigint, 0) b, %s, '',"
                 " " DIM_INDEX ", sum(quantity)::text, sum(amount)::text, currency"
                 " FROM gm.charges_daily_model WHERE tenant = $1 AND day >= $2 AND day < $3"
                 " GROUP BY 1, 2, 3, 4, 7 ORDER BY 1, 2, 3, 4",
                 m);
    else /* day buckets from the daily rollup (sql/0008): ~24x fewer rows than the hours */
        snprintf(sql, sizeof sql,
                 "SELECT coalesce((extract(epoch FROM day) * 1000000)::bigint, 0) b, %s, %s,"
                 " " DIM_INDEX ", sum(quantity)::text, sum(amount)::text, currency"
                 " FROM gm.charges_daily WHERE tenant = $1 AND day >= $2 AND day < $3"
                 " GROUP BY 1, 2, 3, 4, 7 ORDER BY 1, 2, 3, 4",
                 m, s);
    char a[40], b[40];
    api__time_param(from, a);
    api__time_param(to, b);
    const char *p[3] = {r->param[0], a, b};
    PGresult *res = PQexecParams(r->db, sql, 3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "usage");
        PQclear(res);
        return;
    }
    if (PQntuples(res) > USAGE_MAX_ROWS) {
        /* One request may not make the server build an arbitrarily large answer. */
        api__problem(r, 400, "too-many-rows", "group_by",
                     "the answer would hold %d rows (at most %d): narrow the range, use a larger "
                     "bucket, or group by less",
                     PQntuples(res), USAGE_MAX_ROWS);
        PQclear(res);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", r->param[0]);
    api__add_time(o, "from", from);
    api__add_time(o, "to", to);
    cJSON_AddStringToObject(o, "bucket", bucket);
    cJSON *gb = cJSON_AddArrayToObject(o, "group_by");
    for (int i = 0; i < 3; i++)
        if (mask & (1u << i))
            cJSON_AddItemToArray(gb, cJSON_CreateString(gcols[i]));
    const char *currency = PQntuples(res) ? PQgetvalue(res, 0, 6) : "";
    int mu = api__minor_units(currency[0] ? currency : "USD");
    if (currency[0])
        cJSON_AddStringToObject(o, "currency", currency);
    else
        cJSON_AddNullToObject(o, "currency");
    cJSON *series = cJSON_AddArrayToObject(o, "series");
    usage_row u = {0};
    static const char *dn[GM_DIM_COUNT] = {"input",       "cached",    "output", "gpu",
                                           "cache_write", "reasoning", "request"};
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t bus = 0;
        if (gm_parse_i64(PQgetvalue(res, i, 0), strlen(PQgetvalue(res, i, 0)), &bus))
            bus = 0;
        char bt[40];
        gm_time_format(bus, bt, sizeof bt);
        int dim = atoi(PQgetvalue(res, i, 3));
        if (dim < 0 || dim >= GM_DIM_COUNT)
            dim = GM_DIM_COUNT - 1;
        gm_i128 q = 0, amt = 0;
        if (!api__num_int(PQgetvalue(res, i, 4), &q) || !api__num_e18(PQgetvalue(res, i, 5), &amt))
            q = amt = 0;
        if (mask & 4) {
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "bucket_start", bt);
            if (mask & 1)
                cJSON_AddStringToObject(row, "model", PQgetvalue(res, i, 1));
            if (mask & 2)
                cJSON_AddStringToObject(row, "site", PQgetvalue(res, i, 2));
            cJSON_AddStringToObject(row, "dimension", dn[dim]);
            cJSON_AddStringToObject(row, "unit", gm_dim_unit((gm_dim)dim));
            api__add_i128(row, "quantity", q);
            api__add_e18(row, "amount_exact", amt);
            api__add_minor(row, "amount", gm_rating_round_e18(amt, mu), mu);
            cJSON_AddItemToArray(series, row);
            continue;
        }
        if (u.used && (strcmp(u.bucket, bt) || strcmp(u.model, PQgetvalue(res, i, 1)) ||
                       strcmp(u.site, PQgetvalue(res, i, 2)))) {
            emit_row(series, &u, mask, mu);
            memset(&u, 0, sizeof u);
        }
        if (!u.used) {
            u.used = true;
            snprintf(u.bucket, sizeof u.bucket, "%s", bt);
            snprintf(u.model, sizeof u.model, "%s", PQgetvalue(res, i, 1));
            snprintf(u.site, sizeof u.site, "%s", PQgetvalue(res, i, 2));
        }
        u.qty[dim] += q;
        u.amount_e18 += amt;
    }
    if (u.used)
        emit_row(series, &u, mask, mu);
    PQclear(res);
    api__json(r, 200, o);
    if (ttl_ms > 0 && r->status == 200 && r->resp_len <= USAGE_CACHE_MAX_BODY) {
        pthread_mutex_lock(cache_mu);
        free(slot->key);
        free(slot->body);
        slot->key = gm_xstrdup(ckey);
        slot->body = gm_xmalloc(r->resp_len + 1);
        memcpy(slot->body, r->resp, r->resp_len + 1);
        slot->len = r->resp_len;
        slot->expires_us = gm_mono_us() + (int64_t)ttl_ms * 1000;
        pthread_mutex_unlock(cache_mu);
    }
}

/* The contract's monthly minimum commitment and prepaid credit (granted, at the start of the
 * month, drawn by the draft, remaining), in the contract's currency; null members when the
 * tenant has no contract or the contract has none. */
static int add_contract_terms(api_req *r, cJSON *o, const api_invoice *inv, char *err,
                              size_t err_len)
{
    const gm_rating_book *book = api__book_acquire(r->srv, r->db, err, err_len);
    if (!book)
        return GM_EDB;
    /* The contract version in force in the month (effective_from). */
    const gm_rating_contract *c =
        gm_rating_book_contract_at(book, r->param[0], inv->period_start_us);
    gm_rating_contract_info ci = {0};
    if (c)
        gm_rating_contract_get_info(c, &ci);
    gm_i128 commit_line = 0, credit_line = 0;
    for (size_t i = 0; i < inv->n_lines; i++) {
        if (!strcmp(inv->lines[i].kind, "commitment"))
            commit_line += inv->lines[i].amount_minor;
        else if (!strcmp(inv->lines[i].kind, "credit"))
            credit_line += inv->lines[i].amount_minor;
    }
    int mu = c ? ci.minor_units : inv->minor_units;
    int64_t t_first = 0, t_last = 0;
    if (c && gm_rating_contract_term_months(c, &t_first, &t_last)) {
        /* A total over a term: progress in the months before the last, the true-up in it
         * (docs/rating.md, "Total over a term"). */
        cJSON *m = cJSON_AddObjectToObject(o, "commitment");
        cJSON_AddStringToObject(m, "kind", "term_total");
        cJSON_AddStringToObject(m, "currency", ci.currency);
        api__add_minor(m, "term_total", ci.term_commitment_minor, mu);
        api__add_time(m, "term_start", ci.commitment_start_us);
        api__add_time(m, "term_end", ci.commitment_end_us);
        char tm[8];
        api__format_month(t_last, tm);
        cJSON_AddStringToObject(m, "true_up_period", tm);
        if (inv->has_term) {
            api__add_minor(m, "spent_in_term", inv->term_spent_minor, mu);
            api__add_minor(m, "remaining", inv->term_remaining_minor, mu);
        } else {
            cJSON_AddNullToObject(m, "spent_in_term");
            cJSON_AddNullToObject(m, "remaining");
        }
        cJSON_AddBoolToObject(m, "in_term", inv->has_term);
        cJSON_AddBoolToObject(m, "true_up_this_month", inv->has_term && inv->term_last_month);
        api__add_minor(m, "shortfall_so_far", commit_line, mu);
    } else if (c && ci.minimum_commitment_minor > 0) {
        cJSON *m = cJSON_AddObjectToObject(o, "commitment");
        cJSON_AddStringToObject(m, "kind", "monthly_minimum");
        cJSON_AddStringToObject(m, "currency", ci.currency);
        api__add_minor(m, "monthly_minimum", ci.minimum_commitment_minor, mu);
        /* The term and this month's minimum: pro-rated by seconds in a month the term covers
         * in part, 0 outside it (docs/rating.md, "Commitments over a term"). */
        int64_t cov_s = 0, month_s = 0;
        gm_i128 this_month =
            gm_rating_contract_commitment(c, inv->period_start_us, &cov_s, &month_s);
        api__add_minor(m, "this_month_minimum", this_month, mu);
        cJSON_AddNumberToObject(m, "term_seconds_this_month", (double)cov_s);
        cJSON_AddNumberToObject(m, "seconds_this_month", (double)month_s);
        if (ci.commitment_start_us != INT64_MIN)
            api__add_time(m, "term_start", ci.commitment_start_us);
        else
            cJSON_AddNullToObject(m, "term_start");
        if (ci.commitment_end_us != GM_RATING_NO_END)
            api__add_time(m, "term_end", ci.commitment_end_us);
        else
            cJSON_AddNullToObject(m, "term_end");
        api__add_minor(m, "shortfall_so_far", commit_line, mu);
    } else {
        cJSON_AddNullToObject(o, "commitment");
    }
    /* Free units per month and dimension, and what this month's draft has used of them. */
    cJSON *fa = NULL;
    for (int d = 0; c && d < GM_DIM_COUNT; d++) {
        if (ci.free_allowance[d] <= 0)
            continue;
        if (!fa)
            fa = cJSON_AddObjectToObject(o, "free_allowances");
        gm_i128 used = 0, value = 0;
        for (size_t i = 0; i < inv->n_lines; i++)
            if (!strcmp(inv->lines[i].kind, "allowance") &&
                !strcmp(inv->lines[i].dimension, gm_dim_name((gm_dim)d))) {
                used += inv->lines[i].qty;
                value += inv->lines[i].amount_minor;
            }
        char q[48];
        cJSON *a = cJSON_AddObjectToObject(fa, gm_dim_name((gm_dim)d));
        gm_i128_format(ci.free_allowance[d], q, sizeof q);
        cJSON_AddStringToObject(a, "per_month", q);
        cJSON_AddStringToObject(a, "unit", gm_dim_unit((gm_dim)d));
        gm_i128_format(used, q, sizeof q);
        cJSON_AddStringToObject(a, "used_this_month", q);
        api__add_minor(a, "value_this_month", -value, mu);
    }
    if (!fa)
        cJSON_AddNullToObject(o, "free_allowances");
    if (c && ci.prepaid_credits_minor > 0) {
        gm_i128 start =
            inv->has_credit_before ? inv->credit_before_minor : ci.prepaid_credits_minor;
        cJSON *k = cJSON_AddObjectToObject(o, "credit");
        cJSON_AddStringToObject(k, "currency", ci.currency);
        api__add_minor(k, "granted", ci.prepaid_credits_minor, mu);
        api__add_minor(k, "balance_at_month_start", start, mu);
        api__add_minor(k, "used_this_month", -credit_line, mu);
        api__add_minor(k, "remaining", start + credit_line, mu);
    } else {
        cJSON_AddNullToObject(o, "credit");
    }
    api__book_release(r->srv);
    return 0;
}

void api__h_spend(api_req *r)
{
    int64_t now = gm_now_us(), start = gm_month_start(now), end = gm_month_next(now);
    if (!api__valid_tenant(r->param[0])) {
        api__problem(r, 400, "invalid-parameter", "tenant", "tenant: %s",
                     api__tenant_rule(r->param[0]));
        return;
    }
    char err[1024];
    api_invoice *inv = NULL;
    int rc = api__invoice_compute(r->srv, r->db, r->param[0], start, &inv, err, sizeof err);
    gm_i128 ev = 0, amt = 0;
    if (!rc)
        rc = api__period_fingerprint(r->db, r->param[0], start, end, &ev, &amt, err, sizeof err);
    if (rc) {
        api__invoice_free(inv);
        gm_error("api", "msg=\"spend failed\" err=\"%s\"", err);
        api__problem(r, 500, "internal", NULL, "spend computation failed (logged)");
        return;
    }
    /* Linear projection of the list amount: amount * month length / elapsed, in whole seconds
     * (i128; no floating point), rounded half to even to the minor unit. */
    int64_t elapsed_s = (now - start) / GM_US_PER_SEC, len_s = (end - start) / GM_US_PER_SEC;
    if (elapsed_s < 1)
        elapsed_s = 1;
    gm_i128 proj = 0;
    if (gm_i128_mul(amt, len_s, &proj))
        proj = amt / elapsed_s * len_s;
    else
        proj /= elapsed_s;
    int mu = inv->currency[0] ? inv->minor_units : 2;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tenant", r->param[0]);
    char month[8];
    api__format_month(start, month);
    cJSON_AddStringToObject(o, "period", month);
    api__add_time(o, "as_of", now);
    if (inv->currency[0])
        cJSON_AddStringToObject(o, "currency", inv->currency);
    else
        cJSON_AddNullToObject(o, "currency");
    cJSON *mtd = cJSON_AddObjectToObject(o, "month_to_date");
    api__add_e18(mtd, "list_amount_exact", amt);
    api__add_minor(mtd, "list_amount", gm_rating_round_e18(amt, mu), mu);
    api__add_minor(mtd, "draft_invoice_total", inv->total_minor, mu);
    cJSON *pr = cJSON_AddObjectToObject(o, "projection");
    api__add_minor(pr, "list_amount", gm_rating_round_e18(proj, mu), mu);
    cJSON_AddStringToObject(pr, "method",
                            "linear: month-to-date list amount x month length / elapsed time");
    rc = add_contract_terms(r, o, inv, err, sizeof err);
    api__invoice_free(inv);
    if (rc) {
        cJSON_Delete(o);
        gm_error("api", "msg=\"spend failed\" err=\"%s\"", err);
        api__problem(r, 503, "unavailable", NULL, "rating book unavailable");
        return;
    }
    api__json(r, 200, o);
}
