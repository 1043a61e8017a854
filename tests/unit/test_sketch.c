/*
 * sketch: quantiles within 1 % of the exact element at rank
 * floor(q * (count - 1)) of the sorted values (computed here by sorting), on
 * seeded random data: positives, negatives, zeros, ties, wide ranges, huge
 * and denormal magnitudes, tiny counts; the memory bound (collapse) and the
 * reuse of bin blocks after reset. The log-free bucket mapping is checked
 * value by value against ceil(n log2 |x|) computed in long double, at bucket
 * boundaries and their neighbours, for several alphas (table and log2 paths).
 * Long file: just over the line; the quantile tests and the bucket-mapping
 * checks share the seeded generator. The mapping checks could move out.
 */
#include "common.h"
#include "sketch.h"
#include "sg_test.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static double rng_unit(void)
{
    return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_normal(void)
{
    double u1 = rng_unit();
    double u2 = rng_unit();
    if (u1 < 1e-300) {
        u1 = 1e-300;
    }
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static const double qs[] = {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0};
#define NQS (sizeof qs / sizeof qs[0])

/* Largest relative error of the sketch over qs against the sorted values;
 * an exact 0 must come out as exactly 0 (reported as error 1 otherwise). */
static double qtl(const struct sg_sketch *s, const struct sg_sketch_params *p, double q)
{
    return sg_sketch_quantile(s, p, q, sg_sketch_count(s, p));
}

static double max_rel_error(const struct sg_sketch *s, const struct sg_sketch_params *p,
                            double *vals, size_t n)
{
    qsort(vals, n, sizeof(double), cmp_double);
    double worst = 0.0;
    for (size_t i = 0; i < NQS; i++) {
        size_t rank = (size_t)floor(qs[i] * (double)(n - 1));
        double exact = vals[rank];
        double got = qtl(s, p, qs[i]);
        double err;
        if (exact == 0.0) {
            err = got == 0.0 ? 0.0 : 1.0;
        } else {
            err = fabs(got - exact) / fabs(exact);
        }
        if (!(err <= worst)) {
            worst = err; /* also catches NaN */
        }
    }
    return worst;
}

static struct sg_sketch_params params;

/* Sum of the counts of one store, checking that its buckets ascend. */
static uint64_t bins_total(const struct sg_sketch *s, const struct sg_sketch_params *p, int sign)
{
    uint64_t total = 0;
    int32_t prev = INT32_MIN;
    for (uint32_t i = 0; i < sg_sketch_nbins(s, sign); i++) {
        int32_t k;
        uint64_t c;
        sg_sketch_bin(s, p, sign, i, &k, &c);
        CU_ASSERT(c > 0);
        if (i > 0) {
            CU_ASSERT(prev < k);
        }
        prev = k;
        total += c;
    }
    return total;
}

static int suite_init(void)
{
    return sg_sketch_params_init(&params, SG_SKETCH_DEFAULT_ALPHA, 0);
}

static int suite_cleanup(void)
{
    sg_sketch_params_destroy(&params);
    return 0;
}

typedef double (*gen_fn)(void);

static double gen_uniform(void)
{
    return 10.0 + 30.0 * rng_unit();
}
static double gen_normal_neg(void)
{
    return rng_normal() * 50.0 - 10.0;
}
static double gen_with_zeros(void)
{
    double u = rng_unit();
    if (u < 0.3) {
        return 0.0;
    }
    if (u < 0.35) {
        return -0.0;
    }
    return rng_normal() * 3.0;
}
static double gen_log_wide(void)
{
    /* 12 decades, both signs. */
    double m = pow(10.0, -6.0 + 12.0 * rng_unit());
    return rng_unit() < 0.3 ? -m : m;
}
static double gen_huge(void)
{
    double m = pow(10.0, 299.0 + 9.0 * rng_unit() * 0.99); /* up to ~1e307.9 */
    return rng_unit() < 0.5 ? -m : m;
}
static double gen_denormal(void)
{
    /* Subnormal: multiples of the smallest one up to 2^30 of them. */
    return ldexp((double)(1 + (rng_next() % (1u << 30))), -1074);
}
static double gen_ties(void)
{
    static const double levels[] = {-3.5, 0.0, 1.25, 1.25, 7.0, 1000.0};
    return levels[rng_next() % 6];
}
static double gen_integers(void)
{
    return (double)(int)(rng_next() % 21) - 5.0; /* -5..15 with many ties */
}

static void check_dist(gen_fn gen, size_t n, uint64_t seed, double tol)
{
    rng_state = seed;
    double *vals = malloc(n * sizeof(double));
    struct sg_sketch s;
    sg_sketch_init(&s);
    for (size_t i = 0; i < n; i++) {
        vals[i] = gen();
        CU_ASSERT_EQUAL_FATAL(sg_sketch_add(&s, &params, vals[i]), 0);
    }
    CU_ASSERT_EQUAL(sg_sketch_count(&s, &params), n);
    double err = max_rel_error(&s, &params, vals, n);
    CU_ASSERT(err <= tol);
    if (!(err <= tol)) {
        fprintf(stderr, "\n  seed %llu n %zu: max relative error %g > %g\n",
                (unsigned long long)seed, n, err, tol);
    }
    CU_ASSERT_EQUAL(s.min, vals[0]);
    CU_ASSERT_EQUAL(s.max, vals[n - 1]);
    sg_sketch_destroy(&s, &params);
    free(vals);
}

/* Normal magnitudes: the sketch's own alpha (plus rounding slack) holds. */
#define TOL_ALPHA (SG_SKETCH_DEFAULT_ALPHA * (1.0 + 1e-9))

static void test_random_distributions(void)
{
    static const size_t sizes[] = {1, 2, 3, 4, 5, 10, 101, 1000, 20000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        for (uint64_t seed = 1; seed <= 5; seed++) {
            size_t n = sizes[si];
            check_dist(gen_uniform, n, seed * 7919u, TOL_ALPHA);
            check_dist(gen_normal_neg, n, seed * 104729u, TOL_ALPHA);
            check_dist(gen_with_zeros, n, seed * 1299709u, TOL_ALPHA);
            check_dist(gen_log_wide, n, seed * 15485863u, TOL_ALPHA);
            check_dist(gen_huge, n, seed * 32452843u, TOL_ALPHA);
            check_dist(gen_ties, n, seed * 49979687u, TOL_ALPHA);
            check_dist(gen_integers, n, seed * 67867967u, TOL_ALPHA);
            /* Subnormals have few significant bits: the 1 % contract bound. */
            check_dist(gen_denormal, n, seed * 86028121u, 0.01);
        }
    }
}

static void test_small_counts_exact_rank(void)
{
    /* Two and three values far apart: the rank convention picks the lower
     * element for q*(n-1) < 1, so p50 of {1, 100} is 1, of {1, 50, 100} is 50. */
    struct sg_sketch s;
    sg_sketch_init(&s);
    sg_sketch_add(&s, &params, 100.0);
    sg_sketch_add(&s, &params, 1.0);
    CU_ASSERT(fabs(qtl(&s, &params, 0.5) - 1.0) <= 0.01);
    CU_ASSERT(fabs(qtl(&s, &params, 0.99) - 1.0) <= 0.01);
    CU_ASSERT_EQUAL(qtl(&s, &params, 1.0), 100.0);
    sg_sketch_add(&s, &params, 50.0);
    CU_ASSERT(fabs(qtl(&s, &params, 0.5) - 50.0) <= 0.5);
    CU_ASSERT(fabs(qtl(&s, &params, 0.95) - 50.0) <= 0.5);
    CU_ASSERT_EQUAL(qtl(&s, &params, 0.0), 1.0);
    sg_sketch_reset(&s, &params);
    /* One value: min/max clamping makes every quantile exact. */
    sg_sketch_add(&s, &params, -273.15);
    CU_ASSERT_EQUAL(qtl(&s, &params, 0.0), -273.15);
    CU_ASSERT_EQUAL(qtl(&s, &params, 0.5), -273.15);
    CU_ASSERT_EQUAL(qtl(&s, &params, 0.99), -273.15);
    sg_sketch_destroy(&s, &params);
}

static void test_extremes_full_range(void)
{
    /* Zero, subnormals, DBL_MAX and both signs in one sketch: with enough
     * bins nothing collapses and every quantile stays within 1 %. */
    struct sg_sketch_params wide;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&wide, 0.005, 1u << 18), 0);
    double fixed[] = {0.0,
                      -0.0,
                      4.9406564584124654e-324,
                      -4.9406564584124654e-324,
                      DBL_MIN,
                      DBL_MAX,
                      -DBL_MAX,
                      1e300,
                      -1e300,
                      1e-300,
                      1.0,
                      -1.0};
    size_t n = 3000;
    double *vals = malloc(n * sizeof(double));
    struct sg_sketch s;
    sg_sketch_init(&s);
    rng_state = 99;
    for (size_t i = 0; i < n; i++) {
        double v;
        if (i < sizeof fixed / sizeof fixed[0]) {
            v = fixed[i];
        } else {
            double e = -307.0 + 615.0 * rng_unit();
            v = pow(10.0, e);
            if (rng_unit() < 0.5) {
                v = -v;
            }
        }
        vals[i] = v;
        CU_ASSERT_EQUAL(sg_sketch_add(&s, &wide, v), 0);
    }
    double err = max_rel_error(&s, &wide, vals, n);
    CU_ASSERT(err <= 0.01);
    CU_ASSERT_EQUAL(qtl(&s, &wide, 1.0), DBL_MAX);
    CU_ASSERT_EQUAL(qtl(&s, &wide, 0.0), -DBL_MAX);
    CU_ASSERT(isfinite(qtl(&s, &wide, 0.999)));
    sg_sketch_destroy(&s, &wide);
    sg_sketch_params_destroy(&wide);
    CU_ASSERT_EQUAL(wide.bytes, 0);
    free(vals);
}

static void test_non_finite_rejected(void)
{
    struct sg_sketch s;
    sg_sketch_init(&s);
    CU_ASSERT(isnan(qtl(&s, &params, 0.5)));
    CU_ASSERT_EQUAL(sg_sketch_add(&s, &params, NAN), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_add(&s, &params, INFINITY), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_add(&s, &params, -INFINITY), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_count(&s, &params), 0);
    CU_ASSERT_EQUAL(sg_sketch_memory_bytes(&s, &params), 0);
    sg_sketch_destroy(&s, &params);

    struct sg_sketch_params p;
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, 0.0, 0), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, -0.1, 0), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, 0.5, 0), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, NAN, 0), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, 0.01, 1), SG_EINVAL);
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, 0.01, 2), 0);
}

static void test_memory_bound_collapse(void)
{
    /* 1024 bins per store against 20 decades (about 4600 buckets): the
     * lowest values collapse, the high quantiles keep their accuracy. */
    struct sg_sketch_params small;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&small, 0.005, 1024), 0);
    size_t n = 50000;
    double *pos = malloc(n * sizeof(double));
    double *neg = malloc(n * sizeof(double));
    struct sg_sketch sp;
    struct sg_sketch sn;
    sg_sketch_init(&sp);
    sg_sketch_init(&sn);
    rng_state = 4242;
    for (size_t i = 0; i < n; i++) {
        pos[i] = pow(10.0, -10.0 + 20.0 * rng_unit());
        neg[i] = -pow(10.0, -10.0 + 20.0 * rng_unit());
        sg_sketch_add(&sp, &small, pos[i]);
        sg_sketch_add(&sn, &small, neg[i]);
    }
    CU_ASSERT(sg_sketch_nbins(&sp, 1) <= 1024);
    CU_ASSERT(sg_sketch_nbins(&sn, -1) <= 1024);
    CU_ASSERT(sg_sketch_nbins(&sp, 1) >= 1000);
    CU_ASSERT(sg_sketch_is_wide(&sp, 1)); /* a full narrow store widens to collapse */
    CU_ASSERT(sg_sketch_memory_bytes(&sp, &small) <= 1024 * (sizeof(int32_t) + sizeof(uint64_t)));
    CU_ASSERT_EQUAL(sg_sketch_count(&sp, &small), n);
    CU_ASSERT_EQUAL(bins_total(&sp, &small, 1), n);
    CU_ASSERT_EQUAL(bins_total(&sn, &small, -1), n);

    qsort(pos, n, sizeof(double), cmp_double);
    qsort(neg, n, sizeof(double), cmp_double);
    static const double high[] = {0.95, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < 4; i++) {
        size_t rank = (size_t)floor(high[i] * (double)(n - 1));
        double gp = qtl(&sp, &small, high[i]);
        double gn = qtl(&sn, &small, high[i]);
        CU_ASSERT(fabs(gp - pos[rank]) <= 0.01 * fabs(pos[rank]));
        CU_ASSERT(fabs(gn - neg[rank]) <= 0.01 * fabs(neg[rank]));
    }
    /* The low end is collapsed upwards: still ordered and clamped to min. */
    CU_ASSERT(qtl(&sp, &small, 0.0) >= pos[0]);
    CU_ASSERT(qtl(&sp, &small, 0.01) <= qtl(&sp, &small, 0.5));
    sg_sketch_destroy(&sp, &small);
    sg_sketch_destroy(&sn, &small);
    CU_ASSERT(small.bytes > 0); /* blocks wait on the free lists */
    sg_sketch_params_destroy(&small);
    CU_ASSERT_EQUAL(small.bytes, 0);
    free(pos);
    free(neg);
}

static void test_reset_reuses_blocks(void)
{
    struct sg_sketch_params p;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, 0.005, 0), 0);
    struct sg_sketch s;
    struct sg_sketch other;
    sg_sketch_init(&s);
    sg_sketch_init(&other);
    size_t n = 2000;
    double *vals = malloc(n * sizeof(double));
    size_t bytes = 0;
    for (int round = 0; round < 3; round++) {
        rng_state = 77; /* same values each round */
        /* Alternate the sketch that takes the values: the second one reuses
         * the blocks the first gave back on reset. */
        struct sg_sketch *t = round % 2 == 0 ? &s : &other;
        for (size_t i = 0; i < n; i++) {
            vals[i] = gen_normal_neg();
            sg_sketch_add(t, &p, vals[i]);
        }
        CU_ASSERT(p.bytes > 0);
        CU_ASSERT(sg_sketch_memory_bytes(t, &p) > 0);
        CU_ASSERT(sg_sketch_memory_bytes(t, &p) <= p.bytes);
        CU_ASSERT(max_rel_error(t, &p, vals, n) <= TOL_ALPHA);
        if (round == 0) {
            bytes = p.bytes;
        } else {
            /* Refilling with the same values allocated nothing new. */
            CU_ASSERT_EQUAL(p.bytes, bytes);
        }
        sg_sketch_reset(t, &p);
        CU_ASSERT_EQUAL(sg_sketch_count(t, &p), 0);
        CU_ASSERT_EQUAL(sg_sketch_memory_bytes(t, &p), 0);
        CU_ASSERT(isnan(qtl(t, &p, 0.5)));
        CU_ASSERT_EQUAL(p.bytes, bytes); /* blocks kept on the free lists */
    }
    sg_sketch_destroy(&s, &p);
    sg_sketch_destroy(&other, &p);
    sg_sketch_params_destroy(&p);
    CU_ASSERT_EQUAL(p.bytes, 0);
    sg_sketch_destroy(NULL, &p);
    sg_sketch_params_destroy(NULL);
    free(vals);
}

/* k must satisfy gamma^(k-1) < |x| <= gamma^k, i.e. k = ceil(n log2 |x|),
 * here computed independently in long double. Within 1e-9 of a boundary the
 * double-rounded table boundary may decide either way. Also checks the
 * representative's relative error against alpha. Returns failures. */
static int check_key(const struct sg_sketch_params *p, double x)
{
    if (!isfinite(x)) {
        return 0; /* a neighbour of DBL_MAX; the engine never maps these */
    }
    struct sg_sketch_key k = sg_sketch_key_of(p, x);
    if (x == 0.0) {
        return k.sign != 0 || k.index != 0;
    }
    if (k.sign != (x > 0.0 ? 1 : -1)) {
        return 1;
    }
    long double t = (long double)p->n * log2l(fabsl((long double)x));
    long double want = ceill(t);
    int bad = 0;
    if ((long double)k.index != want) {
        long double near = roundl(t);
        bad = !(fabsl(t - near) < 1e-9L && fabsl((long double)k.index - want) <= 1.0L);
    }
    /* Representative 2 gamma^k / (gamma + 1), relative to |x|. */
    long double g = exp2l(1.0L / (long double)p->n);
    long double rep = 2.0L * exp2l((long double)k.index / (long double)p->n) / (g + 1.0L);
    long double rel = fabsl(rep - fabsl((long double)x)) / fabsl((long double)x);
    if (!(rel <= (long double)p->alpha * (1.0L + 1e-9L))) {
        bad = 1;
    }
    if (bad) {
        fprintf(stderr, "\n  alpha %g n %u: x %.17g -> k %d, want %.0Lf (t %.12Lf) rel %Lg\n",
                p->alpha, p->n, x, k.index, want, t, rel);
    }
    return bad;
}

static void test_mapping_against_log(void)
{
    static const double alphas[] = {0.005, 0.01, 0.001, 0.05, 0.3, 0.49, 0.0001, 1e-6};
    for (size_t a = 0; a < sizeof alphas / sizeof alphas[0]; a++) {
        struct sg_sketch_params p;
        CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, alphas[a], 0), 0);
        /* n is the smallest whole number of buckets per octave that keeps
         * the accuracy. */
        double g = exp2(1.0 / p.n);
        CU_ASSERT((g - 1.0) / (g + 1.0) <= alphas[a]);
        if (p.n > 1) {
            double g1 = exp2(1.0 / (p.n - 1));
            CU_ASSERT((g1 - 1.0) / (g1 + 1.0) > alphas[a]);
        }
        if (alphas[a] == 0.005) {
            CU_ASSERT_EQUAL(p.n, 70);
            CU_ASSERT(p.table_shift != 0);
        }
        if (alphas[a] <= 0.0001) {
            CU_ASSERT_EQUAL(p.table_shift, 0); /* too fine for the table: log2 path */
        }
        int bad = 0;
        static const double fixed[] = {
            0.0,  -0.0, DBL_MAX, -DBL_MAX, DBL_MIN, -DBL_MIN, DBL_TRUE_MIN, -DBL_TRUE_MIN, 1.0,
            -1.0, 2.0,  0.5,     3.0,      1e-310,  1e300,    20.0,         -9.81,         0.1};
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
            bad += check_key(&p, fixed[i]);
            bad += check_key(&p, nextafter(fixed[i], INFINITY));
            bad += check_key(&p, nextafter(fixed[i], -INFINITY));
        }
        /* Every boundary 2^(i/n) of one octave (and of a denormal and a
         * huge octave), with its neighbours. */
        uint32_t step = p.n > 5000 ? p.n / 5000 : 1;
        for (uint32_t i = 0; i < p.n; i += step) {
            double b = (double)exp2l((long double)i / (long double)p.n);
            static const double scales[] = {1.0, 0x1p-1060, 0x1p1000, -0x1p-3};
            for (size_t sc = 0; sc < sizeof scales / sizeof scales[0]; sc++) {
                double x = b * scales[sc];
                bad += check_key(&p, x);
                bad += check_key(&p, nextafter(x, INFINITY));
                bad += check_key(&p, nextafter(x, -INFINITY));
            }
        }
        /* Random bit patterns: any finite double. */
        rng_state = 1234 + a;
        for (int i = 0; i < 20000; i++) {
            uint64_t bits = rng_next();
            double x;
            memcpy(&x, &bits, sizeof x);
            if (isfinite(x)) {
                bad += check_key(&p, x);
            }
        }
        CU_ASSERT_EQUAL(bad, 0);
        sg_sketch_params_destroy(&p);
    }
    struct sg_sketch_params p;
    CU_ASSERT_EQUAL(sg_sketch_params_init(&p, 1e-7, 0), SG_EINVAL);
}

static void test_log2_path_quantiles(void)
{
    /* An alpha too fine for the table still meets its accuracy. */
    struct sg_sketch_params p;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, 0.0001, 0), 0);
    struct sg_sketch s;
    sg_sketch_init(&s);
    size_t n = 5000;
    double *vals = malloc(n * sizeof(double));
    rng_state = 31;
    for (size_t i = 0; i < n; i++) {
        vals[i] = gen_normal_neg();
        CU_ASSERT_EQUAL(sg_sketch_add(&s, &p, vals[i]), 0);
    }
    CU_ASSERT(max_rel_error(&s, &p, vals, n) <= 0.0001 * (1.0 + 1e-9));
    sg_sketch_destroy(&s, &p);
    sg_sketch_params_destroy(&p);
    free(vals);
}

static void test_key_shared_between_sketches(void)
{
    struct sg_sketch a;
    struct sg_sketch b;
    sg_sketch_init(&a);
    sg_sketch_init(&b);
    rng_state = 5;
    for (int i = 0; i < 500; i++) {
        double x = gen_log_wide();
        struct sg_sketch_key k = sg_sketch_key_of(&params, x);
        sg_sketch_add_key(&a, &params, k, x, 0);
        CU_ASSERT_EQUAL(sg_sketch_add(&b, &params, x), 0);
    }
    for (size_t i = 0; i < NQS; i++) {
        CU_ASSERT_EQUAL(qtl(&a, &params, qs[i]), qtl(&b, &params, qs[i]));
    }
    sg_sketch_destroy(&a, &params);
    sg_sketch_destroy(&b, &params);
}

/* ---- store formats ---- */

/* Adds n copies of x to s and to vals[*m..]. */
static void add_copies(struct sg_sketch *s, const struct sg_sketch_params *p, double x, size_t n,
                       double *vals, size_t *m)
{
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(sg_sketch_add(s, (struct sg_sketch_params *)p, x), 0);
        vals[(*m)++] = x;
    }
}

static void test_count_overflow_widens(void)
{
    /* One bucket past 65535 values (the narrow count limit), both signs and
     * zeros: the store widens, no count is lost, ranks stay exact. */
    size_t n = 2 * 70000 + 3000 + 40;
    double *vals = malloc((n + 1) * sizeof(double));
    for (int order = 0; order < 2; order++) {
        struct sg_sketch s;
        sg_sketch_init(&s);
        size_t m = 0;
        add_copies(&s, &params, 3.0, 10, vals, &m);
        add_copies(&s, &params, -7.5, 10, vals, &m);
        add_copies(&s, &params, 0.0, 3000, vals, &m);
        if (order == 0) {
            add_copies(&s, &params, 5.0, 65535, vals, &m);
            CU_ASSERT(!sg_sketch_is_wide(&s, 1)); /* exactly at the limit: still narrow */
            add_copies(&s, &params, 5.0, 70000 - 65535, vals, &m);
            add_copies(&s, &params, -2.0, 70000, vals, &m);
        } else {
            add_copies(&s, &params, -2.0, 70000, vals, &m);
            add_copies(&s, &params, 5.0, 70000, vals, &m);
        }
        add_copies(&s, &params, 1000.0, 10, vals, &m);
        add_copies(&s, &params, -1000.0, 10, vals, &m);
        CU_ASSERT_EQUAL_FATAL(m, n);
        CU_ASSERT(sg_sketch_is_wide(&s, 1));
        CU_ASSERT(sg_sketch_is_wide(&s, -1));
        CU_ASSERT_EQUAL(sg_sketch_count(&s, &params), n);
        CU_ASSERT_EQUAL(bins_total(&s, &params, 1), 10 + 70000 + 10);
        CU_ASSERT_EQUAL(bins_total(&s, &params, -1), 10 + 70000 + 10);
        CU_ASSERT_EQUAL(sg_sketch_nbins(&s, 1), 3);
        CU_ASSERT_EQUAL(sg_sketch_nbins(&s, -1), 3);
        CU_ASSERT(max_rel_error(&s, &params, vals, n) <= TOL_ALPHA);
        /* The wide store keeps counting. */
        add_copies(&s, &params, 5.0, 1, vals, &m);
        CU_ASSERT_EQUAL(sg_sketch_count(&s, &params), n + 1);
        /* Reset returns to the narrow inline format. */
        sg_sketch_reset(&s, &params);
        CU_ASSERT(!sg_sketch_is_wide(&s, 1));
        CU_ASSERT(!sg_sketch_is_wide(&s, -1));
        CU_ASSERT_EQUAL(sg_sketch_memory_bytes(&s, &params), 0);
        m = 0;
        add_copies(&s, &params, 4.0, 2, vals, &m);
        add_copies(&s, &params, 9.0, 1, vals, &m);
        CU_ASSERT_EQUAL(sg_sketch_memory_bytes(&s, &params), 0); /* two bins: inline */
        CU_ASSERT(max_rel_error(&s, &params, vals, m) <= TOL_ALPHA);
        sg_sketch_destroy(&s, &params);
    }
    free(vals);
}

static void test_span_overflow_widens(void)
{
    /* Buckets more than 32768 from the first one (about 10^141 apart at
     * alpha 0.005) do not fit a narrow store; closer ones do. */
    static const double far[][3] = {
        {1e-150, 1e150, 1.0}, /* above the span */
        {1e150, 1e-150, 1.0}, /* below it */
        {1.0, 1e-150, 1e150}, /* below, then above */
        {1e-60, 1e60, 1.0},   /* 400 octaves: fits */
    };
    for (size_t t = 0; t < 4; t++) {
        for (int sign = -1; sign <= 1; sign += 2) {
            struct sg_sketch s;
            sg_sketch_init(&s);
            double vals[60];
            size_t m = 0;
            for (int rep = 0; rep < 20; rep++) {
                for (size_t j = 0; j < 3; j++) {
                    /* Vary within a decade so there are many bins. */
                    double x = sign * far[t][j] * (1.0 + 0.45 * rep);
                    CU_ASSERT_EQUAL(sg_sketch_add(&s, &params, x), 0);
                    vals[m++] = x;
                }
            }
            CU_ASSERT_EQUAL(sg_sketch_is_wide(&s, sign), t < 3);
            CU_ASSERT_EQUAL(bins_total(&s, &params, sign), 60);
            CU_ASSERT(max_rel_error(&s, &params, vals, m) <= TOL_ALPHA);
            sg_sketch_destroy(&s, &params);
        }
    }
}

static void test_inline_and_block_growth(void)
{
    /* Distinct buckets one by one, in a scrambled order: the first two stay
     * inline, then blocks of 4, 6, 8, 12 ... bins (4 bytes each); every step
     * agrees with the exact ranks. */
    struct sg_sketch_params p;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, 0.005, 0), 0);
    for (int sign = -1; sign <= 1; sign += 2) {
        struct sg_sketch s;
        sg_sketch_init(&s);
        double vals[300];
        for (size_t i = 0; i < 300; i++) {
            size_t j = (i * 7919u) % 300u; /* a permutation of 0..299 */
            vals[i] = sign * 10.0 * pow(1.03, (double)j);
            CU_ASSERT_EQUAL(sg_sketch_add(&s, &p, vals[i]), 0);
            uint32_t nb = sg_sketch_nbins(&s, sign);
            CU_ASSERT_EQUAL(nb, i + 1); /* 3 % apart: a bucket each */
            size_t mem = sg_sketch_memory_bytes(&s, &p);
            if (nb <= SG_SKETCH_INLINE) {
                CU_ASSERT_EQUAL(mem, 0);
            } else {
                CU_ASSERT(mem >= nb * sizeof(uint32_t));
                CU_ASSERT(mem <= (nb * 3 / 2 + 4) * sizeof(uint32_t));
            }
            CU_ASSERT(!sg_sketch_is_wide(&s, sign));
            if (i % 37 == 0 || i < 8) {
                double copy[300];
                memcpy(copy, vals, (i + 1) * sizeof(double));
                CU_ASSERT(max_rel_error(&s, &p, copy, i + 1) <= TOL_ALPHA);
            }
        }
        CU_ASSERT_EQUAL(bins_total(&s, &p, sign), 300);
        sg_sketch_destroy(&s, &p);
    }
    sg_sketch_params_destroy(&p);
    CU_ASSERT_EQUAL(p.bytes, 0);
}

static void test_tiny_max_bins_collapse(void)
{
    /* max_bins 2 and 5: the inline store is already full or nearly so; the
     * store widens to collapse, keeps every count and the top ranks. */
    static const uint32_t limits[] = {2, 5};
    for (size_t l = 0; l < 2; l++) {
        struct sg_sketch_params p;
        CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, 0.005, limits[l]), 0);
        for (int sign = -1; sign <= 1; sign += 2) {
            struct sg_sketch s;
            sg_sketch_init(&s);
            size_t n = 200;
            double vals[200];
            for (size_t i = 0; i < n; i++) {
                vals[i] = sign * pow(1.05, (double)((i * 37u) % n));
                sg_sketch_add(&s, &p, vals[i]);
                CU_ASSERT(sg_sketch_nbins(&s, sign) <= limits[l]);
            }
            CU_ASSERT(sg_sketch_is_wide(&s, sign));
            CU_ASSERT_EQUAL(bins_total(&s, &p, sign), n);
            qsort(vals, n, sizeof(double), cmp_double);
            /* The extreme that is never collapsed is exact (min/max), the
             * rank next to it within alpha. */
            if (sign > 0) {
                size_t rank = (size_t)floor(0.999 * (double)(n - 1));
                CU_ASSERT(fabs(qtl(&s, &p, 0.999) - vals[rank]) <= 0.01 * vals[rank]);
                CU_ASSERT_EQUAL(qtl(&s, &p, 1.0), vals[n - 1]);
            } else {
                CU_ASSERT(fabs(qtl(&s, &p, 0.001) - vals[0]) <= 0.01 * fabs(vals[0]));
                CU_ASSERT_EQUAL(qtl(&s, &p, 0.0), vals[0]);
            }
            sg_sketch_destroy(&s, &p);
        }
        sg_sketch_params_destroy(&p);
    }
}

static void test_reserve_first_block(void)
{
    /* A store told to expect 40 bins takes one block of at least 40 when it
     * leaves the inline bins, and never grows through the smaller classes. */
    struct sg_sketch_params p;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, 0.005, 0), 0);
    struct sg_sketch s;
    sg_sketch_init(&s);
    double vals[45];
    size_t first_block = 0;
    for (size_t i = 0; i < 45; i++) {
        vals[i] = -1.0 - 0.1 * (double)i; /* distinct buckets */
        sg_sketch_add_key(&s, &p, sg_sketch_key_of(&p, vals[i]), vals[i], 40);
        if (i == 2) {
            first_block = sg_sketch_memory_bytes(&s, &p);
            CU_ASSERT(first_block >= 40 * sizeof(uint32_t));
            CU_ASSERT(first_block <= 48 * sizeof(uint32_t));
        }
        if (i >= 2 && i < 40) {
            CU_ASSERT_EQUAL(sg_sketch_memory_bytes(&s, &p), first_block);
        }
    }
    CU_ASSERT_EQUAL(sg_sketch_nbins(&s, -1), 45);
    CU_ASSERT(max_rel_error(&s, &p, vals, 45) <= TOL_ALPHA);
    /* A reserve beyond max_bins is capped. */
    sg_sketch_reset(&s, &p);
    struct sg_sketch_params q;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&q, 0.005, 10), 0);
    struct sg_sketch t;
    sg_sketch_init(&t);
    for (size_t i = 0; i < 30; i++) {
        double x = 1.0 + 0.1 * (double)i;
        sg_sketch_add_key(&t, &q, sg_sketch_key_of(&q, x), x, 1000000);
        CU_ASSERT(sg_sketch_memory_bytes(&t, &q) <= 12 * (sizeof(int32_t) + sizeof(uint64_t)));
        CU_ASSERT(sg_sketch_nbins(&t, 1) <= 10);
    }
    CU_ASSERT_EQUAL(sg_sketch_count(&t, &q), 30);
    sg_sketch_destroy(&t, &q);
    sg_sketch_params_destroy(&q);
    sg_sketch_destroy(&s, &p);
    sg_sketch_params_destroy(&p);
    CU_ASSERT_EQUAL(p.bytes, 0);
    CU_ASSERT_EQUAL(q.bytes, 0);
}

static void test_trim_releases_past_peak(void)
{
    /* 50 sketches of 100 bins, then all reset: the blocks wait on the free
     * lists. The first trim keeps them (that period's peak used them); the
     * second, after a period with no demand, frees them all. Refilling then
     * works as before. */
    struct sg_sketch_params p;
    CU_ASSERT_EQUAL_FATAL(sg_sketch_params_init(&p, 0.005, 0), 0);
    struct sg_sketch s[50];
    double vals[100];
    for (int round = 0; round < 2; round++) {
        for (size_t j = 0; j < 50; j++) {
            sg_sketch_init(&s[j]);
            for (size_t i = 0; i < 100; i++) {
                vals[i] = (i % 2 ? -1.0 : 1.0) * (1.0 + 0.05 * (double)(i + j));
                sg_sketch_add(&s[j], &p, vals[i]);
            }
        }
        CU_ASSERT(max_rel_error(&s[49], &p, vals, 100) <= TOL_ALPHA);
        size_t held = p.bytes;
        CU_ASSERT(held > 0);
        for (size_t j = 0; j < 50; j++) {
            sg_sketch_reset(&s[j], &p);
        }
        CU_ASSERT_EQUAL(p.bytes, held);
        size_t freed = sg_sketch_params_trim(&p);
        /* Blocks of the classes passed through while growing are more than
         * were in use at once at the end only in count, not in peak. */
        CU_ASSERT_EQUAL(p.bytes, held - freed);
        CU_ASSERT(p.bytes > 0);
        CU_ASSERT_EQUAL(sg_sketch_params_trim(&p), held - freed);
        CU_ASSERT_EQUAL(p.bytes, 0);
        CU_ASSERT_EQUAL(sg_sketch_params_trim(&p), 0);
    }
    sg_sketch_params_destroy(&p);
}

static const struct sg_test quantiles_random_tests[] = {
    {"distributions_and_sizes", test_random_distributions},
    SG_TEST_END,
};
static const struct sg_test rank_convention_tests[] = {
    {"small_counts", test_small_counts_exact_rank},
    SG_TEST_END,
};
static const struct sg_test extremes_tests[] = {
    {"full_double_range", test_extremes_full_range},
    {"non_finite_and_params", test_non_finite_rejected},
    SG_TEST_END,
};
static const struct sg_test memory_tests[] = {
    {"bound_collapses_lowest", test_memory_bound_collapse},
    {"reset_reuses_blocks", test_reset_reuses_blocks},
    {"count_overflow_widens", test_count_overflow_widens},
    {"span_overflow_widens", test_span_overflow_widens},
    {"inline_and_block_growth", test_inline_and_block_growth},
    {"tiny_max_bins_collapse", test_tiny_max_bins_collapse},
    {"reserve_first_block", test_reserve_first_block},
    {"trim_releases_past_peak", test_trim_releases_past_peak},
    SG_TEST_END,
};
static const struct sg_test shared_key_tests[] = {
    {"key_of_equals_add", test_key_shared_between_sketches},
    SG_TEST_END,
};
static const struct sg_test mapping_tests[] = {
    {"key_against_long_double_log", test_mapping_against_log},
    {"log2_path_quantiles", test_log2_path_quantiles},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"quantiles_random", suite_init, suite_cleanup, quantiles_random_tests},
    {"rank_convention", suite_init, suite_cleanup, rank_convention_tests},
    {"extremes", suite_init, suite_cleanup, extremes_tests},
    {"memory", suite_init, suite_cleanup, memory_tests},
    {"shared_key", suite_init, suite_cleanup, shared_key_tests},
    {"mapping", suite_init, suite_cleanup, mapping_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}
