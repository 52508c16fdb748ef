/* SPDX-License-Identifier: MIT */
/* Test certificates for C suites: tests/support/certs.py run once into a temporary directory. */
#ifndef HERALD_TEST_CERTS_H
#define HERALD_TEST_CERTS_H

/**
 * Makes the test CA and certificates (the files certs.py lists: ca.pem,
 * server.pem/.key, expired, wronghost, client, rogue, ...) in a fresh
 * temporary directory, the first time it is called; later calls return the
 * same directory. Call it before a Check runner forks, so the tests share one
 * set. The process that made the directory removes it at exit. Returns the
 * directory (static storage), or NULL after printing why.
 */
const char *hr_test_certs(void);

/** The path of `file` ("server.pem") in that directory; one of 8 rotating static buffers. */
const char *hr_test_cert(const char *file);

#endif
