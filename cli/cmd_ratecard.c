/* `gridmeter ratecard`: validate rate cards and contracts (offline), show a card's effective
 * prices, and import them into PostgreSQL (through the ledger's importer). */
#include "cli.h"
#include "gm_common.h"
#include "gm_ledger.h"
#include "gm_rating.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

/* A document with a top-level "tenant" is a contract, anything else a card. */
static bool is_contract(const char *text, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    bool yes = j && cJSON_GetObjectItemCaseSensitive(j, "tenant") != NULL;
    cJSON_Delete(j);
    return yes;
}

static void describe_card(const gm_rating_card *c, char *buf, size_t len)
{
    gm_rating_card_info i;
    gm_rating_card_get_info(c, &i);
    char from[40], until[40] = "open-ended";
    gm_time_format(i.valid_from_us, from, sizeof from);
    if (i.valid_until_us != GM_RATING_NO_END)
        gm_time_format(i.valid_until_us, until, sizeof until);
    snprintf(buf, len,
             "card %s v%lld%s: %s (%d minor digits), %zu models%s, %zu site tiers, %zu sites "
             "(others: %s), valid from %s until %s",
             i.card_id, (long long)i.version, i.is_default_card ? " (default card)" : "",
             i.currency, i.minor_units, i.n_models,
             i.reject_unknown_models ? " (unknown models rejected)" : " + default", i.n_site_tiers,
             i.n_sites, i.default_site_tier, from, until);
}

static void describe_contract(const gm_rating_contract *k, char *buf, size_t len)
{
    gm_rating_contract_info i;
    gm_rating_contract_get_info(k, &i);
    char commit[48], credit[48], pct[48];
    gm_rating_format_minor(i.minimum_commitment_minor, i.minor_units, commit, sizeof commit);
    gm_rating_format_minor(i.prepaid_credits_minor, i.minor_units, credit, sizeof credit);
    gm_dec_format(i.discount_percent_e4, 4, pct, sizeof pct);
    for (size_t n = strlen(pct); n > 0 && (pct[n - 1] == '0' || pct[n - 1] == '.'); n--) {
        bool dot = pct[n - 1] == '.';
        pct[n - 1] = '\0';
        if (dot)
            break;
    }
    snprintf(buf, len,
             "contract of tenant %s: %s, card %s, %zu price overrides, %zu tier rules, discount "
             "%s%%, minimum commitment %s, prepaid credits %s",
             i.tenant, i.currency, i.card_id ? i.card_id : "(default)", i.n_price_overrides,
             i.n_tier_rules, pct, commit, credit);
    if (i.term_commitment_minor > 0) {
        /* A total over a term (docs/rating.md, "Total over a term"). */
        char total[48], from[40], until[40];
        gm_rating_format_minor(i.term_commitment_minor, i.minor_units, total, sizeof total);
        gm_time_format(i.commitment_start_us, from, sizeof from);
        gm_time_format(i.commitment_end_us, until, sizeof until);
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, ", term commitment %s over [%s, %s)", total, from, until);
    }
}

static int cmd_validate(int argc, char **argv, bool import)
{
    const gm_cmd_info info = {
        import ? "ratecard import" : "ratecard validate",
        import ? "Validate rate card versions and tenant contracts (JSON files) and import them "
                 "into PostgreSQL. A card version is never rewritten; a changed contract becomes "
                 "the tenant's next contract version."
               : "Validate rate card versions and tenant contracts (JSON files; a document with "
                 "a top-level \"tenant\" is a contract). Each file alone, then all together in "
                 "one book (cards first), so that conflicts between files show too. Prints one "
                 "line per file; exits 1 if any is invalid. Format: docs/rating.md.",
        import ? "gridmeter ratecard import [--db CONNINFO] [--allow-closed-months] FILE..."
               : "gridmeter ratecard validate FILE..."};
    gm_opt import_opts[] = {{"db", "db.conninfo", "GRIDMETER_DB", "", GM_OPT_STR,
                             "libpq conninfo; empty means PGHOST, PGPORT, PGDATABASE, PGUSER", 0,
                             0},
                            {"allow-closed-months", NULL, NULL, NULL, GM_OPT_FLAG,
                             "import a contract version whose effective_from reaches a month "
                             "already invoiced (re-rate those months after it)",
                             0, 0},
                            {0}};
    gm_opt no_opts[] = {{0}};
    gm_opt *opts = import ? import_opts : no_opts;
    char err[1024];
    int n_pos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &n_pos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter %s: %s\n", info.name, err), 2);
    if (n_pos == 0) {
        fprintf(stderr, "gridmeter %s: name at least one FILE (see --help)\n", info.name);
        return 2;
    }
    int bad = 0;
    gm_rating_book *book = gm_rating_book_new();
    char **text = gm_xcalloc((size_t)n_pos, sizeof *text);
    size_t *len = gm_xcalloc((size_t)n_pos, sizeof *len);
    bool *contract = gm_xcalloc((size_t)n_pos, sizeof *contract);
    for (int i = 0; i < n_pos; i++) {
        const char *path = argv[1 + i];
        char why[512];
        text[i] = gm_read_file(path, &len[i], why, sizeof why);
        if (!text[i]) {
            size_t pl = strlen(path); /* why starts with "PATH: " */
            printf("%s: error: %s\n", path, strncmp(why, path, pl) ? why : why + pl + 2);
            bad++;
            continue;
        }
        contract[i] = is_contract(text[i], len[i]);
        char what[1024];
        if (contract[i]) {
            gm_rating_contract *k;
            rc = gm_rating_contract_parse(text[i], len[i], &k, err, sizeof err);
            if (!rc) {
                describe_contract(k, what, sizeof what);
                gm_rating_contract_free(k);
            }
        } else {
            gm_rating_card *c;
            rc = gm_rating_card_parse(text[i], len[i], &c, err, sizeof err);
            if (!rc) {
                describe_card(c, what, sizeof what);
                gm_rating_card_free(c);
            }
        }
        if (rc) {
            printf("%s: error: %s\n", path, err);
            free(text[i]);
            text[i] = NULL;
            bad++;
        } else {
            printf("%s: ok: %s\n", path, what);
        }
    }
    /* Together: cards first, then contracts. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n_pos; i++) {
            if (!text[i] || contract[i] != (pass == 1))
                continue;
            rc = contract[i] ? gm_rating_book_add_contract(book, text[i], len[i], err, sizeof err)
                             : gm_rating_book_add_card(book, text[i], len[i], err, sizeof err);
            if (rc) {
                printf("%s: error: together with the files before it: %s\n", argv[1 + i], err);
                bad++;
            }
        }
    /* Contracts against the cards given (validate only: an import checks against the cards
     * already stored): the card a contract names exists, and tier rules name known models
     * (regression: validate accepted both). */
    if (!import && !bad && gm_rating_book_check_contracts(book, err, sizeof err)) {
        printf("together: error: %s\n", err);
        bad++;
    }
    gm_rating_book_free(book);
    if (import && !bad) {
        PGconn *pg = gm_pg_connect(gm_opt_str(opts, "db"), "gridmeter-ratecard", err, sizeof err);
        if (!pg) {
            fprintf(stderr, "gridmeter ratecard import: %s\n", err);
            bad++;
        }
        for (int pass = 0; pass < 2 && !bad; pass++)
            for (int i = 0; i < n_pos && !bad; i++) {
                if (contract[i] != (pass == 1))
                    continue;
                char msg[512] = "";
                rc = gm_ledger_import_flags(
                    pg, text[i], len[i],
                    gm_opt_flag(opts, "allow-closed-months") ? GM_LEDGER_IMPORT_ALLOW_CLOSED : 0,
                    msg, sizeof msg, err, sizeof err);
                if (rc) {
                    printf("%s: import error: %s\n", argv[1 + i], err);
                    bad++;
                } else {
                    printf("%s: imported: %s\n", argv[1 + i], msg);
                }
            }
        PQfinish(pg);
    }
    for (int i = 0; i < n_pos; i++)
        free(text[i]);
    free(text);
    free(len);
    free(contract);
    return bad ? 1 : 0;
}

static int cmd_show(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "ratecard show",
        "Print a card's effective prices, one line per model, site tier and dimension (after "
        "multipliers and tier prices), as price per unit with 12 fraction digits, and its sites.",
        "gridmeter ratecard show FILE"};
    gm_opt opts[] = {{0}};
    char err[1024];
    int n_pos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &n_pos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter ratecard show: %s\n", err), 2);
    if (n_pos != 1) {
        fprintf(stderr, "gridmeter ratecard show: name one card FILE\n");
        return 2;
    }
    size_t len;
    char why[512];
    char *text = gm_read_file(argv[1], &len, why, sizeof why);
    if (!text) {
        fprintf(stderr, "gridmeter ratecard show: %s\n", why);
        return 2;
    }
    gm_rating_card *c;
    rc = gm_rating_card_parse(text, len, &c, err, sizeof err);
    free(text);
    if (rc) {
        printf("%s: error: %s\n", argv[1], err);
        return 1;
    }
    char what[1024];
    describe_card(c, what, sizeof what);
    printf("# %s\n# model\tsite_tier\tdimension\tprice\tper\n", what);
    const gm_rating_price_row *rows;
    size_t n = gm_rating_card_prices(c, &rows);
    for (size_t i = 0; i < n; i++) {
        char p[48];
        gm_dec_format(rows[i].price_p, 12, p, sizeof p);
        printf("%s\t%s\t%s\t%s\t%s\n", rows[i].model, rows[i].site_tier, gm_dim_name(rows[i].dim),
               p,
               rows[i].dim == GM_DIM_GPU       ? "gpu_second"
               : rows[i].dim == GM_DIM_REQUEST ? "request"
                                               : "token");
    }
    const gm_rating_site_row *sites;
    n = gm_rating_card_sites(c, &sites);
    printf("# site\tsite_tier\n");
    for (size_t i = 0; i < n; i++)
        printf("%s\t%s\n", sites[i].site, sites[i].site_tier);
    /* Price variants (docs/rating.md, "Price variants"): the service tiers' multipliers, then
     * the price of every variant but the base one (context rows and service tiers applied). */
    printf("# service_tier\tmultiplier\n");
    for (int s = 1; s < GM_RATING_SVC_COUNT; s++) {
        int64_t m = gm_rating_card_service_multiplier(c, (gm_rating_svc)s);
        char mt[48];
        if (m)
            gm_dec_format(m, 6, mt, sizeof mt);
        printf("%s\t%s\n", gm_rating_svc_name((gm_rating_svc)s),
               m ? mt : "not listed (priced as standard)");
    }
    gm_rating_variant_row *vr = NULL;
    if ((rc = gm_rating_card_variant_prices(c, &vr, &n, err, sizeof err))) {
        printf("%s: error: %s\n", argv[1], err);
        gm_rating_card_free(c);
        return 1;
    }
    printf("# model\tsite_tier\tvariant\tdimension\tprice\tper\n");
    for (size_t i = 0; i < n; i++) {
        char p[48];
        gm_dec_format(vr[i].price_p, 12, p, sizeof p);
        printf("%s\t%s\t%s\t%s\t%s\t%s\n", vr[i].model, vr[i].site_tier, vr[i].variant,
               gm_dim_name(vr[i].dim), p,
               vr[i].dim == GM_DIM_GPU       ? "gpu_second"
               : vr[i].dim == GM_DIM_REQUEST ? "request"
                                             : "token");
    }
    free(vr);
    gm_rating_card_free(c);
    return 0;
}

int gm_cmd_ratecard(int argc, char **argv)
{
    const char *usage = "usage: gridmeter ratecard validate FILE...   check cards and contracts\n"
                        "       gridmeter ratecard show FILE          a card's effective prices\n"
                        "       gridmeter ratecard import FILE...     validate, then store in "
                        "PostgreSQL\n"
                        "Formats: docs/rating.md.\n";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "validate"))
        return cmd_validate(argc - 1, argv + 1, false);
    if (!strcmp(argv[1], "import"))
        return cmd_validate(argc - 1, argv + 1, true);
    if (!strcmp(argv[1], "show"))
        return cmd_show(argc - 1, argv + 1);
    fprintf(stderr, "gridmeter ratecard: unknown action \"%s\"\n%s", argv[1], usage);
    return 2;
}
