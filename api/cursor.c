/* List cursors (see api_edge.h): the position "<kind>|<int64>|<text>" in hex, a dot, and the
 * first 16 bytes of HMAC-SHA256 over it with the server's cursor key (OpenSSL libcrypto), so
 * that a cursor the server did not issue (altered, forged, before year 1) is refused before
 * it reaches SQL. Checked with the current key, then the previous one (key rotation). */
#include "api_edge.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#define TAG_BYTES 16
#define DOMAIN    "gridmeter-cursor-v1|"
/* [1970-01-01T00:00:00Z, 10000-01-01T00:00:00Z) in microseconds */
#define POS_MAX INT64_C(253402300800000000)

static void tag_of(const uint8_t *key, size_t key_len, const char *payload, size_t n,
                   uint8_t out[TAG_BYTES])
{
    char msg[sizeof DOMAIN + API_CURSOR_MAX];
    size_t dl = strlen(DOMAIN);
    memcpy(msg, DOMAIN, dl);
    memcpy(msg + dl, payload, n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, dl + n, mac, &ml) ||
        ml < TAG_BYTES)
        memset(mac, 0, sizeof mac); /* never matches a real tag's verification by chance */
    memcpy(out, mac, TAG_BYTES);
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[p[i] >> 4];
        out[2 * i + 1] = hx[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int unhex(const char *s, size_t n, uint8_t *out)
{
    if (n % 2)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = s[2 * i] <= '9' ? s[2 * i] - '0' : s[2 * i] - 'a' + 10;
        int lo = s[2 * i + 1] <= '9' ? s[2 * i + 1] - '0' : s[2 * i + 1] - 'a' + 10;
        out[i] = (uint8_t)(hi * 16 + lo);
    }
    return (int)(n / 2);
}

void api__cursor_sign(const api_cursor_keys *k, const char *kind, int64_t a, const char *b,
                      char *out, size_t out_len)
{
    char payload[API_CURSOR_MAX / 2];
    int n = snprintf(payload, sizeof payload, "%s|%lld|%s", kind, (long long)a, b);
    if (n < 0 || (size_t)n >= sizeof payload || (size_t)(2 * n + 1 + 2 * TAG_BYTES + 1) > out_len) {
        if (out_len)
            out[0] = 0;
        return;
    }
    uint8_t tag[TAG_BYTES];
    tag_of(k->key, k->key_len, payload, (size_t)n, tag);
    hex((const uint8_t *)payload, (size_t)n, out);
    out[2 * n] = '.';
    hex(tag, TAG_BYTES, out + 2 * n + 1);
}

int api__cursor_verify(const api_cursor_keys *k, const char *kind, const char *s, int64_t *a,
                       char *b, size_t b_len, char *err, size_t err_len)
{
    size_t n = strlen(s);
    const char *dot = memchr(s, '.', n);
    uint8_t payload[API_CURSOR_MAX / 2 + 1], tag[TAG_BYTES + 1];
    int pl = -1;
    if (n <= API_CURSOR_MAX && dot && (size_t)(s + n - dot - 1) == 2 * TAG_BYTES)
        pl = unhex(s, (size_t)(dot - s), payload);
    if (pl <= 0 || unhex(dot + 1, 2 * TAG_BYTES, tag) != TAG_BYTES)
        return gm_fail(err, err_len, GM_EINVAL,
                       "cursor: malformed (pass back the next_cursor of the previous page)");
    uint8_t want[TAG_BYTES];
    tag_of(k->key, k->key_len, (const char *)payload, (size_t)pl, want);
    bool ok = CRYPTO_memcmp(want, tag, TAG_BYTES) == 0;
    if (!ok && k->prev_len) {
        tag_of(k->prev, k->prev_len, (const char *)payload, (size_t)pl, want);
        ok = CRYPTO_memcmp(want, tag, TAG_BYTES) == 0;
    }
    if (!ok)
        return gm_fail(err, err_len, GM_EINVAL,
                       "cursor: not issued by this server, altered, or signed with a cursor key "
                       "it no longer has (start again from the first page)");
    payload[pl] = 0;
    const char *p = (const char *)payload;
    size_t kl = strlen(kind);
    if ((size_t)pl < kl + 1 || memcmp(p, kind, kl) || p[kl] != '|')
        return gm_fail(err, err_len, GM_EINVAL, "cursor: issued for another list");
    const char *num = p + kl + 1, *bar = strchr(num, '|');
    int64_t v;
    if (!bar || gm_parse_i64(num, (size_t)(bar - num), &v) || v < 0 || v >= POS_MAX)
        return gm_fail(err, err_len, GM_EINVAL,
                       "cursor: position outside 1970-01-01 to 9999-12-31");
    const char *text = bar + 1;
    size_t tl = strlen(text);
    bool clean = tl >= 1 && tl < b_len && api__utf8_valid(text, tl);
    for (size_t i = 0; clean && i < tl; i++)
        clean = (unsigned char)text[i] >= 0x20 && text[i] != 0x7f;
    if (!clean)
        return gm_fail(err, err_len, GM_EINVAL, "cursor: malformed position");
    *a = v;
    memcpy(b, text, tl + 1);
    return 0;
}
