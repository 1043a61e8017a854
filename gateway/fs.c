/*
 * fs: mkdir -p, the directory lock file and free-space queries for the
 * journal and the spool (they had one copy each, and the copies had started
 * to differ). Plain POSIX calls, no state; any thread.
 *
 * The lock is flock(2), not fcntl(2) locks: flock belongs to the open file
 * description, so a second open of the same lock file in this process is
 * refused too (fcntl locks would silently be shared within the process), and
 * the kernel drops it when the gateway dies, however it dies.
 */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common.h"

int sg_fs_mkdir_p(const char *dir)
{
    if (dir == NULL || dir[0] == '\0') {
        errno = EINVAL;
        return -1;
    }
    char *p = sg_xstrdup(dir);
    int ret = -1;
    struct stat st;

    /* Walk the path one component at a time: cut it after each component,
     * create that prefix if it is missing, and restore the slash. */
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0') {
            continue;
        }
        char saved = *c;
        *c = '\0';
        if (mkdir(p, 0700) != 0) {
            if (errno != EEXIST) {
                goto out;
            }
            if (stat(p, &st) != 0) {
                goto out;
            }
            if (!S_ISDIR(st.st_mode)) {
                errno = ENOTDIR;
                goto out;
            }
        }
        *c = saved;
        if (saved == '\0') {
            break;
        }
        while (c[1] == '/') {
            c++;
        }
        if (c[1] == '\0') {
            break;
        }
    }
    ret = 0;
out:
    {
        int e = errno;
        free(p);
        errno = e;
    }
    return ret;
}

int sg_fs_lock(const char *dir, const char *name, int *fd_out, char *err, size_t errcap)
{
    if (fd_out != NULL) {
        *fd_out = -1;
    }
    if (err != NULL && errcap > 0) {
        err[0] = '\0';
    }
    if (dir == NULL || name == NULL || fd_out == NULL) {
        errno = EINVAL;
        return -1;
    }
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = sg_xmalloc(n);
    snprintf(path, n, "%s/%s", dir, name);
    int e = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        e = errno;
        if (err != NULL && errcap > 0) {
            snprintf(err, errcap, "open %s: %s", path, strerror(e));
        }
        goto fail;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        e = errno == EWOULDBLOCK ? EBUSY : errno;
        if (err != NULL && errcap > 0) {
            if (e == EBUSY) {
                snprintf(err, errcap, "%s is locked by another process", path);
            } else {
                snprintf(err, errcap, "flock %s: %s", path, strerror(e));
            }
        }
        close(fd);
        goto fail;
    }
    free(path);
    *fd_out = fd;
    return 0;
fail:
    free(path);
    errno = e;
    return -1;
}

void sg_fs_unlock(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

static void space_of(const struct statvfs *v, uint64_t *avail_bytes, uint64_t *total_bytes)
{
    if (avail_bytes != NULL) {
        *avail_bytes = (uint64_t)v->f_bavail * (uint64_t)v->f_frsize;
    }
    if (total_bytes != NULL) {
        *total_bytes = (uint64_t)v->f_blocks * (uint64_t)v->f_frsize;
    }
}

int sg_fs_space(const char *path, uint64_t *avail_bytes, uint64_t *total_bytes)
{
    struct statvfs v;
    if (path == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (statvfs(path, &v) != 0) {
        return -1;
    }
    space_of(&v, avail_bytes, total_bytes);
    return 0;
}

int sg_fs_space_fd(int fd, uint64_t *avail_bytes, uint64_t *total_bytes)
{
    struct statvfs v;
    if (fstatvfs(fd, &v) != 0) {
        return -1;
    }
    space_of(&v, avail_bytes, total_bytes);
    return 0;
}

uint64_t sg_fs_avail_bytes(const char *path)
{
    uint64_t avail;
    return sg_fs_space(path, &avail, NULL) == 0 ? avail : UINT64_MAX;
}

uint64_t sg_fs_avail_bytes_fd(int fd)
{
    uint64_t avail;
    return sg_fs_space_fd(fd, &avail, NULL) == 0 ? avail : UINT64_MAX;
}
