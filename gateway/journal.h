/*
 * journal: the ingest journal. Every MQTT message is appended here, in the
 * Paho callback, before the callback returns (Paho 1.3.12 sends the QoS 1
 * PUBACK when it returns; there is no manual ack). At start the journal is
 * replayed through the normal pipeline with the recorded arrival times, so a
 * process crash loses no acknowledged reading. Segment files
 * <dir>/journal-<20-digit seq>.log; byte layout at the top of journal.c,
 * design and guarantees in docs/DURABILITY.md.
 *
 * Threads: sg_journal_append from any thread (the Paho receive thread);
 * sg_journal_trim and sg_journal_stats from any thread, concurrently with
 * appends; open, replay and close from one thread (the loop, at start and
 * at shutdown) with no append running. A helper thread fdatasyncs dirty
 * segments every sync_ms.
 */
#ifndef SG_JOURNAL_H
#define SG_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sg_journal;

/* Largest payload one record may carry; larger appends are refused
 * (SG_EINVAL) and longer records found at replay are treated as corrupt. */
#define SG_JOURNAL_MAX_PAYLOAD ((size_t)16 << 20)

struct sg_journal_opts {
    const char *dir;          /* created if missing (mkdir -p, mode 0700) */
    uint64_t segment_bytes;   /* rotate when a record would pass this size; 0 = 64 MiB */
    uint64_t segment_ms;      /* and when arrival_ms is this far past the segment's first
                               * record, so trimming is fine-grained; 0 = 10 s */
    uint64_t sync_ms;         /* a helper thread fdatasyncs dirty segments (and fsyncs the
                               * directory after a segment was created) this often.
                               * 0 = never: no helper thread, no fdatasync at all, not even
                               * at close (tests, tmpfs); a process crash still loses
                               * nothing, a power loss may lose anything */
    uint64_t min_free_bytes;  /* appends are refused (SG_EFULL, counted in low_disk_skipped)
                               * while the file system has less free space than this, so
                               * the journal never takes the spool's last space; 0 = off */
};

/* Counters since open (except segments, a gauge). */
struct sg_journal_stats {
    uint64_t appended;          /* records appended */
    uint64_t bytes;             /* bytes appended (record headers included) */
    uint64_t errors;            /* failed appends, segment creations, syncs, deletions */
    uint64_t segments;          /* gauge: segment files in the directory */
    uint64_t replayed_records;  /* intact records handed to the replay callback */
    uint64_t torn_tails;        /* segments cut at a torn or corrupt record (or torn header) */
    uint64_t trimmed_segments;  /* segments deleted by sg_journal_trim */
    /* Added after the first draft of this header (append-only): */
    uint64_t quarantined;       /* segments with a foreign header, renamed to *.corrupt */
    uint64_t syncs;             /* fdatasync rounds of the helper thread that synced something */
    uint64_t low_disk_skipped;  /* appends refused (SG_EFULL) because the disk was nearly full */
};

/* Opens the journal in o->dir: creates the directory (mkdir -p), takes an
 * exclusive flock on <dir>/journal.lock, lists the segments and checks
 * their headers. A segment whose header is torn (shorter than 8 bytes, or
 * all zero) is deleted and counted in torn_tails; one with a foreign magic
 * is renamed to <name>.corrupt (counted in quarantined, logged). Nothing
 * is appended to existing segments: the first append starts a new one.
 * Starts the sync thread when sync_ms > 0.
 * Returns 0, or SG_EINVAL (bad opts), SG_EIO (directory not creatable or
 * readable, lock held by another process (errno EBUSY), thread not
 * started; errno kept for the caller's log line), or SG_EVERSION (a
 * segment of a version this build does not read; logged naming both
 * versions, nothing touched). *out is NULL on error. */
int sg_journal_open(struct sg_journal **out, const struct sg_journal_opts *o);

/* Appends one record {arrival_ms, topic, payload} to the current segment
 * (the header is built on the stack; no allocation), rotating first when
 * the segment is full or old. Records up to 1 KiB are copied into a shared
 * mapping of the segment (no system call; the file is extended with zeros
 * 256 KiB at a time ahead of them), larger ones written with one
 * pwritev(2). The record is in the page cache when this returns 0, so it
 * survives a process crash; it is on disk after the next sync round
 * (sync_ms). Never fsyncs.
 * Returns 0; SG_EFULL (the disk has less than min_free_bytes free: the
 * record is not written, the caller carries on memory-only); SG_EIO (disk
 * full, I/O error: nothing of the record is left
 * in the file, counted in errors; the caller carries on memory-only and
 * later appends try again); SG_EINVAL (NULL journal, topic_len > 65535,
 * payload_len > SG_JOURNAL_MAX_PAYLOAD, NULL data with a length).
 * Any thread; appends are serialized by a mutex held only for the write. */
int sg_journal_append(struct sg_journal *j, uint64_t arrival_ms, const char *topic,
                      size_t topic_len, const void *payload, size_t payload_len);

/* One intact record found by replay. topic and payload point into a
 * buffer that is valid only during the call (topic is not NUL-terminated
 * and may contain NUL). */
typedef void (*sg_journal_record_cb)(void *ctx, uint64_t arrival_ms, const char *topic,
                                     size_t topic_len, const uint8_t *payload,
                                     size_t payload_len);

/* Start-up, after open and before the first append: calls cb (may be NULL
 * to only recover the segments' newest arrival_ms for trim) for every
 * intact record of every segment, oldest segment first, records in file
 * order. A torn or corrupt tail (short record, bad CRC, absurd length)
 * ends that segment: the file is truncated there, counted in torn_tails
 * and logged (never a crash; allocation is bounded by the record limit and
 * the file size). Zeros from a record boundary to the end of the file
 * (written ahead by an appender that did not close the segment) are a
 * clean end: truncated, not counted, not logged. A segment left with no record is deleted. Segments that
 * were not replayed keep an unknown age and are never trimmed.
 * Returns 0, SG_EINVAL (called after an append, or twice), or SG_EIO (a
 * read or truncate failed; errno kept; the records before it were
 * delivered and the remaining segments are left untouched). */
int sg_journal_replay(struct sg_journal *j, sg_journal_record_cb cb, void *ctx);

/* Deletes every closed segment whose newest arrival_ms < before_ms (and
 * the current segment too when all of its records are older: it is closed
 * first, so the next append starts a new one). Segments of unknown age
 * (not replayed) are kept. The unlinks happen outside the append lock.
 * Returns 0 or SG_EIO (an unlink failed: counted in errors, errno kept;
 * the other segments were still deleted). Loop thread, concurrent with
 * appends. */
int sg_journal_trim(struct sg_journal *j, uint64_t before_ms);

/* Stops and joins the sync thread, cuts the zeros written ahead off the
 * current segment, runs a final fdatasync of what is dirty (unless
 * sync_ms == 0), closes every file and frees j. NULL is a no-op. No append
 * may run concurrently or afterwards. */
void sg_journal_close(struct sg_journal *j);

/* A consistent snapshot of the counters. Any thread. */
void sg_journal_stats(struct sg_journal *j, struct sg_journal_stats *out);

/* CRC-32C (Castagnoli), the record checksum, exposed for tests and tools.
 * crc is the value of the previous chunk (0 to start), so
 * crc32c(crc32c(0, a), b) == crc32c(0, a || b); crc32c(0, "123456789") is
 * 0xE3069283. */
uint32_t sg_journal_crc32c(uint32_t crc, const void *data, size_t len);

/* Tests only: on = use the CPU's CRC-32C instruction when it has one (the
 * default), off = always the portable table code. Returns whether the
 * instruction is now in use. Any thread; affects later calls process-wide. */
bool sg_journal__crc_use_hw(bool on);

#endif
