/*
 * Unit tests for gateway/fs.c: mkdir -p (nested, existing, odd slashes, a
 * regular file in the way, no permission), the directory lock (held twice:
 * the second is refused with EBUSY and a message naming the file; released:
 * taken again; a lock dir that is a file) and the free-space queries on a
 * real directory. Each suite works in its own temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs.h"
#include "sg_test.h"

static char tmpdir[256];

static int suite_init(void)
{
    return sg_test_mkdtemp(tmpdir, sizeof(tmpdir), "test_fs");
}

static int suite_clean(void)
{
    /* The permission test leaves a 0500 directory; make it removable. */
    char p[400];
    snprintf(p, sizeof(p), "%s/ro", tmpdir);
    chmod(p, 0700);
    return sg_test_rm_rf(tmpdir);
}

static bool is_dir(const char *p, mode_t *mode)
{
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return false;
    }
    if (mode != NULL) {
        *mode = st.st_mode & 07777;
    }
    return true;
}

static void write_file(const char *p)
{
    FILE *f = fopen(p, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("x\n", f);
    fclose(f);
}

/* ---- mkdir -p ---------------------------------------------------------- */

static void test_mkdir_nested(void)
{
    char p[400], q[400];
    snprintf(p, sizeof(p), "%s/n/a/b/c", tmpdir);
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(p), 0);
    mode_t mode = 0;
    CU_ASSERT_TRUE(is_dir(p, &mode));
    /* Created parts are private (0700, less the umask's bits). */
    CU_ASSERT_EQUAL(mode & 077, 0);
    snprintf(q, sizeof(q), "%s/n/a", tmpdir);
    CU_ASSERT_TRUE(is_dir(q, NULL));

    /* Again: everything exists, still 0. */
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(p), 0);

    /* Repeated and trailing slashes. */
    snprintf(q, sizeof(q), "%s//n///a/b2//", tmpdir);
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(q), 0);
    snprintf(q, sizeof(q), "%s/n/a/b2", tmpdir);
    CU_ASSERT_TRUE(is_dir(q, NULL));

    /* An existing directory keeps its mode. */
    snprintf(q, sizeof(q), "%s/n/open", tmpdir);
    CU_ASSERT_EQUAL_FATAL(mkdir(q, 0755), 0);
    CU_ASSERT_EQUAL_FATAL(chmod(q, 0755), 0);
    snprintf(p, sizeof(p), "%s/n/open/inner", tmpdir);
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(p), 0);
    CU_ASSERT_TRUE(is_dir(q, &mode));
    CU_ASSERT_EQUAL(mode, 0755);

    /* The root and a relative path. */
    CU_ASSERT_EQUAL(sg_fs_mkdir_p("/"), 0);
    char cwd[512];
    CU_ASSERT_PTR_NOT_NULL_FATAL(getcwd(cwd, sizeof(cwd)));
    CU_ASSERT_EQUAL_FATAL(chdir(tmpdir), 0);
    CU_ASSERT_EQUAL(sg_fs_mkdir_p("rel/x"), 0);
    CU_ASSERT_TRUE(is_dir("rel/x", NULL));
    CU_ASSERT_EQUAL_FATAL(chdir(cwd), 0);
}

static void test_mkdir_file_in_way(void)
{
    char file[400], p[500];
    snprintf(file, sizeof(file), "%s/plain", tmpdir);
    write_file(file);

    /* A regular file as a parent. */
    snprintf(p, sizeof(p), "%s/sub/deeper", file);
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(p), -1);
    CU_ASSERT_EQUAL(errno, ENOTDIR);

    /* A regular file as the directory itself. */
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(file), -1);
    CU_ASSERT_EQUAL(errno, ENOTDIR);

    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(""), -1);
    CU_ASSERT_EQUAL(errno, EINVAL);
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(NULL), -1);
    CU_ASSERT_EQUAL(errno, EINVAL);
}

static void test_mkdir_no_permission(void)
{
    if (geteuid() == 0) {
        /* root ignores directory permissions: nothing to see. */
        printf("(skipped as root) ");
        return;
    }
    char ro[400], p[500];
    snprintf(ro, sizeof(ro), "%s/ro", tmpdir);
    CU_ASSERT_EQUAL_FATAL(mkdir(ro, 0500), 0);
    snprintf(p, sizeof(p), "%s/x/y", ro);
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_mkdir_p(p), -1);
    CU_ASSERT_EQUAL(errno, EACCES);
    chmod(ro, 0700);
}

/* ---- the directory lock ------------------------------------------------ */

static void test_lock_twice(void)
{
    char dir[400], err[512], path[600];
    snprintf(dir, sizeof(dir), "%s/locked", tmpdir);
    CU_ASSERT_EQUAL_FATAL(sg_fs_mkdir_p(dir), 0);
    snprintf(path, sizeof(path), "%s/x.lock", dir);

    int a = -1, b = 7;
    err[0] = 'z';
    CU_ASSERT_EQUAL_FATAL(sg_fs_lock(dir, "x.lock", &a, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(a >= 0);
    CU_ASSERT_STRING_EQUAL(err, "");
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* Not inherited by a gateway's children. */
    CU_ASSERT_TRUE((fcntl(a, F_GETFD) & FD_CLOEXEC) != 0);

    /* A second holder in this process: refused, with a clear reason. */
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_lock(dir, "x.lock", &b, err, sizeof(err)), -1);
    CU_ASSERT_EQUAL(errno, EBUSY);
    CU_ASSERT_EQUAL(b, -1);
    char want[700];
    snprintf(want, sizeof(want), "%s is locked by another process", path);
    CU_ASSERT_STRING_EQUAL(err, want);

    /* Without an err buffer: same refusal. */
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_lock(dir, "x.lock", &b, NULL, 0), -1);
    CU_ASSERT_EQUAL(errno, EBUSY);

    /* Another process is refused too. */
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int fd = -1;
        _exit(sg_fs_lock(dir, "x.lock", &fd, NULL, 0) == -1 && errno == EBUSY ? 0 : 1);
    }
    int ws = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &ws, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);

    /* Another lock name in the same dir is independent. */
    int c = -1;
    CU_ASSERT_EQUAL(sg_fs_lock(dir, "y.lock", &c, NULL, 0), 0);
    sg_fs_unlock(c);

    /* Released: the next one gets it. */
    sg_fs_unlock(a);
    CU_ASSERT_EQUAL(sg_fs_lock(dir, "x.lock", &b, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(b >= 0);
    sg_fs_unlock(b);
    sg_fs_unlock(-1); /* a no-op */
}

static void test_lock_errors(void)
{
    char file[400], err[512], want[700];
    snprintf(file, sizeof(file), "%s/lockfile-parent", tmpdir);
    write_file(file);
    int fd = 5;
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_lock(file, "x.lock", &fd, err, sizeof(err)), -1);
    CU_ASSERT_EQUAL(errno, ENOTDIR);
    CU_ASSERT_EQUAL(fd, -1);
    snprintf(want, sizeof(want), "open %s/x.lock: %s", file, strerror(ENOTDIR));
    CU_ASSERT_STRING_EQUAL(err, want);

    /* A short err buffer is cut, never overrun. */
    char small[8];
    CU_ASSERT_EQUAL(sg_fs_lock(file, "x.lock", &fd, small, sizeof(small)), -1);
    CU_ASSERT_EQUAL(strlen(small), sizeof(small) - 1);

    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_lock(NULL, "x.lock", &fd, NULL, 0), -1);
    CU_ASSERT_EQUAL(errno, EINVAL);
    CU_ASSERT_EQUAL(sg_fs_lock(tmpdir, "x.lock", NULL, NULL, 0), -1);
}

/* ---- free space -------------------------------------------------------- */

static void test_space_real_dir(void)
{
    uint64_t avail = 0, total = 0;
    CU_ASSERT_EQUAL_FATAL(sg_fs_space(tmpdir, &avail, &total), 0);
    CU_ASSERT_TRUE(total > 0);
    CU_ASSERT_TRUE(avail <= total);

    /* The same figures as statvfs reports (allowing for other writers on a
     * shared machine between the two calls). */
    struct statvfs v;
    CU_ASSERT_EQUAL_FATAL(statvfs(tmpdir, &v), 0);
    uint64_t want_total = (uint64_t)v.f_blocks * v.f_frsize;
    uint64_t want_avail = (uint64_t)v.f_bavail * v.f_frsize;
    CU_ASSERT_EQUAL(total, want_total);
    uint64_t slack = UINT64_C(256) << 20;
    CU_ASSERT_TRUE(avail + slack >= want_avail && avail <= want_avail + slack);

    /* Through a descriptor: the same file system. */
    int fd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t favail = 0, ftotal = 0;
    CU_ASSERT_EQUAL(sg_fs_space_fd(fd, &favail, &ftotal), 0);
    CU_ASSERT_EQUAL(ftotal, total);
    CU_ASSERT_TRUE(favail + slack >= avail && favail <= avail + slack);
    uint64_t a2 = sg_fs_avail_bytes_fd(fd);
    CU_ASSERT_TRUE(a2 != UINT64_MAX && a2 <= total);
    close(fd);

    uint64_t a1 = sg_fs_avail_bytes(tmpdir);
    CU_ASSERT_TRUE(a1 != UINT64_MAX && a1 <= total);
    CU_ASSERT_TRUE(a1 + slack >= want_avail && a1 <= want_avail + slack);

    /* Either output may be left out. */
    CU_ASSERT_EQUAL(sg_fs_space(tmpdir, NULL, &total), 0);
    CU_ASSERT_EQUAL(sg_fs_space(tmpdir, &avail, NULL), 0);
}

static void test_space_unknown(void)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/does/not/exist", tmpdir);
    uint64_t avail = 42, total = 43;
    errno = 0;
    CU_ASSERT_EQUAL(sg_fs_space(p, &avail, &total), -1);
    CU_ASSERT_EQUAL(errno, ENOENT);
    /* Nothing stored on failure. */
    CU_ASSERT_EQUAL(avail, 42);
    CU_ASSERT_EQUAL(total, 43);
    /* Unknown is "plenty": a failing statvfs must not stop writes by itself. */
    CU_ASSERT_EQUAL(sg_fs_avail_bytes(p), UINT64_MAX);
    CU_ASSERT_EQUAL(sg_fs_avail_bytes(NULL), UINT64_MAX);
    CU_ASSERT_EQUAL(sg_fs_avail_bytes_fd(-1), UINT64_MAX);
    CU_ASSERT_EQUAL(sg_fs_space_fd(-1, &avail, &total), -1);
}

static const struct sg_test mkdir_tests[] = {
    {"nested, existing, slashes, relative", test_mkdir_nested},
    {"a regular file in the way is ENOTDIR", test_mkdir_file_in_way},
    {"no permission is EACCES", test_mkdir_no_permission},
    SG_TEST_END,
};
static const struct sg_test lock_tests[] = {
    {"held twice: the second is refused (EBUSY)", test_lock_twice},
    {"open errors name the path", test_lock_errors},
    SG_TEST_END,
};
static const struct sg_test space_tests[] = {
    {"free space on a real directory", test_space_real_dir},
    {"unknown free space", test_space_unknown},
    SG_TEST_END,
};
static const struct sg_suite suites[] = {
    {"mkdir -p", suite_init, suite_clean, mkdir_tests},
    {"lock", suite_init, suite_clean, lock_tests},
    {"space", suite_init, suite_clean, space_tests},
    SG_SUITE_END,
};

int main(void)
{
    return sg_test_main(suites);
}
