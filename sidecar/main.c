/* SPDX-License-Identifier: Apache-2.0 */
/* meshd: flags, configuration, then the control thread. Wiring only. */
#include "bundle.h"
#include "core/err.h"
#include "core/log.h"
#include "loop/control.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define MAX_WORKERS 256

struct options {
    const char *bundle;
    long concurrency;
    double drain_timeout_s;
    enum md_log_level level;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: meshd [--bundle FILE.pb] [--concurrency N] [--log-level LEVEL]\n"
            "             [--drain-timeout SECONDS] [--help] [--version]\n"
            "\n"
            "  --bundle FILE.pb        configuration: a binary mesh.v1.Bundle (meshctl encode).\n"
            "                          Without it meshd runs its built-in default bundle:\n"
            "                          listener \"inbound\" 0.0.0.0:15006 -> 127.0.0.1:8080,\n"
            "                          admin on 127.0.0.1:15000.\n"
            "  --concurrency N         worker threads, 1-%d (default: number of CPUs)\n"
            "  --log-level LEVEL       debug, info, warn or error (default info)\n"
            "  --drain-timeout SECONDS on SIGTERM/SIGINT, how long open connections may\n"
            "                          finish before they are closed (default 30)\n"
            "  --help, --version\n"
            "\n"
            "Exit codes: 0 after a drain, 1 on a runtime failure (e.g. a port in use),\n"
            "2 for bad flags or a bad bundle.\n",
            MAX_WORKERS);
}

static int bad_value(const char *flag, const char *v, const char *want)
{
    fprintf(stderr, "meshd: error: %s: invalid value \"%s\" (want %s)\n", flag, v, want);
    return EXIT_USAGE;
}

/* Returns -1 to go on, or the exit code. */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"bundle", required_argument, NULL, 'b'},
        {"concurrency", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"drain-timeout", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o->concurrency = cpus > 0 ? (cpus < MAX_WORKERS ? cpus : MAX_WORKERS) : 1;
    o->drain_timeout_s = 30;
    o->level = MD_LOG_INFO;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'b': o->bundle = optarg; break;
        case 'c':
            errno = 0;
            o->concurrency = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || o->concurrency < 1 ||
                o->concurrency > MAX_WORKERS)
                return bad_value("--concurrency", optarg, "an integer 1-256");
            break;
        case 'l':
            if (md_log_parse_level(optarg, &o->level) < 0)
                return bad_value("--log-level", optarg, "debug, info, warn or error");
            break;
        case 'd':
            errno = 0;
            o->drain_timeout_s = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(o->drain_timeout_s >= 0) ||
                o->drain_timeout_s > 3600)
                return bad_value("--drain-timeout", optarg, "seconds, 0-3600");
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("meshd %s\n", MESHD_VERSION); return 0;
        case ':':
            fprintf(stderr, "meshd: error: %s needs a value (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "meshd: error: unknown flag \"%s\" (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "meshd: error: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    return -1;
}

/* Each proxied connection costs two sockets (plus pipes while splicing): take
 * the whole hard limit rather than fail at the soft default of 1024. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            MD_LOG(MD_LOG_DEBUG, "fd_limit_raised", "from=%llu to=%llu", (unsigned long long)was,
                   (unsigned long long)rl.rlim_max);
    }
}

int main(int argc, char **argv)
{
    struct options o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    md_log_set_level(o.level);

    struct md_errlist el;
    struct md_snapshot *snap = NULL;
    md_errlist_init(&el, o.bundle ? o.bundle : "(built-in default bundle)");
    rc = o.bundle ? md_bundle_load_file(o.bundle, &el, &snap)
                  : md_bundle_load_mem(md_default_bundle, md_default_bundle_len, &el, &snap);
    if (rc < 0) {
        md_errlist_print(&el, stderr);
        fprintf(stderr, "meshd: refusing to start: %zu error%s in the bundle\n", el.n,
                el.n == 1 ? "" : "s");
        md_errlist_fini(&el);
        return EXIT_USAGE;
    }
    md_errlist_fini(&el);

    signal(SIGPIPE, SIG_IGN); /* splice(2) has no MSG_NOSIGNAL */
    raise_fd_limit();
    MD_LOG(MD_LOG_INFO, "starting", "version=%s bundle=%s workers=%ld", MESHD_VERSION,
           o.bundle ? o.bundle : "default", o.concurrency);

    struct md_control ctl;
    rc = md_control_init(&ctl, snap, (size_t)o.concurrency, o.drain_timeout_s);
    if (rc == 0)
        rc = md_control_run(&ctl);
    md_control_fini(&ctl);
    md_snapshot_unref(snap);
    if (rc < 0) {
        MD_LOG(MD_LOG_ERROR, "exit", "err=%s", md_err_str(rc));
        return 1;
    }
    MD_LOG(MD_LOG_INFO, "exit", "code=0");
    return 0;
}
