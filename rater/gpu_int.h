/* Internal to rater/: the GPU window consumer (rater/gpu.c), a second Kafka consumer in the
 * rater's process that writes gridmeter.gpu.v1 events into gm.gpu_windows exactly once. */
#ifndef GM_RATER_GPU_INT_H
#define GM_RATER_GPU_INT_H

#include "gm_rater.h"

typedef struct gm_rater_gpu gm_rater_gpu;

/* Subscribes to cfg->gpu_topic and starts the consumer's thread. *out is NULL (and 0 is
 * returned) when cfg->gpu_topic is NULL or "": no GPU consumer. GM_EKAFKA / GM_EDB with the
 * reason in err when it cannot start. The thread runs until *stop, or gm_rater_gpu_stop. */
int gm_rater_gpu_start(const gm_rater_config *cfg, const char *rater_id,
                       volatile sig_atomic_t *stop, gm_rater_gpu **out, char *err,
                       size_t err_len) GM_MUSTCHECK;
/* Stops and frees the consumer (NULL is fine). when_idle: let it finish what it has first
 * (it exits after cfg->exit_idle_ms with nothing to do, as the usage loop does); otherwise
 * the batch in flight is finished or abandoned and it stops at once. */
void gm_rater_gpu_stop(gm_rater_gpu *g, bool when_idle);

#endif
