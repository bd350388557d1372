/* SPDX-License-Identifier: Apache-2.0 */
/* Leveled logs: one line per event, key=value, on stderr.
 *   ts=2026-11-25T07:39:04.123Z level=warn event=upstream_connect_failed cluster=app ...
 * Lines are written with one write(2) so threads never interleave them. */
#ifndef MESHD_CORE_LOG_H
#define MESHD_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum md_log_level { MD_LOG_DEBUG, MD_LOG_INFO, MD_LOG_WARN, MD_LOG_ERROR };

/* Sets the lowest level that is written. Call before threads start. */
void md_log_set_level(enum md_log_level lvl);

/* Parses "debug", "info", "warn" or "error" into |out|. Returns 0 or MD_EINVAL. */
int md_log_parse_level(const char *s, enum md_log_level *out);

bool md_log_enabled(enum md_log_level lvl);

/* Writes one line: ts, level, event=|event|, then |fmt| (already key=value pairs).
 * Values with spaces must be quoted by the caller ("reason=\"...\""). */
void md_log(enum md_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies |len| bytes of untrusted text (a path, a header) into |dst| (|cap|
 * bytes, NUL-terminated) for a quoted log value: '"', '\\' and bytes outside
 * 0x20-0x7e become \xNN, so a client cannot forge keys or lines. Truncates
 * with "..." when it does not fit. Returns |dst|. */
const char *md_log_escape(char *dst, size_t cap, const char *src, size_t len);

/* A budget for lines a client can cause at will (a request it resets, one
 * refused locally): at most MD_LOG_BUDGET_BURST at once, then
 * MD_LOG_BUDGET_PER_S a second, so that a flood cannot fill a disk. Lines
 * left out are counted; the next line written is preceded by one
 * event=log_lines_dropped saying how many. One per thread; no locks. */
#define MD_LOG_BUDGET_BURST 1000u
#define MD_LOG_BUDGET_PER_S 100u
struct md_log_budget {
    uint64_t tat; /* GCRA (core/gcra.h), ns */
    uint64_t dropped;
};

/* Whether a line of |what| (an event name, for the dropped line) may be
 * written at |now_ns| (monotonic). */
bool md_log_budget_take(struct md_log_budget *b, const char *what, uint64_t now_ns);

/* Before a line of |what| written outside the budget: the report of lines
 * left out, if any are. */
void md_log_budget_report(struct md_log_budget *b, const char *what);

#define MD_LOG(lvl, event, ...)                                                                    \
    do {                                                                                           \
        if (md_log_enabled(lvl))                                                                   \
            md_log(lvl, event, __VA_ARGS__);                                                       \
    } while (0)

#endif
