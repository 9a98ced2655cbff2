/* SHA-256 of API keys and idempotent requests, from OpenSSL libcrypto (no home-made crypto). */
#include "gm_api.h"

#include <openssl/evp.h>
#include <stdlib.h>

void gm_api_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) || n != 32)
        abort(); /* libcrypto without SHA-256 is a broken installation */
}
