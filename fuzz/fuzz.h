/*
 * fuzz: shared declarations of the libFuzzer targets. Each fuzz_<name>.c
 * defines LLVMFuzzerTestOneInput; it is linked either with libFuzzer
 * (-fsanitize=fuzzer, clang, fuzz/run) or with replay_main.c (any compiler,
 * ctest replays the seed corpora and tests/data/fuzz-regressions/).
 * A target reports a finding by crashing (abort, sanitizer report).
 */
#ifndef SG_FUZZ_H
#define SG_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry point: returns 0 (the only value libFuzzer accepts). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with file:line and the expression when cond is false: an invariant
 * the code under test broke is a finding, never silently ignored. */
#define SG_FUZZ_CHECK(cond)                                                                  \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            sg_fuzz_fail(__FILE__, __LINE__, #cond);                                         \
        }                                                                                    \
    } while (0)

/* Prints the failed check and aborts. */
void sg_fuzz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* A private scratch directory for targets that need files, created once per
 * process under $SG_FUZZ_TMP, /dev/shm or /tmp (in that order) and removed
 * at exit. Never NULL (aborts if it cannot be created). */
const char *sg_fuzz_tmpdir(void);

/* Writes data[0..size) to path (created or truncated, mode 0600); aborts on
 * failure. */
void sg_fuzz_write_file(const char *path, const uint8_t *data, size_t size);

/* Removes every entry of dir (not recursive into subdirectories beyond one
 * level) so the next input starts from an empty directory. */
void sg_fuzz_empty_dir(const char *dir);

#endif
