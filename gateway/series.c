/*
 * series: open-addressing table of live series (see series.h for the layout
 * and the memory per series).
 *
 * Invariants: every live record has exactly one slot, reachable from slot
 * (hash & slot_mask) by linear probing without crossing an empty slot; a slot
 * is empty iff its idx is SLOT_EMPTY; count <= max_series; live slots <=
 * (slot_mask + 1) / 2. Free records form a list through their `index` field
 * (dead records only), headed by free_head.
 *
 * Loop thread only.
 */
#include "series.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

#define SLOT_EMPTY UINT32_MAX
#define NO_RECORD UINT32_MAX
#define MIN_SLOTS 64u
#define MAX_CHUNK_RECORDS 1024u

struct slot {
    uint32_t tag; /* low 32 bits of the key hash; tag & slot_mask is the home slot */
    uint32_t idx; /* record index, or SLOT_EMPTY */
};

struct sg_series_table {
    struct slot *slots;
    uint32_t slot_mask; /* slots - 1, slots a power of two */
    uint32_t count;     /* live series */
    uint32_t max_series;
    uint32_t hwm;       /* records ever handed out (indexes 0 .. hwm-1 exist) */
    uint32_t free_head; /* first free record, or NO_RECORD */
    uint32_t ring_seqs;
    uint32_t chunk_shift; /* records per chunk = 1 << chunk_shift */
    uint32_t nchunks;     /* entries of chunks[] */
    char **chunks;        /* record storage, allocated on demand */
    size_t stride;        /* bytes per record */
    size_t ring_offset;   /* offset of the ring bitmap inside a record */
    size_t payload_bytes; /* as given, for zeroing */
    size_t bytes;         /* heap bytes held */
};

static inline struct sg_series *record_at(const struct sg_series_table *t, uint32_t idx)
{
    char *chunk = t->chunks[idx >> t->chunk_shift];
    return (struct sg_series *)(void *)(chunk +
                                        (size_t)(idx & ((1u << t->chunk_shift) - 1u)) * t->stride);
}

static uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t sg_series_hash(const char *id, size_t id_len, uint8_t kind)
{
    const uint64_t mul = 0x9fb21c651e98df25ULL;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (((uint64_t)id_len << 8) | kind);
    const char *p = id;
    size_t n = id_len;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * mul;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * mul;
        h ^= h >> 29;
    }
    return fmix64(h);
}

int sg_series_table_new(struct sg_series_table **out, const struct sg_series_opts *opts)
{
    if (out == NULL || opts == NULL || opts->max_series == 0 ||
        opts->max_series > ((size_t)1 << 31) || !sg_ring_nseqs_ok(opts->ring_seqs) ||
        opts->payload_bytes > ((size_t)1 << 20)) {
        return SG_EINVAL;
    }
    struct sg_series_table *t = sg_xcalloc(1, sizeof(*t));
    t->max_series = (uint32_t)opts->max_series;
    t->ring_seqs = opts->ring_seqs;
    t->payload_bytes = opts->payload_bytes;
    t->ring_offset = sizeof(struct sg_series) + ((opts->payload_bytes + 7u) & ~(size_t)7u);
    t->stride = t->ring_offset + sg_ring_words(opts->ring_seqs) * sizeof(uint64_t);
    t->free_head = NO_RECORD;

    /* Small tables get one small chunk; large ones chunks of 1024 records. */
    uint32_t per_chunk = 1;
    t->chunk_shift = 0;
    while (per_chunk < MAX_CHUNK_RECORDS && per_chunk < t->max_series) {
        per_chunk <<= 1;
        t->chunk_shift++;
    }
    t->nchunks = (uint32_t)((t->max_series + per_chunk - 1u) / per_chunk);
    t->chunks = sg_xcalloc(t->nchunks, sizeof(char *));

    t->slot_mask = MIN_SLOTS - 1u;
    t->slots = sg_xmalloc(MIN_SLOTS * sizeof(struct slot));
    for (uint32_t i = 0; i < MIN_SLOTS; i++) {
        t->slots[i].idx = SLOT_EMPTY;
    }
    t->bytes = sizeof(*t) + t->nchunks * sizeof(char *) + MIN_SLOTS * sizeof(struct slot);
    *out = t;
    return 0;
}

void sg_series_table_free(struct sg_series_table *t)
{
    if (t == NULL) {
        return;
    }
    for (uint32_t i = 0; i < t->nchunks; i++) {
        free(t->chunks[i]);
    }
    free(t->chunks);
    free(t->slots);
    free(t);
}

static inline bool key_eq(const struct sg_series *s, const char *id, size_t id_len, uint8_t kind)
{
    return s->id_len == id_len && s->kind == kind && memcmp(s->sensor_id, id, id_len) == 0;
}

struct sg_series *sg_series_find(const struct sg_series_table *t, const char *id, size_t id_len,
                                 uint8_t kind, uint64_t hash)
{
    uint32_t tag = (uint32_t)hash;
    uint32_t pos = tag & t->slot_mask;
    for (;;) {
        const struct slot *sl = &t->slots[pos];
        if (sl->idx == SLOT_EMPTY) {
            return NULL;
        }
        if (sl->tag == tag) {
            struct sg_series *s = record_at(t, sl->idx);
            if (key_eq(s, id, id_len, kind)) {
                return s;
            }
        }
        pos = (pos + 1u) & t->slot_mask;
    }
}

void sg_series_prefetch_slot(const struct sg_series_table *t, uint64_t hash)
{
    __builtin_prefetch(&t->slots[(uint32_t)hash & t->slot_mask]);
}

void sg_series_prefetch_record(const struct sg_series_table *t, uint64_t hash)
{
    uint32_t tag = (uint32_t)hash;
    uint32_t pos = tag & t->slot_mask;
    for (uint32_t probes = 0; probes < 4; probes++) {
        const struct slot *sl = &t->slots[pos];
        if (sl->idx == SLOT_EMPTY) {
            return;
        }
        if (sl->tag == tag) {
            const char *rec = (const char *)record_at(t, sl->idx);
            __builtin_prefetch(rec);
            __builtin_prefetch(rec + 64);
            __builtin_prefetch(rec + 128);
            return;
        }
        pos = (pos + 1u) & t->slot_mask;
    }
}

static void slot_insert(struct slot *slots, uint32_t mask, uint32_t tag, uint32_t idx)
{
    uint32_t pos = tag & mask;
    while (slots[pos].idx != SLOT_EMPTY) {
        pos = (pos + 1u) & mask;
    }
    slots[pos].tag = tag;
    slots[pos].idx = idx;
}

static void slots_grow(struct sg_series_table *t)
{
    uint32_t old_n = t->slot_mask + 1u;
    uint32_t new_n = old_n * 2u;
    struct slot *ns = sg_xmalloc((size_t)new_n * sizeof(struct slot));
    for (uint32_t i = 0; i < new_n; i++) {
        ns[i].idx = SLOT_EMPTY;
    }
    for (uint32_t i = 0; i < old_n; i++) {
        if (t->slots[i].idx != SLOT_EMPTY) {
            slot_insert(ns, new_n - 1u, t->slots[i].tag, t->slots[i].idx);
        }
    }
    free(t->slots);
    t->slots = ns;
    t->slot_mask = new_n - 1u;
    t->bytes += (size_t)(new_n - old_n) * sizeof(struct slot);
}

/* A record for a new series: a reused one, or the next never-used one. */
static struct sg_series *record_take(struct sg_series_table *t)
{
    uint32_t idx;
    if (t->free_head != NO_RECORD) {
        idx = t->free_head;
        t->free_head = record_at(t, idx)->index;
    } else {
        idx = t->hwm++;
        uint32_t c = idx >> t->chunk_shift;
        if (t->chunks[c] == NULL) {
            size_t sz = ((size_t)1 << t->chunk_shift) * t->stride;
            t->chunks[c] = sg_xmalloc(sz);
            t->bytes += sz;
        }
    }
    struct sg_series *s = record_at(t, idx);
    s->index = idx;
    return s;
}

int sg_series_find_or_add(struct sg_series_table *t, const char *id, size_t id_len, uint8_t kind,
                          uint64_t hash, uint64_t now_ms, struct sg_series **out, bool *created)
{
    struct sg_series *s = sg_series_find(t, id, id_len, kind, hash);
    if (s != NULL) {
        *out = s;
        if (created != NULL) {
            *created = false;
        }
        return 0;
    }
    if (id_len == 0 || id_len > SG_SENSOR_ID_MAX) {
        return SG_EINVAL;
    }
    if (t->count >= t->max_series) {
        return SG_EFULL;
    }
    if ((t->count + 1u) * 2u > t->slot_mask + 1u) {
        slots_grow(t);
    }
    s = record_take(t);
    s->hash = hash;
    s->last_active_ms = now_ms;
    s->kind = kind;
    s->id_len = (uint8_t)id_len;
    s->live = 1;
    memcpy(s->sensor_id, id, id_len);
    s->sensor_id[id_len] = '\0';
    memset(sg_series_payload(s), 0, t->payload_bytes);
    (void)sg_ring_init(&s->ring, (uint64_t *)(void *)((char *)s + t->ring_offset), t->ring_seqs);
    slot_insert(t->slots, t->slot_mask, (uint32_t)hash, s->index);
    t->count++;
    *out = s;
    if (created != NULL) {
        *created = true;
    }
    return 0;
}

void sg_series_remove(struct sg_series_table *t, struct sg_series *s)
{
    if (s == NULL || !s->live) {
        return;
    }
    uint32_t idx = s->index;
    uint32_t mask = t->slot_mask;
    uint32_t i = (uint32_t)s->hash & mask;
    while (t->slots[i].idx != idx) {
        i = (i + 1u) & mask;
    }
    /* Backward-shift deletion: move later members of the probe run into the
     * hole unless their home slot lies cyclically in (hole, j]. */
    uint32_t j = i;
    for (;;) {
        j = (j + 1u) & mask;
        if (t->slots[j].idx == SLOT_EMPTY) {
            break;
        }
        uint32_t home = t->slots[j].tag & mask;
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) {
            continue;
        }
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i].idx = SLOT_EMPTY;

    s->live = 0;
    s->index = t->free_head;
    t->free_head = idx;
    t->count--;
}

struct sg_series *sg_series_next(const struct sg_series_table *t, uint32_t *cursor)
{
    for (uint32_t idx = *cursor; idx < t->hwm; idx++) {
        struct sg_series *s = record_at(t, idx);
        if (s->live) {
            *cursor = idx + 1u;
            return s;
        }
    }
    *cursor = t->hwm;
    return NULL;
}

size_t sg_series_count(const struct sg_series_table *t)
{
    return t->count;
}

size_t sg_series_memory_bytes(const struct sg_series_table *t)
{
    return t->bytes;
}
