/*
 * series: the table of live series, keyed by (sensor_id, kind).
 *
 * Open addressing with linear probing over 8-byte slots (32 bits of the key
 * hash plus a record index), grown by doubling at load 1/2, deletion by
 * backward shift (no tombstones). A lookup probes slots and touches one record
 * only when the stored hash bits match: no chains, no per-lookup pointer
 * chasing beyond the slot.
 *
 * Records have stable addresses (allocated in chunks, never moved) and are
 * laid out as [struct sg_series][caller payload][dedup ring bitmap], one
 * contiguous block per series. The table holds at most max_series records;
 * removed records are reused.
 *
 * Memory per series: sizeof(struct sg_series) (112 bytes on LP64)
 * + payload_bytes rounded up to 8 + ring_seqs / 8 bytes of ring bitmap
 * + at most 16 bytes of slots (2 slots of 8 bytes at load >= 1/4).
 * With the rollup engine's payload (16 + 24 per window width) and 1024 ring
 * seqs that is about 300 bytes for one width.
 *
 * One thread (the loop thread); no I/O.
 */
#ifndef SG_SERIES_H
#define SG_SERIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reading.h"
#include "ring.h"

/* The fixed head of every series record; the caller's payload follows it. */
struct sg_series {
    uint64_t hash;           /* sg_series_hash() of the key */
    uint64_t last_active_ms; /* gateway clock; the table sets it on add, callers update it */
    struct sg_ring ring;     /* dedup of seq; its bitmap lives in the record */
    uint32_t index;          /* record index inside the table */
    uint8_t kind;            /* enum sg_kind */
    uint8_t id_len;          /* strlen(sensor_id), 1..SG_SENSOR_ID_MAX */
    uint8_t live;            /* 1 while in the table */
    char sensor_id[SG_SENSOR_ID_MAX + 1]; /* NUL-terminated */
};

struct sg_series_opts {
    size_t max_series;    /* 1..2^31 live series at most */
    uint32_t ring_seqs;   /* dedup ring size, see sg_ring_nseqs_ok() */
    size_t payload_bytes; /* caller data after each struct sg_series, zeroed on add */
};

struct sg_series_table;

/* Creates an empty table. Returns 0 and sets *out, or SG_EINVAL for bad
 * options (nothing allocated). Aborts on OOM. */
int sg_series_table_new(struct sg_series_table **out, const struct sg_series_opts *opts);

/* Frees the table and every record. NULL is a no-op. */
void sg_series_table_free(struct sg_series_table *t);

/* Hash of a key; pass it to find/add so it is computed once per reading. */
uint64_t sg_series_hash(const char *id, size_t id_len, uint8_t kind);

/* The live series with this key, or NULL. hash = sg_series_hash(id, id_len, kind). */
struct sg_series *sg_series_find(const struct sg_series_table *t, const char *id, size_t id_len,
                                 uint8_t kind, uint64_t hash);

/* Cache hints for batch processing: start loading the slot a key hashes to,
 * and (once that slot is likely cached) the record it points to, so that
 * lookups of a batch overlap their memory latency. No effect on the table. */
void sg_series_prefetch_slot(const struct sg_series_table *t, uint64_t hash);
void sg_series_prefetch_record(const struct sg_series_table *t, uint64_t hash);

/* Finds the series, or adds it (empty ring, zeroed payload, last_active_ms =
 * now_ms) when absent. Returns 0 and sets *out (and *created when not NULL),
 * SG_EFULL when a new series would exceed max_series, or SG_EINVAL when id_len
 * is not 1..SG_SENSOR_ID_MAX (nothing changed on error). The record stays
 * valid until it is removed or the table freed. */
int sg_series_find_or_add(struct sg_series_table *t, const char *id, size_t id_len, uint8_t kind,
                          uint64_t hash, uint64_t now_ms, struct sg_series **out, bool *created);

/* Removes a live series; its record is reused by a later add. */
void sg_series_remove(struct sg_series_table *t, struct sg_series *s);

/* Iteration in record order: returns the first live series with index >=
 * *cursor and moves *cursor past it, or NULL at the end. Start with
 * *cursor = 0. Removing the returned series during iteration is safe. */
struct sg_series *sg_series_next(const struct sg_series_table *t, uint32_t *cursor);

/* Live series. */
size_t sg_series_count(const struct sg_series_table *t);

/* Heap bytes held by the table (slots, records, rings). */
size_t sg_series_memory_bytes(const struct sg_series_table *t);

/* The caller's payload of a series (8-byte aligned). */
static inline void *sg_series_payload(struct sg_series *s)
{
    return (void *)(s + 1);
}

#endif
