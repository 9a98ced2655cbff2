/* The route table (method, path template, roles, allowed query parameters, flags), indexed by
 * api_route_id, and matching a decoded target against it. The handlers for each id are in
 * server.c; the OpenAPI document (openapi.json) describes the same table. */
#include "api_edge.h"

#include <string.h>

#define P 0u
#define A GM_API_ROLE_ADMIN
#define F GM_API_ROLE_FINANCE
#define C GM_API_ROLE_CUSTOMER

const api_route_spec api__routes[API_R_COUNT] = {
    [API_R_HEALTHZ] = {{"GET", "/healthz", P, false}, "", API_RF_NO_DB},
    [API_R_READYZ] = {{"GET", "/readyz", P, false}, "", 0},
    [API_R_METRICS] = {{"GET", "/metrics", A, false}, "", API_RF_NO_DB},
    [API_R_OPENAPI] = {{"GET", "/v1/openapi.json", P, false}, "", API_RF_NO_DB},
    [API_R_ME] = {{"GET", "/v1/me", A | F | C, false}, "", 0},
    [API_R_OPS_INGEST] = {{"GET", "/v1/ops/ingest", A | F, false}, "", API_RF_NO_DB},
    [API_R_INVOICES_LIST] = {{"GET", "/v1/invoices", F | C, false},
                             "period,tenant,status,cursor,limit",
                             0},
    [API_R_INVOICE_GET] = {{"GET", "/v1/invoices/{invoice_id}", F | C, false}, "", 0},
    [API_R_INVOICE_FINALIZE] = {{"POST", "/v1/invoices/{invoice_id}/finalize", F, false},
                                "",
                                API_RF_REPEATABLE_READ},
    [API_R_INVOICE_VOID] = {{"POST", "/v1/invoices/{invoice_id}/void", F, false}, "", 0},
    [API_R_CREDIT_NOTE_CREATE] = {{"POST", "/v1/invoices/{invoice_id}/credit-notes", F, false},
                                  "",
                                  0},
    [API_R_CREDIT_NOTES_LIST] = {{"GET", "/v1/credit-notes", F, false},
                                 "tenant,invoice_id,cursor,limit",
                                 0},
    [API_R_REVENUE] = {{"GET", "/v1/revenue", F, false}, "period,group_by,from,to,bucket", 0},
    [API_R_ECONOMICS] = {{"GET", "/v1/economics", A | F, false}, "period,basis,group_by", 0},
    [API_R_COST_CARDS_LIST] = {{"GET", "/v1/cost-cards", A | F, false}, "site", 0},
    [API_R_COST_CARD_CREATE] = {{"POST", "/v1/cost-cards", A, false}, "", 0},
    [API_R_RERATING_RUN] = {{"POST", "/v1/rerating-runs", F, false}, "", API_RF_REPEATABLE_READ},
    [API_R_RERATING_RUNS_LIST] = {{"GET", "/v1/rerating-runs", F, false}, "period,tenant", 0},
    [API_R_USAGE] = {{"GET", "/v1/tenants/{tenant}/usage", C | F, true},
                     "from,to,bucket,group_by",
                     API_RF_TENANT_SCOPED},
    [API_R_SPEND] = {{"GET", "/v1/tenants/{tenant}/spend", C | F, true}, "", API_RF_TENANT_SCOPED},
    [API_R_TENANT_INVOICES] = {{"GET", "/v1/tenants/{tenant}/invoices", C | F, true},
                               "status,cursor,limit",
                               API_RF_TENANT_SCOPED},
    [API_R_TENANTS_LIST] = {{"GET", "/v1/tenants", A, false}, "", 0},
    [API_R_TENANT_CREATE] = {{"POST", "/v1/tenants", A, false}, "", 0},
    [API_R_TENANT_GET] = {{"GET", "/v1/tenants/{tenant}", A, false}, "", 0},
    [API_R_CONTRACTS_LIST] = {{"GET", "/v1/contracts", A, false}, "tenant", 0},
    [API_R_CONTRACT_IMPORT] = {{"POST", "/v1/contracts", A, false}, "", 0},
    [API_R_RATE_CARDS_LIST] = {{"GET", "/v1/rate-cards", A, false}, "card_id", 0},
    [API_R_RATE_CARD_IMPORT] = {{"POST", "/v1/rate-cards", A, false}, "", 0},
    [API_R_KEYS_LIST] = {{"GET", "/v1/api-keys", A, false}, "", 0},
    [API_R_KEY_CREATE] = {{"POST", "/v1/api-keys", A, false}, "", 0},
    [API_R_KEY_REVOKE] = {{"DELETE", "/v1/api-keys/{key_id}", A, false}, "", 0},
    /* from memory; the handler takes a pooled connection only when it must ask PostgreSQL */
    [API_R_ENTITLEMENT] = {{"GET", "/v1/tenants/{tenant}/entitlement", A | C | F, true},
                           "",
                           API_RF_TENANT_SCOPED | API_RF_NO_DB},
    [API_R_BUDGET_SET] = {{"POST", "/v1/tenants/{tenant}/budget", A | C, true},
                          "",
                          API_RF_TENANT_SCOPED},
};

/* Matches the template's segments against the target's; fills params. */
static bool match(const char *pattern, const api_target *t, const char **param, int *n_param)
{
    size_t k = 0;
    int np = 0;
    for (const char *p = pattern + 1;; k++) {
        const char *e = strchr(p, '/');
        size_t pl = e ? (size_t)(e - p) : strlen(p);
        if (k >= t->n_seg)
            return false;
        const char *s = t->seg[k];
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            if (!s[0] || np >= 3)
                return false;
            param[np++] = s;
        } else if (strlen(s) != pl || memcmp(s, p, pl)) {
            return false;
        }
        if (!e)
            break;
        p = e + 1;
    }
    if (k + 1 != t->n_seg)
        return false;
    *n_param = np;
    return true;
}

static void allow_add(char *allow, size_t len, const char *m)
{
    if (strstr(allow, m))
        return;
    size_t l = strlen(allow);
    snprintf(allow + l, len - l, "%s%s", l ? ", " : "", m);
}

void api__route_match(const char *method, const api_target *t, api_match *m)
{
    memset(m, 0, sizeof *m);
    m->route = -1;
    bool all_public = true;
    bool head = !strcmp(method, "HEAD");
    for (int i = 0; i < API_R_COUNT; i++) {
        const char *param[3];
        int np = 0;
        if (!match(api__routes[i].info.pattern, t, param, &np))
            continue;
        m->path_known = true;
        if (api__routes[i].info.roles)
            all_public = false;
        const char *rm = api__routes[i].info.method;
        allow_add(m->allow, sizeof m->allow, rm);
        if (!strcmp(rm, "GET"))
            allow_add(m->allow, sizeof m->allow, "HEAD");
        if (m->route < 0 && (!strcmp(rm, method) || (head && !strcmp(rm, "GET")))) {
            m->route = i;
            for (int k = 0; k < np; k++)
                m->param[k] = param[k];
            m->n_param = np;
        }
    }
    m->path_public = m->path_known && all_public;
}

bool api__path_needs_key(const api_target *t)
{
    return t->n_seg >= 1 &&
           (!strcmp(t->seg[0], "v1") || (t->n_seg == 1 && !strcmp(t->seg[0], "metrics")));
}
