/*
 * ring: dedup of seq in serial arithmetic: NEW / SEEN / TOO_OLD / RESET,
 * check without mark, wrap-around at 2^32, and a random property test
 * against a plain list-of-marked-seqs model.
 */
#include "common.h"
#include "ring.h"
#include "sg_test.h"

#include <stdlib.h>
#include <string.h>

#define N 64u

static uint64_t bits[SG_RING_MAX_SEQS / 64];
static struct sg_ring ring;

static int ring_setup(void)
{
    return sg_ring_init(&ring, bits, N);
}

static void test_init_checks(void)
{
    struct sg_ring r;
    uint64_t b[2048];
    CU_ASSERT_EQUAL(sg_ring_init(&r, b, 0), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_ring_init(&r, b, 32), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_ring_init(&r, b, 100), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_ring_init(&r, b, 131072), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_ring_init(&r, NULL, 64), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_ring_init(&r, b, 64), 0);
    CU_ASSERT_EQUAL(sg_ring_init(&r, b, 65536), 0);
    CU_ASSERT_EQUAL(sg_ring_words(64), 1);
    CU_ASSERT_EQUAL(sg_ring_words(1024), 16);
    CU_ASSERT(sg_ring_nseqs_ok(1024));
    CU_ASSERT(!sg_ring_nseqs_ok(1000));
}

static void test_new_seen_check_does_not_mark(void)
{
    sg_ring_clear(&ring);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 5), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 5), SG_RING_NEW); /* a check is not a mark */
    CU_ASSERT_EQUAL(sg_ring_mark(&ring, 5), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 5), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_mark(&ring, 5), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 6), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 4), SG_RING_NEW); /* behind but unmarked */
    CU_ASSERT_EQUAL(sg_ring_mark(&ring, 7), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 6), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_mark(&ring, 6), SG_RING_NEW); /* out of order, still inside */
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 6), SG_RING_SEEN);
    CU_ASSERT_EQUAL(ring.newest, 7);
}

static void test_too_old_and_slide(void)
{
    sg_ring_clear(&ring);
    sg_ring_mark(&ring, 1000);
    sg_ring_mark(&ring, 1000 - 63);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1000 - 63), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1000 - 64), SG_RING_TOO_OLD);
    CU_ASSERT_EQUAL(sg_ring_mark(&ring, 1000 - 64), SG_RING_TOO_OLD);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1000 - 64), SG_RING_TOO_OLD);
    /* Sliding by one forgets the oldest; its bit position now means 1001. */
    sg_ring_mark(&ring, 1001);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1000 - 63), SG_RING_TOO_OLD);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1000), SG_RING_SEEN);
    /* Seqs entering the ring start unmarked although they reuse the bit
     * positions of older marked ones (1064 reuses the bit of 1000). */
    sg_ring_mark(&ring, 1001 + 63);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1001), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1000), SG_RING_TOO_OLD);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1063), SG_RING_NEW);
    /* A jump of N or more clears everything. */
    sg_ring_mark(&ring, 1064 + 64);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1064), SG_RING_TOO_OLD);
    for (uint32_t s = 1064 + 1; s < 1064 + 64; s++) {
        CU_ASSERT_EQUAL(sg_ring_check(&ring, s), SG_RING_NEW);
    }
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 1128), SG_RING_SEEN);
}

static void test_wraparound(void)
{
    sg_ring_clear(&ring);
    CU_ASSERT(sg_serial_lt(0xFFFFFFFFu, 0));
    CU_ASSERT(!sg_serial_lt(0, 0xFFFFFFFFu));
    CU_ASSERT_EQUAL(sg_serial_diff(2, 0xFFFFFFFEu), 4);
    for (uint32_t s = 0xFFFFFFF0u; s != 0x10u; s++) {
        CU_ASSERT_EQUAL(sg_ring_mark(&ring, s), SG_RING_NEW);
    }
    CU_ASSERT_EQUAL(ring.newest, 0x0Fu);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0xFFFFFFFAu), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0xFFFFFFFFu), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0x10u), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0xFFFFFFEFu), SG_RING_NEW); /* inside, unmarked */
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0x0Fu - 64u), SG_RING_TOO_OLD);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0x0Fu - 63u), SG_RING_NEW);
}

static void test_reset(void)
{
    sg_ring_clear(&ring);
    sg_ring_mark(&ring, 100000);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 100000 + 65536), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 100000 + 65537), SG_RING_RESET);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 100000 - 65536), SG_RING_TOO_OLD);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 100000 - 65537), SG_RING_RESET);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 100000 + 0x80000000u), SG_RING_RESET);
    /* Reset across the wrap as well: newest near 2^32, sensor restarts at 0. */
    sg_ring_clear(&ring);
    sg_ring_mark(&ring, 0xFFFF0000u);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0xFFFF0000u + 65536u), SG_RING_NEW); /* == 0 */
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 0xFFFF0000u + 65537u), SG_RING_RESET);
    /* Marking a RESET seq restarts the ring there. */
    sg_ring_clear(&ring);
    sg_ring_mark(&ring, 5000000);
    sg_ring_mark(&ring, 5000001);
    CU_ASSERT_EQUAL(sg_ring_mark(&ring, 3), SG_RING_RESET);
    CU_ASSERT_EQUAL(ring.newest, 3);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 3), SG_RING_SEEN);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 4), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 2), SG_RING_NEW);
    CU_ASSERT_EQUAL(sg_ring_check(&ring, 5000001), SG_RING_RESET);
}

/* ---- property test against a simple model ---- */

struct model {
    uint32_t marked[4096];
    size_t n;
    uint32_t newest;
    int started;
};

static enum sg_ring_result model_check(const struct model *m, uint32_t seq, uint32_t nseqs)
{
    if (!m->started) {
        return SG_RING_NEW;
    }
    int64_t d = (int32_t)(seq - m->newest);
    if (d > 65536 || d < -65536) {
        return SG_RING_RESET;
    }
    if (d > 0) {
        return SG_RING_NEW;
    }
    if (-d >= (int64_t)nseqs) {
        return SG_RING_TOO_OLD;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (m->marked[i] == seq) {
            return SG_RING_SEEN;
        }
    }
    return SG_RING_NEW;
}

static void model_mark(struct model *m, uint32_t seq, uint32_t nseqs)
{
    enum sg_ring_result r = model_check(m, seq, nseqs);
    if (r == SG_RING_TOO_OLD || r == SG_RING_SEEN) {
        return;
    }
    if (r == SG_RING_RESET || !m->started) {
        m->n = 0;
        m->started = 1;
        m->newest = seq;
    } else if ((int32_t)(seq - m->newest) > 0) {
        m->newest = seq;
    }
    m->marked[m->n++] = seq;
    /* Forget what fell out of the ring. */
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        if ((uint32_t)(m->newest - m->marked[i]) < nseqs) {
            m->marked[k++] = m->marked[i];
        }
    }
    m->n = k;
}

static void run_property(uint32_t nseqs, uint32_t start, uint64_t seed)
{
    static struct model m;
    uint64_t b[SG_RING_MAX_SEQS / 64];
    struct sg_ring r;
    CU_ASSERT_EQUAL_FATAL(sg_ring_init(&r, b, nseqs), 0);
    memset(&m, 0, sizeof m);
    uint64_t x = seed;
    uint32_t base = start;
    size_t mismatches = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t u = (uint32_t)(x >> 32);
        uint32_t seq;
        if (u % 1000 == 0) {
            seq = base + 70000u + (u % 100000u); /* counter restart: reset */
        } else if (u % 97 == 0) {
            seq = base - nseqs - (u % 50u); /* way behind */
        } else {
            seq = base - (u % (nseqs + 8u)) + 3u; /* around the newest */
        }
        if (u % 3 == 0) {
            base++;
        }
        enum sg_ring_result want = model_check(&m, seq, nseqs);
        enum sg_ring_result got = sg_ring_check(&r, seq);
        if (got != want) {
            mismatches++;
        }
        if (u % 5 != 0) { /* mark most, keep some checked-only */
            CU_ASSERT_EQUAL(sg_ring_mark(&r, seq), want);
            model_mark(&m, seq, nseqs);
            if (want == SG_RING_RESET) {
                base = seq;
            }
        }
    }
    CU_ASSERT_EQUAL(mismatches, 0);
}

static void test_property_vs_model(void)
{
    run_property(64, 12345, 0x1234567u);
    run_property(128, 0xFFFFF000u, 0xabcdefu); /* crosses 2^32 */
    run_property(1024, 0xFFFFFF00u, 0x55aa55u);
}

static const struct sg_test init_tests[] = {
    {"nseqs_checks", test_init_checks},
    SG_TEST_END,
};
static const struct sg_test dedup_tests[] = {
    {"new_seen_check_does_not_mark", test_new_seen_check_does_not_mark},
    {"too_old_and_slide", test_too_old_and_slide},
    SG_TEST_END,
};
static const struct sg_test serial_wrap_tests[] = {
    {"wraparound_2_32", test_wraparound},
    SG_TEST_END,
};
static const struct sg_test reset_tests[] = {
    {"jump_restarts_ring", test_reset},
    SG_TEST_END,
};
static const struct sg_test property_tests[] = {
    {"random_vs_model", test_property_vs_model},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"init", NULL, NULL, init_tests},
    {"dedup", ring_setup, NULL, dedup_tests},
    {"serial_wrap", ring_setup, NULL, serial_wrap_tests},
    {"reset", ring_setup, NULL, reset_tests},
    {"property", NULL, NULL, property_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}
