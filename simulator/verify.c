/*
 * verify: checks what the backend received against the ground truth.
 *
 * The truth file is loaded into a compact array (one struct per rollup, no
 * JSON kept) indexed by an open-addressing hash table on the composite key
 * (sensor_id, kind, channel, window_ms, window_start_ms). The received file
 * is then streamed line by line: each rollup is looked up, compared field by
 * field and marked as seen. Truth rollups never seen are reported last, in
 * truth-file order, so the report is deterministic. Memory is about 200
 * bytes per truth rollup, so a million rollups fit comfortably.
 *
 * Single-threaded; no global state.
 */
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <jansson.h>

#include "common.h"

/* How a field is compared (contract section 2 and docs/SEMANTICS.md). */
enum cmp_kind {
    CMP_INT,   /* integer, exactly equal */
    CMP_EXACT, /* double, exactly equal */
    CMP_REL9,  /* double, 1e-9 relative (+1e-12 absolute) */
    CMP_REL6,  /* double, 1e-6 relative (+1e-9 absolute): stddev */
    CMP_QUANT, /* double, 1 % relative to the exact truth value */
};

struct field_def {
    const char *name;
    enum cmp_kind cmp;
};

static const struct field_def FIELDS[] = {
    {"count", CMP_INT},  {"min", CMP_EXACT},       {"max", CMP_EXACT},
    {"sum", CMP_REL9},   {"mean", CMP_REL9},       {"stddev", CMP_REL6},
    {"rms", CMP_REL9},   {"first_ts_ms", CMP_INT}, {"last_ts_ms", CMP_INT},
    {"last", CMP_EXACT}, {"p50", CMP_QUANT},       {"p95", CMP_QUANT},
    {"p99", CMP_QUANT},  {"gaps", CMP_INT},        {"duplicates", CMP_INT},
    {"faulty", CMP_INT}, {"late", CMP_INT},
};
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))

/* One field value: the integer or the double, as FIELDS[i].cmp says. */
union fval {
    int64_t i;
    double d; /* NaN stands for JSON null */
};

/* One truth rollup. */
struct trollup {
    char *key;     /* composite key, owned */
    uint64_t hash; /* hash of key */
    union fval v[NFIELDS];
    uint32_t seen; /* times received */
};

/* One parsed rollup line (truth or received), before it is stored. */
struct parsed {
    char key[256]; /* composite key; see finish_parse */
    union fval v[NFIELDS];
    uint32_t present; /* bit i: field i present with the right type */
    bool is_rollup;   /* "type" absent or "rollup" */
    bool partial;
    char batch_id[128]; /* for messages; "?" when absent, truncated when long */
};

/* What a line holds, with strings pointing into the line or a JSON object
 * that stays alive until finish_parse has run. NULL: absent or not a string. */
struct raw {
    const char *sid, *kind, *type, *batch_id;
    size_t sid_len, kind_len, type_len, batch_len;
    bool has_ch, has_wms, has_wstart;
    int64_t ch, wms, wstart;
    bool partial;
    union fval v[NFIELDS];
    uint32_t present;
};

/* A hash slot keeps part of the hash, so most probes never touch the row. */
struct slot {
    uint32_t row;  /* 0 = empty, else row index + 1 */
    uint32_t hash; /* low 32 bits of the row's hash */
};

struct table {
    struct trollup *rows; /* truth rollups in file order */
    size_t nrows;
    size_t caprows;
    struct slot *slots; /* open addressing, linear probing */
    size_t nslots;      /* power of two */
};

/* The report: prints the first max differences, counts all. */
struct report {
    FILE *out;
    size_t max;
    size_t count;
    uint32_t ignore_mask; /* fields not compared */
};

static void diff(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void diff(struct report *r, const char *fmt, ...)
{
    va_list ap;

    if (r->count < r->max) {
        va_start(ap, fmt);
        vfprintf(r->out, fmt, ap);
        va_end(ap);
        fputc('\n', r->out);
    }
    r->count++;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, 64 bit */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    /* Mix the high bits down: the table uses the low bits. */
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

/* Human-readable form of a composite key. The key uses '\x1f' between its
 * parts, which cannot occur in a valid sensor_id or kind name. */
static const char *show_key(const char *key, char *dst, size_t cap)
{
    static const char *const labels[] = {
        "sensor=", " kind=", " channel=", " window_ms=", " window_start_ms="};
    size_t n = 0;
    int part = 0;

    n += (size_t)snprintf(dst, cap, "%s", labels[0]);
    for (const char *p = key; *p != '\0' && n + 24 < cap; p++) {
        if (*p == '\x1f' && part < 4) {
            part++;
            n += (size_t)snprintf(dst + n, cap - n, "%s", labels[part]);
        } else {
            dst[n++] = *p;
        }
    }
    dst[n < cap ? n : cap - 1] = '\0';
    return dst;
}

/* Reads an integer JSON value (an integral real is accepted too). */
static bool get_int(json_t *j, int64_t *out)
{
    double d;

    if (json_is_integer(j)) {
        *out = (int64_t)json_integer_value(j);
        return true;
    }
    if (json_is_real(j)) {
        d = json_real_value(j);
        if (d == floor(d) && fabs(d) < 9.2e18) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

/* Member ids for the fast parser: 0..NFIELDS-1 are FIELDS, then these. */
enum { M_SID = 64, M_KIND, M_CHANNEL, M_WMS, M_WSTART, M_TYPE, M_BATCH, M_PARTIAL, M_OTHER };

static int member_id(const char *k, size_t n)
{
    static const struct {
        const char *name;
        int id;
    } extra[] = {{"sensor_id", M_SID},          {"kind", M_KIND},
                 {"channel", M_CHANNEL},        {"window_ms", M_WMS},
                 {"window_start_ms", M_WSTART}, {"type", M_TYPE},
                 {"batch_id", M_BATCH},         {"partial", M_PARTIAL}};

    for (size_t i = 0; i < NFIELDS; i++) {
        if (strncmp(FIELDS[i].name, k, n) == 0 && FIELDS[i].name[n] == '\0') {
            return (int)i;
        }
    }
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        if (strncmp(extra[i].name, k, n) == 0 && extra[i].name[n] == '\0') {
            return extra[i].id;
        }
    }
    return M_OTHER;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Scans a JSON string body after its opening quote. Only plain printable
 * ASCII without escapes is handled; anything else returns false. */
static bool scan_string(const char **pp, const char *end, const char **s, size_t *n)
{
    const char *q = *pp;

    *s = q;
    while (q < end && *q != '"') {
        unsigned char c = (unsigned char)*q;

        if (c == '\\' || c < 0x20 || c >= 0x80) {
            return false;
        }
        q++;
    }
    if (q >= end) {
        return false;
    }
    *n = (size_t)(q - *s);
    *pp = q + 1;
    return true;
}

/* Scans a JSON number (strict grammar) and converts it for member id. */
static bool scan_number(const char **pp, const char *end, int id, struct raw *r)
{
    const char *q = *pp;
    const char *s = q;
    bool is_int = true;
    char buf[64];
    char *stop;
    size_t n;
    int64_t i64;
    double d;

    if (q < end && *q == '-') {
        q++;
    }
    if (q < end && *q == '0') {
        q++;
    } else if (q < end && *q >= '1' && *q <= '9') {
        while (q < end && is_digit(*q)) {
            q++;
        }
    } else {
        return false;
    }
    if (q < end && *q == '.') {
        is_int = false;
        if (++q >= end || !is_digit(*q)) {
            return false;
        }
        while (q < end && is_digit(*q)) {
            q++;
        }
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        is_int = false;
        if (++q < end && (*q == '+' || *q == '-')) {
            q++;
        }
        if (q >= end || !is_digit(*q)) {
            return false;
        }
        while (q < end && is_digit(*q)) {
            q++;
        }
    }
    n = (size_t)(q - s);
    if (n >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    *pp = q;
    errno = 0;
    if (is_int) {
        i64 = strtoll(buf, &stop, 10);
        d = (double)i64;
    } else {
        d = strtod(buf, &stop);
        i64 = (d == floor(d) && fabs(d) < 9.2e18) ? (int64_t)d : 0;
    }
    if (errno != 0 || *stop != '\0') {
        return false; /* out of range: let jansson say so */
    }
    bool integral = is_int || (d == floor(d) && fabs(d) < 9.2e18);

    if (id < (int)NFIELDS) {
        if (FIELDS[id].cmp == CMP_INT) {
            if (integral) {
                r->v[id].i = i64;
                r->present |= 1u << id;
            } else {
                r->present &= ~(1u << id);
            }
        } else {
            r->v[id].d = d;
            r->present |= 1u << id;
        }
    } else if (id == M_CHANNEL) {
        r->has_ch = integral;
        r->ch = i64;
    } else if (id == M_WMS) {
        r->has_wms = integral;
        r->wms = i64;
    } else if (id == M_WSTART) {
        r->has_wstart = integral;
        r->wstart = i64;
    }
    return true;
}

/* Records that member id holds something other than a number or string. */
static void set_other(struct raw *r, int id, bool is_true, bool is_null)
{
    if (id < (int)NFIELDS) {
        if (is_null && FIELDS[id].cmp != CMP_INT) {
            r->v[id].d = NAN;
            r->present |= 1u << id;
        } else {
            r->present &= ~(1u << id);
        }
        return;
    }
    switch (id) {
    case M_SID:
        r->sid = NULL;
        break;
    case M_KIND:
        r->kind = NULL;
        break;
    case M_TYPE:
        r->type = NULL;
        break;
    case M_BATCH:
        r->batch_id = NULL;
        break;
    case M_CHANNEL:
        r->has_ch = false;
        break;
    case M_WMS:
        r->has_wms = false;
        break;
    case M_WSTART:
        r->has_wstart = false;
        break;
    case M_PARTIAL:
        r->partial = is_true;
        break;
    default:
        break;
    }
}

static void skip_ws(const char **pp, const char *end)
{
    while (*pp < end && (**pp == ' ' || **pp == '\t' || **pp == '\r' || **pp == '\n')) {
        (*pp)++;
    }
}

/* Parses a flat JSON object of strings, numbers, booleans and nulls without
 * allocating: rollup lines are exactly that, and jansson would spend most of
 * the time of a million-line check building objects. Returns false for
 * anything it does not handle (nesting, escapes, non-ASCII, bad syntax);
 * the caller then parses the line with jansson, which has the final say. */
static bool fast_parse(const char *line, size_t len, struct raw *r)
{
    const char *q = line;
    const char *end = line + len;

    memset(r, 0, sizeof(*r));
    skip_ws(&q, end);
    if (q >= end || *q++ != '{') {
        return false;
    }
    skip_ws(&q, end);
    if (q < end && *q == '}') {
        q++;
        goto done;
    }
    for (;;) {
        const char *k;
        const char *s;
        size_t kn;
        size_t sn;
        int id;

        if (q >= end || *q++ != '"' || !scan_string(&q, end, &k, &kn)) {
            return false;
        }
        id = member_id(k, kn);
        skip_ws(&q, end);
        if (q >= end || *q++ != ':') {
            return false;
        }
        skip_ws(&q, end);
        if (q >= end) {
            return false;
        }
        if (*q == '"') {
            q++;
            if (!scan_string(&q, end, &s, &sn)) {
                return false;
            }
            set_other(r, id, false, false);
            if (id == M_SID) {
                r->sid = s;
                r->sid_len = sn;
            } else if (id == M_KIND) {
                r->kind = s;
                r->kind_len = sn;
            } else if (id == M_TYPE) {
                r->type = s;
                r->type_len = sn;
            } else if (id == M_BATCH) {
                r->batch_id = s;
                r->batch_len = sn;
            }
        } else if (*q == '-' || is_digit(*q)) {
            if (!scan_number(&q, end, id, r)) {
                return false;
            }
        } else if ((size_t)(end - q) >= 4 && memcmp(q, "true", 4) == 0) {
            q += 4;
            set_other(r, id, true, false);
        } else if ((size_t)(end - q) >= 5 && memcmp(q, "false", 5) == 0) {
            q += 5;
            set_other(r, id, false, false);
        } else if ((size_t)(end - q) >= 4 && memcmp(q, "null", 4) == 0) {
            q += 4;
            set_other(r, id, false, true);
        } else {
            return false;
        }
        skip_ws(&q, end);
        if (q < end && *q == ',') {
            q++;
            skip_ws(&q, end);
            continue;
        }
        if (q < end && *q == '}') {
            q++;
            break;
        }
        return false;
    }

done:
    skip_ws(&q, end);
    return q == end;
}

/* Fills r from a parsed JSON object; strings point into o. */
static void json_to_raw(json_t *o, struct raw *r)
{
    json_t *v;

    memset(r, 0, sizeof(*r));
    if ((v = json_object_get(o, "sensor_id")) != NULL && json_is_string(v)) {
        r->sid = json_string_value(v);
        r->sid_len = json_string_length(v);
    }
    if ((v = json_object_get(o, "kind")) != NULL && json_is_string(v)) {
        r->kind = json_string_value(v);
        r->kind_len = json_string_length(v);
    }
    if ((v = json_object_get(o, "type")) != NULL) {
        /* A "type" that is not a string is still a type: not "rollup". */
        r->type = json_is_string(v) ? json_string_value(v) : "";
        r->type_len = json_is_string(v) ? json_string_length(v) : 0;
    }
    if ((v = json_object_get(o, "batch_id")) != NULL && json_is_string(v)) {
        r->batch_id = json_string_value(v);
        r->batch_len = json_string_length(v);
    }
    r->has_ch = get_int(json_object_get(o, "channel"), &r->ch);
    r->has_wms = get_int(json_object_get(o, "window_ms"), &r->wms);
    r->has_wstart = get_int(json_object_get(o, "window_start_ms"), &r->wstart);
    r->partial = json_is_true(json_object_get(o, "partial"));
    for (size_t i = 0; i < NFIELDS; i++) {
        json_t *f = json_object_get(o, FIELDS[i].name);

        if (FIELDS[i].cmp == CMP_INT) {
            if (get_int(f, &r->v[i].i)) {
                r->present |= 1u << i;
            }
        } else if (json_is_number(f)) {
            r->v[i].d = json_number_value(f);
            r->present |= 1u << i;
        } else if (json_is_null(f)) {
            /* The encoder writes non-finite values as null. */
            r->v[i].d = NAN;
            r->present |= 1u << i;
        }
    }
}

/* Builds the key and the rest of p from r. Returns NULL or a static text
 * saying what is wrong with the key. */
static const char *finish_parse(const struct raw *r, struct parsed *p)
{
    int n;

    p->is_rollup = r->type == NULL || (r->type_len == 6 && memcmp(r->type, "rollup", 6) == 0);
    p->partial = r->partial;
    snprintf(p->batch_id, sizeof(p->batch_id), "%.*s", r->batch_id != NULL ? (int)r->batch_len : 1,
             r->batch_id != NULL ? r->batch_id : "?");
    memcpy(p->v, r->v, sizeof(p->v));
    p->present = r->present;
    if (!p->is_rollup) {
        return NULL;
    }
    if (r->sid == NULL || r->kind == NULL) {
        return "sensor_id or kind missing or not a string";
    }
    if (!r->has_ch || !r->has_wms || !r->has_wstart) {
        return "channel, window_ms or window_start_ms missing or not an integer";
    }
    if (r->sid_len > 128 || r->kind_len > 64 || memchr(r->sid, '\0', r->sid_len) != NULL ||
        memchr(r->kind, '\0', r->kind_len) != NULL) {
        return "sensor_id or kind too long or holds a NUL";
    }
    n = snprintf(p->key, sizeof(p->key), "%.*s\x1f%.*s\x1f%" PRId64 "\x1f%" PRId64 "\x1f%" PRId64,
                 (int)r->sid_len, r->sid, (int)r->kind_len, r->kind, r->ch, r->wms, r->wstart);
    if (n < 0 || (size_t)n >= sizeof(p->key)) {
        return "key too long";
    }
    return NULL;
}

/* Parses one line. Returns NULL, or a reason written to errbuf (bad JSON)
 * or a static text (bad key). */
static const char *parse_line(const char *line, size_t len, struct parsed *p, char *errbuf,
                              size_t errcap)
{
    struct raw r;
    json_error_t err;
    json_t *o;
    const char *bad;

    if (fast_parse(line, len, &r)) {
        return finish_parse(&r, p);
    }
    o = json_loadb(line, len, JSON_ALLOW_NUL, &err);
    if (!json_is_object(o)) {
        snprintf(errbuf, errcap, "not a JSON object: %s", o == NULL ? err.text : "other value");
        json_decref(o);
        return errbuf;
    }
    json_to_raw(o, &r);
    bad = finish_parse(&r, p);
    json_decref(o);
    return bad;
}

/* Finds the slot for key: its row index, or (SIZE_MAX, *slot = a free slot). */
static size_t table_find(const struct table *t, const char *key, uint64_t h, size_t *slot)
{
    size_t mask = t->nslots - 1;

    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint32_t s = t->slots[i].row;

        if (s == 0) {
            *slot = i;
            return SIZE_MAX;
        }
        if (t->slots[i].hash == (uint32_t)h && t->rows[s - 1].hash == h &&
            strcmp(t->rows[s - 1].key, key) == 0) {
            *slot = i;
            return s - 1;
        }
    }
}

/* Doubles the slot array and reinserts every row. */
static void table_grow(struct table *t)
{
    size_t n = t->nslots == 0 ? 1024 : t->nslots * 2;

    free(t->slots);
    t->slots = sg_xcalloc(n, sizeof(*t->slots));
    t->nslots = n;
    for (size_t r = 0; r < t->nrows; r++) {
        size_t i = (size_t)t->rows[r].hash & (n - 1);

        while (t->slots[i].row != 0) {
            i = (i + 1) & (n - 1);
        }
        t->slots[i].row = (uint32_t)(r + 1);
        t->slots[i].hash = (uint32_t)t->rows[r].hash;
    }
}

/* Adds a truth rollup. Returns 0, SG_EINVAL when the key is already there,
 * or SG_EFULL past 2^32 - 2 rollups. */
static int table_add(struct table *t, const struct parsed *p)
{
    uint64_t h = hash_str(p->key);
    size_t slot;
    struct trollup *row;

    if (t->nrows >= UINT32_MAX - 1) {
        return SG_EFULL;
    }
    if ((t->nrows + 1) * 2 > t->nslots) {
        table_grow(t);
    }
    if (table_find(t, p->key, h, &slot) != SIZE_MAX) {
        return SG_EINVAL;
    }
    if (t->nrows == t->caprows) {
        t->caprows = t->caprows == 0 ? 1024 : t->caprows * 2;
        t->rows = sg_xrealloc(t->rows, t->caprows * sizeof(*t->rows));
    }
    row = &t->rows[t->nrows];
    row->key = sg_xstrdup(p->key);
    row->hash = h;
    memcpy(row->v, p->v, sizeof(row->v));
    row->seen = 0;
    t->slots[slot].row = (uint32_t)(t->nrows + 1);
    t->slots[slot].hash = (uint32_t)h;
    t->nrows++;
    return 0;
}

static void table_free(struct table *t)
{
    for (size_t r = 0; r < t->nrows; r++) {
        free(t->rows[r].key);
    }
    free(t->rows);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* Returns whether got matches the truth value exp under the field's rule. */
static bool field_matches(enum cmp_kind cmp, union fval exp, union fval got)
{
    double a = exp.d;
    double b = got.d;

    if (cmp == CMP_INT) {
        return exp.i == got.i;
    }
    if (isnan(a) || isnan(b)) {
        return isnan(a) && isnan(b);
    }
    switch (cmp) {
    case CMP_EXACT:
        return a == b;
    case CMP_REL9:
        return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)) + 1e-12;
    case CMP_REL6:
        return fabs(a - b) <= 1e-6 * fmax(fabs(a), fabs(b)) + 1e-9;
    case CMP_QUANT:
        return fabs(b - a) <= 0.01 * fabs(a);
    case CMP_INT:
        break;
    }
    return false;
}

/* Compares one received rollup with its truth row, one line per field. */
static void compare_rollup(struct report *r, const struct trollup *t, const struct parsed *p,
                           const char *where)
{
    char kb[512];

    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field_def *f = &FIELDS[i];
        if (r->ignore_mask & (1u << i)) {
            continue;
        }

        if ((p->present & (1u << i)) == 0) {
            diff(r, "mismatch: %s %s: expected %s, missing or not a number%s",
                 show_key(t->key, kb, sizeof(kb)), f->name,
                 f->cmp == CMP_INT ? "an integer" : "a number", where);
        } else if (!field_matches(f->cmp, t->v[i], p->v[i])) {
            if (f->cmp == CMP_INT) {
                diff(r, "mismatch: %s %s: expected %" PRId64 ", got %" PRId64 "%s",
                     show_key(t->key, kb, sizeof(kb)), f->name, t->v[i].i, p->v[i].i, where);
            } else {
                diff(r, "mismatch: %s %s: expected %.17g, got %.17g%s",
                     show_key(t->key, kb, sizeof(kb)), f->name, t->v[i].d, p->v[i].d, where);
            }
        }
    }
}

/* Strips the line end; returns false for a blank line. */
static bool trim_line(char *line, ssize_t *len)
{
    while (*len > 0 && (line[*len - 1] == '\n' || line[*len - 1] == '\r')) {
        line[--*len] = '\0';
    }
    for (ssize_t i = 0; i < *len; i++) {
        if (line[i] != ' ' && line[i] != '\t') {
            return true;
        }
    }
    return false;
}

/* Loads the truth file into t. Prints a message naming file and line and
 * returns SG_EIO or SG_EINVAL on any problem: the truth must be clean. */
static int load_truth(const char *path, struct table *t)
{
    FILE *f = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t lineno = 0;
    struct parsed p;
    char errbuf[256];
    char kb[512];
    const char *bad;
    int rc = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "verify: cannot open %s: %s\n", path, strerror(errno));
        rc = SG_EIO;
        goto cleanup;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (!trim_line(line, &len)) {
            continue;
        }
        bad = parse_line(line, (size_t)len, &p, errbuf, sizeof(errbuf));
        if (bad != NULL) {
            fprintf(stderr, "verify: %s:%zu: %s\n", path, lineno, bad);
            rc = SG_EINVAL;
            goto cleanup;
        }
        if (!p.is_rollup) {
            /* The summary line and any other record type carry no rollup. */
            continue;
        }
        if (p.present != (1u << NFIELDS) - 1) {
            for (size_t i = 0; i < NFIELDS; i++) {
                if ((p.present & (1u << i)) == 0) {
                    fprintf(stderr, "verify: %s:%zu: field %s missing or of the wrong type\n", path,
                            lineno, FIELDS[i].name);
                    break;
                }
            }
            rc = SG_EINVAL;
            goto cleanup;
        }
        rc = table_add(t, &p);
        if (rc != 0) {
            fprintf(stderr, "verify: %s:%zu: %s %s\n", path, lineno,
                    rc == SG_EFULL ? "too many rollups at" : "the truth holds twice",
                    show_key(p.key, kb, sizeof(kb)));
            rc = SG_EINVAL;
            goto cleanup;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "verify: cannot read %s: %s\n", path, strerror(errno));
        rc = SG_EIO;
    }

cleanup:
    free(line);
    if (f != NULL) {
        fclose(f);
    }
    return rc;
}

/* Streams the received file, comparing each rollup with the truth. */
static int check_received(const char *path, struct table *t, struct report *r,
                          struct sg_verify_result *res)
{
    FILE *f = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    size_t lineno = 0;
    struct parsed p;
    char errbuf[256];
    char kb[512];
    char where[192];
    const char *bad;
    size_t slot;
    size_t row;
    int rc = 0;

    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "verify: cannot open %s: %s\n", path, strerror(errno));
        rc = SG_EIO;
        goto cleanup;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (!trim_line(line, &len)) {
            continue;
        }
        res->received++;
        bad = parse_line(line, (size_t)len, &p, errbuf, sizeof(errbuf));
        if (bad == NULL && !p.is_rollup) {
            bad = "\"type\" is not \"rollup\"";
        }
        if (bad != NULL) {
            diff(r, "malformed: %s:%zu: %s", path, lineno, bad);
            continue;
        }
        if (p.partial) {
            res->partial++;
        }
        snprintf(where, sizeof(where), " (batch %s, line %zu)", p.batch_id, lineno);
        row = table_find(t, p.key, hash_str(p.key), &slot);
        if (row == SIZE_MAX) {
            diff(r, "unexpected: %s not in the truth%s", show_key(p.key, kb, sizeof(kb)), where);
        } else if (t->rows[row].seen++ > 0) {
            diff(r, "duplicate delivery: %s received %" PRIu32 " times%s",
                 show_key(p.key, kb, sizeof(kb)), t->rows[row].seen, where);
        } else {
            compare_rollup(r, &t->rows[row], &p, where);
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "verify: cannot read %s: %s\n", path, strerror(errno));
        rc = SG_EIO;
    }

cleanup:
    free(line);
    if (f != NULL) {
        fclose(f);
    }
    return rc;
}

int sg_verify_run(const struct sg_verify_opts *opts, struct sg_verify_result *res)
{
    struct table t = {0};
    struct report r = {opts->out, opts->max_diffs, 0, opts->ignore_mask};
    int rc;

    memset(res, 0, sizeof(*res));
    rc = load_truth(opts->truth_path, &t);
    if (rc != 0) {
        goto cleanup;
    }
    if (t.nslots == 0) {
        table_grow(&t);
    }
    res->expected = t.nrows;
    rc = check_received(opts->received_path, &t, &r, res);
    if (rc != 0) {
        goto cleanup;
    }
    for (size_t i = 0; i < t.nrows; i++) {
        char kb[512];

        if (t.rows[i].seen == 0) {
            diff(&r, "missing: %s not received", show_key(t.rows[i].key, kb, sizeof(kb)));
        }
    }
    res->differences = r.count;
    if (r.count > r.max) {
        fprintf(opts->out, "verify: %zu more differences not shown (--max-diffs %zu)\n",
                r.count - r.max, r.max);
    }
    if (r.count == 0) {
        fprintf(opts->out, "verify: all %zu rollups match (%zu partial)\n", res->expected,
                res->partial);
    } else {
        fprintf(opts->out, "verify: %zu differences in %zu expected rollups\n", r.count,
                res->expected);
    }

cleanup:
    table_free(&t);
    return rc;
}

uint32_t sg_verify_field_bit(const char *name)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        if (strcmp(FIELDS[i].name, name) == 0) {
            return 1u << i;
        }
    }
    return 0;
}

static void verify_usage(void)
{
    fprintf(stderr, "usage: sensegate-sink verify --truth TRUTH.jsonl --received ROLLUPS.jsonl"
                    " [--max-diffs N] [--ignore FIELD,FIELD...]\n");
}

int sg_verify_main(int argc, char **argv)
{
    struct sg_verify_opts opts = {NULL, NULL, 20, stdout, 0};
    struct sg_verify_result res;
    uint64_t n;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            verify_usage();
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "verify: %s needs a value\n", a);
            verify_usage();
            return 2;
        }
        if (strcmp(a, "--truth") == 0) {
            opts.truth_path = argv[++i];
        } else if (strcmp(a, "--received") == 0) {
            opts.received_path = argv[++i];
        } else if (strcmp(a, "--max-diffs") == 0) {
            if (sg_parse_u64(argv[++i], 0, 100000000, &n) != 0) {
                fprintf(stderr, "verify: --max-diffs: not a number 0..100000000: %s\n", argv[i]);
                return 2;
            }
            opts.max_diffs = (size_t)n;
        } else if (strcmp(a, "--ignore") == 0) {
            char names[512];
            snprintf(names, sizeof names, "%s", argv[++i]);
            for (char *save = NULL, *f = strtok_r(names, ",", &save); f != NULL;
                 f = strtok_r(NULL, ",", &save)) {
                uint32_t bit = sg_verify_field_bit(f);
                if (bit == 0) {
                    fprintf(stderr, "verify: --ignore: no compared field named '%s'\n", f);
                    return 2;
                }
                opts.ignore_mask |= bit;
            }
        } else {
            fprintf(stderr, "verify: unknown option %s\n", a);
            verify_usage();
            return 2;
        }
    }
    if (opts.truth_path == NULL || opts.received_path == NULL) {
        verify_usage();
        return 2;
    }
    if (sg_verify_run(&opts, &res) != 0) {
        return 2;
    }
    fflush(stdout);
    return res.differences == 0 ? 0 : 1;
}
