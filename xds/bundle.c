/* SPDX-License-Identifier: Apache-2.0 */
/* protobuf-c's unpack says only "failed". Before it runs, a walk over the wire
 * format driven by the generated descriptors finds the exact field, byte
 * offset and reason of a truncated, corrupt or foreign file. */
#include "bundle.h"

#include "core/err.h"
#include "mesh/v1/bundle.pb-c.h"
#include "snapshot_build.h"
#include "validate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 32
#define PATH_MAX_LEN 512

static const char *const wire_names[8] = {"varint",    "64-bit", "length-delimited", "group-start",
                                          "group-end", "32-bit", "invalid (6)",      "invalid (7)"};

/* Returns bytes used, or 0 when the varint is truncated or longer than 10 bytes. */
static size_t read_varint(const uint8_t *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

static unsigned schema_wire_type(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT: return 5;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 1;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE: return 2;
    default: return 0;
    }
}

struct walk {
    struct md_errlist *el;
    size_t base; /* offset of the message being walked within the file */
};

static int walk_message(struct walk *w, const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                        size_t len, size_t base, const char *path, int depth)
{
    if (depth > MAX_DEPTH) {
        md_errlist_add(w->el, "bundle", path, "nested deeper than %d messages", MAX_DEPTH);
        return MD_EPROTO;
    }
    unsigned seen[64] = {0}; /* occurrences per field index, for [i] in paths */
    size_t off = 0;
    while (off < len) {
        size_t at = base + off;
        uint64_t tag;
        size_t n = read_varint(p + off, len - off, &tag);
        if (n == 0) {
            md_errlist_add(w->el, "bundle", path[0] ? path : "(top level)",
                           "byte %zu: truncated field tag (truncated file or trailing garbage)",
                           at);
            return MD_EPROTO;
        }
        off += n;
        unsigned wt = (unsigned)(tag & 7);
        uint64_t num = tag >> 3;
        const ProtobufCFieldDescriptor *f =
            num > 0 && num <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(desc, (unsigned)num)
                : NULL;
        if (wt == 3 || wt == 4 || wt > 5) {
            md_errlist_add(
                w->el, "bundle", path[0] ? path : "(top level)",
                "byte %zu: field %llu has wire type %s (corrupt file or trailing garbage)", at,
                (unsigned long long)num, wire_names[wt]);
            return MD_EPROTO;
        }
        if (!f) {
            md_errlist_add(w->el, "bundle", path[0] ? path : "(top level)",
                           "byte %zu: unknown field number %llu in %s (not a %s, a newer schema, "
                           "or trailing garbage)",
                           at, (unsigned long long)num, desc->name, desc->name);
            return MD_EPROTO;
        }
        char fpath[PATH_MAX_LEN];
        size_t fi = (size_t)(f - desc->fields);
        unsigned idx = fi < 64 ? seen[fi]++ : 0;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            snprintf(fpath, sizeof(fpath), "%s%s%s[%u]", path, path[0] ? "." : "", f->name, idx);
        else
            snprintf(fpath, sizeof(fpath), "%s%s%s", path, path[0] ? "." : "", f->name);

        unsigned want = schema_wire_type(f);
        bool packed = f->label == PROTOBUF_C_LABEL_REPEATED && want != 2 && wt == 2;
        if (wt != want && !packed) {
            md_errlist_add(w->el, "bundle", fpath, "byte %zu: wire type %s, the schema says %s", at,
                           wire_names[wt], wire_names[want]);
            return MD_EPROTO;
        }
        uint64_t v;
        switch (wt) {
        case 0:
            n = read_varint(p + off, len - off, &v);
            if (n == 0) {
                md_errlist_add(w->el, "bundle", fpath, "byte %zu: truncated varint", base + off);
                return MD_EPROTO;
            }
            off += n;
            break;
        case 1:
        case 5: {
            size_t need = wt == 1 ? 8 : 4;
            if (len - off < need) {
                md_errlist_add(w->el, "bundle", fpath,
                               "byte %zu: truncated: needs %zu bytes, %zu remain", base + off, need,
                               len - off);
                return MD_EPROTO;
            }
            off += need;
            break;
        }
        case 2:
            n = read_varint(p + off, len - off, &v);
            if (n == 0) {
                md_errlist_add(w->el, "bundle", fpath, "byte %zu: truncated length", base + off);
                return MD_EPROTO;
            }
            off += n;
            if (v > len - off) {
                md_errlist_add(w->el, "bundle", fpath,
                               "byte %zu: truncated: declares %llu bytes, %zu remain", base + off,
                               (unsigned long long)v, len - off);
                return MD_EPROTO;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                int rc = walk_message(w, f->descriptor, p + off, (size_t)v, base + off, fpath,
                                      depth + 1);
                if (rc < 0)
                    return rc;
            }
            off += (size_t)v;
            break;
        }
    }
    return 0;
}

int md_bundle_load_mem(const uint8_t *data, size_t len, struct md_errlist *el,
                       struct md_snapshot **out)
{
    *out = NULL;
    if (len > MD_BUNDLE_MAX_BYTES) {
        md_errlist_add(el, "bundle", NULL, "%zu bytes is over the %u byte limit", len,
                       MD_BUNDLE_MAX_BYTES);
        return MD_ETOOBIG;
    }
    struct walk w = {.el = el};
    int rc = walk_message(&w, &mesh__v1__bundle__descriptor, data, len, 0, "", 0);
    if (rc < 0)
        return rc;
    Mesh__V1__Bundle *b = mesh__v1__bundle__unpack(NULL, len, data);
    if (!b) {
        /* The walk accepted the framing; what is left is a bad value inside a
         * field (e.g. a string that is not UTF-8) or memory. */
        md_errlist_add(el, "bundle", NULL, "protobuf decoding failed (invalid UTF-8 in a string?)");
        return MD_EPROTO;
    }
    rc = md_validate_bundle(b, el) > 0 ? MD_EINVAL : md_snapshot_build(b, out);
    if (rc == MD_ENOMEM)
        md_errlist_add(el, "bundle", NULL, "out of memory building the snapshot");
    mesh__v1__bundle__free_unpacked(b, NULL);
    return rc;
}

int md_bundle_load_file(const char *path, struct md_errlist *el, struct md_snapshot **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        md_errlist_add(el, "bundle", NULL, "cannot open: %s", strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        md_errlist_add(el, "bundle", NULL, "not a regular file");
        close(fd);
        return MD_EINVAL;
    }
    if ((uint64_t)st.st_size > MD_BUNDLE_MAX_BYTES) {
        md_errlist_add(el, "bundle", NULL, "%lld bytes is over the %u byte limit",
                       (long long)st.st_size, MD_BUNDLE_MAX_BYTES);
        close(fd);
        return MD_ETOOBIG;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *data = malloc(len ? len : 1);
    if (!data) {
        close(fd);
        md_errlist_add(el, "bundle", NULL, "out of memory reading the file");
        return MD_ENOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, data + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            md_errlist_add(el, "bundle", NULL, "read failed: %s",
                           r < 0 ? strerror(errno) : "file shrank");
            free(data);
            close(fd);
            return MD_EPROTO;
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = md_bundle_load_mem(data, len, el, out);
    free(data);
    return rc;
}
