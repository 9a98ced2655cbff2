/* What a message the decoder refused still says about its identity (gm_event_identity_of in
 * gm_ingest.h): a lenient cJSON read of source, id, data.seq, data.epoch, subject and time,
 * each kept only when it passes the contract's own rule (an epoch that breaks its rule makes
 * the identity unreadable: its seq cannot be placed in an epoch). Used for the reject's columns, so
 * that a seq that arrived and was refused is no gap (audit.source_gaps). Apart from the strict
 * decoder so that the decoder (and its fuzz target) stays free of cJSON. */
#include "event_internal.h"

#include <cjson/cJSON.h>
#include <string.h>

static bool ident_field(const cJSON *o, const char *name, char *dst, gm_ident_kind kind)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v))
        return false;
    size_t n = strlen(v->valuestring);
    char rule[192];
    if (event__ident_check(v->valuestring, n, kind, false, rule, sizeof rule))
        return false;
    memcpy(dst, v->valuestring, n + 1);
    return true;
}

bool gm_event_identity_of(const char *msg, size_t len, gm_event *out)
{
    memset(out, 0, sizeof *out);
    out->time_us = INT64_MIN;
    if (len > GM_EVENT_MAX_BYTES)
        return false;
    cJSON *root = cJSON_ParseWithLength(msg, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return false;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    const cJSON *seq = cJSON_IsObject(data) ? cJSON_GetObjectItemCaseSensitive(data, "seq") : NULL;
    const cJSON *epoch =
        cJSON_IsObject(data) ? cJSON_GetObjectItemCaseSensitive(data, "epoch") : NULL;
    bool ok = ident_field(root, "source", out->source, GM_IDENT_SOURCE) &&
              ident_field(root, "id", out->id, GM_IDENT_EVENT_ID) && cJSON_IsNumber(seq) &&
              seq->valuedouble >= 1 && seq->valuedouble <= 9007199254740991.0 &&
              seq->valuedouble == (double)(int64_t)seq->valuedouble &&
              (!epoch || (cJSON_IsNumber(epoch) && epoch->valuedouble >= 0 &&
                          epoch->valuedouble <= 9007199254740991.0 &&
                          epoch->valuedouble == (double)(int64_t)epoch->valuedouble));
    if (ok) {
        out->seq = (uint64_t)seq->valuedouble;
        out->epoch = epoch ? (int64_t)epoch->valuedouble : 0;
        if (!ident_field(root, "subject", out->tenant, GM_IDENT_TENANT))
            out->tenant[0] = '\0';
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "time");
        char rule[160];
        int64_t us;
        if (cJSON_IsString(t) &&
            gm_time_parse(t->valuestring, strlen(t->valuestring), &us, rule, sizeof rule) == 0 &&
            us <= EVENT__TIME_MAX_US)
            out->time_us = us;
    } else {
        memset(out, 0, sizeof *out);
        out->time_us = INT64_MIN;
    }
    cJSON_Delete(root);
    return ok;
}
