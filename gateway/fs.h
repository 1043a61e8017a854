/*
 * fs: the file-system chores the journal and the spool share: creating their
 * directory (mkdir -p), the lock file that keeps a second gateway out of it,
 * and how much space the file system has left. Any thread may call these;
 * they keep no state.
 */
#ifndef SG_FS_H
#define SG_FS_H

#include <stddef.h>
#include <stdint.h>

/* Creates dir and every missing parent (mkdir -p), mode 0700 for the parts it
 * creates; existing directories are left as they are. Repeated and trailing
 * slashes are fine. Returns 0, or -1 with errno set: ENOTDIR when a part
 * exists and is not a directory, EACCES/EROFS/ENOSPC... from mkdir(2),
 * EINVAL for a NULL or empty dir. */
int sg_fs_mkdir_p(const char *dir);

/* Opens (creating it, mode 0600) the lock file <dir>/<name> and takes an
 * exclusive, non-blocking flock(2) on it. The lock belongs to the returned
 * descriptor: it holds until sg_fs_unlock (or exit, or kill -9), and a second
 * sg_fs_lock on the same file, from this process or another, is refused.
 * On success returns 0 and stores the descriptor in *fd_out. On failure
 * returns -1 with errno set (EBUSY: someone holds the lock; else the error of
 * open(2) or flock(2)), leaves *fd_out at -1 and, when err is not NULL, writes
 * a one-line reason naming the path into err (errcap bytes, NUL-terminated):
 * "<path> is locked by another process" or "open <path>: <strerror>". */
int sg_fs_lock(const char *dir, const char *name, int *fd_out, char *err, size_t errcap);

/* Releases a lock taken by sg_fs_lock by closing its descriptor. A negative
 * fd is a no-op. */
void sg_fs_unlock(int fd);

/* Space on the file system holding path (or the open descriptor fd), in
 * bytes: avail is what an unprivileged writer may still use (f_bavail),
 * total the file system's size (f_blocks). Returns 0, or -1 with errno from
 * statvfs(2) (nothing stored). */
int sg_fs_space(const char *path, uint64_t *avail_bytes, uint64_t *total_bytes);
int sg_fs_space_fd(int fd, uint64_t *avail_bytes, uint64_t *total_bytes);

/* The free-space check: available bytes on path's (fd's) file system, or
 * UINT64_MAX when it cannot be told, so that a failing statvfs never stops
 * writes on its own (the write itself then reports the real error). */
uint64_t sg_fs_avail_bytes(const char *path);
uint64_t sg_fs_avail_bytes_fd(int fd);

#endif
