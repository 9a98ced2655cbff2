/* `gridmeter agent`: the node agent as a long-running process (agent/gm_agent.h): usage events
 * over a Unix socket and a loopback HTTP port into the node client's spool, GPU accounting in
 * the same process. Stops on SIGTERM or SIGINT: answers what is in progress, tries to deliver
 * for --close-timeout-ms, keeps the rest in the spool. docs/node-agent.md. */
#include "cli.h"
#include "gm_agent.h"
#include "gm_common.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int gm_cmd_agent(int argc, char **argv)
{
    static const gm_cmd_info info = {
        "agent",
        "Run the node agent: inference servers in any language send usage events (JSON lines,\n"
        "CloudEvents batches or single events) over a Unix socket or a loopback HTTP port;\n"
        "each is checked by the strict decoder, completed (source, time, site, id and seq) and\n"
        "recorded in the node client's spool before the answer says so, then produced to Kafka.\n"
        "GPU accounting (--gpu cupti|feed) fills gpu_us per request and writes gridmeter.gpu.v1\n"
        "windows. Stops on SIGTERM/SIGINT; exit 0, 1 when it could not start, 2 on bad options.",
        "gridmeter agent [options]"};
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    char def_source[128];
    snprintf(def_source, sizeof def_source, "edge/local/%s", host);
    for (char *p = def_source; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/", *p))
            *p = '-';
    gm_opt opts[] = {
        {"brokers", "kafka.brokers", "GRIDMETER_KAFKA_BROKERS", GM_DEFAULT_KAFKA_BROKERS,
         GM_OPT_STR, "Kafka bootstrap servers", 0, 0},
        {"topic", "kafka.topic", "GRIDMETER_TOPIC", GM_NODE_DEFAULT_TOPIC, GM_OPT_STR,
         "topic of the usage events", 0, 0},
        {"source", "node.source", "GRIDMETER_NODE_SOURCE", def_source, GM_OPT_STR,
         "CloudEvents source of this node (events without one get it)", 0, 0},
        {"site", "node.site", "GRIDMETER_NODE_SITE", "local", GM_OPT_STR,
         "data.site for events without one", 0, 0},
        {"spool-dir", "node.spool_dir", "GRIDMETER_SPOOL_DIR", ".var/spool/agent", GM_OPT_STR,
         "spool directory (one agent at a time); the GPU spool is <dir>/gpu", 0, 0},
        {"spool-max-bytes", "node.spool_max_bytes", NULL, "1073741824", GM_OPT_INT,
         "bound on the usage spool: at it, requests are answered 429", 0, 0},
        {"socket", "agent.socket", "GRIDMETER_AGENT_SOCKET", ".var/agent.sock", GM_OPT_STR,
         "Unix socket path (HTTP over it); \"\" for none", 0, 0},
        {"socket-mode", "agent.socket_mode", NULL, "0660", GM_OPT_STR,
         "permissions of the socket file (octal)", 0, 0},
        {"listen", "agent.listen", "GRIDMETER_AGENT_LISTEN", "127.0.0.1:9731", GM_OPT_STR,
         "loopback HTTP address:port (127.0.0.0/8 or [::1]); \"\" for none", 0, 0},
        {"durability", "agent.durability", NULL, "spool", GM_OPT_STR,
         "spool: accepted = in the spool file (survives kill -9); disk: also fsynced", 0, 0},
        {"sync-timeout-ms", "agent.sync_timeout_ms", NULL, "5000", GM_OPT_INT,
         "--durability disk: how long an answer waits for the fsync", 0, 0},
        {"threads", "agent.threads", NULL, "2", GM_OPT_INT, "HTTP worker threads per listener", 0,
         0},
        {"max-connections", "agent.max_connections", NULL, "256", GM_OPT_INT,
         "connections per listener", 0, 0},
        {"max-body-bytes", "agent.max_body_bytes", NULL, "4194304", GM_OPT_INT,
         "largest request body (413 above it)", 0, 0},
        {"max-events", "agent.max_events", NULL, "10000", GM_OPT_INT,
         "most events in one request (413 above it)", 0, 0},
        {"allow-other-sources", "agent.allow_other_sources", NULL, NULL, GM_OPT_FLAG,
         "accept events that name another source (a gateway)", 0, 0},
        {"retry-after-s", "agent.retry_after_s", NULL, "1", GM_OPT_INT,
         "Retry-After of a 429 (spool full)", 0, 0},
        {"linger-ms", "node.linger_ms", NULL, "5", GM_OPT_INT, "producer linger.ms", 0, 0},
        {"message-timeout-ms", "node.message_timeout_ms", NULL, "300000", GM_OPT_INT,
         "producer message.timeout.ms (a timed-out event is produced again from the spool)", 0, 0},
        {"close-timeout-ms", "node.close_timeout_ms", NULL, "5000", GM_OPT_INT,
         "at stop, how long to try to deliver (the rest stays in the spool)", 0, 0},
        {"gpu", "gpu.mode", "GRIDMETER_AGENT_GPU", "off", GM_OPT_STR,
         "GPU accounting: off, cupti (the collector in this process), feed (steps over the "
         "socket)",
         0, 0},
        {"gpu-topic", "gpu.topic", NULL, "gridmeter.gpu.v1", GM_OPT_STR,
         "topic of the gridmeter.gpu.v1 windows", 0, 0},
        {"gpu-source", "gpu.source", NULL, NULL, GM_OPT_STR,
         "source of the gpu.v1 events (default <source>/gpu)", 0, 0},
        {"gpu-spool-max-bytes", "gpu.spool_max_bytes", NULL, "268435456", GM_OPT_INT,
         "bound on the GPU spool", 0, 0},
        {"gpu-window-ms", "gpu.window_ms", NULL, "10000", GM_OPT_INT, "attribution window", 0, 0},
        {"gpu-grace-ms", "gpu.grace_ms", NULL, "2000", GM_OPT_INT,
         "a window closes this long after its end", 0, 0},
        {"gpu-flush-ms", "gpu.flush_ms", NULL, "1000", GM_OPT_INT, "how often windows are closed",
         0, 0},
        {"prefill-weight", "gpu.prefill_weight", NULL, "1", GM_OPT_INT,
         "weight of a prefill token in a step's split", 0, 0},
        {"decode-weight", "gpu.decode_weight", NULL, "1", GM_OPT_INT,
         "weight of a decode token in a step's split", 0, 0},
        {"cupti-path", "gpu.cupti_path", NULL, NULL, GM_OPT_STR,
         "libcupti to load (default libcupti.so.13, then libcupti.so)", 0, 0},
        {"gpu-max-wait-ms", "gpu.max_wait_ms", NULL, "0", GM_OPT_INT,
         "longest wait of a usage event for its windows (0: 2 x (window + grace + flush) + "
         "30 s)",
         0, 0},
        {"gpu-request-ttl-s", "gpu.request_ttl_s", NULL, "600", GM_OPT_INT,
         "how long a request's GPU time waits for its usage event", 0, 0},
        {"require-state", "node.require_state", NULL, NULL, GM_OPT_FLAG,
         "refuse to start when the spool holds no state (lost or wiped: see --new-epoch)", 0, 0},
        {"new-epoch", NULL, NULL, NULL, GM_OPT_FLAG,
         "start a new epoch of the source now: seq from 1, data.epoch = the Unix time", 0, 0},
        {"new-epoch-if-lost", "node.new_epoch_if_lost", NULL, NULL, GM_OPT_FLAG,
         "when the spool holds no state, start a new epoch instead of epoch 0", 0, 0},
        {"progress", NULL, NULL, NULL, GM_OPT_FLAG,
         "a status line every second even when stderr is not a terminal", 0, 0},
        {0}};
    char err[1024];
    int npos = 0;
    int rc = gm_opts_parse(&info, opts, argc, argv, &npos, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter agent: %s\n", err), 2);
    if (npos) {
        fprintf(stderr, "gridmeter agent: unexpected argument \"%s\"\n", argv[1]);
        return 2;
    }
    gm_agent_config cfg;
    gm_agent_config_init(&cfg);
    cfg.node.brokers = gm_opt_str(opts, "brokers");
    cfg.node.topic = gm_opt_str(opts, "topic");
    cfg.node.source = gm_opt_str(opts, "source");
    cfg.node.site = gm_opt_str(opts, "site");
    cfg.node.spool_dir = gm_opt_str(opts, "spool-dir");
    cfg.node.new_epoch = gm_opt_flag(opts, "new-epoch");
    cfg.node.missing_state = gm_opt_flag(opts, "require-state")       ? GM_NODE_STATE_REQUIRE
                             : gm_opt_flag(opts, "new-epoch-if-lost") ? GM_NODE_STATE_NEW_EPOCH
                                                                      : GM_NODE_STATE_FIRST_START;
    cfg.node.spool_max_bytes = (uint64_t)gm_opt_int(opts, "spool-max-bytes");
    cfg.node.linger_ms = (int)gm_opt_int(opts, "linger-ms");
    cfg.node.message_timeout_ms = (int)gm_opt_int(opts, "message-timeout-ms");
    cfg.node.close_timeout_ms = (int)gm_opt_int(opts, "close-timeout-ms");
    cfg.socket_path = gm_opt_str(opts, "socket");
    const char *mode = gm_opt_str(opts, "socket-mode");
    char *end = NULL;
    long m = strtol(mode, &end, 8);
    if (!*mode || *end || m <= 0 || m > 0777) {
        fprintf(stderr, "gridmeter agent: --socket-mode must be octal 1..0777, got \"%s\"\n", mode);
        return 2;
    }
    cfg.socket_mode = (int)m;
    /* --listen ADDR:PORT, [v6]:PORT */
    static char addr[64];
    const char *listen = gm_opt_str(opts, "listen");
    if (listen && *listen) {
        const char *colon = strrchr(listen, ':');
        const char *a0 = listen, *a1 = colon;
        if (listen[0] == '[') {
            const char *rb = strchr(listen, ']');
            if (!rb || rb[1] != ':') {
                fprintf(stderr, "gridmeter agent: --listen must be ADDR:PORT or [V6]:PORT\n");
                return 2;
            }
            a0 = listen + 1, a1 = rb, colon = rb + 1;
        }
        uint64_t port = 0;
        if (!colon || (size_t)(a1 - a0) >= sizeof addr ||
            gm_parse_u64(colon + 1, strlen(colon + 1), 65535, &port)) {
            fprintf(stderr,
                    "gridmeter agent: --listen must be ADDR:PORT (e.g. 127.0.0.1:9731), "
                    "got \"%s\"\n",
                    listen);
            return 2;
        }
        memcpy(addr, a0, (size_t)(a1 - a0));
        addr[a1 - a0] = '\0';
        cfg.listen_addr = addr;
        cfg.listen_port = (int)port;
    }
    const char *dur = gm_opt_str(opts, "durability");
    if (!strcmp(dur, "spool"))
        cfg.durability = GM_AGENT_DURABLE_SPOOL;
    else if (!strcmp(dur, "disk"))
        cfg.durability = GM_AGENT_DURABLE_DISK;
    else {
        fprintf(stderr, "gridmeter agent: --durability must be spool or disk, got \"%s\"\n", dur);
        return 2;
    }
    cfg.sync_timeout_ms = (int)gm_opt_int(opts, "sync-timeout-ms");
    cfg.threads = (int)gm_opt_int(opts, "threads");
    cfg.max_connections = (int)gm_opt_int(opts, "max-connections");
    int64_t mb = gm_opt_int(opts, "max-body-bytes"), me = gm_opt_int(opts, "max-events");
    if (mb < 1024 || me < 1) {
        fprintf(stderr, "gridmeter agent: --max-body-bytes must be >= 1024, --max-events >= 1\n");
        return 2;
    }
    cfg.max_body_bytes = (size_t)mb;
    cfg.max_events = (size_t)me;
    cfg.allow_other_sources = gm_opt_flag(opts, "allow-other-sources");
    cfg.retry_after_s = (int)gm_opt_int(opts, "retry-after-s");
    const char *gpu = gm_opt_str(opts, "gpu");
    if (!strcmp(gpu, "off"))
        cfg.gpu = GM_AGENT_GPU_OFF;
    else if (!strcmp(gpu, "cupti"))
        cfg.gpu = GM_AGENT_GPU_CUPTI;
    else if (!strcmp(gpu, "feed"))
        cfg.gpu = GM_AGENT_GPU_FEED;
    else {
        fprintf(stderr, "gridmeter agent: --gpu must be off, cupti or feed, got \"%s\"\n", gpu);
        return 2;
    }
    cfg.gpu_topic = gm_opt_str(opts, "gpu-topic");
    cfg.gpu_source = gm_opt_str(opts, "gpu-source");
    cfg.gpu_spool_max_bytes = (uint64_t)gm_opt_int(opts, "gpu-spool-max-bytes");
    int64_t win = gm_opt_int(opts, "gpu-window-ms"), grace = gm_opt_int(opts, "gpu-grace-ms"),
            flush = gm_opt_int(opts, "gpu-flush-ms"), pw = gm_opt_int(opts, "prefill-weight"),
            dw = gm_opt_int(opts, "decode-weight");
    if (win < 1 || grace < 1 || flush < 1 || pw < 0 || dw < 0 || pw > 1000000 || dw > 1000000 ||
        (pw == 0 && dw == 0)) {
        fprintf(stderr, "gridmeter agent: --gpu-window-ms, --gpu-grace-ms and --gpu-flush-ms "
                        "must be >= 1; the weights 0..1000000, not both 0\n");
        return 2;
    }
    cfg.gpu_conf.window_ns = (uint64_t)win * 1000000u;
    cfg.gpu_conf.grace_ns = (uint64_t)grace * 1000000u;
    cfg.gpu_conf.flush_ms = (uint32_t)flush;
    cfg.gpu_conf.prefill_weight = (uint32_t)pw;
    cfg.gpu_conf.decode_weight = (uint32_t)dw;
    cfg.gpu_conf.cupti_path = gm_opt_str(opts, "cupti-path");
    cfg.gpu_request_ttl_s = (int)gm_opt_int(opts, "gpu-request-ttl-s");
    cfg.gpu_max_wait_ms = (int)gm_opt_int(opts, "gpu-max-wait-ms");
    cfg.progress = gm_opt_flag(opts, "progress") || isatty(2);

    /* signals are taken by this thread only: block them before any thread starts */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    gm_agent *a = NULL;
    if (gm_agent_open(&cfg, &a, err, sizeof err)) {
        fprintf(stderr, "gridmeter agent: %s\n", err);
        return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    gm_info("agent", "msg=\"stopping on a signal\" signal=%s", sig == SIGTERM ? "TERM" : "INT");
    gm_agent_close(a); /* logs the summary; what Kafka did not acknowledge stays in the spool */
    return 0;
}
