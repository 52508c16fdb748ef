#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# The whole conformance suite against brokers that keep their topic state in Redis.
"""Starts redis-server on a free loopback port and runs tests/conformance/test_conformance.py
with every broker it starts given `--engine redis://...` and a key prefix of its own (so each
broker starts from empty topic state, as a fresh in-memory broker does).

Two tests are left out because they test limits of the in-memory engine that the Redis engine
does not have (docs/scaling.md): `max-topics` and the default `history-bytes`.

Run:  HERALD_BIN=build/broker/herald /usr/bin/python3 tests/redis/conformance_redis.py
"""

import itertools
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "conformance"))
sys.path.insert(0, HERE)

import herald_wire  # noqa: E402
from test_redis import REDIS, REDIS_CLI, RedisServer  # noqa: E402

MEMORY_ENGINE_ONLY = {
    "TestLimitReached.test_topic_limit_err7_stays_open",
    "TestReplay.test_default_history_is_1mib_per_topic",
}


def main():
    if not REDIS or not REDIS_CLI:
        print("redis-server is not installed (scripts/deps.sh test): skipped")
        return 0
    redis = RedisServer()
    brokers = itertools.count()
    start = herald_wire.Broker.__init__

    def with_redis(self, *extra):
        prefix = "conf%d-%d:" % (os.getpid(), next(brokers))
        start(self, "--engine", redis.url, "--redis-prefix", prefix, *extra)

    herald_wire.Broker.__init__ = with_redis
    try:
        import test_conformance  # noqa: E402 (after the patch: it starts brokers)

        suite = unittest.TestSuite()
        for case in unittest.defaultTestLoader.loadTestsFromModule(test_conformance):
            for test in case:
                name = ".".join(test.id().split(".")[-2:])
                if name not in MEMORY_ENGINE_ONLY:
                    suite.addTest(test)
        result = unittest.TextTestRunner(verbosity=1).run(suite)
        return 0 if result.wasSuccessful() else 1
    finally:
        redis.cleanup()


if __name__ == "__main__":
    sys.exit(main())
