/* Serves the dashboard's static files (embedded at build time from dashboard/, see
 * dashboard/embed.cmake) under /dashboard: GET and HEAD only, exact names from the embedded
 * table (so no path can reach anything else: no directory traversal, no file system access),
 * content types by extension, ETag revalidation (Cache-Control: no-cache), errors as
 * problem+json like every other answer, and a strict
 * Content-Security-Policy (scripts, styles and requests from this origin only; no inline
 * script or style, no frames, no plugins). The page talks to the public /v1 endpoints with
 * the user's key; nothing here reads a key or the database. */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *path;
    const unsigned char *data;
    size_t len;
    const char *etag;
} api_static_file;

extern const api_static_file api__static_files[];
extern const size_t api__static_files_count;

#define CSP                                                                                        \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "        \
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "                   \
    "frame-ancestors 'none'; object-src 'none'"

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".svg", "image/svg+xml"},
        {".json", "application/json"},         {".png", "image/png"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < GM_ARRAY_LEN(types); i++)
            if (!strcmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

static void security_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Security-Policy", CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
    MHD_add_response_header(resp, "Permissions-Policy", "camera=(), microphone=(), geolocation=()");
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *slug,
                             const char *detail, const char *instance, const char *extra_name,
                             const char *extra_value)
{
    size_t len;
    char *body = api__problem_render((int)status, slug, NULL, detail, instance, &len);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    MHD_add_response_header(resp, "Content-Type", "application/problem+json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Connection", "close");
    security_headers(resp);
    if (extra_name)
        MHD_add_response_header(resp, extra_name, extra_value);
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* True when the If-None-Match header lists etag (or is "*"). */
static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    if (!strcmp(inm, "*"))
        return true;
    size_t n = strlen(etag);
    for (const char *p = inm; (p = strstr(p, etag)); p += n)
        if ((p == inm || p[-1] == ' ' || p[-1] == ',' || p[-1] == '/') &&
            (p[n] == 0 || p[n] == ',' || p[n] == ' '))
            return true;
    return false;
}

enum MHD_Result api__static_serve(struct MHD_Connection *conn, const char *method, const char *name,
                                  const char *instance)
{
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(conn, 405, "method-not-allowed", "the dashboard answers GET and HEAD only",
                     instance, "Allow", "GET, HEAD");
    /* "/dashboard" -> "/dashboard/" so that the page's relative URLs resolve below it. */
    if (!name) {
        static const char moved[] = "moved to /dashboard/\n";
        struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof moved - 1, (void *)moved,
                                                                    MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
        MHD_add_response_header(resp, "Location", "/dashboard/");
        MHD_add_response_header(resp, "Connection", "close");
        security_headers(resp);
        enum MHD_Result ret = MHD_queue_response(conn, 308, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (!*name)
        name = "index.html";
    const api_static_file *f = NULL;
    for (size_t i = 0; i < api__static_files_count; i++)
        if (!strcmp(api__static_files[i].path, name))
            f = &api__static_files[i];
    if (!f)
        return reply(conn, 404, "not-found", "no such dashboard file", instance, NULL, NULL);
    const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");
    bool fresh = etag_matches(inm, f->etag);
    /* HEAD: libmicrohttpd sends the headers (Content-Length of the body) and no body. */
    struct MHD_Response *resp =
        fresh ? MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT)
              : MHD_create_response_from_buffer(f->len, (void *)f->data, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", content_type(f->path));
    /* Names carry no content hash, so every use revalidates (a 304 costs no body). */
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "ETag", f->etag);
    MHD_add_response_header(resp, "Connection", "close");
    security_headers(resp);
    enum MHD_Result ret =
        MHD_queue_response(conn, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}
