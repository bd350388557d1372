# SPDX-License-Identifier: Apache-2.0
"""The body of a factory fixture: `yield from made(build)` gives the test
make(*a, **kw) -> build(*a, **kw) (then .start() when start=True), and stops
everything made at teardown, whatever the test did."""


def made(build, start=False):
    things = []

    def make(*a, **kw):
        x = build(*a, **kw)
        things.append(x)  # before start: one that fails to start is stopped too
        return x.start() if start else x

    yield make
    for x in things:
        x.stop()
