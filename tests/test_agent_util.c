/* Helpers of the node agent tests: HTTP over the agent's Unix socket or loopback port with
 * libcurl (one kept handle per thread, as a server's client would keep its connection), and
 * the `gridmeter agent` child process. */
#include "test_agent_util.h"
#include "gm_common.h"
#include "support.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct sink {
    char *p;
    size_t len, cap;
} sink;

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t k = size * n;
    if (s->len + k + 1 > s->cap) {
        s->cap = (s->len + k + 1) * 2;
        s->p = gm_xrealloc(s->p, s->cap);
    }
    memcpy(s->p + s->len, ptr, k);
    s->len += k;
    s->p[s->len] = '\0';
    return k;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *arg)
{
    ta_resp *r = arg;
    size_t k = size * n;
    if (k > 12 && !strncasecmp(ptr, "Retry-After:", 12))
        r->retry_after_s = atoi(ptr + 12);
    return k;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static __thread CURL *t_curl;
static __thread char t_target[300];

void ta_close(void)
{
    if (t_curl)
        curl_easy_cleanup(t_curl);
    t_curl = NULL;
    t_target[0] = '\0';
}

void ta_request(const char *socket_path, int port, const char *method, const char *path,
                const char *content_type, const char *body, size_t len, ta_resp *out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    memset(out, 0, sizeof *out);
    char target[300];
    snprintf(target, sizeof target, "%s:%d", socket_path ? socket_path : "", port);
    if (!t_curl || strcmp(target, t_target)) {
        ta_close();
        t_curl = curl_easy_init();
        snprintf(t_target, sizeof t_target, "%s", target);
    }
    CURL *c = t_curl;
    curl_easy_reset(c);
    char url[256];
    snprintf(url, sizeof url, "http://%s:%d%s", socket_path ? "agent" : "127.0.0.1",
             socket_path ? 80 : port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (socket_path)
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    struct curl_slist *h = NULL;
    char ct[300];
    if (content_type) {
        snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
        h = curl_slist_append(h, ct);
    } else if (body) {
        h = curl_slist_append(h, "Content-Type:"); /* none at all (curl would add one) */
    }
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    if (method)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    sink s = {0};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(out->transport_error, sizeof out->transport_error, "%s", curl_easy_strerror(rc));
        out->status = 0;
        ta_close(); /* a broken connection is not kept */
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    }
    out->body = s.p ? s.p : gm_xstrdup("");
}

void ta_resp_free(ta_resp *r)
{
    free(r->body);
    r->body = NULL;
}

long long ta_json_int(const char *json, const char *key)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? atoll(p + strlen(pat)) : -1;
}

size_t ta_count(const char *s, const char *needle)
{
    size_t n = 0, l = strlen(needle);
    for (const char *p = s; (p = strstr(p, needle)); p += l)
        n++;
    return n;
}

pid_t ta_agent_start(const char *const *args, const char *log_path, const char *socket_path,
                     int timeout_ms)
{
    gm_test_clock_to_children();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        FILE *f = freopen(log_path, "a", stdout);
        if (!f || !freopen(log_path, "a", stderr))
            _exit(126);
        setvbuf(stdout, NULL, _IONBF, 0);
        const char *argv[64];
        size_t n = 0;
        argv[n++] = GM_GRIDMETER;
        argv[n++] = "agent";
        for (size_t i = 0; args[i] && n < 63; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(GM_GRIDMETER, (char *const *)argv);
        _exit(127);
    }
    int64_t deadline = gm_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "the agent exited at start (log: %s)",
                      log_path);
        ta_resp r;
        ta_request(socket_path, 0, NULL, "/healthz", NULL, NULL, 0, &r);
        long status = r.status;
        ta_resp_free(&r);
        if (status == 200 || status == 503)
            return pid;
        ck_assert_msg(gm_mono_us() < deadline, "the agent did not answer /healthz (log: %s)",
                      log_path);
        usleep(50 * 1000);
    }
}

int ta_agent_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void ta_agent_kill9(pid_t pid)
{
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
}
