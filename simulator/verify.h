/*
 * verify: compares the rollups a backend received (sensegate-sink --out,
 * one JSON rollup per line) with the simulator's brute-force ground truth
 * (sensegate-sim's truth file, JSON lines: one summary, then rollups).
 * Single-threaded; used by `sensegate-sink verify`.
 */
#ifndef SG_VERIFY_H
#define SG_VERIFY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct sg_verify_opts {
    const char *truth_path;    /* truth JSON lines */
    const char *received_path; /* sink --out JSON lines */
    size_t max_diffs;          /* differences printed in full; the rest are only counted */
    FILE *out;                 /* where the report goes (stdout in the CLI) */
    uint32_t ignore_mask;      /* bit i set: field i of the compared fields is not compared
                                * (see sg_verify_field_bit) */
};

/* The bit of a compared field ("late", "duplicates", ...) for ignore_mask,
 * or 0 if there is no such field. */
uint32_t sg_verify_field_bit(const char *name);

struct sg_verify_result {
    size_t expected;    /* rollups in the truth */
    size_t received;    /* rollup lines in the received file */
    size_t partial;     /* received rollups with "partial": true */
    size_t differences; /* every difference found, printed or not */
};

/* Loads both files, prints each difference (up to opts->max_diffs, then a
 * count of the rest) and a final summary line to opts->out, and fills *res.
 * Returns 0 when the files could be read (whether or not they match; see
 * res->differences), or SG_EIO / SG_EINVAL after printing a message that
 * names the file and line to stderr. Any thread; no shared state. */
int sg_verify_run(const struct sg_verify_opts *opts, struct sg_verify_result *res);

/* The `sensegate-sink verify` command: argv[0] is "verify", then
 * --truth FILE --received FILE [--max-diffs N] [--ignore FIELD,FIELD...]. Returns the process exit
 * code: 0 all match, 1 differences, 2 usage or read errors. */
int sg_verify_main(int argc, char **argv);

#endif
