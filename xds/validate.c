/* SPDX-License-Identifier: Apache-2.0 */
#include "validate.h"

#include "core/err.h"
#include "snapshot.h"

#include <stdio.h>
#include <string.h>

#define NAME_MAX_LEN 64

void md_validate_label(char *buf, size_t len, const char *kind, const char *plural, size_t i,
                       const char *name)
{
    if (name && *name)
        snprintf(buf, len, "%s \"%.64s\" (%s[%zu])", kind, name, plural, i);
    else
        snprintf(buf, len, "%s[%zu]", plural, i);
}

static const char *name_at(void *const *items, size_t i, size_t name_off)
{
    return *(const char *const *)((const char *)items[i] + name_off);
}

bool md_validate_name_syntax(const char *name)
{
    size_t n = strlen(name);
    bool ok = n <= NAME_MAX_LEN;
    for (size_t k = 0; ok && k < n; k++) {
        char c = name[k];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == '-';
    }
    return ok;
}

void md_validate_name_at(struct md_errlist *el, const char *res, const char *field,
                         const char *plural, void *const *items, size_t i, size_t name_off)
{
    const char *name = name_at(items, i, name_off);
    if (!name[0]) {
        md_errlist_add(el, res, field, "required");
        return;
    }
    if (!md_validate_name_syntax(name))
        md_errlist_add(el, res, field, "\"%.80s\" must match [a-zA-Z0-9_.-]{1,%d}", name,
                       NAME_MAX_LEN);
    for (size_t j = 0; j < i; j++) { /* O(n^2), n <= MD_VALIDATE_MAX_RESOURCES */
        if (strcmp(name_at(items, j, name_off), name) == 0) {
            md_errlist_add(el, res, field, "duplicate of %s[%zu]", plural, j);
            break;
        }
    }
}

void md_validate_name(struct md_errlist *el, const char *res, const char *plural,
                      void *const *items, size_t i, size_t name_off)
{
    md_validate_name_at(el, res, "name", plural, items, i, name_off);
}

int md_validate_address(struct md_errlist *el, const char *res, const char *field,
                        const Mesh__V1__SocketAddress *a, struct md_addr *out)
{
    char f[256];
    if (!a) {
        md_errlist_add(el, res, field, "required");
        return MD_EINVAL;
    }
    int bad = 0;
    snprintf(f, sizeof(f), "%s.address", field);
    if (!a->address[0]) {
        md_errlist_add(el, res, f, "required");
        bad = MD_EINVAL;
    } else if (md_addr_parse(a->address, 1, out) < 0) {
        md_errlist_add(
            el, res, f,
            "\"%.80s\" is not an IPv4 or IPv6 literal (host names are not resolved here)",
            a->address);
        bad = MD_EINVAL;
    }
    snprintf(f, sizeof(f), "%s.port", field);
    if (a->port < 1 || a->port > 65535) {
        md_errlist_add(el, res, f, "%u out of range 1-65535", a->port);
        bad = MD_EINVAL;
    }
    if (!bad)
        md_addr_parse(a->address, a->port, out);
    return bad;
}

void md_validate_enum(struct md_errlist *el, const char *res, const char *field,
                      const ProtobufCEnumDescriptor *desc, int v)
{
    if (protobuf_c_enum_descriptor_get_value(desc, v))
        return;
    char names[256] = "";
    for (unsigned i = 0; i < desc->n_values; i++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "", desc->values[i].name);
    }
    md_errlist_add(el, res, field, "unknown enum value %d (known: %s)", v, names);
}

void md_validate_range0(struct md_errlist *el, const char *res, const char *field, uint32_t v,
                        uint32_t lo, uint32_t hi, const char *unit)
{
    if (v != 0 && (v < lo || v > hi))
        md_errlist_add(el, res, field, "%u%s out of range: 0 for the default, or %u-%u", v, unit,
                       lo, hi);
}

#define KIB 1024u
#define MIB (1024u * 1024u)

void md_validate_h2_opts(struct md_errlist *el, const char *res, const char *field,
                         const Mesh__V1__Http2Options *o)
{
    if (!o)
        return;
    char f[256];
    snprintf(f, sizeof(f), "%s.max_concurrent_streams", field);
    md_validate_range0(el, res, f, o->max_concurrent_streams, 1, 10000, "");
    snprintf(f, sizeof(f), "%s.initial_stream_window", field);
    md_validate_range0(el, res, f, o->initial_stream_window, 64 * KIB, 16 * MIB, " bytes");
    snprintf(f, sizeof(f), "%s.initial_connection_window", field);
    md_validate_range0(el, res, f, o->initial_connection_window, 64 * KIB, 64 * MIB, " bytes");
    /* A connection window below the stream window would cap every stream
     * below its own window. Compared only when the connection window is
     * given: its default (1 MiB) is documented as is, not raised. */
    uint32_t sw = o->initial_stream_window ? o->initial_stream_window : MD_DEFAULT_H2_STREAM_WINDOW;
    uint32_t cw = o->initial_connection_window;
    if (cw >= 64 * KIB && cw <= 64 * MIB && sw <= 16 * MIB && cw < sw)
        md_errlist_add(el, res, f, "%u bytes is less than the stream window (%u bytes%s)", cw, sw,
                       o->initial_stream_window ? "" : ", the default");
    snprintf(f, sizeof(f), "%s.max_header_list_size", field);
    md_validate_range0(el, res, f, o->max_header_list_size, 1 * KIB, 1 * MIB, " bytes");
}

long md_validate_find_cluster(const Mesh__V1__Bundle *b, const char *name)
{
    for (size_t i = 0; i < b->n_clusters; i++)
        if (name[0] && strcmp(b->clusters[i]->name, name) == 0)
            return (long)i;
    return -1;
}

long md_validate_find_route_config(const Mesh__V1__Bundle *b, const char *name)
{
    for (size_t i = 0; i < b->n_route_configs; i++)
        if (name[0] && strcmp(b->route_configs[i]->name, name) == 0)
            return (long)i;
    return -1;
}

#define MAX_DNS_RESOLVERS 8u
#define MIN_DNS_REFRESH_MS 100u
#define MAX_DNS_REFRESH_MS (24u * 3600u * 1000u)
#define MAX_DNS_QUERY_TIMEOUT_MS 30000u

static void check_dns(struct md_errlist *el, const Mesh__V1__Dns *d)
{
    if (d->n_resolvers > MAX_DNS_RESOLVERS)
        md_errlist_add(el, "dns", "resolvers", "%zu, at most %u", d->n_resolvers,
                       MAX_DNS_RESOLVERS);
    for (size_t k = 0; k < d->n_resolvers && k < MAX_DNS_RESOLVERS; k++) {
        char field[32];
        struct md_addr a;
        snprintf(field, sizeof(field), "resolvers[%zu]", k);
        md_validate_address(el, "dns", field, d->resolvers[k], &a);
    }
    md_validate_range0(el, "dns", "min_refresh_ms", d->min_refresh_ms, MIN_DNS_REFRESH_MS,
                       MAX_DNS_REFRESH_MS, " ms");
    md_validate_range0(el, "dns", "max_refresh_ms", d->max_refresh_ms, MIN_DNS_REFRESH_MS,
                       MAX_DNS_REFRESH_MS, " ms");
    uint32_t lo = d->min_refresh_ms ? d->min_refresh_ms : MD_DEFAULT_DNS_MIN_REFRESH_MS;
    uint32_t hi = d->max_refresh_ms ? d->max_refresh_ms : MD_DEFAULT_DNS_MAX_REFRESH_MS;
    if (hi < lo)
        md_errlist_add(el, "dns", "max_refresh_ms", "%u ms is below min_refresh_ms (%u ms)", hi,
                       lo);
    md_validate_range0(el, "dns", "query_timeout_ms", d->query_timeout_ms, 1,
                       MAX_DNS_QUERY_TIMEOUT_MS, " ms");
}

size_t md_validate_bundle(const Mesh__V1__Bundle *b, struct md_errlist *el)
{
    size_t before = el->n;
    if (b->n_listeners == 0)
        md_errlist_add(el, "bundle", "listeners", "none defined: meshd would serve nothing");
    /* The per-resource checks are quadratic: refuse huge counts up front. */
    const struct {
        const char *field;
        size_t n;
    } counts[] = {
        {"listeners", b->n_listeners},
        {"clusters", b->n_clusters},
        {"route_configs", b->n_route_configs},
    };
    bool too_many = false;
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        if (counts[i].n > MD_VALIDATE_MAX_RESOURCES) {
            md_errlist_add(el, "bundle", counts[i].field, "%zu defined, at most %u", counts[i].n,
                           MD_VALIDATE_MAX_RESOURCES);
            too_many = true;
        }
    }
    if (too_many)
        return el->n - before;
    md_validate_listeners(b, el);
    md_validate_clusters(b, el);
    md_validate_route_configs(b, el);
    if (b->admin) {
        struct md_addr a;
        md_validate_address(el, "admin", "address", b->admin->address, &a);
    }
    if (b->dns)
        check_dns(el, b->dns);
    return el->n - before;
}
