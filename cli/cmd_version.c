/* `gridmeter version`: the build and the versions of the libraries it runs with. */
#include "cli.h"
#include "gm_common.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>

int gm_cmd_version(int argc, char **argv)
{
    static const gm_cmd_info info = {"version", "Print the version and library versions.",
                                     "gridmeter version"};
    gm_opt opts[] = {{0}};
    char err[256];
    int rc = gm_opts_parse(&info, opts, argc, argv, NULL, err, sizeof err);
    if (rc)
        return rc == 1 ? 0 : (fprintf(stderr, "gridmeter version: %s\n", err), 2);
    printf("gridmeter %s\n", GM_VERSION);
    printf("librdkafka %s\n", rd_kafka_version_str());
    printf("libpq %d\n", PQlibVersion());
    printf("libmicrohttpd %s\n", MHD_get_version());
    printf("cJSON %s\n", cJSON_Version());
    return 0;
}
