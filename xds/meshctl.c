/* SPDX-License-Identifier: Apache-2.0 */
/* meshctl: the operator's tool for bundles.
 *   encode FILE.textproto   text format -> binary (protoc --encode with our .proto files)
 *   decode FILE.pb          binary -> text format
 *   validate FILE.pb...     the validator meshd runs, with the same messages */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MESHD_PROTO_DIR
#error "MESHD_PROTO_DIR must name the directory holding mesh/v1/*.proto"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: meshctl COMMAND ARGS\n"
            "  encode FILE.textproto    write the binary mesh.v1.Bundle to stdout\n"
            "  decode FILE.pb           write the bundle as protobuf text format to stdout\n"
            "  validate FILE.pb...      check bundles as meshd would; exit 2 on any error\n"
            "  --version, --help\n"
            "The .proto files are read from $MESHCTL_PROTO_PATH (default %s).\n",
            MESHD_PROTO_DIR);
}

/* Runs protoc with |mode| (--encode/--decode) and |path| as stdin. Returns
 * the exit code meshctl should use: 0, 1 for a missing tool, 2 for bad input. */
static int run_protoc(const char *mode, const char *path)
{
    const char *proto_dir = getenv("MESHCTL_PROTO_PATH");
    if (!proto_dir || !*proto_dir)
        proto_dir = MESHD_PROTO_DIR;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "meshctl: %s: %s\n", path, strerror(errno));
        return 2;
    }
    char include[4096], modearg[64];
    snprintf(include, sizeof(include), "-I%s", proto_dir);
    snprintf(modearg, sizeof(modearg), "%s=mesh.v1.Bundle", mode);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "meshctl: fork: %s\n", strerror(errno));
        close(fd);
        return 1;
    }
    if (pid == 0) {
        dup2(fd, STDIN_FILENO);
        execlp("protoc", "protoc", include, modearg, "mesh/v1/bundle.proto", (char *)NULL);
        fprintf(stderr, "meshctl: cannot run protoc (install protobuf-compiler): %s\n",
                strerror(errno));
        _exit(127);
    }
    close(fd);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return 1;
    fprintf(stderr, "meshctl: %s: %s failed (protoc's message above; input read from stdin)\n",
            path, mode + 2);
    return 2;
}

static int validate(int n, char **paths)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        struct md_errlist el;
        struct md_snapshot *snap = NULL;
        md_errlist_init(&el, paths[i]);
        if (md_bundle_load_file(paths[i], &el, &snap) == 0) {
            printf("%s: ok\n", paths[i]);
        } else {
            md_errlist_print(&el, stderr);
            rc = 2;
        }
        md_snapshot_unref(snap);
        md_errlist_fini(&el);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("meshctl %s\n", MESHD_VERSION);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "encode") == 0) {
        if (isatty(STDOUT_FILENO)) {
            fprintf(stderr, "meshctl: encode writes binary: redirect stdout to a file\n");
            return 2;
        }
        return run_protoc("--encode", argv[2]);
    }
    if (argc == 3 && strcmp(argv[1], "decode") == 0)
        return run_protoc("--decode", argv[2]);
    if (argc >= 3 && strcmp(argv[1], "validate") == 0)
        return validate(argc - 2, argv + 2);
    fprintf(stderr, "meshctl: error: %s\n",
            argc < 2 ? "no command given" : "unknown command or wrong number of arguments");
    usage(stderr);
    return 2;
}
