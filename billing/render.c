/* Renderings of the invoice model shared by the REST API and the command line: JSON (money as
 * exact decimal text, never JSON numbers) and CSV (RFC 4180, formula-leading cells
 * neutralized). Quantity and unit price are in the same unit on every line. */
#include "billing_int.h"

#include <stdlib.h>
#include <string.h>

static void add_str_or_null(cJSON *o, const char *name, const char *v)
{
    if (v && *v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

static void add_dec(cJSON *o, const char *name, gm_i128 v, int scale)
{
    char b[64];
    gm_dec_format(v, scale, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

static void add_minor(cJSON *o, const char *name, gm_i128 v, int mu)
{
    char b[64];
    gm_rating_format_minor(v, mu, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

static void add_time(cJSON *o, const char *name, int64_t us)
{
    if (!us) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    char b[40];
    gm_time_format(us, b, sizeof b);
    cJSON_AddStringToObject(o, name, b);
}

cJSON *gm_billing_line_json(const gm_billing_line *l, int minor_units)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "line_no", l->line_no);
    cJSON_AddStringToObject(j, "kind", l->kind);
    if (l->adjusted_kind[0])
        cJSON_AddStringToObject(j, "adjusted_kind", l->adjusted_kind);
    cJSON_AddStringToObject(j, "description", l->description);
    add_str_or_null(j, "dimension", l->dimension);
    add_str_or_null(j, "model", l->model);
    add_str_or_null(j, "site_tier", l->site_tier);
    cJSON_AddNumberToObject(j, "card_version", (double)l->card_version);
    cJSON_AddNumberToObject(j, "band", l->band);
    if (l->dimension[0]) {
        char q[64], up[48], mq[48];
        gm_billing_line_quantity(l, q, sizeof q);
        cJSON_AddStringToObject(j, "quantity", q);
        cJSON_AddStringToObject(j, "unit", gm_billing_line_unit(l));
        gm_dec_format(l->unit_price_p, 12, up, sizeof up);
        cJSON_AddStringToObject(j, "unit_price", up);
        gm_i128_format(l->qty, mq, sizeof mq);
        cJSON_AddStringToObject(j, "metered_quantity", mq);
        cJSON_AddStringToObject(j, "metered_unit",
                                !strcmp(l->dimension, "gpu")       ? "gpu_us"
                                : !strcmp(l->dimension, "request") ? "request"
                                                                   : "token");
    }
    add_dec(j, "amount_exact", l->amount_e18, 18);
    add_minor(j, "amount", l->amount_minor, minor_units);
    add_minor(j, "discount_share", l->discount_minor, minor_units);
    add_minor(j, "credit_share", l->credit_minor, minor_units);
    if (l->corrects_period_us) {
        char m[8];
        gm_billing_format_month(l->corrects_period_us, m);
        cJSON_AddStringToObject(j, "corrects_period", m);
    } else {
        cJSON_AddNullToObject(j, "corrects_period"); /* always present (docs/api.md) */
    }
    if (l->gpu_basis[0])
        cJSON_AddStringToObject(j, "gpu_basis", l->gpu_basis);
    else
        cJSON_AddNullToObject(j, "gpu_basis");
    /* the price variant of a line with a dimension ("" for the base one); null on money lines */
    if (l->dimension[0])
        cJSON_AddStringToObject(j, "variant", l->variant);
    else
        cJSON_AddNullToObject(j, "variant");
    return j;
}

cJSON *gm_billing_invoice_json(const gm_billing_invoice *inv, bool with_lines)
{
    cJSON *o = cJSON_CreateObject();
    char month[8];
    gm_billing_format_month(inv->period_start_us, month);
    cJSON_AddStringToObject(o, "invoice_id", inv->invoice_id);
    cJSON_AddStringToObject(o, "tenant", inv->tenant);
    cJSON_AddStringToObject(o, "issuer", inv->issuer);
    cJSON_AddStringToObject(o, "period", month);
    add_time(o, "period_start", inv->period_start_us);
    add_time(o, "period_end", inv->period_end_us);
    cJSON_AddStringToObject(o, "status", inv->status);
    add_str_or_null(o, "number", inv->number);
    add_str_or_null(o, "currency", inv->currency);
    cJSON_AddNumberToObject(o, "minor_units", inv->minor_units);
    bool have_total = inv->live || strcmp(inv->status, "draft");
    if (have_total) {
        add_minor(o, "total", inv->total_minor, inv->minor_units);
        add_dec(o, "usage_exact", inv->usage_exact_e18, 18);
        add_minor(o, "credited", inv->credited_minor, inv->minor_units);
        gm_i128 creditable = strcmp(inv->status, "finalized") ? 0
                             : inv->total_minor > inv->credited_minor
                                 ? inv->total_minor - inv->credited_minor
                                 : 0;
        add_minor(o, "creditable", creditable, inv->minor_units);
    } else {
        cJSON_AddNullToObject(o, "total");
    }
    cJSON_AddBoolToObject(o, "live", inv->live);
    add_time(o, "created_at", inv->created_at_us);
    add_time(o, "finalized_at", inv->finalized_at_us);
    add_time(o, "voided_at", inv->voided_at_us);
    if (!with_lines)
        return o;
    cJSON *lines = cJSON_AddArrayToObject(o, "lines");
    for (size_t i = 0; i < inv->n_lines; i++)
        cJSON_AddItemToArray(lines, gm_billing_line_json(&inv->lines[i], inv->minor_units));
    return o;
}

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void badd(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = gm_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void bcsv(buf *b, const char *s)
{
    /* A leading = + - @ would be a formula in a spreadsheet: prefix a quote (OWASP) unless
     * the field is a number. */
    bool numeric = *s != 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '.' || (*p == '-' && p == s)))
            numeric = false;
    bool formula = !numeric && *s && strchr("=+-@\t", *s);
    bool quote = strpbrk(s, ",\"\r\n") != NULL || formula;
    if (!quote) {
        badd(b, s, strlen(s));
        return;
    }
    badd(b, "\"", 1);
    if (formula)
        badd(b, "'", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            badd(b, "\"", 1);
        badd(b, p, 1);
    }
    badd(b, "\"", 1);
}

char *gm_billing_invoice_csv(const gm_billing_invoice *inv, size_t *len)
{
    buf b = {0};
    static const char head[] =
        "invoice_id,number,tenant,period,status,currency,line_no,kind,description,"
        "dimension,model,site_tier,card_version,band,quantity,unit,unit_price,"
        "amount_exact,amount,corrects_period,gpu_basis,variant\r\n";
    badd(&b, head, sizeof head - 1);
    char month[8];
    gm_billing_format_month(inv->period_start_us, month);
    for (size_t i = 0; i <= inv->n_lines; i++) {
        const gm_billing_line *l = i < inv->n_lines ? &inv->lines[i] : NULL;
        char no[16] = "", ver[24] = "", band[16] = "", qty[64] = "", up[48] = "", ex[64] = "",
             am[64] = "", cp[8] = "";
        const char *unit = "";
        if (l) {
            snprintf(no, sizeof no, "%d", l->line_no);
            if (l->card_version)
                snprintf(ver, sizeof ver, "%lld", (long long)l->card_version);
            if (l->band)
                snprintf(band, sizeof band, "%d", l->band);
            if (l->dimension[0]) {
                gm_billing_line_quantity(l, qty, sizeof qty);
                unit = gm_billing_line_unit(l);
                gm_dec_format(l->unit_price_p, 12, up, sizeof up);
            }
            gm_dec_format(l->amount_e18, 18, ex, sizeof ex);
            gm_rating_format_minor(l->amount_minor, inv->minor_units, am, sizeof am);
            if (l->corrects_period_us)
                gm_billing_format_month(l->corrects_period_us, cp);
        } else {
            gm_rating_format_minor(inv->total_minor, inv->minor_units, am, sizeof am);
        }
        const char *f[] = {inv->invoice_id,
                           inv->number,
                           inv->tenant,
                           month,
                           inv->status,
                           inv->currency,
                           no,
                           l ? l->kind : "total",
                           l ? l->description : "Invoice total",
                           l ? l->dimension : "",
                           l ? l->model : "",
                           l ? l->site_tier : "",
                           ver,
                           band,
                           qty,
                           unit,
                           up,
                           ex,
                           am,
                           cp,
                           l ? l->gpu_basis : "",
                           l ? l->variant : ""};
        for (size_t k = 0; k < GM_ARRAY_LEN(f); k++) {
            if (k)
                badd(&b, ",", 1);
            bcsv(&b, f[k]);
        }
        badd(&b, "\r\n", 2);
    }
    *len = b.len;
    return b.p;
}

cJSON *gm_billing_credit_note_json(const gm_billing_credit_note *cn)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "credit_note_id", cn->credit_note_id);
    cJSON_AddStringToObject(o, "number", cn->number);
    cJSON_AddStringToObject(o, "invoice_id", cn->invoice_id);
    cJSON_AddStringToObject(o, "tenant", cn->tenant);
    cJSON_AddStringToObject(o, "currency", cn->currency);
    cJSON_AddStringToObject(o, "amount", cn->amount);
    cJSON_AddStringToObject(o, "reason", cn->reason);
    add_time(o, "created_at", cn->created_at_us);
    return o;
}

cJSON *gm_billing_rerate_json(const gm_billing_rerate_result *r, bool dry_run)
{
    cJSON *o = cJSON_CreateObject();
    if (r->run_id)
        cJSON_AddNumberToObject(o, "run_id", (double)r->run_id);
    else
        cJSON_AddNullToObject(o, "run_id");
    cJSON_AddBoolToObject(o, "dry_run", dry_run);
    cJSON_AddNumberToObject(o, "tenants_changed", r->tenants);
    cJSON_AddNumberToObject(o, "lines_changed", (double)r->n_lines);
    add_dec(o, "delta_exact", r->delta_e18, 18);
    cJSON *lines = cJSON_AddArrayToObject(o, "lines");
    for (size_t i = 0; i < r->n_lines; i++) {
        const gm_billing_rerate_line *l = &r->lines[i];
        cJSON *j = cJSON_CreateObject();
        char m[8];
        gm_billing_format_month(l->period_start_us, m);
        cJSON_AddStringToObject(j, "tenant", l->tenant);
        cJSON_AddStringToObject(j, "period", m);
        add_str_or_null(j, "invoice_id", l->invoice_id);
        cJSON_AddStringToObject(j, "invoice_status", l->invoice_status);
        cJSON_AddStringToObject(j, "currency", l->currency);
        cJSON_AddStringToObject(j, "kind", l->kind);
        add_str_or_null(j, "dimension", l->dimension);
        add_str_or_null(j, "model", l->model);
        add_str_or_null(j, "site_tier", l->site_tier);
        cJSON_AddNumberToObject(j, "card_version", (double)l->card_version);
        cJSON_AddNumberToObject(j, "band", l->band);
        if (l->dimension[0])
            cJSON_AddStringToObject(j, "variant", l->variant);
        else
            cJSON_AddNullToObject(j, "variant");
        if (l->dimension[0]) {
            gm_billing_line lb = {0}, la = {0};
            snprintf(lb.dimension, sizeof lb.dimension, "%s", l->dimension);
            snprintf(la.dimension, sizeof la.dimension, "%s", l->dimension);
            lb.qty = l->qty_before;
            la.qty = l->qty_after;
            char qb[64], qa[64];
            gm_billing_line_quantity(&lb, qb, sizeof qb);
            gm_billing_line_quantity(&la, qa, sizeof qa);
            cJSON_AddStringToObject(j, "unit", gm_billing_line_unit(&lb));
            cJSON_AddStringToObject(j, "quantity_before", qb);
            cJSON_AddStringToObject(j, "quantity_after", qa);
            add_dec(j, "unit_price_before", l->unit_price_p_before, 12);
            add_dec(j, "unit_price_after", l->unit_price_p_after, 12);
        }
        add_dec(j, "amount_exact_before", l->amount_e18_before, 18);
        add_dec(j, "amount_exact_after", l->amount_e18_after, 18);
        add_minor(j, "amount_before", l->amount_minor_before, l->minor_units);
        add_minor(j, "amount_after", l->amount_minor_after, l->minor_units);
        add_minor(j, "delta", l->amount_minor_after - l->amount_minor_before, l->minor_units);
        cJSON_AddItemToArray(lines, j);
    }
    return o;
}
