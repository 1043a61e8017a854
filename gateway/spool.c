/*
 * spool: the bounded on-disk queue of rollup batches waiting for the
 * backend, and their dead letters, in one SQLite file <dir>/spool.db (WAL).
 * The layout, PRAGMAs and guarantees are described in docs/SPOOL.md.
 * Long file: every function runs SQL against the one schema in this file
 * and keeps the totals invariant below. Opening (probe, quarantine, schema
 * migration: about 300 lines) could become spool_open.c, at the price of
 * sharing struct sg_spool between two files.
 *
 * Invariants:
 * - Every change is one transaction that also rewrites the totals in the
 *   state table (bytes, batches, dead letters), so opening needs no scan and
 *   the totals always match the rows.
 * - state.next_seq is above every sequence number ever handed out: numbers
 *   are reserved on disk in blocks of SEQ_BLOCK before they are handed out,
 *   and a push also raises it in its own transaction. At open the sequence
 *   restarts at max(state.next_seq, now_ms * 10^6), so numbers never repeat
 *   even if the batch table was emptied or the file was lost.
 * - SQLite never chooses a key: seq is always ours, so rowid reuse (the
 *   reason for AUTOINCREMENT) cannot happen.
 * - In-memory stats change only after a COMMIT succeeded.
 * - Window marks (table mark, schema version 2) are upserted inside the
 *   push's transaction, so a batch and the marks of its windows are stored
 *   together or not at all; a mark only ever grows (max on conflict).
 *
 * Thread: the loop thread only; every call is synchronous.
 */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common.h"
#include "fs.h"
#include "log.h"

#define SPOOL_SCHEMA_VERSION 2
/* 'SGSP' in the database header, so file(1) and a hex dump tell what it is. */
#define SPOOL_APPLICATION_ID 0x53475350
/* Sequence numbers reserved on disk per write in sg_spool_next_seq. */
#define SEQ_BLOCK 1024u
/* Bytes of the backend's answer kept with a dead letter. */
#define REASON_MAX 256u
#define SEQ_CLOCK_SCALE UINT64_C(1000000)
/* Most push times remembered for close_mono_ms (16 bytes each). */
#define MONO_MAX ((size_t)1 << 20)

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_STATE_SET,
    ST_INSERT,
    ST_OLDEST_OTHER,
    ST_DELETE,
    ST_PEEK,
    ST_GET,
    ST_CONTAINS,
    ST_OLDEST_CREATED,
    ST_DEAD_INSERT,
    ST_DEAD_OLDEST,
    ST_DEAD_DELETE,
    ST_MARK_UPSERT,
    ST_MARK_LOAD,
    ST_MARK_PRUNE,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_STATE_SET] = "INSERT INTO state(k, v) VALUES(?1, ?2) "
                     "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
    [ST_INSERT] = "INSERT INTO batch(seq, created_ms, content_type, body, bytes) "
                  "VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_OLDEST_OTHER] = "SELECT seq, bytes FROM batch WHERE seq <> ?1 ORDER BY seq LIMIT 1",
    [ST_DELETE] = "DELETE FROM batch WHERE seq = ?1",
    [ST_PEEK] = "SELECT seq, created_ms, content_type, body FROM batch WHERE seq > ?1 "
                "ORDER BY seq LIMIT 1",
    [ST_GET] = "SELECT content_type, body, bytes FROM batch WHERE seq = ?1",
    [ST_CONTAINS] = "SELECT 1 FROM batch WHERE seq = ?1",
    [ST_OLDEST_CREATED] = "SELECT created_ms, seq FROM batch ORDER BY seq LIMIT 1",
    [ST_DEAD_INSERT] = "INSERT OR REPLACE INTO dead_letter(seq, moved_ms, http_status, reason, "
                       "content_type, body, bytes) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_DEAD_OLDEST] = "SELECT seq, bytes FROM dead_letter WHERE seq <> ?1 ORDER BY seq LIMIT 1",
    [ST_DEAD_DELETE] = "DELETE FROM dead_letter WHERE seq = ?1",
    [ST_MARK_UPSERT] = "INSERT INTO mark(sensor_id, kind, window_ms, closed_before_ms) "
                       "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(sensor_id, kind, window_ms) DO UPDATE "
                       "SET closed_before_ms = max(closed_before_ms, excluded.closed_before_ms)",
    [ST_MARK_LOAD] = "SELECT sensor_id, kind, window_ms, closed_before_ms FROM mark",
    [ST_MARK_PRUNE] = "DELETE FROM mark WHERE closed_before_ms < ?1",
};

/* The figures kept in the state table; written together with every change. */
struct totals {
    uint64_t next_seq;      /* above every seq ever handed out */
    uint64_t bytes;         /* sum of batch.bytes */
    uint64_t batches;       /* rows in batch */
    uint64_t dead_letters;  /* rows in dead_letter */
    uint64_t dead_bytes;    /* sum of dead_letter.bytes */
    uint64_t dropped_total; /* batches dropped at the bound over the file's life */
};

/* The monotonic time a batch was pushed in this process. */
struct mono_ent {
    uint64_t seq;
    uint64_t mono_ms;       /* 0 = forgotten (acked or dead) */
};

struct sg_spool {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    char *path;                 /* <dir>/spool.db */
    int last_rc;                /* SQLite code of the last failure */
    char *dir;                  /* spool.dir, for statvfs */
    uint64_t min_free_bytes;    /* a push is refused below this much free disk */
    uint64_t last_vacuum_ms;    /* monotonic ms of the last low-disk vacuum */
    int lock_fd;                /* <dir>/spool.lock, flock'ed while open */
    uint64_t max_bytes;         /* 0 = no bound */
    uint64_t max_batches;       /* 0 = no bound */
    uint64_t seq;               /* next number sg_spool_next_seq hands out */
    struct totals tot;          /* as committed */
    struct sg_spool_stats stats;
    char err[512];              /* last SQLite message */
    /* Push times for close_mono_ms, kept in memory only: entries
     * [mono_head, mono_tail) sorted by seq; the front is pruned as the oldest
     * batch leaves, so the array holds about the batches spooled now. */
    struct mono_ent *mono;
    size_t mono_head, mono_tail, mono_cap;
    uint64_t close_note_ms; /* earliest sg_spool_note_close since the last push; 0 = none */
};

/* ---- small helpers ---------------------------------------------------- */

/* SQLite ran out of disk (or hit an I/O error doing so). */
static bool is_full(int rc)
{
    return (rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR;
}

static void set_err(struct sg_spool *sp, const char *what)
{
    snprintf(sp->err, sizeof(sp->err), "%s: %s (sqlite %d)", what, sqlite3_errmsg(sp->db),
             sqlite3_extended_errcode(sp->db));
}

/* A failed SQLite call becomes SG_EINVAL for a constraint (our caller passed
 * a seq that is already stored) and SG_EIO for everything else (disk full,
 * I/O error, corruption found at run time, a lock held too long). */
static int fail(struct sg_spool *sp, int rc, const char *what)
{
    set_err(sp, what);
    sp->last_rc = rc;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        return SG_EINVAL;
    }
    sp->stats.errors++;
    return SG_EIO;
}

static sqlite3_stmt *stmt(struct sg_spool *sp, enum stmt_id id)
{
    sqlite3_stmt *s = sp->st[id];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Runs a statement that returns no row. */
static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bind_u64(sqlite3_stmt *s, int i, uint64_t v)
{
    /* Every value we store is below 2^63 (seq < 2 * 10^19 is checked). */
    return sqlite3_bind_int64(s, i, (sqlite3_int64)v);
}

static uint64_t col_u64(sqlite3_stmt *s, int i)
{
    sqlite3_int64 v = sqlite3_column_int64(s, i);
    return v < 0 ? 0 : (uint64_t)v;
}

static int tx_begin(struct sg_spool *sp)
{
    return step_done(stmt(sp, ST_BEGIN));
}

static int tx_commit(struct sg_spool *sp)
{
    return step_done(stmt(sp, ST_COMMIT));
}

/* Undoes an open transaction after a failure; the SQLite message of the
 * failure was already saved. */
static void tx_rollback(struct sg_spool *sp)
{
    if (!sqlite3_get_autocommit(sp->db)) {
        step_done(stmt(sp, ST_ROLLBACK));
    }
}

static int state_set(struct sg_spool *sp, const char *k, uint64_t v)
{
    sqlite3_stmt *s = stmt(sp, ST_STATE_SET);
    sqlite3_bind_text(s, 1, k, -1, SQLITE_STATIC);
    bind_u64(s, 2, v);
    return step_done(s);
}

/* Writes every total; called inside the transaction that changed them. */
static int totals_write(struct sg_spool *sp, const struct totals *t)
{
    int rc;
    if ((rc = state_set(sp, "next_seq", t->next_seq)) != SQLITE_OK ||
        (rc = state_set(sp, "bytes", t->bytes)) != SQLITE_OK ||
        (rc = state_set(sp, "batches", t->batches)) != SQLITE_OK ||
        (rc = state_set(sp, "dead_letters", t->dead_letters)) != SQLITE_OK ||
        (rc = state_set(sp, "dead_bytes", t->dead_bytes)) != SQLITE_OK ||
        (rc = state_set(sp, "dropped_total", t->dropped_total)) != SQLITE_OK) {
        return rc;
    }
    return SQLITE_OK;
}

/* ---- push times (close_mono_ms) ---------------------------------------- */

/* Remembers when seq was pushed. Pushes come in seq order (next_seq); one
 * that does not is simply not remembered (close_mono_ms 0). */
static void mono_record(struct sg_spool *sp, uint64_t seq, uint64_t mono_ms)
{
    if (sp->mono_tail > sp->mono_head && sp->mono[sp->mono_tail - 1].seq >= seq) {
        return;
    }
    if (sp->mono_tail == sp->mono_cap) {
        if (sp->mono_head == 0 && sp->mono_cap >= MONO_MAX) {
            sp->mono_head = 1; /* full: forget the oldest */
        }
        if (sp->mono_head > 0) {
            memmove(sp->mono, sp->mono + sp->mono_head,
                    (sp->mono_tail - sp->mono_head) * sizeof(*sp->mono));
            sp->mono_tail -= sp->mono_head;
            sp->mono_head = 0;
        } else {
            sp->mono_cap = sp->mono_cap == 0 ? 64 : sp->mono_cap * 2;
            sp->mono = sg_xrealloc(sp->mono, sp->mono_cap * sizeof(*sp->mono));
        }
    }
    sp->mono[sp->mono_tail].seq = seq;
    sp->mono[sp->mono_tail].mono_ms = mono_ms != 0 ? mono_ms : 1;
    sp->mono_tail++;
}

static struct mono_ent *mono_find(struct sg_spool *sp, uint64_t seq)
{
    size_t lo = sp->mono_head, hi = sp->mono_tail;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->mono[mid].seq < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < sp->mono_tail && sp->mono[lo].seq == seq ? &sp->mono[lo] : NULL;
}

/* Drops front entries that are forgotten or older than the oldest batch
 * still spooled (those were acked, dead or dropped at the bound). */
static void mono_prune(struct sg_spool *sp, bool empty, uint64_t oldest_seq)
{
    while (sp->mono_head < sp->mono_tail &&
           (empty || sp->mono[sp->mono_head].mono_ms == 0 ||
            sp->mono[sp->mono_head].seq < oldest_seq)) {
        sp->mono_head++;
    }
    if (sp->mono_head == sp->mono_tail) {
        sp->mono_head = sp->mono_tail = 0;
    }
}

static void mono_forget(struct sg_spool *sp, uint64_t seq)
{
    struct mono_ent *e = mono_find(sp, seq);
    if (e != NULL) {
        e->mono_ms = 0;
    }
}

/* Applies committed totals to the in-memory figures. */
static void totals_apply(struct sg_spool *sp, const struct totals *t)
{
    sqlite3_stmt *s;
    bool empty = true;
    uint64_t oldest_seq = 0;

    sp->tot = *t;
    sp->stats.batches = t->batches;
    sp->stats.bytes = t->bytes;
    sp->stats.dead_letters = t->dead_letters;
    sp->stats.dropped_lifetime = t->dropped_total;
    sp->stats.oldest_created_ms = 0;
    s = stmt(sp, ST_OLDEST_CREATED);
    if (sqlite3_step(s) == SQLITE_ROW) {
        sp->stats.oldest_created_ms = col_u64(s, 0);
        oldest_seq = col_u64(s, 1);
        empty = false;
    }
    sqlite3_reset(s);
    mono_prune(sp, empty, oldest_seq);
}

static bool over_bound(uint64_t max_bytes, uint64_t max_count, uint64_t bytes, uint64_t count)
{
    return (max_bytes != 0 && bytes > max_bytes) || (max_count != 0 && count > max_count);
}

/* ---- open ------------------------------------------------------------- */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = sg_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Moves spool.db and its -wal/-shm aside as spool.db.corrupt-<ms>[-<n>]
 * (with the same -wal/-shm suffixes, so SQLite can still open the copy for
 * forensics). Returns the new name (caller frees) or NULL with errno. */
static char *quarantine_files(const char *path, const char *dir, uint64_t now_ms)
{
    size_t cap = strlen(path) + 64;
    char *dst = sg_xmalloc(cap);
    char *src_x = sg_xmalloc(cap);
    char *dst_x = sg_xmalloc(cap);
    static const char *const ext[] = {"-wal", "-shm"};
    struct stat st;

    /* Never overwrite an earlier quarantined file. */
    snprintf(dst, cap, "%s.corrupt-%" PRIu64, path, now_ms);
    for (unsigned n = 1; lstat(dst, &st) == 0 && n < 1000; n++) {
        snprintf(dst, cap, "%s.corrupt-%" PRIu64 "-%u", path, now_ms, n);
    }
    if (rename(path, dst) != 0 && errno != ENOENT) {
        goto fail;
    }
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        snprintf(src_x, cap, "%s%s", path, ext[i]);
        snprintf(dst_x, cap, "%s%s", dst, ext[i]);
        if (rename(src_x, dst_x) != 0 && errno != ENOENT) {
            goto fail;
        }
    }
    if (fsync_dir(dir) != 0) {
        goto fail;
    }
    free(src_x);
    free(dst_x);
    return dst;
fail: {
    int e = errno;
    free(dst);
    free(src_x);
    free(dst_x);
    errno = e;
    return NULL;
}
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Reads one integer from a single-row query; SQLITE_DONE if no row. */
static int query_i64(sqlite3 *db, const char *sql, sqlite3_int64 *out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

static bool is_corruption(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* Outcome of the first look at an existing file. */
enum probe { PROBE_OK, PROBE_CORRUPT, PROBE_ERROR };

/* Opens the file, sets the connection PRAGMAs and runs quick_check.
 * PROBE_CORRUPT with a reason in sp->err when the file is damaged. */
static enum probe open_and_check(struct sg_spool *sp, bool fsync_on)
{
    sqlite3_stmt *s = NULL;
    int rc;
    enum probe res = PROBE_ERROR;

    rc = sqlite3_open_v2(sp->path, &sp->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (sp->db == NULL) {
            snprintf(sp->err, sizeof(sp->err), "open %s: out of memory", sp->path);
            return PROBE_ERROR;
        }
        set_err(sp, "open");
        goto out;
    }
    sqlite3_extended_result_codes(sp->db, 1);
    sqlite3_busy_timeout(sp->db, 5000);

    /* auto_vacuum only takes effect before the first write to a new file
     * (journal_mode=WAL already writes the header), and is ignored for an
     * existing one. It does not read the file. */
    rc = exec(sp->db, "PRAGMA auto_vacuum=INCREMENTAL");
    if (rc != SQLITE_OK) {
        set_err(sp, "auto_vacuum");
        res = is_corruption(rc) ? PROBE_CORRUPT : PROBE_ERROR;
        goto out;
    }
    /* journal_mode is the first statement that reads the file, so a file
     * that is not a database fails here with SQLITE_NOTADB. */
    rc = sqlite3_prepare_v2(sp->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            const unsigned char *mode = sqlite3_column_text(s, 0);
            rc = (mode != NULL && strcmp((const char *)mode, "wal") == 0) ? SQLITE_OK
                                                                           : SQLITE_ERROR;
        }
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_OK) {
        set_err(sp, "journal_mode=WAL");
        res = is_corruption(rc) ? PROBE_CORRUPT : PROBE_ERROR;
        goto out;
    }
    rc = exec(sp->db, fsync_on ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    if (rc == SQLITE_OK) {
        /* secure_delete=FAST: Debian's SQLite zeroes every freed page
         * (SQLITE_SECURE_DELETE), so an ack of a 230 KB batch rewrote all
         * of its overflow pages through the WAL and the checkpoint (121 MB
         * written to ack 245 such batches, 7-12 MB with FAST, measured).
         * The freed pages only ever held batches, in a 0700 directory. */
        rc = exec(sp->db, "PRAGMA journal_size_limit=2097152; PRAGMA wal_autocheckpoint=256;"
                          "PRAGMA trusted_schema=OFF; PRAGMA secure_delete=FAST");
    }
    if (rc != SQLITE_OK) {
        set_err(sp, "pragma");
        res = is_corruption(rc) ? PROBE_CORRUPT : PROBE_ERROR;
        goto out;
    }

    /* quick_check: O(N) but without index cross-checks; one row "ok" or
     * one row per problem. */
    rc = sqlite3_prepare_v2(sp->db, "PRAGMA quick_check(1)", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
    }
    if (rc == SQLITE_ROW) {
        const unsigned char *r = sqlite3_column_text(s, 0);
        if (r == NULL || strcmp((const char *)r, "ok") != 0) {
            snprintf(sp->err, sizeof(sp->err), "quick_check: %s",
                     r != NULL ? (const char *)r : "(null)");
            res = PROBE_CORRUPT;
            goto out;
        }
    } else {
        set_err(sp, "quick_check");
        res = is_corruption(rc) ? PROBE_CORRUPT : PROBE_ERROR;
        goto out;
    }
    res = PROBE_OK;
out:
    sqlite3_finalize(s);
    if (res != PROBE_OK && res != PROBE_ERROR) {
        sqlite3_close(sp->db);
        sp->db = NULL;
    }
    return res;
}

static const char schema_sql[] =
    "PRAGMA application_id=1397183312;"
    "BEGIN IMMEDIATE;"
    "CREATE TABLE batch (seq INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL,"
    " content_type INTEGER NOT NULL, body BLOB NOT NULL, bytes INTEGER NOT NULL);"
    "CREATE TABLE dead_letter (seq INTEGER PRIMARY KEY, moved_ms INTEGER NOT NULL,"
    " http_status INTEGER NOT NULL, reason TEXT NOT NULL, content_type INTEGER NOT NULL,"
    " body BLOB NOT NULL, bytes INTEGER NOT NULL);"
    "CREATE TABLE state (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE mark (sensor_id TEXT NOT NULL, kind INTEGER NOT NULL,"
    " window_ms INTEGER NOT NULL, closed_before_ms INTEGER NOT NULL,"
    " PRIMARY KEY (sensor_id, kind, window_ms)) WITHOUT ROWID;"
    "INSERT INTO state(k, v) VALUES ('schema_version', 2), ('next_seq', 0), ('bytes', 0),"
    " ('batches', 0), ('dead_letters', 0), ('dead_bytes', 0), ('dropped_total', 0);"
    "COMMIT;";

_Static_assert(SPOOL_APPLICATION_ID == 1397183312, "application_id in schema_sql");
_Static_assert(SPOOL_SCHEMA_VERSION == 2, "schema_sql writes version 2");

/* Version 1 -> 2: the window marks table. One transaction, so a crash
 * leaves either version 1 (migrated again at the next open) or 2. */
static const char migrate_1_2_sql[] =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE IF NOT EXISTS mark (sensor_id TEXT NOT NULL, kind INTEGER NOT NULL,"
    " window_ms INTEGER NOT NULL, closed_before_ms INTEGER NOT NULL,"
    " PRIMARY KEY (sensor_id, kind, window_ms)) WITHOUT ROWID;"
    "UPDATE state SET v = 2 WHERE k = 'schema_version';"
    "COMMIT;";

/* Creates the schema in an empty file, or checks the version of an existing
 * one. Returns 0, SG_EVERSION (logged) or SG_EIO. */
static int schema_ensure(struct sg_spool *sp)
{
    sqlite3_int64 n = 0;
    sqlite3_int64 ver = -1;
    int rc;

    rc = query_i64(sp->db, "SELECT count(*) FROM sqlite_schema", &n);
    if (rc != SQLITE_OK) {
        set_err(sp, "read schema");
        return SG_EIO;
    }
    if (n == 0) {
        rc = exec(sp->db, schema_sql);
        if (rc != SQLITE_OK) {
            set_err(sp, "create schema");
            if (!sqlite3_get_autocommit(sp->db)) {
                exec(sp->db, "ROLLBACK");
            }
            return SG_EIO;
        }
        return 0;
    }
    rc = query_i64(sp->db, "SELECT v FROM state WHERE k = 'schema_version'", &ver);
    if (rc != SQLITE_OK && rc != SQLITE_DONE && (rc & 0xff) != SQLITE_ERROR) {
        set_err(sp, "read schema_version");
        return SG_EIO;
    }
    if (rc == SQLITE_OK && ver == 1) {
        rc = exec(sp->db, migrate_1_2_sql);
        if (rc != SQLITE_OK) {
            set_err(sp, "migrate schema 1 to 2");
            if (!sqlite3_get_autocommit(sp->db)) {
                exec(sp->db, "ROLLBACK");
            }
            return SG_EIO;
        }
        sg_log(SG_LOG_INFO, "spool", "schema migrated from version 1 to 2 path=%s", sp->path);
        ver = SPOOL_SCHEMA_VERSION;
    }
    if (rc != SQLITE_OK || ver != SPOOL_SCHEMA_VERSION) {
        if (rc == SQLITE_OK) {
            snprintf(sp->err, sizeof(sp->err), "schema version %lld, this build reads version %d",
                     (long long)ver, SPOOL_SCHEMA_VERSION);
        } else {
            snprintf(sp->err, sizeof(sp->err),
                     "no schema version (not a sensegate spool?), this build reads version %d",
                     SPOOL_SCHEMA_VERSION);
        }
        sg_log(SG_LOG_ERROR, "spool", "refusing %s: %s; move it aside or use another spool.dir",
               sp->path, sp->err);
        return SG_EVERSION;
    }
    return 0;
}

/* Loads the totals from state. A missing total (older tool, manual edit) is
 * recomputed by a scan once. */
static int totals_load(struct sg_spool *sp, struct totals *t, bool *rescanned)
{
    static const struct {
        const char *k;
        const char *scan;
        size_t off;
    } keys[] = {
        {"next_seq", "SELECT coalesce(max(seq), 0) + 1 FROM"
                     " (SELECT seq FROM batch UNION ALL SELECT seq FROM dead_letter)",
         offsetof(struct totals, next_seq)},
        {"bytes", "SELECT coalesce(sum(bytes), 0) FROM batch", offsetof(struct totals, bytes)},
        {"batches", "SELECT count(*) FROM batch", offsetof(struct totals, batches)},
        {"dead_letters", "SELECT count(*) FROM dead_letter",
         offsetof(struct totals, dead_letters)},
        {"dead_bytes", "SELECT coalesce(sum(bytes), 0) FROM dead_letter",
         offsetof(struct totals, dead_bytes)},
        {"dropped_total", "SELECT 0", offsetof(struct totals, dropped_total)},
    };
    char sql[128];

    *rescanned = false;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        sqlite3_int64 v = 0;
        snprintf(sql, sizeof(sql), "SELECT v FROM state WHERE k = '%s'", keys[i].k);
        int rc = query_i64(sp->db, sql, &v);
        if (rc == SQLITE_DONE) {
            rc = query_i64(sp->db, keys[i].scan, &v);
            *rescanned = true;
        }
        if (rc != SQLITE_OK) {
            set_err(sp, "read state");
            return SG_EIO;
        }
        *(uint64_t *)(void *)((char *)t + keys[i].off) = v < 0 ? 0 : (uint64_t)v;
    }
    return 0;
}

/* Takes an exclusive flock on <dir>/spool.lock, so two gateways never share
 * one spool (they would hand out the same sequence numbers). */
static int lock_dir(struct sg_spool *sp, const char *dir)
{
    if (sg_fs_lock(dir, "spool.lock", &sp->lock_fd, sp->err, sizeof(sp->err)) != 0) {
        int e = errno;
        if (e == EBUSY) {
            sg_log(SG_LOG_ERROR, "spool", "%s/spool.lock is locked: another sensegate uses this "
                   "spool.dir", dir);
        }
        errno = e;
        return -1;
    }
    return 0;
}

static void spool_free(struct sg_spool *sp)
{
    if (sp == NULL) {
        return;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(sp->st[i]);
    }
    if (sp->db != NULL) {
        sqlite3_close(sp->db);
    }
    sg_fs_unlock(sp->lock_fd);
    free(sp->mono);
    free(sp->path);
    free(sp->dir);
    free(sp);
}

int sg_spool_open(struct sg_spool **out, const struct sg_spool_opts *opts)
{
    struct sg_spool *sp = NULL;
    struct totals t;
    bool rescanned = false;
    int ret = SG_EIO;
    int rc;
    int e = EIO;

    if (out == NULL) {
        return SG_EINVAL;
    }
    *out = NULL;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
        errno = EINVAL;
        return SG_EINVAL;
    }
    if (sg_fs_mkdir_p(opts->dir) != 0) {
        return SG_EIO;
    }
    sp = sg_xcalloc(1, sizeof(*sp));
    sp->lock_fd = -1;
    sp->max_bytes = opts->max_bytes;
    sp->max_batches = opts->max_batches;
    sp->path = path_join(opts->dir, "spool.db");
    if (lock_dir(sp, opts->dir) != 0) {
        e = errno;
        goto fail;
    }

    for (int attempt = 0;; attempt++) {
        enum probe p = open_and_check(sp, opts->fsync);
        if (p == PROBE_OK) {
            break;
        }
        if (p == PROBE_ERROR || attempt > 0) {
            e = sp->db != NULL && sqlite3_system_errno(sp->db) != 0 ? sqlite3_system_errno(sp->db)
                                                                    : EIO;
            ret = p == PROBE_ERROR ? SG_EIO : SG_ECORRUPT;
            goto fail;
        }
        char *moved = quarantine_files(sp->path, opts->dir, opts->now_ms);
        if (moved == NULL) {
            e = errno;
            sg_log(SG_LOG_ERROR, "spool", "cannot move corrupt %s aside: %s (reason: %s)",
                   sp->path, strerror(e), sp->err);
            goto fail;
        }
        sg_log(SG_LOG_ERROR, "spool",
               "corrupt spool quarantined, starting empty path=%s moved_to=%s reason=\"%s\"",
               sp->path, moved, sp->err);
        free(moved);
        sp->stats.quarantined++;
    }

    ret = schema_ensure(sp);
    if (ret != 0) {
        e = ret == SG_EVERSION ? EINVAL : EIO;
        goto fail;
    }
    ret = SG_EIO;
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(sp->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sp->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            set_err(sp, "prepare");
            goto fail;
        }
    }
    memset(&t, 0, sizeof(t));
    if (totals_load(sp, &t, &rescanned) != 0) {
        goto fail;
    }
    /* Give back the free pages left by acks of the last run (auto_vacuum is
     * INCREMENTAL, so this is cheap and bounded by what was freed). */
    exec(sp->db, "PRAGMA incremental_vacuum");

    /* Seed the sequence, then reserve its first block (and store any
     * rescanned totals) in one transaction. */
    sp->seq = t.next_seq;
    if (opts->now_ms > 0 && opts->now_ms <= UINT64_MAX / SEQ_CLOCK_SCALE &&
        opts->now_ms * SEQ_CLOCK_SCALE > sp->seq) {
        sp->seq = opts->now_ms * SEQ_CLOCK_SCALE;
    }
    if (sp->seq == 0) {
        sp->seq = 1;
    }
    t.next_seq = sp->seq + SEQ_BLOCK;
    if ((rc = tx_begin(sp)) != SQLITE_OK || (rc = totals_write(sp, &t)) != SQLITE_OK ||
        (rc = tx_commit(sp)) != SQLITE_OK) {
        set_err(sp, "reserve sequence");
        tx_rollback(sp);
        e = sqlite3_system_errno(sp->db) != 0 ? sqlite3_system_errno(sp->db) : EIO;
        goto fail;
    }
    if (rescanned) {
        sg_log(SG_LOG_WARN, "spool", "totals missing from state, recomputed path=%s", sp->path);
    }
    totals_apply(sp, &t);
    sp->dir = sg_xstrdup(opts->dir);
    {
        /* The margin: what a checkpoint of a full WAL may need to grow the
         * database (wal_autocheckpoint 256 pages of 4 KiB), plus 1/8 of the
         * file system between 64 KiB and 8 MiB for the deletes themselves. */
        uint64_t fs = 0;
        if (sg_fs_space(opts->dir, NULL, &fs) != 0) {
            fs = 0;
        }
        uint64_t m = fs / 8;
        m = m < (64u << 10) ? (64u << 10) : m > (8u << 20) ? (8u << 20) : m;
        sp->min_free_bytes = m + (256u * 4096u);
    }
    *out = sp;
    return 0;
fail:
    spool_free(sp);
    errno = e;
    return ret;
}

void sg_spool_close(struct sg_spool *sp)
{
    spool_free(sp);
}

/* ---- sequence --------------------------------------------------------- */

uint64_t sg_spool_next_seq(struct sg_spool *sp)
{
    uint64_t s = sp->seq;
    int rc;

    if (s >= sp->tot.next_seq) {
        struct totals t = sp->tot;
        t.next_seq = s + SEQ_BLOCK;
        if ((rc = tx_begin(sp)) != SQLITE_OK || (rc = totals_write(sp, &t)) != SQLITE_OK ||
            (rc = tx_commit(sp)) != SQLITE_OK) {
            fail(sp, rc, "reserve sequence");
            tx_rollback(sp);
        } else {
            sp->tot.next_seq = t.next_seq;
        }
    }
    sp->seq = s + 1;
    return s;
}

/* ---- push ------------------------------------------------------------- */

/* Upserts the marks inside the open transaction. */
static int marks_upsert(struct sg_spool *sp, const struct sg_spool_mark *marks, size_t nmarks)
{
    for (size_t i = 0; i < nmarks; i++) {
        sqlite3_stmt *s = stmt(sp, ST_MARK_UPSERT);
        sqlite3_bind_text(s, 1, marks[i].sensor_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, marks[i].kind);
        bind_u64(s, 3, marks[i].window_ms);
        bind_u64(s, 4, marks[i].closed_before_ms);
        int rc = step_done(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    return SQLITE_OK;
}

static bool marks_valid(const struct sg_spool_mark *marks, size_t nmarks)
{
    if (marks == NULL && nmarks > 0) {
        return false;
    }
    for (size_t i = 0; i < nmarks; i++) {
        if (marks[i].sensor_id == NULL || marks[i].window_ms > (uint64_t)INT64_MAX ||
            marks[i].closed_before_ms > (uint64_t)INT64_MAX) {
            return false;
        }
    }
    return true;
}

int sg_spool_push(struct sg_spool *sp, uint64_t seq, int content_type, const uint8_t *body,
                  size_t len, uint64_t created_ms)
{
    return sg_spool_push_marked(sp, seq, content_type, body, len, created_ms, NULL, 0);
}

static int spool_push_once(struct sg_spool *sp, uint64_t seq, int content_type,
                           const uint8_t *body, size_t len, uint64_t created_ms,
                           const struct sg_spool_mark *marks, size_t nmarks);

static uint64_t dir_free_bytes(const char *dir)
{
    return dir != NULL ? sg_fs_avail_bytes(dir) : UINT64_MAX;
}

uint64_t sg_spool_min_free_bytes(const struct sg_spool *sp)
{
    return sp != NULL ? sp->min_free_bytes : 0;
}

void sg_spool_set_bounds(struct sg_spool *sp, uint64_t max_bytes, uint64_t max_batches)
{
    if (sp != NULL) {
        sp->max_bytes = max_bytes;
        sp->max_batches = max_batches;
    }
}

int sg_spool_push_marked(struct sg_spool *sp, uint64_t seq, int content_type, const uint8_t *body,
                         size_t len, uint64_t created_ms, const struct sg_spool_mark *marks,
                         size_t nmarks)
{
    /* Never let our own writes fill the disk: with WAL, acks, dead letters
     * and checkpoints need free space too, and a spool that cannot delete
     * can never drain. Below the margin a new batch is refused and counted
     * as dropped, and the space stays for the deletes that free more. */
    if (sp != NULL && sp->min_free_bytes > 0 &&
        dir_free_bytes(sp->dir) < sp->min_free_bytes + (uint64_t)len) {
        /* Pages freed by acks stay inside the file (and the WAL keeps its
         * size): give them back to the file system, then look again. At
         * most once a second: these write too. */
        uint64_t now = sg_mono_ms();
        if (now - sp->last_vacuum_ms >= 1000u) {
            sp->last_vacuum_ms = now;
            exec(sp->db, "PRAGMA incremental_vacuum");
            exec(sp->db, "PRAGMA wal_checkpoint(TRUNCATE)");
        }
    }
    if (sp != NULL && sp->min_free_bytes > 0 &&
        dir_free_bytes(sp->dir) < sp->min_free_bytes + (uint64_t)len) {
        sp->stats.dropped++;
        sp->tot.dropped_total++;
        sp->stats.dropped_lifetime = sp->tot.dropped_total;
        snprintf(sp->err, sizeof(sp->err),
                 "disk nearly full: less than %" PRIu64 " bytes free in %s", sp->min_free_bytes,
                 sp->dir);
        sp->close_note_ms = 0;
        return SG_EFULL;
    }
    int ret = spool_push_once(sp, seq, content_type, body, len, created_ms, marks, nmarks);
    if (ret == SG_EIO && sp != NULL && is_full(sp->last_rc)) {
        /* A checkpoint may free WAL space that acks left behind; the reserve
         * itself is kept for acks, which are what frees the disk. */
        if (exec(sp->db, "PRAGMA wal_checkpoint(TRUNCATE)") == SQLITE_OK) {
            ret = spool_push_once(sp, seq, content_type, body, len, created_ms, marks, nmarks);
        }
    }
    if (sp != NULL) {
        sp->close_note_ms = 0;
    }
    return ret;
}

void sg_spool_note_close(struct sg_spool *sp, uint64_t mono_ms)
{
    if (sp != NULL && mono_ms != 0 && (sp->close_note_ms == 0 || mono_ms < sp->close_note_ms)) {
        sp->close_note_ms = mono_ms;
    }
}

static int spool_push_once(struct sg_spool *sp, uint64_t seq, int content_type,
                           const uint8_t *body,
                         size_t len, uint64_t created_ms, const struct sg_spool_mark *marks,
                         size_t nmarks)
{
    static const uint8_t empty[1];
    struct totals t;
    sqlite3_stmt *s;
    uint64_t dropped = 0;
    int rc;
    int ret;

    if (sp == NULL || seq == 0 || seq > (uint64_t)INT64_MAX - SEQ_BLOCK || content_type < 0 ||
        (body == NULL && len > 0) || len > (size_t)INT32_MAX || created_ms > (uint64_t)INT64_MAX ||
        !marks_valid(marks, nmarks)) {
        return SG_EINVAL;
    }
    sp->err[0] = '\0';
    if (sp->max_bytes != 0 && len > sp->max_bytes) {
        /* Storing it would mean dropping everything else and still being
         * over the bound: refuse it, and count it as the batch dropped. */
        sp->stats.dropped++;
        sp->tot.dropped_total++;
        sp->stats.dropped_lifetime = sp->tot.dropped_total;
        snprintf(sp->err, sizeof(sp->err), "batch of %zu bytes exceeds spool max_bytes %" PRIu64,
                 len, sp->max_bytes);
        return SG_EFULL;
    }

    t = sp->tot;
    if ((rc = tx_begin(sp)) != SQLITE_OK) {
        return fail(sp, rc, "begin");
    }
    s = stmt(sp, ST_INSERT);
    bind_u64(s, 1, seq);
    bind_u64(s, 2, created_ms);
    sqlite3_bind_int(s, 3, content_type);
    sqlite3_bind_blob64(s, 4, body != NULL ? body : empty, len, SQLITE_STATIC);
    bind_u64(s, 5, len);
    rc = step_done(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK) {
        ret = fail(sp, rc, "insert");
        goto rollback;
    }
    t.bytes += len;
    t.batches++;
    if ((rc = marks_upsert(sp, marks, nmarks)) != SQLITE_OK) {
        ret = fail(sp, rc, "upsert marks");
        goto rollback;
    }

    /* Drop the oldest (smallest seq) other batches while over a bound; the
     * new one alone fits, so this ends at the latest when it is alone. */
    while (over_bound(sp->max_bytes, sp->max_batches, t.bytes, t.batches)) {
        uint64_t old_seq, old_bytes;
        s = stmt(sp, ST_OLDEST_OTHER);
        bind_u64(s, 1, seq);
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
            sqlite3_reset(s);
            if (rc == SQLITE_DONE) {
                /* Totals say over, rows say alone: the totals are wrong. */
                snprintf(sp->err, sizeof(sp->err), "spool totals disagree with rows");
                sp->stats.errors++;
                ret = SG_EIO;
                goto rollback;
            }
            ret = fail(sp, rc, "select oldest");
            goto rollback;
        }
        old_seq = col_u64(s, 0);
        old_bytes = col_u64(s, 1);
        sqlite3_reset(s);
        s = stmt(sp, ST_DELETE);
        bind_u64(s, 1, old_seq);
        if ((rc = step_done(s)) != SQLITE_OK) {
            ret = fail(sp, rc, "drop oldest");
            goto rollback;
        }
        t.bytes -= old_bytes < t.bytes ? old_bytes : t.bytes;
        t.batches--;
        dropped++;
    }
    t.dropped_total += dropped;
    if (seq >= t.next_seq) {
        t.next_seq = seq + 1;
    }
    if ((rc = totals_write(sp, &t)) != SQLITE_OK) {
        ret = fail(sp, rc, "update state");
        goto rollback;
    }
    if ((rc = tx_commit(sp)) != SQLITE_OK) {
        ret = fail(sp, rc, "commit");
        goto rollback;
    }
    if (seq >= sp->seq) {
        sp->seq = seq + 1;
    }
    sp->stats.dropped += dropped;
    uint64_t pushed = sg_mono_ms();
    mono_record(sp, seq,
                sp->close_note_ms != 0 && sp->close_note_ms < pushed ? sp->close_note_ms : pushed);
    totals_apply(sp, &t);
    return 0;
rollback:
    tx_rollback(sp);
    return ret;
}

/* ---- read ------------------------------------------------------------- */

int sg_spool_peek(struct sg_spool *sp, uint64_t after_seq, struct sg_spool_batch *out)
{
    sqlite3_stmt *s;
    int rc;

    if (sp == NULL || out == NULL) {
        return SG_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (after_seq > (uint64_t)INT64_MAX) {
        return SG_ENOTFOUND;
    }
    s = stmt(sp, ST_PEEK);
    bind_u64(s, 1, after_seq);
    rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        return SG_ENOTFOUND;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        return fail(sp, rc, "peek");
    }
    out->seq = col_u64(s, 0);
    out->created_ms = col_u64(s, 1);
    out->content_type = sqlite3_column_int(s, 2);
    const void *b = sqlite3_column_blob(s, 3);
    size_t n = (size_t)sqlite3_column_bytes(s, 3);
    out->body = sg_xmalloc(n > 0 ? n : 1);
    if (n > 0) {
        memcpy(out->body, b, n);
    }
    out->len = n;
    struct mono_ent *e = mono_find(sp, out->seq);
    out->close_mono_ms = e != NULL ? e->mono_ms : 0;
    sqlite3_reset(s);
    return 0;
}

bool sg_spool_contains(struct sg_spool *sp, uint64_t seq)
{
    sqlite3_stmt *s;
    int rc;

    if (sp == NULL || seq > (uint64_t)INT64_MAX) {
        return false;
    }
    s = stmt(sp, ST_CONTAINS);
    bind_u64(s, 1, seq);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        fail(sp, rc, "contains");
    }
    return rc == SQLITE_ROW;
}

/* ---- ack / dead ------------------------------------------------------- */

/* Looks a batch up inside the open transaction. Returns SQLITE_ROW with the
 * statement positioned on it (the caller resets), SQLITE_DONE, or an error. */
static int get_batch(struct sg_spool *sp, uint64_t seq, sqlite3_stmt **sout)
{
    sqlite3_stmt *s = stmt(sp, ST_GET);
    bind_u64(s, 1, seq);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
    }
    *sout = s;
    return rc;
}

static int spool_ack_once(struct sg_spool *sp, uint64_t seq);

int sg_spool_ack(struct sg_spool *sp, uint64_t seq)
{
    int ret = spool_ack_once(sp, seq);
    if (ret == SG_EIO && sp != NULL && is_full(sp->last_rc)) {
        /* The disk filled up under us (someone else's writes: ours stop at
         * the margin, see sg_spool_push_marked). Fold the WAL into the
         * database and truncate it, then try once more. */
        exec(sp->db, "PRAGMA wal_checkpoint(TRUNCATE)");
        ret = spool_ack_once(sp, seq);
    }
    return ret;
}

static int spool_ack_once(struct sg_spool *sp, uint64_t seq)
{
    struct totals t;
    sqlite3_stmt *s;
    uint64_t bytes;
    int rc;
    int ret;

    if (sp == NULL) {
        return SG_EINVAL;
    }
    if (seq > (uint64_t)INT64_MAX) {
        return SG_ENOTFOUND;
    }
    sp->err[0] = '\0';
    if ((rc = tx_begin(sp)) != SQLITE_OK) {
        return fail(sp, rc, "begin");
    }
    rc = get_batch(sp, seq, &s);
    if (rc == SQLITE_DONE) {
        ret = SG_ENOTFOUND;
        goto rollback;
    }
    if (rc != SQLITE_ROW) {
        ret = fail(sp, rc, "ack lookup");
        goto rollback;
    }
    bytes = col_u64(s, 2);
    sqlite3_reset(s);
    s = stmt(sp, ST_DELETE);
    bind_u64(s, 1, seq);
    if ((rc = step_done(s)) != SQLITE_OK) {
        ret = fail(sp, rc, "ack delete");
        goto rollback;
    }
    t = sp->tot;
    t.bytes -= bytes < t.bytes ? bytes : t.bytes;
    t.batches -= t.batches > 0 ? 1 : 0;
    if ((rc = totals_write(sp, &t)) != SQLITE_OK || (rc = tx_commit(sp)) != SQLITE_OK) {
        ret = fail(sp, rc, "ack commit");
        goto rollback;
    }
    mono_forget(sp, seq);
    totals_apply(sp, &t);
    return 0;
rollback:
    tx_rollback(sp);
    return ret;
}

/* Length of reason cut to at most REASON_MAX bytes without splitting a
 * UTF-8 sequence. */
static size_t reason_len(const char *r)
{
    size_t n = strnlen(r, REASON_MAX + 1);
    if (n <= REASON_MAX) {
        return n;
    }
    n = REASON_MAX;
    while (n > 0 && ((unsigned char)r[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

static int spool_dead_once(struct sg_spool *sp, uint64_t seq, int http_status,
                           const char *reason);

int sg_spool_dead(struct sg_spool *sp, uint64_t seq, int http_status, const char *reason)
{
    int ret = spool_dead_once(sp, seq, http_status, reason);
    if (ret == SG_EIO && sp != NULL && is_full(sp->last_rc)) {
        exec(sp->db, "PRAGMA wal_checkpoint(TRUNCATE)");
        ret = spool_dead_once(sp, seq, http_status, reason);
    }
    return ret;
}

static int spool_dead_once(struct sg_spool *sp, uint64_t seq, int http_status,
                           const char *reason)
{
    struct totals t;
    sqlite3_stmt *s;
    sqlite3_stmt *ins;
    uint64_t bytes;
    uint64_t dead_dropped = 0;
    int rc;
    int ret;

    if (sp == NULL) {
        return SG_EINVAL;
    }
    if (seq > (uint64_t)INT64_MAX) {
        return SG_ENOTFOUND;
    }
    if (reason == NULL) {
        reason = "";
    }
    sp->err[0] = '\0';
    if ((rc = tx_begin(sp)) != SQLITE_OK) {
        return fail(sp, rc, "begin");
    }
    rc = get_batch(sp, seq, &s);
    if (rc == SQLITE_DONE) {
        ret = SG_ENOTFOUND;
        goto rollback;
    }
    if (rc != SQLITE_ROW) {
        ret = fail(sp, rc, "dead lookup");
        goto rollback;
    }
    bytes = col_u64(s, 2);
    ins = stmt(sp, ST_DEAD_INSERT);
    bind_u64(ins, 1, seq);
    bind_u64(ins, 2, sg_now_ms());
    sqlite3_bind_int(ins, 3, http_status);
    sqlite3_bind_text(ins, 4, reason, (int)reason_len(reason), SQLITE_STATIC);
    sqlite3_bind_value(ins, 5, sqlite3_column_value(s, 0));
    sqlite3_bind_value(ins, 6, sqlite3_column_value(s, 1));
    bind_u64(ins, 7, bytes);
    rc = step_done(ins);
    sqlite3_clear_bindings(ins);
    sqlite3_reset(s);
    if (rc != SQLITE_OK) {
        ret = fail(sp, rc, "dead insert");
        goto rollback;
    }
    s = stmt(sp, ST_DELETE);
    bind_u64(s, 1, seq);
    if ((rc = step_done(s)) != SQLITE_OK) {
        ret = fail(sp, rc, "dead delete");
        goto rollback;
    }
    t = sp->tot;
    t.bytes -= bytes < t.bytes ? bytes : t.bytes;
    t.batches -= t.batches > 0 ? 1 : 0;
    t.dead_letters++;
    t.dead_bytes += bytes;
    /* Dead letters are bounded like the queue, oldest first; the one just
     * moved always stays (it fit in the queue, so it fits here). */
    while (over_bound(sp->max_bytes, sp->max_batches, t.dead_bytes, t.dead_letters)) {
        uint64_t old_seq, old_bytes;
        s = stmt(sp, ST_DEAD_OLDEST);
        bind_u64(s, 1, seq);
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
            sqlite3_reset(s);
            if (rc == SQLITE_DONE) {
                break;
            }
            ret = fail(sp, rc, "dead select oldest");
            goto rollback;
        }
        old_seq = col_u64(s, 0);
        old_bytes = col_u64(s, 1);
        sqlite3_reset(s);
        s = stmt(sp, ST_DEAD_DELETE);
        bind_u64(s, 1, old_seq);
        if ((rc = step_done(s)) != SQLITE_OK) {
            ret = fail(sp, rc, "dead drop oldest");
            goto rollback;
        }
        t.dead_bytes -= old_bytes < t.dead_bytes ? old_bytes : t.dead_bytes;
        t.dead_letters--;
        dead_dropped++;
    }
    if ((rc = totals_write(sp, &t)) != SQLITE_OK || (rc = tx_commit(sp)) != SQLITE_OK) {
        ret = fail(sp, rc, "dead commit");
        goto rollback;
    }
    sp->stats.dead_dropped += dead_dropped;
    mono_forget(sp, seq);
    totals_apply(sp, &t);
    return 0;
rollback:
    tx_rollback(sp);
    return ret;
}

/* ---- marks ------------------------------------------------------------ */

int sg_spool_load_marks(struct sg_spool *sp, sg_spool_mark_cb cb, void *ctx)
{
    sqlite3_stmt *s;
    int rc;

    if (sp == NULL || cb == NULL) {
        return SG_EINVAL;
    }
    s = stmt(sp, ST_MARK_LOAD);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *id = sqlite3_column_text(s, 0);
        sqlite3_int64 kind = sqlite3_column_int64(s, 1);
        struct sg_spool_mark m = {
            .sensor_id = id != NULL ? (const char *)id : "",
            .kind = kind < 0 || kind > UINT8_MAX ? 0 : (uint8_t)kind,
            .window_ms = col_u64(s, 2),
            .closed_before_ms = col_u64(s, 3),
        };
        cb(ctx, &m);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        return fail(sp, rc, "load marks");
    }
    return 0;
}

int sg_spool_prune_marks(struct sg_spool *sp, uint64_t older_than_ms)
{
    sqlite3_stmt *s;
    int rc;

    if (sp == NULL) {
        return SG_EINVAL;
    }
    sp->err[0] = '\0';
    if (older_than_ms > (uint64_t)INT64_MAX) {
        older_than_ms = (uint64_t)INT64_MAX;
    }
    /* One statement in autocommit mode: its own transaction. */
    s = stmt(sp, ST_MARK_PRUNE);
    bind_u64(s, 1, older_than_ms);
    rc = step_done(s);
    if (rc != SQLITE_OK) {
        return fail(sp, rc, "prune marks");
    }
    return 0;
}

/* ---- misc ------------------------------------------------------------- */

const struct sg_spool_stats *sg_spool_stats(struct sg_spool *sp)
{
    return &sp->stats;
}

const char *sg_spool_last_error(struct sg_spool *sp)
{
    return sp != NULL ? sp->err : "";
}

void sg_spool_batch_clear(struct sg_spool_batch *b)
{
    if (b == NULL) {
        return;
    }
    free(b->body);
    memset(b, 0, sizeof(*b));
}
