/*
 * journal: the ingest journal (see journal.h and docs/DURABILITY.md).
 * Long file: one on-disk format, with its writer (mapped appends, rotation,
 * preallocation), its sync thread and its reader (replay, torn tails, trim),
 * all sharing the locked struct and the byte layout below. CRC-32C (tables
 * and the hardware path) could move to its own file if a second user comes.
 *
 * Files in the journal directory:
 *   journal.lock                   flock(LOCK_EX) while a gateway has it open
 *   journal-<seq %020>.log         segments; zero-padded, so name order = seq order
 *   journal-<seq %020>.log.corrupt a segment with a foreign header, moved aside
 *
 * Segment byte layout (all integers little-endian):
 *
 *   offset size  field
 *   0      4     magic "SGJ1" (0x53 0x47 0x4a 0x31)
 *   4      4     version u32 = 1 (a reader refuses any other, naming both)
 *   8      ...   records, back to back, until the end of the file
 *
 * Record:
 *   0      4     len u32: bytes after the crc field = 10 + topic_len + payload_len
 *                (so 10 <= len <= 10 + 65535 + SG_JOURNAL_MAX_PAYLOAD)
 *   4      4     crc u32: CRC-32C over the len field (bytes 0..3) followed by the
 *                len bytes after the crc field (bytes 8 .. 8+len)
 *   8      8     arrival_ms u64: gateway wall clock when the message arrived
 *   16     2     topic_len u16
 *   18     t     topic bytes (not NUL-terminated)
 *   18+t   p     payload bytes (the MQTT payload, exactly as received)
 *
 * After the last record the file may hold zero bytes up to its end: space
 * the writer filled ahead of its appends (below) and had not cut off again
 * because the process died (kill -9) before closing the segment. No record
 * starts with a zero byte run to the end of the file (len >= 10), so a
 * reader treats zeros from a record boundary to the end of the file as the
 * clean end of the segment and truncates them, without counting a torn
 * tail. (A reader that predates this counts them as one torn tail and
 * truncates them: the same records come back either way.)
 *
 * A reader stops a segment at the first record that is short (fewer than 8
 * + len bytes left), has an absurd len, or fails its CRC, and truncates the
 * file there: such a tail can only come from a write cut short by a crash
 * or a failed disk (torn), since records are written whole under a mutex
 * and a failed write is cut off again at once.
 *
 * Writing: a record of up to MAP_MAX_RECORD bytes is stored with memcpy
 * into a MAP_SHARED window (MAP_WINDOW bytes) of the current segment: a
 * store into the page cache like pwritev's, so it survives a process crash
 * the moment memcpy returns, without a system call per record. Before the
 * window moves forward, the file is extended under it by writing zeros with
 * pwrite, so the disk space is reserved (a full disk fails that pwrite, and
 * the record then goes through pwritev and fails cleanly: never a SIGBUS).
 * Larger records, and any record when that fails, use pwritev. Closing the
 * segment unmaps it and truncates the zeros after cur_bytes. The sync
 * thread's fdatasync also writes the pages dirtied through the mapping
 * (Linux marks a shared file page dirty on the first store after each
 * writeback, by a write-protect fault), so no msync is needed.
 *
 * Invariants:
 * - Records go only to the current segment (the last one, created by this
 *   process); segments found at open are closed and only read (replay),
 *   truncated (torn tail) or deleted (trim).
 * - The current segment's records end exactly at cur_bytes after every
 *   append, followed only by zeros up to file_bytes: a failed write is
 *   truncated back (the window unmapped first, so no mapped page lies
 *   past the end of the file), and if even that fails the segment is
 *   closed, so no record is ever written after garbage. A closed segment
 *   ends at its last record (unless the cut of its zeros failed).
 * - fdatasync happens only on the sync thread (and at close): Paho acks one
 *   message at a time, so a per-append fsync would cap throughput at
 *   1/fsync-latency. A closed segment's fd is handed to the sync thread,
 *   which syncs and closes it; the appender never blocks on a disk flush.
 *
 * Threads: append from any thread; trim and stats from any thread; open,
 * replay and close with no append running. One mutex guards everything
 * mutable; it is held for one memcpy or pwritev (plus a zero fill every
 * MAP_WINDOW bytes and a file creation at rotation), never across an fsync
 * or an unlink.
 */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "fs.h"
#include "log.h"

#define JOURNAL_VERSION 1u
#define HEADER_BYTES 8u
#define REC_HEAD_BYTES 18u /* len, crc, arrival_ms, topic_len */
#define REC_FIXED_BODY 10u /* arrival_ms + topic_len: the least len can be */
#define MAX_TOPIC 65535u
#define MAX_BODY ((uint64_t)REC_FIXED_BODY + MAX_TOPIC + SG_JOURNAL_MAX_PAYLOAD)
#define DEFAULT_SEGMENT_BYTES ((uint64_t)64 << 20)
#define DEFAULT_SEGMENT_MS UINT64_C(10000)
#define READ_CHUNK ((size_t)256 << 10)
/* Records of up to MAP_MAX_RECORD bytes are stored through a writable
 * shared mapping of MAP_WINDOW bytes of the current segment (filled with
 * zeros first); larger ones go through pwritev. The first store into each
 * page costs a page fault (about 6 us on this VM's ext4, file_update_time
 * and page_mkwrite), a pwritev about 1.7 us + 0.4 us per KiB, so the
 * mapping wins only below about 1.5 KiB per record. */
#define MAP_WINDOW ((uint64_t)256 << 10)
#define MAP_MAX_RECORD ((uint64_t)1024)
#define ZERO_CHUNK ((size_t)64 << 10)

static const uint8_t zeros[ZERO_CHUNK];
/* "journal-" + 20 digits + ".log" */
#define NAME_PREFIX "journal-"
#define NAME_SUFFIX ".log"
#define NAME_LEN 32u

static const uint8_t magic[4] = {'S', 'G', 'J', '1'};

struct seg {
    uint64_t seq;
    uint64_t newest_ms;     /* greatest arrival_ms of its records (0 if none) */
    bool known;             /* newest_ms is valid: replayed, or written by us */
};

struct fdlist {
    int *fd;
    size_t n, cap;
};

struct sg_journal {
    char *dir;
    int dir_fd;
    int lock_fd;
    uint64_t segment_bytes;
    uint64_t segment_ms;
    uint64_t sync_ms;

    pthread_mutex_t mu;
    pthread_cond_t cv;          /* wakes the sync thread at close (CLOCK_MONOTONIC) */
    pthread_t thr;
    bool thr_started;
    bool stop;

    /* Everything below is guarded by mu. */
    struct seg *segs;           /* sorted by seq; the current segment is last */
    size_t nsegs, segs_cap;
    int fd;                     /* current segment, -1 = none yet (or closed) */
    uint64_t cur_bytes;         /* valid length of the current segment */
    uint64_t file_bytes;        /* its file size: >= cur_bytes, the rest preallocated zeros */
    uint8_t *map;               /* MAP_WINDOW bytes of it mapped at map_off, or NULL */
    uint64_t map_off;           /* page aligned */
    uint64_t page_bytes;
    uint64_t cur_first_ms;      /* arrival_ms of its first record */
    bool cur_has_records;
    uint64_t next_seq;          /* for the next segment file */
    bool appended;              /* an append ran: replay is no longer allowed */
    bool replayed;
    bool dirty;                 /* the current fd has writes not yet fdatasync'ed */
    bool dir_dirty;             /* a segment was created since the directory fsync */
    bool sync_failing;          /* for logging a failing sync once per streak */
    struct fdlist pending;      /* closed segments waiting for fdatasync + close */
    struct fdlist spare;        /* the sync thread's swap buffer for pending */
    struct sg_journal_stats st;
    /* Low-disk guard (see sg_journal_append): checked every
     * FREE_CHECK_BYTES of appends, or once a second while paused. */
    uint64_t min_free_bytes;
    uint64_t since_free_check;  /* bytes appended since the last check */
    uint64_t paused_check_ms;   /* monotonic ms of the last check while paused */
    bool low_disk;              /* journaling paused: the disk is nearly full */
};

#define FREE_CHECK_BYTES ((uint64_t)64 << 10)

/* ---- CRC-32C (Castagnoli, reflected 0x82F63B78), slice-by-8 ------------ */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = crc_tab[t - 1][i];
            crc_tab[t][i] = (prev >> 8) ^ crc_tab[0][prev & 0xffu];
        }
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* The SSE 4.2 crc32 instruction computes exactly this CRC (Castagnoli,
 * reflected), 8 bytes per instruction and without the 8 KiB of tables that
 * the Paho thread's other work keeps evicting from the cache. Chosen at run
 * time, so the build needs no -msse4.2. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SG_CRC_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p,
                                                           size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len-- > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    }
    return c32;
}
#endif

static bool crc_hw_ok;      /* the CPU has the instruction (set once by crc_init) */
static _Atomic bool crc_hw_on; /* use it (tests switch it off to check the tables) */

static void crc_detect(void)
{
    crc_init();
#ifdef SG_CRC_HW
    __builtin_cpu_init();
    crc_hw_ok = __builtin_cpu_supports("sse4.2") != 0;
#endif
    atomic_store(&crc_hw_on, crc_hw_ok);
}

bool sg_journal__crc_use_hw(bool on)
{
    pthread_once(&crc_once, crc_detect);
    atomic_store(&crc_hw_on, on && crc_hw_ok);
    return on && crc_hw_ok;
}

uint32_t sg_journal_crc32c(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;

    pthread_once(&crc_once, crc_detect);
    crc = ~crc;
#ifdef SG_CRC_HW
    if (atomic_load_explicit(&crc_hw_on, memory_order_relaxed)) {
        return ~crc_hw(crc, p, len);
    }
#endif
    while (len >= 8) {
        uint32_t lo = crc ^ le32(p);
        uint32_t hi = le32(p + 4);
        crc = crc_tab[7][lo & 0xffu] ^ crc_tab[6][(lo >> 8) & 0xffu] ^
              crc_tab[5][(lo >> 16) & 0xffu] ^ crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xffu] ^
              crc_tab[2][(hi >> 8) & 0xffu] ^ crc_tab[1][(hi >> 16) & 0xffu] ^
              crc_tab[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len-- > 0) {
        crc = crc_tab[0][(crc ^ *p++) & 0xffu] ^ (crc >> 8);
    }
    return ~crc;
}

/* ---- small helpers ---------------------------------------------------- */

static void seg_name(char *buf, size_t cap, uint64_t seq)
{
    snprintf(buf, cap, NAME_PREFIX "%020" PRIu64 NAME_SUFFIX, seq);
}

/* Parses "journal-<20 digits>.log" exactly. */
static bool parse_seg_name(const char *name, uint64_t *seq)
{
    char digits[21];

    if (strlen(name) != NAME_LEN || strncmp(name, NAME_PREFIX, 8) != 0 ||
        strcmp(name + 28, NAME_SUFFIX) != 0) {
        return false;
    }
    for (int i = 0; i < 20; i++) {
        if (name[8 + i] < '0' || name[8 + i] > '9') {
            return false;
        }
    }
    memcpy(digits, name + 8, 20);
    digits[20] = '\0';
    return sg_parse_u64(digits, 0, UINT64_MAX - 1, seq) == 0;
}

static void fdlist_push(struct fdlist *l, int fd)
{
    if (l->n == l->cap) {
        l->cap = l->cap == 0 ? 8 : l->cap * 2;
        l->fd = sg_xrealloc(l->fd, l->cap * sizeof(*l->fd));
    }
    l->fd[l->n++] = fd;
}

static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Writes all of iov at off; partial writes are continued. 0 or -1/errno. */
static int pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
    while (iovcnt > 0) {
        ssize_t w = pwritev(fd, iov, iovcnt, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        off += (uint64_t)w;
        size_t left = (size_t)w;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* ---- segments (mu held) ----------------------------------------------- */

static void unmap_locked(struct sg_journal *j)
{
    if (j->map != NULL) {
        munmap(j->map, MAP_WINDOW);
        j->map = NULL;
    }
}

/* Unmaps the current segment and cuts its preallocated zeros off, so a
 * closed segment ends at its last record. If the cut fails the zeros stay:
 * replay reads zeros after the last record as a clean end. */
static void finish_current_locked(struct sg_journal *j)
{
    unmap_locked(j);
    if (j->fd >= 0 && j->file_bytes > j->cur_bytes &&
        ftruncate(j->fd, (off_t)j->cur_bytes) == 0) {
        j->file_bytes = j->cur_bytes;
    }
}

/* Where the next rec_len bytes of the current segment can be stored with a
 * memcpy, or NULL (the caller then uses pwritev). Moves the mapped window
 * forward when needed, after extending the file under it with written
 * zeros. Written, not fallocated or sparse: the file system has reserved
 * the space before anything is stored into the mapping, so a full disk is
 * an error of this pwritev (the record then goes to pwritev itself and
 * fails there, cleanly) and never a SIGBUS on the store; and the pages are
 * already in the page cache, which makes the first store into each page
 * about 2.5 times cheaper than into fallocated space on ext4 (measured:
 * about 6 vs 15 us per 4 KiB page on this VM). */
static uint8_t *window_locked(struct sg_journal *j, uint64_t rec_len)
{
    if (rec_len > MAP_MAX_RECORD) {
        return NULL;
    }
    if (j->map != NULL && j->cur_bytes + rec_len <= j->map_off + MAP_WINDOW) {
        return j->map + (j->cur_bytes - j->map_off);
    }
    unmap_locked(j);
    uint64_t off = j->cur_bytes & ~(j->page_bytes - 1);
    while (j->file_bytes < off + MAP_WINDOW) {
        uint64_t want = off + MAP_WINDOW - j->file_bytes;
        ssize_t w = pwrite(j->fd, zeros, want < ZERO_CHUNK ? (size_t)want : ZERO_CHUNK,
                           (off_t)j->file_bytes);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            return NULL; /* what was written stays as a zero tail */
        }
        j->file_bytes += (uint64_t)w;
        j->dirty = true;
    }
    void *m = mmap(NULL, MAP_WINDOW, PROT_READ | PROT_WRITE, MAP_SHARED, j->fd, (off_t)off);
    if (m == MAP_FAILED) {
        return NULL;
    }
    j->map = m;
    j->map_off = off;
    return j->map + (j->cur_bytes - off);
}

/* Closes the current segment: its fd goes to the sync thread (which syncs
 * and closes it) or is closed now when there is no sync thread. */
static void close_current_locked(struct sg_journal *j)
{
    if (j->fd < 0) {
        return;
    }
    finish_current_locked(j);
    /* With a sync thread the fd always goes to it, even when clean: it may
     * be in the middle of an fdatasync of this very fd (taken as the
     * current one), and closing it here would let the number be reused. */
    if (j->thr_started) {
        fdlist_push(&j->pending, j->fd);
    } else {
        close(j->fd);
    }
    j->fd = -1;
    j->dirty = false;
    j->cur_has_records = false;
    j->cur_bytes = 0;
}

/* Creates the next segment file with its header and makes it current.
 * Returns 0 or -1 with errno (nothing left behind). */
static int new_segment_locked(struct sg_journal *j)
{
    char name[64];
    uint8_t hdr[HEADER_BYTES];
    int fd = -1;
    int e;

    memcpy(hdr, magic, 4);
    put32(hdr + 4, JOURNAL_VERSION);
    for (int attempt = 0;; attempt++) {
        seg_name(name, sizeof(name), j->next_seq);
        fd = openat(j->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            break;
        }
        if (errno != EEXIST || attempt >= 16) {
            return -1;
        }
        j->next_seq++; /* a stray file of that name: never write into it */
    }
    struct iovec iov = {.iov_base = hdr, .iov_len = sizeof(hdr)};
    if (pwritev_full(fd, &iov, 1, 0) != 0) {
        e = errno;
        close(fd);
        unlinkat(j->dir_fd, name, 0);
        errno = e;
        return -1;
    }
    if (j->nsegs == j->segs_cap) {
        j->segs_cap = j->segs_cap == 0 ? 16 : j->segs_cap * 2;
        j->segs = sg_xrealloc(j->segs, j->segs_cap * sizeof(*j->segs));
    }
    j->segs[j->nsegs++] = (struct seg){.seq = j->next_seq, .newest_ms = 0, .known = true};
    j->next_seq++;
    j->fd = fd;
    j->cur_bytes = HEADER_BYTES;
    j->file_bytes = HEADER_BYTES;
    j->cur_has_records = false;
    j->cur_first_ms = 0;
    j->dirty = true;
    j->dir_dirty = true;
    j->st.segments = j->nsegs;
    return 0;
}

/* ---- sync thread ------------------------------------------------------ */

/* One sync round: fdatasync the current segment if dirty and every closed
 * one waiting, fsync the directory if a segment was created. Called on the
 * sync thread, or at close after it was joined. mu is not held on entry. */
static void sync_round(struct sg_journal *j)
{
    int cur = -1;
    bool dir;
    struct fdlist todo;
    int failed = 0;
    int first_errno = 0;

    pthread_mutex_lock(&j->mu);
    if (j->dirty && j->fd >= 0) {
        cur = j->fd;
        j->dirty = false;
    }
    dir = j->dir_dirty;
    j->dir_dirty = false;
    /* Swap the pending list with the (empty) spare, so the appender keeps
     * a list with capacity and nothing is allocated here per round. */
    todo = j->pending;
    j->pending = j->spare;
    j->pending.n = 0;
    pthread_mutex_unlock(&j->mu);

    if (cur < 0 && !dir && todo.n == 0) {
        pthread_mutex_lock(&j->mu);
        j->spare = todo;
        pthread_mutex_unlock(&j->mu);
        return;
    }
    /* The current fd stays open while we sync it: a rotation meanwhile
     * only moves it to pending, and only this thread closes pending fds. */
    for (size_t i = 0; i < todo.n; i++) {
        if (fdatasync(todo.fd[i]) != 0) {
            failed++;
            first_errno = first_errno != 0 ? first_errno : errno;
        }
        close(todo.fd[i]);
    }
    if (cur >= 0 && fdatasync(cur) != 0) {
        failed++;
        first_errno = first_errno != 0 ? first_errno : errno;
    }
    if (dir && fsync(j->dir_fd) != 0) {
        failed++;
        first_errno = first_errno != 0 ? first_errno : errno;
    }

    bool log_fail = false, log_ok = false;
    pthread_mutex_lock(&j->mu);
    todo.n = 0;
    j->spare = todo;
    j->st.syncs++;
    j->st.errors += (uint64_t)failed;
    if (failed > 0 && !j->sync_failing) {
        j->sync_failing = true;
        log_fail = true;
    } else if (failed == 0 && j->sync_failing) {
        j->sync_failing = false;
        log_ok = true;
    }
    pthread_mutex_unlock(&j->mu);
    /* A failed fdatasync is not retried: the kernel may have dropped the
     * dirty pages, so the data since the last good sync is not durable
     * against power loss (still fine against a process crash). */
    if (log_fail) {
        sg_log(SG_LOG_WARN, "journal", "fdatasync failed, recent records not durable: %s dir=%s",
               strerror(first_errno), j->dir);
    }
    if (log_ok) {
        sg_log(SG_LOG_INFO, "journal", "fdatasync works again dir=%s", j->dir);
    }
}

static void *sync_main(void *arg)
{
    struct sg_journal *j = arg;
    struct timespec deadline;

    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t)(j->sync_ms / 1000);
        deadline.tv_nsec += (long)(j->sync_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (!j->stop) {
            if (pthread_cond_timedwait(&j->cv, &j->mu, &deadline) == ETIMEDOUT) {
                break;
            }
        }
        if (j->stop) {
            break;
        }
        pthread_mutex_unlock(&j->mu);
        sync_round(j);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ---- open / close ----------------------------------------------------- */

static void journal_free(struct sg_journal *j)
{
    if (j == NULL) {
        return;
    }
    if (j->fd >= 0) {
        finish_current_locked(j);
        close(j->fd);
    }
    for (size_t i = 0; i < j->pending.n; i++) {
        close(j->pending.fd[i]);
    }
    free(j->pending.fd);
    free(j->spare.fd);
    if (j->dir_fd >= 0) {
        close(j->dir_fd);
    }
    sg_fs_unlock(j->lock_fd);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j->segs);
    free(j->dir);
    free(j);
}

static int cmp_seg(const void *a, const void *b)
{
    uint64_t x = ((const struct seg *)a)->seq, y = ((const struct seg *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Outcome of reading a segment header at open. */
enum hdr_check { HDR_OK, HDR_TORN, HDR_FOREIGN, HDR_VERSION, HDR_ERROR };

static enum hdr_check check_header(struct sg_journal *j, const char *name, uint32_t *version)
{
    uint8_t h[HEADER_BYTES];
    uint8_t want[HEADER_BYTES];
    int fd = openat(j->dir_fd, name, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    bool zero = true;

    if (fd < 0) {
        return HDR_ERROR;
    }
    n = pread_full(fd, h, sizeof(h), 0);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return HDR_ERROR;
    }
    memcpy(want, magic, 4);
    put32(want + 4, JOURNAL_VERSION);
    for (ssize_t i = 0; i < n; i++) {
        zero = zero && h[i] == 0;
    }
    if ((size_t)n < sizeof(h)) {
        /* A header write cut short (or never reached the disk): a prefix
         * of what we write, or zeros. Anything else is not ours. */
        return zero || memcmp(h, want, (size_t)n) == 0 ? HDR_TORN : HDR_FOREIGN;
    }
    if (memcmp(h, magic, 4) != 0) {
        return zero ? HDR_TORN : HDR_FOREIGN;
    }
    *version = le32(h + 4);
    return *version == JOURNAL_VERSION ? HDR_OK : HDR_VERSION;
}

/* Lists the segments of the directory and checks their headers. */
static int scan_dir(struct sg_journal *j)
{
    DIR *d = NULL;
    struct dirent *de;
    int dfd = openat(j->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    uint64_t max_seq = 0;
    bool any = false;
    int ret = SG_EIO;

    if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
        int e = errno;
        if (dfd >= 0) {
            close(dfd);
        }
        errno = e;
        return SG_EIO;
    }
    for (;;) {
        uint64_t seq;
        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            if (errno != 0) {
                goto out;
            }
            break;
        }
        if (!parse_seg_name(de->d_name, &seq)) {
            continue;
        }
        if (j->nsegs == j->segs_cap) {
            j->segs_cap = j->segs_cap == 0 ? 16 : j->segs_cap * 2;
            j->segs = sg_xrealloc(j->segs, j->segs_cap * sizeof(*j->segs));
        }
        j->segs[j->nsegs++] = (struct seg){.seq = seq, .newest_ms = 0, .known = false};
        max_seq = !any || seq > max_seq ? seq : max_seq;
        any = true;
    }
    if (j->nsegs > 1) {
        qsort(j->segs, j->nsegs, sizeof(*j->segs), cmp_seg);
    }
    j->next_seq = any ? max_seq + 1 : 1;

    /* Check headers; drop torn ones, move foreign ones aside. */
    size_t keep = 0;
    for (size_t i = 0; i < j->nsegs; i++) {
        char name[64], moved[80];
        uint32_t ver = 0;
        seg_name(name, sizeof(name), j->segs[i].seq);
        switch (check_header(j, name, &ver)) {
        case HDR_OK:
            j->segs[keep++] = j->segs[i];
            break;
        case HDR_TORN:
            if (unlinkat(j->dir_fd, name, 0) != 0) {
                goto out;
            }
            j->st.torn_tails++;
            sg_log(SG_LOG_WARN, "journal", "segment with a torn header deleted file=%s/%s",
                   j->dir, name);
            break;
        case HDR_FOREIGN:
            snprintf(moved, sizeof(moved), "%s.corrupt", name);
            if (renameat(j->dir_fd, name, j->dir_fd, moved) != 0) {
                goto out;
            }
            j->st.quarantined++;
            sg_log(SG_LOG_ERROR, "journal",
                   "segment without the journal magic moved aside file=%s/%s moved_to=%s", j->dir,
                   name, moved);
            break;
        case HDR_VERSION:
            sg_log(SG_LOG_ERROR, "journal",
                   "refusing %s/%s: journal version %" PRIu32 ", this build reads version %u; "
                   "move it aside or use another journal dir",
                   j->dir, name, ver, JOURNAL_VERSION);
            ret = SG_EVERSION;
            errno = EINVAL;
            goto out;
        case HDR_ERROR:
            goto out;
        }
    }
    j->nsegs = keep;
    j->st.segments = keep;
    ret = 0;
out: {
    int e = errno;
    closedir(d);
    errno = e;
}
    return ret;
}

int sg_journal_open(struct sg_journal **out, const struct sg_journal_opts *o)
{
    struct sg_journal *j = NULL;
    pthread_condattr_t ca;
    int ret = SG_EIO;
    int e = EIO;

    if (out == NULL) {
        return SG_EINVAL;
    }
    *out = NULL;
    if (o == NULL || o->dir == NULL || o->dir[0] == '\0') {
        errno = EINVAL;
        return SG_EINVAL;
    }
    if (sg_fs_mkdir_p(o->dir) != 0) {
        return SG_EIO;
    }
    j = sg_xcalloc(1, sizeof(*j));
    j->dir = sg_xstrdup(o->dir);
    j->dir_fd = -1;
    j->lock_fd = -1;
    j->fd = -1;
    j->segment_bytes = o->segment_bytes != 0 ? o->segment_bytes : DEFAULT_SEGMENT_BYTES;
    j->segment_ms = o->segment_ms != 0 ? o->segment_ms : DEFAULT_SEGMENT_MS;
    j->sync_ms = o->sync_ms;
    j->min_free_bytes = o->min_free_bytes;
    long pg = sysconf(_SC_PAGESIZE);
    j->page_bytes = pg > 0 && ((uint64_t)pg & ((uint64_t)pg - 1)) == 0 ? (uint64_t)pg : 4096u;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);

    j->dir_fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dir_fd < 0) {
        e = errno;
        goto fail;
    }
    if (sg_fs_lock(o->dir, "journal.lock", &j->lock_fd, NULL, 0) != 0) {
        e = errno;
        if (e == EBUSY) {
            sg_log(SG_LOG_ERROR, "journal",
                   "%s/journal.lock is locked: another sensegate uses this journal dir", o->dir);
        }
        goto fail;
    }
    ret = scan_dir(j);
    if (ret != 0) {
        e = errno;
        goto fail;
    }
    if (j->sync_ms > 0) {
        int rc = pthread_create(&j->thr, NULL, sync_main, j);
        if (rc != 0) {
            ret = SG_EIO;
            e = rc;
            goto fail;
        }
        j->thr_started = true;
    }
    *out = j;
    return 0;
fail:
    journal_free(j);
    errno = e;
    return ret;
}

void sg_journal_close(struct sg_journal *j)
{
    if (j == NULL) {
        return;
    }
    if (j->thr_started) {
        pthread_mutex_lock(&j->mu);
        j->stop = true;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thr, NULL);
        /* Cut the preallocated tail first, so the final sync (on this
         * thread now that the helper is gone) also makes the size durable. */
        pthread_mutex_lock(&j->mu);
        finish_current_locked(j);
        pthread_mutex_unlock(&j->mu);
        sync_round(j);
    }
    journal_free(j);
}

/* ---- append ----------------------------------------------------------- */

static uint64_t mono_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Free bytes on the journal's file system, or UINT64_MAX if unknown. */
static uint64_t free_bytes(const struct sg_journal *j)
{
    return sg_fs_avail_bytes_fd(j->dir_fd);
}

/* The low-disk guard: false while the file system has less than
 * min_free_bytes available. A statvfs costs about a microsecond, so it runs
 * only every FREE_CHECK_BYTES of appends, or once a second while paused. */
static bool disk_ok_locked(struct sg_journal *j, uint64_t rec_len)
{
    if (j->min_free_bytes == 0) {
        return true;
    }
    if (j->low_disk) {
        uint64_t now = mono_ms_now();
        if (now - j->paused_check_ms < 1000u) {
            return false;
        }
        j->paused_check_ms = now;
        if (free_bytes(j) < j->min_free_bytes) {
            return false;
        }
        j->low_disk = false;
        j->since_free_check = 0;
        return true;
    }
    j->since_free_check += rec_len;
    if (j->since_free_check < FREE_CHECK_BYTES && j->st.appended > 0) {
        return true;
    }
    j->since_free_check = 0;
    if (free_bytes(j) < j->min_free_bytes) {
        j->low_disk = true;
        j->paused_check_ms = mono_ms_now();
        return false;
    }
    return true;
}

int sg_journal_append(struct sg_journal *j, uint64_t arrival_ms, const char *topic,
                      size_t topic_len, const void *payload, size_t payload_len)
{
    uint8_t head[REC_HEAD_BYTES];
    struct iovec iov[3];
    int niov = 0;
    uint32_t crc;
    uint32_t body_len;
    uint64_t rec_len;
    int ret = 0;

    if (j == NULL || topic_len > MAX_TOPIC || payload_len > SG_JOURNAL_MAX_PAYLOAD ||
        (topic == NULL && topic_len > 0) || (payload == NULL && payload_len > 0)) {
        return SG_EINVAL;
    }
    /* Build the record header and its CRC before taking the lock. */
    body_len = (uint32_t)(REC_FIXED_BODY + topic_len + payload_len);
    rec_len = 8u + (uint64_t)body_len;
    put32(head, body_len);
    put64(head + 8, arrival_ms);
    head[16] = (uint8_t)topic_len;
    head[17] = (uint8_t)(topic_len >> 8);
    crc = sg_journal_crc32c(0, head, 4);
    crc = sg_journal_crc32c(crc, head + 8, REC_HEAD_BYTES - 8);
    crc = sg_journal_crc32c(crc, topic, topic_len);
    crc = sg_journal_crc32c(crc, payload, payload_len);
    put32(head + 4, crc);
    iov[niov++] = (struct iovec){.iov_base = head, .iov_len = sizeof(head)};
    if (topic_len > 0) {
        iov[niov++] = (struct iovec){.iov_base = (void *)(uintptr_t)topic, .iov_len = topic_len};
    }
    if (payload_len > 0) {
        iov[niov++] =
            (struct iovec){.iov_base = (void *)(uintptr_t)payload, .iov_len = payload_len};
    }

    pthread_mutex_lock(&j->mu);
    j->appended = true;
    if (!disk_ok_locked(j, rec_len)) {
        /* Leave the last free space to the spool: rollups already made are
         * worth more than the crash protection of readings still open. */
        j->st.low_disk_skipped++;
        ret = SG_EFULL;
        goto out;
    }
    if (j->fd >= 0 && j->cur_has_records &&
        (j->cur_bytes + rec_len > j->segment_bytes ||
         (arrival_ms >= j->cur_first_ms && arrival_ms - j->cur_first_ms >= j->segment_ms))) {
        close_current_locked(j);
    }
    if (j->fd < 0 && new_segment_locked(j) != 0) {
        j->st.errors++;
        ret = SG_EIO;
        goto out;
    }
    uint8_t *dst = window_locked(j, rec_len);
    if (dst != NULL) {
        /* A store into the page cache, like pwritev's copy but without the
         * system call: it survives a kill -9 the same way. */
        memcpy(dst, head, sizeof(head));
        if (topic_len > 0) {
            memcpy(dst + sizeof(head), topic, topic_len);
        }
        if (payload_len > 0) {
            memcpy(dst + sizeof(head) + topic_len, payload, payload_len);
        }
    } else if (pwritev_full(j->fd, iov, niov, j->cur_bytes) != 0) {
        int e = errno;
        /* Cut off whatever part of the record reached the file (and any
         * preallocated zeros), so the next record follows the last good
         * one. If that fails too, close the segment: replay stops at the
         * garbage, and nothing is ever written after it. The window goes
         * first: a mapping past the end of the file must never be
         * touched. */
        j->dirty = true;
        unmap_locked(j);
        if (ftruncate(j->fd, (off_t)j->cur_bytes) != 0) {
            close_current_locked(j);
        } else {
            j->file_bytes = j->cur_bytes;
        }
        j->st.errors++;
        errno = e;
        ret = SG_EIO;
        goto out;
    } else if (j->cur_bytes + rec_len > j->file_bytes) {
        j->file_bytes = j->cur_bytes + rec_len;
    }
    if (!j->cur_has_records) {
        j->cur_has_records = true;
        j->cur_first_ms = arrival_ms;
    }
    j->cur_bytes += rec_len;
    j->dirty = true;
    struct seg *s = &j->segs[j->nsegs - 1];
    s->newest_ms = arrival_ms > s->newest_ms ? arrival_ms : s->newest_ms;
    j->st.appended++;
    j->st.bytes += rec_len;
out:
    pthread_mutex_unlock(&j->mu);
    return ret;
}

/* ---- replay ----------------------------------------------------------- */

/* A window of a segment file read through one growing buffer. */
struct reader {
    int fd;
    uint64_t size;
    uint8_t *buf;
    size_t cap;
    uint64_t boff;          /* file offset of buf[0] */
    size_t blen;            /* valid bytes in buf */
};

/* Makes [off, off + n) readable (the caller checked off + n <= size) and
 * returns a pointer to it, or NULL with errno on a read error. The buffer
 * never grows past max(READ_CHUNK, n), and n is bounded by MAX_BODY. */
static const uint8_t *reader_get(struct reader *r, uint64_t off, size_t n)
{
    if (off >= r->boff && off + n <= r->boff + r->blen) {
        return r->buf + (off - r->boff);
    }
    size_t want = n > READ_CHUNK ? n : READ_CHUNK;
    if ((uint64_t)want > r->size - off) {
        want = (size_t)(r->size - off);
    }
    if (want > r->cap) {
        r->buf = sg_xrealloc(r->buf, want);
        r->cap = want;
    }
    ssize_t got = pread_full(r->fd, r->buf, want, off);
    if (got < 0) {
        return NULL;
    }
    r->boff = off;
    r->blen = (size_t)got;
    if ((size_t)got < n) {
        errno = EIO; /* the file shrank under us */
        return NULL;
    }
    return r->buf;
}

/* 1 if [off, size) holds only zero bytes, 0 if not, -1 on a read error. */
static int zero_to_end(struct reader *r, uint64_t off)
{
    while (off < r->size) {
        size_t n = r->size - off > READ_CHUNK ? READ_CHUNK : (size_t)(r->size - off);
        const uint8_t *p = reader_get(r, off, n);
        if (p == NULL) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (p[i] != 0) {
                return 0;
            }
        }
        off += n;
    }
    return 1;
}

/* Replays one segment. Returns 0 (with *empty when no intact record was
 * found) or SG_EIO. */
static int replay_segment(struct sg_journal *j, struct seg *sg, struct reader *r,
                          sg_journal_record_cb cb, void *ctx, bool *empty)
{
    char name[64];
    struct stat sb;
    uint64_t off = HEADER_BYTES;
    uint64_t records = 0;
    uint64_t newest = 0;
    const char *why = NULL;
    bool zero_tail = false;
    int ret = SG_EIO;

    seg_name(name, sizeof(name), sg->seq);
    r->fd = openat(j->dir_fd, name, O_RDWR | O_CLOEXEC);
    if (r->fd < 0 || fstat(r->fd, &sb) != 0) {
        goto out;
    }
    r->size = (uint64_t)sb.st_size;
    r->boff = 0;
    r->blen = 0;
    while (off < r->size) {
        /* Zeros from a record boundary to the end: space preallocated for
         * appends that never came (a process that did not close the
         * segment, e.g. kill -9). No record starts with a zero length, so
         * this is a clean end, not a torn one. */
        const uint8_t *z = reader_get(r, off, 1);
        if (z == NULL) {
            goto out;
        }
        if (z[0] == 0) {
            int zr = zero_to_end(r, off);
            if (zr < 0) {
                goto out;
            }
            if (zr == 1) {
                zero_tail = true;
                break;
            }
        }
        if (r->size - off < 8) {
            why = "short record header";
            break;
        }
        const uint8_t *h = reader_get(r, off, 8);
        if (h == NULL) {
            goto out;
        }
        uint32_t len = le32(h);
        uint32_t crc = le32(h + 4);
        if (len < REC_FIXED_BODY || len > MAX_BODY) {
            why = "absurd record length";
            break;
        }
        if ((uint64_t)len > r->size - off - 8) {
            why = "short record";
            break;
        }
        h = reader_get(r, off, 8 + (size_t)len);
        if (h == NULL) {
            goto out;
        }
        uint32_t c = sg_journal_crc32c(0, h, 4);
        c = sg_journal_crc32c(c, h + 8, len);
        if (c != crc) {
            why = "bad CRC";
            break;
        }
        uint64_t arrival_ms = le64(h + 8);
        size_t topic_len = (size_t)h[16] | (size_t)h[17] << 8;
        if (REC_FIXED_BODY + topic_len > len) {
            why = "topic longer than record";
            break;
        }
        if (cb != NULL) {
            cb(ctx, arrival_ms, (const char *)(h + REC_HEAD_BYTES), topic_len,
               h + REC_HEAD_BYTES + topic_len, len - REC_FIXED_BODY - topic_len);
        }
        records++;
        newest = arrival_ms > newest ? arrival_ms : newest;
        off += 8u + len;
    }
    if (why != NULL || zero_tail) {
        if (ftruncate(r->fd, (off_t)off) != 0 || (j->sync_ms > 0 && fdatasync(r->fd) != 0)) {
            goto out;
        }
    }
    if (why != NULL) {
        sg_log(SG_LOG_WARN, "journal",
               "torn tail truncated file=%s/%s offset=%" PRIu64 " dropped_bytes=%" PRIu64
               " reason=\"%s\" intact_records=%" PRIu64,
               j->dir, name, off, r->size - off, why, records);
    }
    pthread_mutex_lock(&j->mu);
    j->st.replayed_records += records;
    j->st.torn_tails += why != NULL ? 1 : 0;
    pthread_mutex_unlock(&j->mu);
    sg->newest_ms = newest;
    sg->known = true;
    *empty = records == 0;
    ret = 0;
out:
    if (r->fd >= 0) {
        int e = errno;
        close(r->fd);
        errno = e;
    }
    r->fd = -1;
    return ret;
}

int sg_journal_replay(struct sg_journal *j, sg_journal_record_cb cb, void *ctx)
{
    struct reader r = {.fd = -1};
    size_t nsegs;
    int ret = 0;

    if (j == NULL) {
        return SG_EINVAL;
    }
    pthread_mutex_lock(&j->mu);
    if (j->appended || j->replayed) {
        pthread_mutex_unlock(&j->mu);
        return SG_EINVAL;
    }
    j->replayed = true;
    nsegs = j->nsegs;
    pthread_mutex_unlock(&j->mu);

    /* No append runs during replay (documented), so the segment array is
     * stable; segments left without a record are removed afterwards. */
    for (size_t i = 0; i < nsegs; i++) {
        bool empty = false;
        ret = replay_segment(j, &j->segs[i], &r, cb, ctx, &empty);
        if (ret != 0) {
            break;
        }
        if (empty) {
            char name[64];
            seg_name(name, sizeof(name), j->segs[i].seq);
            if (unlinkat(j->dir_fd, name, 0) == 0) {
                j->segs[i].seq = UINT64_MAX; /* removed from the list below */
            }
        }
    }
    free(r.buf);

    int e = errno;
    pthread_mutex_lock(&j->mu);
    size_t keep = 0;
    for (size_t i = 0; i < j->nsegs; i++) {
        if (j->segs[i].seq != UINT64_MAX) {
            j->segs[keep++] = j->segs[i];
        }
    }
    j->nsegs = keep;
    j->st.segments = keep;
    pthread_mutex_unlock(&j->mu);
    errno = e;
    return ret;
}

/* ---- trim ------------------------------------------------------------- */

int sg_journal_trim(struct sg_journal *j, uint64_t before_ms)
{
    uint64_t *doomed = NULL;
    size_t ndoomed = 0;
    int ret = 0;
    int e = 0;

    if (j == NULL) {
        return SG_EINVAL;
    }
    pthread_mutex_lock(&j->mu);
    if (j->nsegs > 0) {
        doomed = sg_xmalloc(j->nsegs * sizeof(*doomed));
    }
    /* An idle current segment whose records are all old is closed first,
     * so a quiet gateway does not keep old data around forever. */
    if (j->fd >= 0 && j->nsegs > 0 && j->cur_has_records &&
        j->segs[j->nsegs - 1].newest_ms < before_ms) {
        close_current_locked(j);
    }
    size_t keep = 0;
    for (size_t i = 0; i < j->nsegs; i++) {
        const struct seg *s = &j->segs[i];
        bool current = j->fd >= 0 && i == j->nsegs - 1;
        if (!current && s->known && s->newest_ms < before_ms) {
            doomed[ndoomed++] = s->seq;
        } else {
            j->segs[keep++] = *s;
        }
    }
    j->nsegs = keep;
    j->st.segments = keep;
    pthread_mutex_unlock(&j->mu);

    /* Unlink outside the lock: a slow metadata operation must not stall
     * the Paho thread. A deletion lost to power loss only means the
     * segment is replayed again (its windows are skipped by the marks). */
    uint64_t failed = 0;
    for (size_t i = 0; i < ndoomed; i++) {
        char name[64];
        seg_name(name, sizeof(name), doomed[i]);
        if (unlinkat(j->dir_fd, name, 0) != 0 && errno != ENOENT) {
            e = errno;
            failed++;
        }
    }
    free(doomed);
    pthread_mutex_lock(&j->mu);
    j->st.trimmed_segments += ndoomed - failed;
    j->st.errors += failed;
    pthread_mutex_unlock(&j->mu);
    if (failed > 0) {
        ret = SG_EIO;
        errno = e;
    }
    return ret;
}

/* ---- stats ------------------------------------------------------------ */

void sg_journal_stats(struct sg_journal *j, struct sg_journal_stats *out)
{
    if (out == NULL) {
        return;
    }
    if (j == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    pthread_mutex_lock(&j->mu);
    *out = j->st;
    pthread_mutex_unlock(&j->mu);
}
