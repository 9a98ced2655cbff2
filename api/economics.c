/* GET /v1/economics (finance, admin): the cost and margin of tokens for a month, from
 * audit.gpu_economics (sql/0010): GPU time priced by the sites' cost cards beside the list
 * revenue, grouped by site, tenant and/or model, JSON or CSV (docs/api.md). Amounts are the
 * view's exact decimals as text, summed by PostgreSQL; nothing goes through a float. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

bool api__parse_group_by(api_req *r, const char *s, const char *const *allowed, int n,
                         unsigned *mask);

/* Output columns after the group columns, in order (CSV header and JSON member names). */
static const char *const value_cols[] = {"revenue_currency",
                                         "cost_currency",
                                         "input_tokens",
                                         "cached_tokens",
                                         "output_tokens",
                                         "gpu_us",
                                         "revenue",
                                         "gpu_cost",
                                         "margin",
                                         "cost_per_1m_output_tokens",
                                         "revenue_per_1m_output_tokens",
                                         "reference_per_1m_output_tokens",
                                         "hours_without_cost_card"};
#define N_VALUES (sizeof value_cols / sizeof value_cols[0])

void api__h_economics(api_req *r)
{
    const char *period = api__query(r, "period");
    int64_t start;
    if (!period || !api__parse_month(period, &start)) {
        api__problem(r, 400, "invalid-parameter", "period",
                     "period: required, a month YYYY-MM (1970-01 or later)");
        return;
    }
    const char *basis = api__query(r, "basis");
    if (!basis)
        basis = "requests";
    if (strcmp(basis, "requests") && strcmp(basis, "windows")) {
        api__problem(r, 400, "invalid-parameter", "basis", "basis: must be requests or windows");
        return;
    }
    static const char *const cols[] = {"site", "tenant", "model"};
    unsigned mask;
    if (!api__parse_group_by(r, api__query(r, "group_by"), cols, 3, &mask))
        return;
    if (!mask)
        mask = 1; /* by site */
    /* Group columns come from the fixed list above, never from the request text. */
    char grp[64] = "";
    int ng = 0;
    for (int i = 0; i < 3; i++)
        if (mask & (1u << i)) {
            snprintf(grp + strlen(grp), sizeof grp - strlen(grp), "%s, ", cols[i]);
            ng++;
        }
    char sql[2048];
    snprintf(sql, sizeof sql,
             "SELECT %srevenue_currency, cost_currency, sum(input_tokens)::text,"
             " sum(cached_tokens)::text, sum(output_tokens)::text, sum(gpu_us)::text,"
             " sum(revenue)::numeric(38,18)::text, sum(gpu_cost)::numeric(38,18)::text,"
             " CASE WHEN bool_and(margin IS NOT NULL) THEN sum(margin)::numeric(38,18)::text END"
             " AS m,"
             " CASE WHEN sum(output_tokens) > 0 AND bool_and(gpu_cost IS NOT NULL) THEN"
             "  round(sum(gpu_cost) * 1000000 / sum(output_tokens), 18)::text END,"
             " CASE WHEN sum(output_tokens) > 0 THEN"
             "  round(sum(revenue) * 1000000 / sum(output_tokens), 18)::text END,"
             " ((array_agg(reference_per_1m_output_tokens ORDER BY hour DESC)"
             "  FILTER (WHERE reference_per_1m_output_tokens IS NOT NULL))[1])::text,"
             " count(*) FILTER (WHERE cost_card_site IS NULL)::text"
             " FROM audit.gpu_economics WHERE basis = $3 AND hour >= $1 AND hour < $2"
             " GROUP BY %srevenue_currency, cost_currency"
             " ORDER BY CASE WHEN bool_and(margin IS NOT NULL) THEN sum(margin) END NULLS LAST,"
             " %srevenue_currency NULLS FIRST, cost_currency NULLS FIRST",
             grp, grp, grp);
    char a[40], b[40];
    api__time_param(start, a);
    api__time_param(gm_month_next(start), b);
    const char *p[3] = {a, b, basis};
    PGresult *res = PQexecParams(r->db, sql, 3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "economics");
        PQclear(res);
        return;
    }
    if (api__wants_csv(r)) {
        api_buf out = {0};
        for (int k = 0; k < 3; k++)
            if (mask & (1u << k))
                api__buf_printf(&out, "%s,", cols[k]);
        for (size_t k = 0; k < N_VALUES; k++)
            api__buf_printf(&out, "%s%s", value_cols[k], k + 1 < N_VALUES ? "," : "\r\n");
        for (int i = 0; i < PQntuples(res); i++) {
            for (int k = 0; k < ng + (int)N_VALUES; k++) {
                if (k)
                    api__buf_str(&out, ",");
                if (!PQgetisnull(res, i, k))
                    api__buf_csv(&out, PQgetvalue(res, i, k));
            }
            api__buf_str(&out, "\r\n");
        }
        PQclear(res);
        api__text(r, 200, "text/csv; charset=utf-8", out.p, out.len);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "period", period);
    cJSON_AddStringToObject(o, "basis", basis);
    cJSON *gb = cJSON_AddArrayToObject(o, "group_by");
    for (int i = 0; i < 3; i++)
        if (mask & (1u << i))
            cJSON_AddItemToArray(gb, cJSON_CreateString(cols[i]));
    cJSON *rows = cJSON_AddArrayToObject(o, "rows");
    for (int i = 0; i < PQntuples(res); i++) {
        cJSON *row = cJSON_CreateObject();
        int c = 0;
        for (int k = 0; k < 3; k++)
            if (mask & (1u << k))
                cJSON_AddStringToObject(row, cols[k], PQgetvalue(res, i, c++));
        for (size_t k = 0; k < N_VALUES; k++, c++) {
            if (PQgetisnull(res, i, c))
                cJSON_AddNullToObject(row, value_cols[k]);
            else
                cJSON_AddStringToObject(row, value_cols[k], PQgetvalue(res, i, c));
        }
        cJSON_AddItemToArray(rows, row);
    }
    PQclear(res);
    cJSON_AddStringToObject(
        o, "rule",
        !strcmp(basis, "requests")
            ? "GPU time from the usage events' per-request gpu_us, per model; gpu_cost = gpu_us x"
              " the site's cost per GPU-hour / 3.6e9 (18 decimals per hour and row); revenue ="
              " list amounts before invoice-level tiers, discounts, commitments and credits;"
              " rows losing the most first"
            : "GPU time attributed by gpu_accounting (kernel-share-v1 windows), all models as *;"
              " gpu_cost = gpu_us x the site's cost per GPU-hour / 3.6e9 (18 decimals per hour"
              " and row); revenue = list amounts before invoice-level tiers, discounts,"
              " commitments and credits; rows losing the most first");
    api__json(r, 200, o);
}

/* ---- Cost cards: GET /v1/cost-cards (admin, finance), POST /v1/cost-cards (admin) -------- */
#define CC_COLS                                                                                    \
    "site, version, to_char(valid_from AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"  \
    " currency, gpu_hour_cost::text, reference_per_1m_output::text, note,"                         \
    " to_char(imported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static cJSON *cost_card_json(const PGresult *res, int i)
{
    static const char *const names[] = {"site",     "version",       "valid_from",
                                        "currency", "gpu_hour_cost", "reference_per_1m_output",
                                        "note",     "imported_at"};
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; k < 8; k++) {
        if (PQgetisnull(res, i, k))
            cJSON_AddNullToObject(o, names[k]);
        else if (k == 1)
            cJSON_AddNumberToObject(o, names[k], atoi(PQgetvalue(res, i, k)));
        else
            cJSON_AddStringToObject(o, names[k], PQgetvalue(res, i, k));
    }
    return o;
}

void api__h_cost_cards_list(api_req *r)
{
    const char *site = api__query(r, "site");
    const char *p[1] = {site};
    PGresult *res = PQexecParams(r->db,
                                 "SELECT " CC_COLS " FROM gm.cost_cards WHERE ($1::text IS NULL"
                                 " OR site = $1) ORDER BY site, version",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        api__db_problem(r, res, "cost cards");
        PQclear(res);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (int i = 0; i < PQntuples(res); i++)
        cJSON_AddItemToArray(items, cost_card_json(res, i));
    PQclear(res);
    api__json(r, 200, o);
}

static bool site_ok(const char *s)
{
    size_t n = strlen(s);
    if (!strcmp(s, "*"))
        return true;
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* A non-negative decimal string with at most 12 fraction digits, or false. */
static bool price_ok(const cJSON *v)
{
    gm_i128 x;
    return cJSON_IsString(v) && *v->valuestring &&
           gm_dec_parse(v->valuestring, strlen(v->valuestring), 12, &x, NULL, 0) == 0 && x >= 0;
}

void api__h_cost_card_create(api_req *r)
{
    cJSON *b = api__body_object(
        r, "site,valid_from,currency,gpu_hour_cost,reference_per_1m_output,note", false);
    if (!b)
        return;
    const cJSON *site = cJSON_GetObjectItemCaseSensitive(b, "site");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(b, "valid_from");
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(b, "currency");
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(b, "gpu_hour_cost");
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(b, "reference_per_1m_output");
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(b, "note");
    int64_t from_us = 0;
    char why[256] = "";
    const char *field = NULL, *rule = NULL;
    if (!cJSON_IsString(site) || !site_ok(site->valuestring))
        field = "site", rule = "a site id (1-64 of A-Z a-z 0-9 . _ -, first a letter or digit)"
                               " or * for the fleet default";
    else if (!cJSON_IsString(from) ||
             gm_time_parse(from->valuestring, strlen(from->valuestring), &from_us, why, sizeof why))
        field = "valid_from", rule = "an RFC 3339 instant";
    else if (!cJSON_IsString(cur) || strlen(cur->valuestring) != 3 ||
             strspn(cur->valuestring, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3)
        field = "currency", rule = "an ISO 4217 code, 3 capital letters";
    else if (!price_ok(cost))
        field = "gpu_hour_cost", rule = "a decimal string >= 0 with at most 12 fraction digits";
    else if (ref && !cJSON_IsNull(ref) && !price_ok(ref))
        field = "reference_per_1m_output",
        rule = "null or a decimal string >= 0 with at most 12 fraction digits";
    else if (note && !cJSON_IsNull(note) &&
             (!cJSON_IsString(note) || strlen(note->valuestring) > 500))
        field = "note", rule = "null or a string of at most 500 bytes";
    if (field) {
        api__problem(r, 400, "invalid-body", field, "body.%s: must be %s%s%s", field, rule,
                     why[0] ? ": " : "", why);
        cJSON_Delete(b);
        return;
    }
    char ts[40];
    gm_time_format(from_us, ts, sizeof ts);
    const char *p[6] = {site->valuestring,
                        ts,
                        cur->valuestring,
                        cost->valuestring,
                        ref && cJSON_IsString(ref) ? ref->valuestring : NULL,
                        note && cJSON_IsString(note) ? note->valuestring : NULL};
    /* The next version of the site; a concurrent one or the same valid_from is a 409. */
    PGresult *res = PQexecParams(
        r->db,
        "INSERT INTO gm.cost_cards (site, version, valid_from, currency, gpu_hour_cost,"
        " reference_per_1m_output, note)"
        " SELECT $1, coalesce(max(version), 0) + 1, $2::timestamptz, $3, $4::numeric,"
        " $5::numeric, $6 FROM gm.cost_cards WHERE site = $1 RETURNING " CC_COLS,
        6, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && !strcmp(state, "23505"))
            api__problem(r, 409, "conflict", "valid_from",
                         "body.valid_from: site %s already has a cost card from %s (a version is"
                         " never rewritten; add one with a later valid_from), or another version"
                         " was added at the same moment (retry)",
                         site->valuestring, ts);
        else
            api__db_problem(r, res, "cost card");
        cJSON_Delete(b);
        PQclear(res);
        return;
    }
    cJSON_Delete(b);
    cJSON *o = cost_card_json(res, 0);
    PQclear(res);
    api__json(r, 201, o);
}
