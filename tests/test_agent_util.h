/* Helpers of the node agent tests (tests/test_agent_util.c): HTTP requests to an agent over its
 * Unix socket or its loopback port with libcurl, and starting `gridmeter agent` as a child. */
#ifndef GM_TEST_AGENT_UTIL_H
#define GM_TEST_AGENT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ta_resp {
    long status; /* 0: no answer (transport error: the agent was killed, refused, …) */
    char *body;  /* NUL-terminated, "" when none */
    int retry_after_s;
    char transport_error[256];
} ta_resp;

/* One request; socket_path != NULL: over the Unix socket, else to 127.0.0.1:port. The handle
 * is kept per thread (keep-alive). method NULL: POST with a body, GET without. */
void ta_request(const char *socket_path, int port, const char *method, const char *path,
                const char *content_type, const char *body, size_t len, ta_resp *out);
void ta_resp_free(ta_resp *r);
/* Closes this thread's kept handle. */
void ta_close(void);

/* The integer value of "key": N in a JSON text (first occurrence); -1 when absent. */
long long ta_json_int(const char *json, const char *key);
/* Counts occurrences of needle in s. */
size_t ta_count(const char *s, const char *needle);

/* Starts `gridmeter agent` (GM_GRIDMETER) with the given arguments (NULL-terminated), stdout
 * and stderr appended to log_path, and waits until its /healthz answers over socket_path (or
 * until timeout_ms). Returns the pid. */
pid_t ta_agent_start(const char *const *args, const char *log_path, const char *socket_path,
                     int timeout_ms);
/* SIGTERM and wait; returns the exit status (-1 when killed by a signal). */
int ta_agent_stop(pid_t pid);
void ta_agent_kill9(pid_t pid);

#endif
