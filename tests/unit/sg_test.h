/*
 * sg_test.h: the one way the CUnit unit tests declare and run their tests,
 * and the helpers several of them need (temporary directories).
 *
 * A test file lists its tests in tables and hands them to sg_test_main:
 *
 *     static const struct sg_test parse_tests[] = {
 *         {"u64", test_parse_u64},
 *         {"double", test_parse_double},
 *         SG_TEST_END,
 *     };
 *     static const struct sg_suite suites[] = {
 *         {"parse", NULL, NULL, parse_tests},
 *         {"spool dir", suite_init, suite_clean, dir_tests},
 *         SG_SUITE_END,
 *     };
 *     int main(void)
 *     {
 *         return sg_test_main(suites);
 *     }
 *
 * sg_test_main returns the process exit status: 0 only if every test ran and
 * passed. A failed assertion, a suite whose init or cleanup failed (its tests
 * then never ran), or a test that could not be registered all give 1, so
 * ctest never reports a pass for tests that did not run.
 *
 * Everything here is static inline: the header is included by one test file
 * per executable, and unused helpers cost nothing and warn about nothing.
 */
#ifndef SG_TEST_H
#define SG_TEST_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <CUnit/Basic.h>

struct sg_test {
    const char *name; /* NULL ends a table */
    CU_TestFunc fn;
};

struct sg_suite {
    const char *name;            /* NULL ends a table */
    CU_InitializeFunc init;      /* run before the suite's tests; nonzero = failed (or NULL) */
    CU_CleanupFunc clean;        /* run after them; nonzero = failed (or NULL) */
    const struct sg_test *tests; /* ends with SG_TEST_END */
};

#define SG_TEST_END {NULL, NULL}
#define SG_SUITE_END {NULL, NULL, NULL, NULL}

/* A test table written in place, for suites of one or two tests:
 *     {"lock", suite_init, suite_clean, SG_TESTS({"held twice", test_lock})},
 * (a file-scope compound literal: static storage, like a named table). */
#define SG_TESTS(...) ((const struct sg_test[]){__VA_ARGS__, SG_TEST_END})

/* Registers every suite and test of the table (in order), runs them all with
 * CUnit's verbose basic runner and cleans the registry up. Returns 0 when
 * every test passed, 1 otherwise (see the top of this file). */
static inline int sg_test_main(const struct sg_suite *suites)
{
    int status = 1;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: cannot initialise the registry: %s\n", CU_get_error_msg());
        return 1;
    }
    for (const struct sg_suite *s = suites; s->name != NULL; s++) {
        CU_pSuite cs = CU_add_suite(s->name, s->init, s->clean);
        if (cs == NULL) {
            fprintf(stderr, "CUnit: cannot add suite \"%s\": %s\n", s->name, CU_get_error_msg());
            goto out;
        }
        for (const struct sg_test *t = s->tests; t->name != NULL; t++) {
            if (CU_add_test(cs, t->name, t->fn) == NULL) {
                fprintf(stderr, "CUnit: cannot add test \"%s\" to \"%s\": %s\n", t->name,
                        s->name, CU_get_error_msg());
                goto out;
            }
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: run failed: %s\n", CU_get_error_msg());
        goto out;
    }
    /* Failure records cover failed assertions and failed suite init or
     * cleanup alike; a suite whose init failed shows in neither of the
     * test counters. */
    if (CU_get_number_of_failure_records() == 0 && CU_get_number_of_suites_failed() == 0 &&
        CU_get_number_of_tests_failed() == 0) {
        status = 0;
    }
out:
    CU_cleanup_registry();
    return status;
}

/* Makes a new, empty, private directory "$TMPDIR/<tag>.XXXXXX" (TMPDIR
 * defaults to /tmp) and writes its path into buf (cap bytes). Returns 0, or
 * -1 (buf too small, or mkdtemp failed; errno says why). */
static inline int sg_test_mkdtemp(char *buf, size_t cap, const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(buf, cap, "%s/%s.XXXXXX", base, tag);
    if (n < 0 || (size_t)n >= cap) {
        return -1;
    }
    return mkdtemp(buf) != NULL ? 0 : -1;
}

static inline int sg_test__rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* rm -rf path: removes it and everything below it, never following symbolic
 * links. Returns 0, or -1 if something could not be removed (a missing path
 * is -1 with errno ENOENT). */
static inline int sg_test_rm_rf(const char *path)
{
    return nftw(path, sg_test__rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
