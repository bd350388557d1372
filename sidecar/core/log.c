/* SPDX-License-Identifier: Apache-2.0 */
#include "core/log.h"

#include "core/err.h"
#include "core/gcra.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum md_log_level min_level = MD_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void md_log_set_level(enum md_log_level lvl)
{
    min_level = lvl;
}

bool md_log_enabled(enum md_log_level lvl)
{
    return lvl >= min_level;
}

int md_log_parse_level(const char *s, enum md_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum md_log_level)i;
            return 0;
        }
    }
    return MD_EINVAL;
}

void md_log(enum md_log_level lvl, const char *event, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, level_names[lvl], event);
    if (fmt && *fmt && n < (int)sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        n = m < 0 ? n : n + m;
    }
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2; /* truncated, still one line */
    line[n++] = '\n';
    /* One write: lines from several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

const char *md_log_escape(char *dst, size_t cap, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        bool plain = ch >= 0x20 && ch <= 0x7e && ch != '"' && ch != '\\';
        if (o + (plain ? 1 : 4) + 4 > cap) { /* room for "..." and the NUL */
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            dst[o++] = (char)ch;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    dst[o] = '\0';
    return dst;
}

bool md_log_budget_take(struct md_log_budget *b, const char *what, uint64_t now_ns)
{
    const uint64_t interval = 1000000000u / MD_LOG_BUDGET_PER_S;
    uint64_t next, wait;
    if (!md_gcra(b->tat, now_ns, interval, MD_LOG_BUDGET_BURST * interval, &next, &wait)) {
        b->dropped++;
        return false;
    }
    b->tat = next;
    md_log_budget_report(b, what);
    return true;
}

void md_log_budget_report(struct md_log_budget *b, const char *what)
{
    if (!b->dropped)
        return;
    md_log(MD_LOG_WARN, "log_lines_dropped", "of=%s count=%llu", what,
           (unsigned long long)b->dropped);
    b->dropped = 0;
}
