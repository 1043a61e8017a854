/*
 * replay_main: runs a fuzz target over files without libFuzzer, so the
 * seed corpora and every fixed finding (tests/data/fuzz-regressions/) are
 * replayed by ctest in the normal and the ASan/UBSan builds.
 * Usage: fuzz_<name>_replay PATH... [--optional PATH...]
 *        (a directory: every regular file in it; paths after --optional
 *        may be missing, e.g. a regressions dir before the first finding)
 * Exit 0 when every input ran; 1 when a path cannot be read; a finding
 * crashes, as under libFuzzer.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (buf == NULL) {
        return -1;
    }
    /* An exactly sized copy, so ASan catches reads past the input's end. */
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int failed = 0;
    size_t ran = 0;
    int optional = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (strcmp(argv[i], "--optional") == 0) {
            optional = 1; /* paths after this may be missing */
            continue;
        }
        if (stat(argv[i], &st) != 0) {
            if (optional) {
                printf("(no %s: nothing to replay there)\n", argv[i]);
            } else {
                perror(argv[i]);
                failed = 1;
            }
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (run_file(argv[i]) != 0) {
                failed = 1;
            } else {
                ran++;
            }
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        char **names = NULL;
        size_t nn = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char **nv = realloc(names, (nn + 1) * sizeof *names);
            if (nv == NULL) {
                break;
            }
            names = nv;
            names[nn++] = strdup(de->d_name);
        }
        closedir(d);
        if (nn > 0) {
            qsort(names, nn, sizeof *names, name_cmp);
        }
        for (size_t k = 0; k < nn; k++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], names[k]);
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                if (run_file(p) != 0) {
                    failed = 1;
                } else {
                    ran++;
                }
            }
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %zu input(s)\n", ran);
    return failed;
}
