/* SPDX-License-Identifier: Apache-2.0 */
#include "net/linger.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

/* A connected pair: [0] is ours (to close lingering), [1] the peer's. */
static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static struct ev_loop *loop;
static int empties;

static void on_empty(struct md_linger_set *ls)
{
    empties++;
    ev_break(ls->loop, EVBREAK_ALL);
}

static void setup(struct md_linger_set *ls, size_t max)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(loop);
    md_linger_init(ls, loop, max);
    empties = 0;
}

/* A new pair whose end [0] is closed into |ls| (reset or not); returns
 * what is left of our socket (fd -1: closed, or taken by |ls|). */
static struct md_sock close_new(struct md_linger_set *ls, int sv[2], bool reset)
{
    pair(sv);
    struct md_sock s = md_sock_plain(sv[0]);
    md_linger_close(ls, &s, reset);
    return s;
}

static void teardown(struct md_linger_set *ls)
{
    md_linger_fini(ls);
    ev_loop_destroy(loop);
}

static void test_peer_gone_closes_at_once(void **state)
{
    struct md_linger_set ls;
    setup(&ls, 8);
    int sv[2];
    pair(sv);
    assert_int_equal(write(sv[1], "x", 1), 1); /* unread, then the peer's EOF */
    close(sv[1]);
    struct md_sock s = md_sock_plain(sv[0]);
    md_linger_close(&ls, &s, false);
    assert_int_equal(s.fd, -1);
    assert_int_equal(md_linger_count(&ls), 0);
    teardown(&ls);
}

static void test_reads_until_peer_eof(void **state)
{
    struct md_linger_set ls;
    setup(&ls, 8);
    int sv[2];
    close_new(&ls, sv, false);
    assert_int_equal(md_linger_count(&ls), 1);
    char c;
    assert_int_equal(read(sv[1], &c, 1), 0); /* our FIN */
    assert_int_equal(write(sv[1], "late bytes", 10), 10);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(md_linger_count(&ls), 1); /* read and dropped, still open */
    close(sv[1]);
    ev_run(loop, EVRUN_ONCE);
    assert_int_equal(md_linger_count(&ls), 0);
    teardown(&ls);
}

static void test_reset_and_cap_close_at_once(void **state)
{
    struct md_linger_set ls;
    setup(&ls, 1);
    int a[2], b[2], c[2];
    close_new(&ls, a, true);
    assert_int_equal(md_linger_count(&ls), 0);
    close_new(&ls, b, false);
    struct md_sock sc = close_new(&ls, c, false); /* past the cap */
    assert_int_equal(md_linger_count(&ls), 1);
    assert_int_equal(sc.fd, -1);
    teardown(&ls);
    assert_int_equal(md_linger_count(&ls), 0);
    close(a[1]);
    close(b[1]);
    close(c[1]);
}

static void test_exit_deadline(void **state)
{
    struct md_linger_set ls;
    setup(&ls, 8);
    int sv[2];
    close_new(&ls, sv, false);
    assert_int_equal(md_linger_count(&ls), 1);
    md_linger_exit(&ls, 0.02, on_empty); /* the peer stays: the deadline closes it */
    assert_int_equal(empties, 0);
    ev_run(loop, 0); /* until on_empty breaks it */
    assert_int_equal(empties, 1);
    assert_int_equal(md_linger_count(&ls), 0);
    md_linger_exit(&ls, 0.02, on_empty); /* nothing left: at once */
    assert_int_equal(empties, 2);
    close(sv[1]);
    teardown(&ls);
}

static void test_exit_now(void **state)
{
    struct md_linger_set ls;
    setup(&ls, 8);
    int sv[2];
    close_new(&ls, sv, false);
    md_linger_exit(&ls, 0, on_empty);
    assert_int_equal(empties, 1);
    assert_int_equal(md_linger_count(&ls), 0);
    int sv2[2];
    close_new(&ls, sv2, false); /* exiting now: no more lingering */
    assert_int_equal(md_linger_count(&ls), 0);
    close(sv[1]);
    close(sv2[1]);
    teardown(&ls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_gone_closes_at_once),
        cmocka_unit_test(test_reads_until_peer_eof),
        cmocka_unit_test(test_reset_and_cap_close_at_once),
        cmocka_unit_test(test_exit_deadline),
        cmocka_unit_test(test_exit_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
