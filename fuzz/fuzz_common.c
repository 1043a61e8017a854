/*
 * fuzz_common: helpers shared by the fuzz targets (scratch directory, file
 * writing, invariant failure). Single-threaded, like libFuzzer's loop.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[512];

void sg_fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "FUZZ INVARIANT FAILED %s:%d: %s\n", file, line, what);
    abort();
}

static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth < 4) {
                remove_tree(p, depth + 1);
            }
            rmdir(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
}

void sg_fuzz_empty_dir(const char *dir)
{
    remove_tree(dir, 0);
}

static void cleanup_tmpdir(void)
{
    if (tmpdir[0] != '\0') {
        remove_tree(tmpdir, 0);
        rmdir(tmpdir);
    }
}

const char *sg_fuzz_tmpdir(void)
{
    if (tmpdir[0] != '\0') {
        return tmpdir;
    }
    const char *base = getenv("SG_FUZZ_TMP");
    struct stat st;
    if (base == NULL || base[0] == '\0') {
        base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/sg-fuzz-XXXXXX", base);
    if (mkdtemp(tmpdir) == NULL) {
        fprintf(stderr, "fuzz: cannot create a scratch dir under %s: %s\n", base,
                strerror(errno));
        abort();
    }
    atexit(cleanup_tmpdir);
    return tmpdir;
}

void sg_fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0) {
            fprintf(stderr, "fuzz: short write to %s: %s\n", path, strerror(errno));
            abort();
        }
        off += (size_t)n;
    }
    close(fd);
}
