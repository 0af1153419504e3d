/*
 * _fastscan: the C scanner behind claude_usaged.parser.parse_lines.
 *
 * Why: a cold catch-up reads hundreds of MB of transcripts. The pure-Python
 * path (bytes.find + a msgspec decode per line holding "usage" + a regex for
 * malformed lines) is single-threaded and holds the GIL. This scanner does the
 * same work in one pass over the buffer with the GIL released, so several
 * threads can read files at once, and builds the Python results afterwards.
 *
 * The pure-Python path is the specification. For every line holding "usage"
 * this module either produces exactly what parser.record_from_line would
 * (a UsageRecord, or "not a response") or DECLINES the line: the caller then
 * runs record_from_line on it. Declining is always safe, so the parser below
 * accepts only a strict, simple subset of JSON and declines everything else:
 *
 *   line    := ws* object ws*            ws := ' ' | '\t' | '\r'
 *   value   := object | array | string | number | true | false | null
 *   object  := '{' ws* [member (ws* ',' ws* member)*] ws* '}'
 *   member  := string ws* ':' ws* value
 *   array   := '[' ws* [value (ws* ',' ws* value)*] ws* ']'
 *   number  := '-'? ('0' | [1-9][0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?
 *   string  := '"' (utf8-char except '"' '\\' and < 0x20 | escape)* '"'
 *   escape  := '\\' ( ["\\/bfnrt] | 'u' hex{4} not in D800-DFFF )
 *
 * It declines, among others, on:
 *   - any syntax error (trailing commas, bad literals, trailing bytes, ...);
 *   - invalid UTF-8 anywhere (strict: no overlongs, surrogates or > U+10FFFF),
 *     raw control characters in strings, \u escapes of surrogates;
 *   - nesting deeper than MAX_DEPTH;
 *   - in the objects we read (the line, message, message.usage,
 *     usage.cache_creation, usage.server_tool_use): a key with an escape
 *     (it could spell one of ours), a key of ours seen twice (msgspec keeps
 *     the last; we do not try), a value of an unexpected type, a count that
 *     is not a plain non-negative integer up to MAX_COUNT (no '-', no
 *     fraction or exponent), an escape in type, message.model or timestamp
 *     (compared as raw bytes); escapes in the other strings we keep (Windows
 *     paths in cwd: "C:\\Users...") are decoded exactly as JSON says;
 *   - responses that Python would skip with a reason (missing or unusual
 *     timestamp) or key by a hash of the line (no message.id).
 * Values of keys we do not read are skipped after the same validation; null
 * for a field we read is taken as absent (msgspec gives None, and the Python
 * code treats None and absence alike: `or 0`, `or fallback`).
 *
 * The buffer-level counts are exact, not declinable: lines (b"\n" count) and
 * malformed lines, computed as parser._bad_line_count does, quirks included
 * (its regex pre-check decides whether the per-line count runs at all).
 *
 * read_files (POSIX) does the same for whole small files, which it opens, reads
 * and closes itself, many per release of the GIL (see its section).
 *
 * CLAUDE_USAGED_NO_AVX2 (set at import) keeps the SSE2 loops, for testing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_records.h"
#include <stdint.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
/* read_files: POSIX files (the daemon runs on Linux and macOS) */
#define HAVE_READ_FILES 1
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__GNUC__) && defined(__x86_64__)
/* AVX2 versions of the two byte-search loops, picked at import when the CPU has it */
#include <immintrin.h>
#define AVX2_DISPATCH 1
static int use_avx2;
#endif

#define MAX_DEPTH 64
/*
 * Below this size the GIL is kept: a small scan takes microseconds, while
 * getting the GIL back from a busy thread can take a switch interval (5 ms).
 */
#define RELEASE_GIL_BYTES (32 * 1024)
#define MAX_COUNT_DIGITS 11 /* enough for MAX_COUNT; more digits are declined at once */
#define MAX_COUNT 10000000000LL /* parser.MAX_COUNT: above it Python says invalid_fields */

/* ---- phase 1 (no GIL): what one line holds -------------------------------- */

typedef struct {
    const unsigned char *p; /* NULL: absent or null */
    Py_ssize_t n;
    int esc; /* the raw bytes hold escapes (validated): decode with unescape() */
} Span;

enum { OUT_NONE, OUT_RECORD, OUT_DECLINE };

typedef struct {
    Py_ssize_t start, end;
    int outcome;
    Span type, timestamp, session, request, cwd, msg_id, model, speed, geo;
    int sidechain; /* 1 true; 0 false, null or absent */
    int has_message, has_usage;
    int64_t input, output, cc_field, cache_read, eph_5m, eph_1h, web_search;
    int64_t ts_ms;
    int dropped; /* a record that cannot win its key's dedupe (see dedupe_lines) */
} Line;

typedef struct {
    const unsigned char *p, *end;
    int depth;
} Cursor;

static inline int
is_json_ws(unsigned char ch)
{
    /* JSON whitespace; '\n' cannot occur inside a line */
    return ch == ' ' || ch == '\t' || ch == '\r';
}

static inline void
skip_ws(Cursor *c)
{
    while (c->p < c->end && is_json_ws(*c->p))
        c->p++;
}

static inline int
span_is(Span s, const char *lit, Py_ssize_t n)
{
    return s.p != NULL && s.n == n && memcmp(s.p, lit, (size_t)n) == 0;
}
#define SPAN_IS(s, lit) span_is((s), (lit), (Py_ssize_t)sizeof(lit) - 1)

/* The next byte that is '"', '\\', < 0x20 or >= 0x80 (or end). */
static inline const unsigned char *
next_special_sse2(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them too */
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                _mm_cmpeq_epi8(v, bslash)),
                                   _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(hit);
        if (mask)
            return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p;
}

#ifdef AVX2_DISPATCH
__attribute__((target("avx2"))) static const unsigned char *
next_special_avx2(const unsigned char *p, const unsigned char *end)
{
    const __m256i quote = _mm256_set1_epi8('"');
    const __m256i bslash = _mm256_set1_epi8('\\');
    const __m256i space = _mm256_set1_epi8(0x20);
    while (end - p >= 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)p);
        __m256i hit = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(v, quote),
                                                      _mm256_cmpeq_epi8(v, bslash)),
                                      _mm256_cmpgt_epi8(space, v)); /* signed, as above */
        unsigned mask = (unsigned)_mm256_movemask_epi8(hit);
        if (mask)
            return p + __builtin_ctz(mask);
        p += 32;
    }
    return next_special_sse2(p, end);
}
#endif

static inline const unsigned char *
next_special(const unsigned char *p, const unsigned char *end)
{
#ifdef AVX2_DISPATCH
    if (use_avx2)
        return next_special_avx2(p, end);
#endif
    return next_special_sse2(p, end);
}

/* Length of the strict UTF-8 sequence at p (Unicode table 3-7), 0 if invalid. */
static inline int
utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char b0 = p[0];
    Py_ssize_t left = end - p;
#define CONT(x) (((x) & 0xC0) == 0x80)
    if (b0 >= 0xC2 && b0 <= 0xDF)
        return (left >= 2 && CONT(p[1])) ? 2 : 0;
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left < 3 || !CONT(p[1]) || !CONT(p[2]))
            return 0;
        if (b0 == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (b0 == 0xED && p[1] > 0x9F)
            return 0; /* surrogate */
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left < 4 || !CONT(p[1]) || !CONT(p[2]) || !CONT(p[3]))
            return 0;
        if (b0 == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (b0 == 0xF4 && p[1] > 0x8F)
            return 0; /* > U+10FFFF */
        return 4;
    }
#undef CONT
    return 0;
}

static inline int
hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* At '"': validate a string; its raw bytes go to *out, *escaped says if it had a '\\'. */
static int
scan_string(Cursor *c, Span *out, int *escaped)
{
    const unsigned char *p = c->p + 1, *end = c->end, *start = p;
    int esc = 0;
    for (;;) {
        p = next_special(p, end);
        if (p >= end)
            return 0; /* unterminated */
        unsigned char ch = *p;
        if (ch == '"')
            break;
        if (ch == '\\') {
            esc = 1;
            if (end - p < 2)
                return 0;
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                continue;
            case 'u': {
                if (end - p < 6)
                    return 0;
                int code = 0;
                for (int i = 2; i < 6; i++) {
                    int h = hex_value(p[i]);
                    if (h < 0)
                        return 0;
                    code = code * 16 + h;
                }
                if (code >= 0xD800 && code <= 0xDFFF)
                    return 0; /* surrogate escapes: leave them to msgspec */
                p += 6;
                continue;
            }
            default:
                return 0;
            }
        }
        if (ch < 0x20)
            return 0; /* raw control character */
        int n = utf8_len(p, end);
        if (n == 0)
            return 0;
        p += n;
    }
    out->p = start;
    out->n = p - start;
    *escaped = esc;
    c->p = p + 1;
    return 1;
}

static int skip_value(Cursor *c);

static int
expect_literal(Cursor *c, const char *lit, Py_ssize_t n)
{
    if (c->end - c->p < n || memcmp(c->p, lit, (size_t)n) != 0)
        return 0;
    c->p += n;
    return 1;
}
#define LITERAL(c, lit) expect_literal((c), (lit), (Py_ssize_t)sizeof(lit) - 1)

static inline int
is_digit(const Cursor *c)
{
    return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* Any JSON number (values we do not read). */
static int
skip_number(Cursor *c)
{
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (!is_digit(c))
        return 0;
    if (*c->p == '0')
        c->p++;
    else
        while (is_digit(c))
            c->p++;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!is_digit(c))
            return 0;
        while (is_digit(c))
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!is_digit(c))
            return 0;
        while (is_digit(c))
            c->p++;
    }
    return 1;
}

/*
 * The objects we read are walked by walk_object with a member function per
 * struct. It returns 1 (value parsed), 0 (decline) or SKIP (not one of ours).
 */
#define SKIP 2
typedef int (*member_fn)(Cursor *c, Span key, Line *line, unsigned *seen);

/* At '{'. fn NULL: an object we skip (any keys, validated). */
static int
walk_object(Cursor *c, member_fn fn, Line *line)
{
    unsigned seen = 0;
    if (++c->depth > MAX_DEPTH)
        return 0;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        c->depth--;
        return 1;
    }
    for (;;) {
        Span key;
        int esc, r = SKIP;
        if (c->p >= c->end || *c->p != '"' || !scan_string(c, &key, &esc))
            return 0;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':')
            return 0;
        c->p++;
        skip_ws(c);
        if (fn != NULL) {
            if (esc)
                return 0; /* an escaped key might spell one of ours */
            r = fn(c, key, line, &seen);
            if (r == 0)
                return 0;
        }
        if (r == SKIP && !skip_value(c))
            return 0;
        skip_ws(c);
        if (c->p >= c->end)
            return 0;
        if (*c->p == '}') {
            c->p++;
            c->depth--;
            return 1;
        }
        if (*c->p != ',')
            return 0;
        c->p++;
        skip_ws(c);
    }
}

static int
skip_array(Cursor *c)
{
    if (++c->depth > MAX_DEPTH)
        return 0;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        c->depth--;
        return 1;
    }
    for (;;) {
        if (!skip_value(c))
            return 0;
        skip_ws(c);
        if (c->p >= c->end)
            return 0;
        if (*c->p == ']') {
            c->p++;
            c->depth--;
            return 1;
        }
        if (*c->p != ',')
            return 0;
        c->p++;
        skip_ws(c);
    }
}

static int
skip_value(Cursor *c)
{
    Span s;
    int esc;
    if (c->p >= c->end)
        return 0;
    switch (*c->p) {
    case '"':
        return scan_string(c, &s, &esc);
    case '{':
        return walk_object(c, NULL, NULL);
    case '[':
        return skip_array(c);
    case 't':
        return LITERAL(c, "true");
    case 'f':
        return LITERAL(c, "false");
    case 'n':
        return LITERAL(c, "null");
    default:
        return skip_number(c);
    }
}

/* ---- values of the fields we read ---------------------------------------- */

/* `str | None`: a string (escapes allowed, see Span.esc), or null (-> p NULL). */
static int
read_str(Cursor *c, Span *out)
{
    if (c->p < c->end && *c->p == 'n') {
        out->p = NULL;
        return LITERAL(c, "null");
    }
    if (c->p >= c->end || *c->p != '"')
        return 0;
    return scan_string(c, out, &out->esc);
}

/* `bool | None`: null reads as false (bool(None) in Python). */
static int
read_bool(Cursor *c, int *out)
{
    if (c->p >= c->end)
        return 0;
    *out = (*c->p == 't');
    switch (*c->p) {
    case 't':
        return LITERAL(c, "true");
    case 'f':
        return LITERAL(c, "false");
    case 'n':
        return LITERAL(c, "null");
    default:
        return 0;
    }
}

/* `Count | None`: a plain non-negative integer, or null (reads as 0: `or 0`). */
static int
read_count(Cursor *c, int64_t *out)
{
    int64_t v = 0;
    int digits = 0;
    if (c->p < c->end && *c->p == 'n') {
        *out = 0;
        return LITERAL(c, "null");
    }
    if (!is_digit(c))
        return 0; /* '-', strings, bools, containers... */
    if (*c->p == '0') {
        c->p++;
        digits = 1;
    } else {
        while (is_digit(c)) {
            if (++digits > MAX_COUNT_DIGITS)
                return 0;
            v = v * 10 + (*c->p - '0');
            c->p++;
        }
    }
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E' || is_digit(c)))
        return 0; /* a float (invalid_fields in Python) or a leading zero */
    if (v > MAX_COUNT)
        return 0; /* absurd: Python says invalid_fields */
    *out = v;
    return 1;
}

/* `Struct | None`: an object walked with fn (present -> *present = 1), or null. */
static int
read_struct(Cursor *c, member_fn fn, Line *line, int *present)
{
    if (c->p < c->end && *c->p == 'n')
        return LITERAL(c, "null");
    if (c->p >= c->end || *c->p != '{')
        return 0;
    if (present != NULL)
        *present = 1;
    return walk_object(c, fn, line);
}

/* Marks a key of ours as seen; a second sighting declines the line. */
#define KEY(lit, bit)                                          \
    if (SPAN_IS(key, lit)) {                                   \
        if (*seen & (1u << (bit)))                             \
            return 0;                                          \
        *seen |= 1u << (bit);
#define END_KEY }

static int
cache_creation_member(Cursor *c, Span key, Line *line, unsigned *seen)
{
    KEY("ephemeral_5m_input_tokens", 0) return read_count(c, &line->eph_5m); END_KEY
    KEY("ephemeral_1h_input_tokens", 1) return read_count(c, &line->eph_1h); END_KEY
    return SKIP;
}

static int
server_tool_use_member(Cursor *c, Span key, Line *line, unsigned *seen)
{
    KEY("web_search_requests", 0) return read_count(c, &line->web_search); END_KEY
    return SKIP;
}

static int
usage_member(Cursor *c, Span key, Line *line, unsigned *seen)
{
    KEY("input_tokens", 0) return read_count(c, &line->input); END_KEY
    KEY("output_tokens", 1) return read_count(c, &line->output); END_KEY
    KEY("cache_creation_input_tokens", 2) return read_count(c, &line->cc_field); END_KEY
    KEY("cache_read_input_tokens", 3) return read_count(c, &line->cache_read); END_KEY
    KEY("cache_creation", 4) return read_struct(c, cache_creation_member, line, NULL); END_KEY
    KEY("server_tool_use", 5) return read_struct(c, server_tool_use_member, line, NULL); END_KEY
    KEY("speed", 6) return read_str(c, &line->speed); END_KEY
    KEY("inference_geo", 7) return read_str(c, &line->geo); END_KEY
    return SKIP;
}

static int
message_member(Cursor *c, Span key, Line *line, unsigned *seen)
{
    KEY("id", 0) return read_str(c, &line->msg_id); END_KEY
    KEY("model", 1) return read_str(c, &line->model); END_KEY
    KEY("usage", 2) return read_struct(c, usage_member, line, &line->has_usage); END_KEY
    return SKIP;
}

static int
line_member(Cursor *c, Span key, Line *line, unsigned *seen)
{
    KEY("type", 0) return read_str(c, &line->type); END_KEY
    KEY("timestamp", 1) return read_str(c, &line->timestamp); END_KEY
    KEY("sessionId", 2) return read_str(c, &line->session); END_KEY
    KEY("requestId", 3) return read_str(c, &line->request); END_KEY
    KEY("isSidechain", 4) return read_bool(c, &line->sidechain); END_KEY
    KEY("cwd", 5) return read_str(c, &line->cwd); END_KEY
    KEY("message", 6) return read_struct(c, message_member, line, &line->has_message); END_KEY
    return SKIP;
}

/* ---- timestamps ------------------------------------------------------------ */

static int64_t
days_from_civil(int64_t y, int64_t m, int64_t d)
{
    /* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant) */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
digits_at(const unsigned char *s, int at, int n, int *out)
{
    int v = 0;
    for (int i = at; i < at + n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/*
 * Exactly `YYYY-MM-DDTHH:MM:SS.mmmZ` with a real date: the form that
 * parser.parse_timestamp_ms reads on its fast path. Anything else: 0 (decline).
 */
static int
fast_timestamp(Span s, int64_t *out)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const unsigned char *v = s.p;
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0, ms = 0;
    if (s.n != 24 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' ||
        v[16] != ':' || v[19] != '.' || v[23] != 'Z')
        return 0;
    if (!digits_at(v, 0, 4, &y) || !digits_at(v, 5, 2, &mo) || !digits_at(v, 8, 2, &d) ||
        !digits_at(v, 11, 2, &h) || !digits_at(v, 14, 2, &mi) || !digits_at(v, 17, 2, &se) ||
        !digits_at(v, 20, 3, &ms))
        return 0;
    /* parser.MIN_TS_MS..MAX_TS_MS: outside, Python says bad_timestamp */
    if (y < 1970 || y >= 2200 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 0;
    *out = days_from_civil(y, mo, d) * 86400000 + h * 3600000LL + mi * 60000LL + se * 1000LL + ms;
    return 1;
}

/* ---- one line: parse, then decide as record_from_line would ---------------- */

/*
 * Parse the line starting at `p` (bounded by the buffer end, not the line's:
 * the grammar never crosses a '\n', which is neither JSON whitespace nor
 * allowed raw in a string) and decide as record_from_line would. Returns the
 * line's end (its '\n' or the buffer end) when the JSON was well formed,
 * NULL when it was not (the outcome is then OUT_DECLINE).
 */
/* parser.MAX_ID, MAX_MODEL, MAX_PATH, MAX_TAG, in characters. A raw span is at least as
 * many bytes as its decoded characters, so a span within the limit is within it for
 * Python too; a longer one may not be, and is declined. */
#define MAX_ID 512
#define MAX_MODEL 255
#define MAX_PATH 4096
#define MAX_TAG 64

static int
too_long(const Line *line)
{
    return line->session.n > MAX_ID || line->request.n > MAX_ID || line->msg_id.n > MAX_ID ||
           line->model.n > MAX_MODEL || line->cwd.n > MAX_PATH || line->speed.n > MAX_TAG ||
           line->geo.n > MAX_TAG;
}

static const unsigned char *
classify(const unsigned char *p, const unsigned char *bound, Line *line)
{
    Cursor c = {p, bound, 0};
    line->outcome = OUT_DECLINE;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != '{' || !walk_object(&c, line_member, line))
        return NULL;
    skip_ws(&c);
    if (c.p != c.end && *c.p != '\n')
        return NULL; /* trailing bytes */
    if (too_long(line))
        return c.p; /* maybe over parser.MAX_*: Python decides (invalid_fields) */
    if (line->type.esc || line->model.esc || line->timestamp.esc)
        return c.p; /* compared below as raw bytes: decline rather than decode */
    if (!SPAN_IS(line->type, "assistant") || !line->has_message || !line->has_usage ||
        SPAN_IS(line->model, "<synthetic>")) {
        line->outcome = OUT_NONE;
        return c.p;
    }
    if (line->timestamp.p == NULL || !fast_timestamp(line->timestamp, &line->ts_ms))
        return c.p; /* missing or unusual: Python decides */
    if (line->msg_id.p == NULL || line->msg_id.n == 0)
        return c.p; /* keyed by a hash of the line: Python does it */
    line->outcome = OUT_RECORD;
    return c.p;
}

/* ---- the buffer: lines, malformed lines, lines with "usage" ----------------- */

static inline int
is_py_space(unsigned char ch)
{
    /* bytes.isspace(), bytes.strip() and the regex \s on bytes */
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/*
 * The slow half of parser._bad_line_count: lines of buf.split(b"\n") that,
 * stripped, are neither empty nor `{...}`. Run only when the fast half (the
 * regex, done in scan_buffer) did not prove the buffer clean.
 */
static Py_ssize_t
count_bad_lines(const unsigned char *buf, Py_ssize_t len)
{
    const unsigned char *end = buf + len, *p = buf;
    Py_ssize_t bad = 0;
    for (;;) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *a = p, *b = nl ? nl : end;
        while (a < b && is_py_space(*a))
            a++;
        while (b > a && is_py_space(b[-1]))
            b--;
        if (a < b && !(*a == '{' && b[-1] == '}'))
            bad++;
        if (nl == NULL)
            return bad;
        p = nl + 1;
    }
}

#define USAGE_KEY "\"usage\""
#define USAGE_KEY_LEN 7

/*
 * The next '\n' or `"usage"` at or after p (end if none). Every byte of the
 * buffer passes here once, so it is vectorised: 16 positions at a time are
 * tested for '\n', and for '"' at 0, 'u' at 1 and '"' at 6 (then compared in
 * full).
 */
static const unsigned char *
next_event_sse2(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i newline = _mm_set1_epi8('\n');
    const __m128i quote = _mm_set1_epi8('"'), u = _mm_set1_epi8('u');
    while (end - p >= 16 + USAGE_KEY_LEN - 1) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i a = _mm_cmpeq_epi8(v, quote);
        __m128i b = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + 1)), u);
        __m128i c = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + 6)), quote);
        __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, newline), _mm_and_si128(_mm_and_si128(a, b), c));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        while (mask) {
            const unsigned char *q = p + __builtin_ctz(mask);
            if (*q == '\n' || memcmp(q, USAGE_KEY, USAGE_KEY_LEN) == 0)
                return q;
            mask &= mask - 1;
        }
        p += 16;
    }
#endif
    for (; p < end; p++) {
        if (*p == '\n')
            return p;
        if (*p == '"' && end - p >= USAGE_KEY_LEN && memcmp(p, USAGE_KEY, USAGE_KEY_LEN) == 0)
            return p;
    }
    return end;
}

#ifdef AVX2_DISPATCH
__attribute__((target("avx2"))) static const unsigned char *
next_event_avx2(const unsigned char *p, const unsigned char *end)
{
    const __m256i newline = _mm256_set1_epi8('\n');
    const __m256i quote = _mm256_set1_epi8('"'), u = _mm256_set1_epi8('u');
    while (end - p >= 32 + USAGE_KEY_LEN - 1) {
        __m256i v = _mm256_loadu_si256((const __m256i *)p);
        __m256i a = _mm256_cmpeq_epi8(v, quote);
        __m256i b = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + 1)), u);
        __m256i c = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + 6)), quote);
        __m256i hit = _mm256_or_si256(_mm256_cmpeq_epi8(v, newline),
                                      _mm256_and_si256(_mm256_and_si256(a, b), c));
        unsigned mask = (unsigned)_mm256_movemask_epi8(hit);
        while (mask) {
            const unsigned char *q = p + __builtin_ctz(mask);
            if (*q == '\n' || memcmp(q, USAGE_KEY, USAGE_KEY_LEN) == 0)
                return q;
            mask &= mask - 1;
        }
        p += 32;
    }
    return next_event_sse2(p, end);
}
#endif

static inline const unsigned char *
next_event(const unsigned char *p, const unsigned char *end)
{
#ifdef AVX2_DISPATCH
    if (use_avx2)
        return next_event_avx2(p, end);
#endif
    return next_event_sse2(p, end);
}

typedef struct {
    Line *items;
    Py_ssize_t n, cap;
    Py_ssize_t lines, bad, too_long;
    int oom;
} Scan;

/* A line holding "usage" (from sol; the key at key): parse it. Returns its end. */
static const unsigned char *
take_line(const unsigned char *buf, const unsigned char *sol, const unsigned char *key,
          const unsigned char *end, Py_ssize_t max_line, Scan *s)
{
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 64;
        Line *grown = PyMem_RawRealloc(s->items, (size_t)cap * sizeof(Line));
        if (grown == NULL) {
            s->oom = 1;
            return end;
        }
        s->items = grown;
        s->cap = cap;
    }
    Line *line = &s->items[s->n];
    memset(line, 0, sizeof(*line));
    const unsigned char *eol = classify(sol, end, line);
    if (eol == NULL) { /* malformed: find the end the slow way */
        eol = memchr(key, '\n', (size_t)(end - key));
        if (eol == NULL)
            eol = end;
    }
    line->start = sol - buf;
    line->end = eol - buf;
    if (line->end - line->start > max_line)
        s->too_long++; /* as parse_lines: whatever the line holds */
    else if (line->outcome != OUT_NONE)
        s->n++;
    return eol;
}

/*
 * One pass: count lines, run the regex half of _bad_line_count on each '\n'
 * (a '\n' not preceded by '}' or space, or followed by neither '{' nor space)
 * and parse each line holding "usage", as parse_lines finds them.
 */
static void
scan_buffer(const unsigned char *buf, Py_ssize_t len, Py_ssize_t max_line, Scan *s)
{
    const unsigned char *end = buf + len, *p = buf, *sol = buf, *q;
    int edge = 0;
    while ((q = next_event(p, end)) < end) {
        if (*q == '\n') {
            s->lines++;
            if (q == buf || !(q[-1] == '}' || is_py_space(q[-1])))
                edge = 1;
            else if (q + 1 < end && !(q[1] == '{' || is_py_space(q[1])))
                edge = 1;
            sol = p = q + 1;
            continue;
        }
        p = take_line(buf, sol, q, end, max_line, s); /* its '\n' is the next event */
        if (s->oom)
            return;
    }
    if (edge || !(len == 0 || buf[0] == '{' || is_py_space(buf[0])))
        s->bad = count_bad_lines(buf, len);
}

/* ---- dedupe (no GIL): drop the records that cannot win their key ---------- */

/*
 * usage.dedupe keeps, per key, the first record of the smallest rank
 * (-total, ts, session, project). The tailer dedupes every file's records, so
 * the scanner may drop, before any object is built, each record that an
 * earlier-or-better record of the same key beats: the survivors, in line order,
 * dedupe to exactly what all the records would. Keys are compared as raw bytes
 * (equal bytes, equal key; keys that differ only in escapes stay apart and are
 * merged by Python). A tie that needs a string with escapes compared keeps
 * every record of that key.
 */
typedef struct {
    Span a, b; /* the key's two parts; `a` of the third form is the fallback session */
    int form;  /* 0 msg_id:requestId, 1 sessionId:msg_id, 2 fallback:msg_id */
} KeyParts;

typedef struct {
    Py_ssize_t winner; /* index in Scan.items; -1: empty slot */
    int keep_all;
} Group;

static KeyParts
key_parts(const Line *L, Span fallback_session)
{
    KeyParts k;
    if (L->request.p != NULL && L->request.n > 0) {
        k.form = 0;
        k.a = L->msg_id;
        k.b = L->request;
    } else if (L->session.p != NULL && L->session.n > 0) {
        k.form = 1;
        k.a = L->session;
        k.b = L->msg_id;
    } else {
        k.form = 2;
        k.a = fallback_session;
        k.b = L->msg_id;
    }
    return k;
}

static uint64_t
hash_bytes(uint64_t h, const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL; /* FNV-1a */
    return h;
}

static int
same_span(Span x, Span y)
{
    return x.n == y.n && (x.n == 0 || memcmp(x.p, y.p, (size_t)x.n) == 0);
}

static int
same_key(KeyParts x, KeyParts y)
{
    return x.form == y.form && same_span(x.a, y.a) && same_span(x.b, y.b);
}

static int64_t
line_total(const Line *L)
{
    int64_t cc = L->cc_field, split = L->eph_5m + L->eph_1h;
    if (split > cc)
        cc = split;
    return L->input + L->output + cc + L->cache_read;
}

/* Compare strings as Python compares str; 2 when escapes make it undecidable. */
static int
compare_text(Span x, Span y)
{
    if (same_span(x, y))
        return 0;
    if (x.esc || y.esc)
        return 2;
    Py_ssize_t n = x.n < y.n ? x.n : y.n;
    int c = n ? memcmp(x.p, y.p, (size_t)n) : 0; /* UTF-8 bytes sort as code points */
    if (c == 0)
        return x.n < y.n ? -1 : 1;
    return c < 0 ? -1 : 1;
}

static Span
resolved(Span own, Span fallback)
{
    return (own.p != NULL && own.n > 0) ? own : fallback;
}

/* -1: x ranks first (beats y); 1: y does; 0: a full tie; 2: undecidable. */
static int
compare_rank(const Line *x, const Line *y, Span fb_session, Span fb_project)
{
    int64_t tx = line_total(x), ty = line_total(y);
    if (tx != ty)
        return tx > ty ? -1 : 1; /* rank is -total: the larger total first */
    if (x->ts_ms != y->ts_ms)
        return x->ts_ms < y->ts_ms ? -1 : 1;
    int c = compare_text(resolved(x->session, fb_session), resolved(y->session, fb_session));
    if (c != 0)
        return c;
    return compare_text(resolved(x->cwd, fb_project), resolved(y->cwd, fb_project));
}

/* Out of memory, it drops nothing (the caller's dedupe still gives the same result). */
static void
dedupe_lines(Scan *s, Span fb_session, Span fb_project)
{
    Py_ssize_t records = 0;
    for (Py_ssize_t i = 0; i < s->n; i++)
        records += s->items[i].outcome == OUT_RECORD;
    if (records < 2)
        return;
    Py_ssize_t cap = 16;
    while (cap < records * 2)
        cap *= 2;
    Group *table = PyMem_RawMalloc((size_t)cap * sizeof(Group));
    if (table == NULL)
        return;
    for (Py_ssize_t i = 0; i < cap; i++)
        table[i].winner = -1;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        Line *L = &s->items[i];
        if (L->outcome != OUT_RECORD)
            continue;
        KeyParts k = key_parts(L, fb_session);
        uint64_t h = hash_bytes(1469598103934665603ULL ^ (uint64_t)k.form, k.a.p, k.a.n);
        h = hash_bytes(h ^ 0xff, k.b.p, k.b.n);
        Py_ssize_t slot = (Py_ssize_t)(h & (uint64_t)(cap - 1));
        Group *g;
        for (;;) {
            g = &table[slot];
            if (g->winner < 0 || same_key(key_parts(&s->items[g->winner], fb_session), k))
                break;
            slot = (slot + 1) & (cap - 1);
        }
        if (g->winner < 0) {
            g->winner = i;
            g->keep_all = 0;
            continue;
        }
        if (g->keep_all)
            continue;
        Line *W = &s->items[g->winner];
        int c = compare_rank(L, W, fb_session, fb_project);
        if (c == 2) {
            g->keep_all = 1; /* Python decides between them */
        } else if (c < 0) {
            W->dropped = 1; /* strictly better: the new winner */
            g->winner = i;
        } else {
            L->dropped = 1; /* worse, or a tie that the earlier record wins */
        }
    }
    PyMem_RawFree(table);
}

/* ---- phase 2 (GIL held): Python objects ------------------------------------ */

/* The JSON string escapes of a span (validated by scan_string) -> a str. */
static PyObject *
unescape(Span s)
{
    /* every escape is at least as long as the UTF-8 it stands for */
    char *out = PyMem_Malloc((size_t)s.n + 1), *o = out;
    if (out == NULL)
        return PyErr_NoMemory();
    for (const unsigned char *p = s.p, *end = s.p + s.n; p < end;) {
        if (*p != '\\') {
            *o++ = (char)*p++;
            continue;
        }
        unsigned char e = p[1];
        p += 2;
        switch (e) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned code = 0;
            for (int i = 0; i < 4; i++)
                code = code * 16 + (unsigned)hex_value(p[i]);
            p += 4;
            if (code < 0x80) {
                *o++ = (char)code;
            } else if (code < 0x800) {
                *o++ = (char)(0xC0 | (code >> 6));
                *o++ = (char)(0x80 | (code & 0x3F));
            } else { /* not a surrogate: scan_string declined those */
                *o++ = (char)(0xE0 | (code >> 12));
                *o++ = (char)(0x80 | ((code >> 6) & 0x3F));
                *o++ = (char)(0x80 | (code & 0x3F));
            }
            break;
        }
        default: /* '"', '\\', '/' */
            *o++ = (char)e;
        }
    }
    PyObject *str = PyUnicode_FromStringAndSize(out, o - out);
    PyMem_Free(out);
    return str;
}

static PyObject *
span_str(Span s)
{
    if (s.esc)
        return unescape(s);
    return PyUnicode_FromStringAndSize((const char *)s.p, s.n);
}

/* Strings of consecutive lines repeat (model, session, cwd): reuse the last one. */
typedef struct {
    Span last;
    PyObject *obj;
} Memo;

typedef struct {
    PyObject *seen; /* the interner's dict, or None */
    Memo model, session, cwd, speed, geo;
} Builder;

static PyObject *
keep(Builder *b, PyObject *value) /* steals value, returns a new reference */
{
    if (value == NULL || b->seen == Py_None)
        return value;
    PyObject *kept = PyDict_SetDefault(b->seen, value, value);
    Py_XINCREF(kept);
    Py_DECREF(value);
    return kept;
}

static PyObject *
memo_str(Builder *b, Memo *m, Span s)
{
    /* equal raw bytes, equal string */
    if (m->obj != NULL && m->last.n == s.n && memcmp(m->last.p, s.p, (size_t)s.n) == 0) {
        Py_INCREF(m->obj);
        return m->obj;
    }
    PyObject *obj = keep(b, span_str(s));
    if (obj == NULL)
        return NULL;
    Py_XSETREF(m->obj, obj);
    m->last = s;
    Py_INCREF(obj);
    return obj;
}

static PyObject *
joined_key(Span a, Span b)
{
    if (a.esc || b.esc) {
        PyObject *sa = span_str(a), *sb = span_str(b), *key = NULL;
        if (sa != NULL && sb != NULL)
            key = PyUnicode_FromFormat("%U:%U", sa, sb);
        Py_XDECREF(sa);
        Py_XDECREF(sb);
        return key;
    }
    char small[256];
    Py_ssize_t n = a.n + 1 + b.n;
    char *out = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)n);
    if (out == NULL)
        return PyErr_NoMemory();
    memcpy(out, a.p, (size_t)a.n);
    out[a.n] = ':';
    memcpy(out + a.n + 1, b.p, (size_t)b.n);
    PyObject *key = PyUnicode_FromStringAndSize(out, n);
    if (out != small)
        PyMem_Free(out);
    return key;
}

#define N_ARGS 15 /* UsageRecord's fields but its cost */

/* The UsageRecord of a line classified OUT_RECORD, as record_from_line builds it. */
static PyObject *
build_record(Builder *b, const Line *L, PyObject *record_type, PyObject *fallback_session,
             PyObject *fallback_project, PyObject *unknown)
{
    PyObject *args[N_ARGS] = {NULL};
    PyObject *result = NULL;
    int64_t cache_creation = L->cc_field, split = L->eph_5m + L->eph_1h;
    if (split > cache_creation)
        cache_creation = split;
    int64_t one_hour = L->eph_1h < cache_creation ? L->eph_1h : cache_creation;
    int own_session = L->session.p != NULL && L->session.n > 0;

    args[1] = span_str(L->msg_id);
    if (args[1] == NULL)
        goto done;
    if (L->request.p != NULL && L->request.n > 0)
        args[0] = joined_key(L->msg_id, L->request);
    else if (own_session)
        args[0] = joined_key(L->session, L->msg_id);
    else
        args[0] = PyUnicode_FromFormat("%U:%U", fallback_session, args[1]);
    args[2] = PyLong_FromLongLong(L->ts_ms);
    if (L->model.p != NULL && L->model.n > 0)
        args[3] = memo_str(b, &b->model, L->model);
    else
        args[3] = keep(b, Py_NewRef(unknown));
    if (own_session)
        args[4] = memo_str(b, &b->session, L->session);
    else
        args[4] = keep(b, Py_NewRef(fallback_session));
    if (L->cwd.p != NULL && L->cwd.n > 0)
        args[5] = memo_str(b, &b->cwd, L->cwd);
    else
        args[5] = keep(b, Py_NewRef(fallback_project));
    args[6] = Py_NewRef(L->sidechain ? Py_True : Py_False);
    args[7] = PyLong_FromLongLong(L->input);
    args[8] = PyLong_FromLongLong(L->output);
    args[9] = PyLong_FromLongLong(cache_creation);
    args[10] = PyLong_FromLongLong(one_hour);
    args[11] = PyLong_FromLongLong(L->cache_read);
    args[12] = PyLong_FromLongLong(L->web_search);
    args[13] = (L->speed.p && L->speed.n) ? memo_str(b, &b->speed, L->speed) : Py_NewRef(Py_None);
    args[14] = (L->geo.p && L->geo.n) ? memo_str(b, &b->geo, L->geo) : Py_NewRef(Py_None);
    for (int i = 0; i < N_ARGS; i++)
        if (args[i] == NULL)
            goto done;
    if ((PyObject *)layout_type != record_type) {
        result = PyObject_Vectorcall(record_type, args, N_ARGS, NULL);
        goto done;
    }
    /* what the dataclass's __init__ does, without running it: each slot set */
    result = layout_type->tp_alloc(layout_type, 0);
    if (result == NULL)
        goto done;
    for (int i = 0; i < N_ARGS; i++) {
        *slot(result, i) = args[i]; /* the reference moves into the record */
        args[i] = NULL;
    }
    *slot(result, F_COST) = Py_NewRef(Py_None);
done:
    for (int i = 0; i < N_ARGS; i++)
        Py_XDECREF(args[i]);
    return result;
}

/* ---- arguments both entry points take --------------------------------------- */

/* max_line as a Py_ssize_t; one it cannot be (too big): larger than any buffer. */
static Py_ssize_t
max_line_of(PyObject *value)
{
    Py_ssize_t max_line = PyLong_AsSsize_t(value);
    if (max_line == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        max_line = PY_SSIZE_T_MAX;
    }
    return max_line;
}

/* Records of `record_type` are built slot by slot if it has UsageRecord's layout. */
static void
use_record_type(PyObject *record_type)
{
    if ((PyObject *)layout_type != record_type &&
        (!PyType_Check(record_type) || learn_layout((PyTypeObject *)record_type) < 0))
        PyErr_Clear(); /* another kind of record: built by calling its type */
}

/* The fallbacks' UTF-8 for dedupe_lines; 0 when one is not UTF-8 (surrogates): the
 * deduping is then left to Python. */
static int
fallback_spans(PyObject *session, PyObject *project, Span *fb_session, Span *fb_project)
{
    Py_ssize_t ns, np;
    const char *a = PyUnicode_AsUTF8AndSize(session, &ns);
    const char *b = a ? PyUnicode_AsUTF8AndSize(project, &np) : NULL;
    if (a == NULL || b == NULL) {
        PyErr_Clear();
        return 0;
    }
    *fb_session = (Span){(const unsigned char *)a, ns, 0};
    *fb_project = (Span){(const unsigned char *)b, np, 0};
    return 1;
}

/*
 * Phase 2 of a scan: (lines, malformed, too_long, records, declined). A declined
 * line is (index, start, end) in buf, or with line_bytes (index, its bytes).
 */
static PyObject *
build_outcome(const Scan *s, const unsigned char *buf, PyObject *seen, PyObject *record_type,
              PyObject *fallback_session, PyObject *fallback_project, PyObject *unknown,
              int line_bytes)
{
    PyObject *records = PyList_New(0), *declined = PyList_New(0), *out = NULL;
    Builder b;
    memset(&b, 0, sizeof(b));
    b.seen = seen;
    if (records == NULL || declined == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        const Line *L = &s->items[i];
        if (L->dropped)
            continue;
        if (L->outcome == OUT_RECORD) {
            PyObject *rec = build_record(&b, L, record_type, fallback_session,
                                         fallback_project, unknown);
            if (rec == NULL || PyList_Append(records, rec) < 0) {
                Py_XDECREF(rec);
                goto fail;
            }
            Py_DECREF(rec);
        } else {
            Py_ssize_t index = PyList_GET_SIZE(records);
            PyObject *item =
                line_bytes ? Py_BuildValue("(ny#)", index, (const char *)buf + L->start,
                                           L->end - L->start)
                           : Py_BuildValue("(nnn)", index, L->start, L->end);
            if (item == NULL || PyList_Append(declined, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
        }
    }
    out = Py_BuildValue("(nnnOO)", s->lines, s->bad, s->too_long, records, declined);
fail:
    Py_XDECREF(b.model.obj);
    Py_XDECREF(b.session.obj);
    Py_XDECREF(b.cwd.obj);
    Py_XDECREF(b.speed.obj);
    Py_XDECREF(b.geo.obj);
    Py_XDECREF(records);
    Py_XDECREF(declined);
    return out;
}

PyDoc_STRVAR(scan_doc,
"scan(buf, fallback_session, fallback_project, seen, record_type, max_line, unknown,\n"
"     dedupe=False, /)\n"
"--\n\n"
"Scan complete lines: (lines, malformed, too_long, records, declined).\n\n"
"declined holds (index, start, end): the line buf[start:end] must be passed to\n"
"record_from_line, and its outcome goes before records[index]. With dedupe, the\n"
"records that cannot win usage.dedupe are left out (the caller dedupes the rest).");

static PyObject *
fastscan_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "scan() takes 7 or 8 arguments");
        return NULL;
    }
    PyObject *buf_obj = args[0], *fallback_session = args[1], *fallback_project = args[2];
    PyObject *seen = args[3], *record_type = args[4], *unknown = args[6];
    if (!PyUnicode_Check(fallback_session) || !PyUnicode_Check(fallback_project) ||
        !PyUnicode_Check(unknown)) {
        PyErr_SetString(PyExc_TypeError, "fallbacks must be str");
        return NULL;
    }
    if (seen != Py_None && !PyDict_CheckExact(seen)) {
        PyErr_SetString(PyExc_TypeError, "seen must be a dict or None");
        return NULL;
    }
    Py_ssize_t max_line = max_line_of(args[5]);
    /*
     * Any contiguous buffer: bytes, or a slice of the reader's reused bytearray.
     * While the view is held a bytearray cannot be resized; the caller promises
     * not to write into it meanwhile (the tailer's buffer belongs to one call).
     */
    int dedupe = 0;
    Span fb_session = {NULL, 0, 0}, fb_project = {NULL, 0, 0};
    if (nargs == 8) {
        dedupe = PyObject_IsTrue(args[7]);
        if (dedupe < 0)
            return NULL;
    }
    if (dedupe)
        dedupe = fallback_spans(fallback_session, fallback_project, &fb_session, &fb_project);
    use_record_type(record_type);
    Py_buffer view;
    if (PyObject_GetBuffer(buf_obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t len = view.len;

    Scan s = {0};
    if (len >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        scan_buffer(buf, len, max_line, &s);
        if (dedupe && !s.oom)
            dedupe_lines(&s, fb_session, fb_project); /* out of memory: drops nothing */
        Py_END_ALLOW_THREADS
    } else {
        scan_buffer(buf, len, max_line, &s);
        if (dedupe && !s.oom)
            dedupe_lines(&s, fb_session, fb_project); /* out of memory: drops nothing */
    }
    if (s.oom) {
        PyMem_RawFree(s.items);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }

    PyObject *out = build_outcome(&s, buf, seen, record_type, fallback_session,
                                  fallback_project, unknown, 0);
    PyMem_RawFree(s.items);
    PyBuffer_Release(&view);
    return out;
}

/* ---- whole small files: read and scanned in one release of the GIL --------- */

#ifdef HAVE_READ_FILES
/*
 * A cold catch-up reads hundreds of small transcripts. Read one by one from
 * Python, each costs a few syscalls and some Python, each of which takes the GIL
 * again, for little data to scan without it; with two readers they mostly waited
 * for each other. read_files reads as many files as fit in the caller's buffer
 * (opened, stat'ed, read to the end and closed, then scanned), all without the
 * GIL, and builds their results only then: one GIL round trip per buffer.
 */
enum { FILE_TODO, FILE_READ, FILE_ERROR, FILE_LEFT };

typedef struct {
    const char *path;
    Span fb_session, fb_project; /* UTF-8 of the fallbacks; p NULL: dedupe left to Python */
    int status, err;
    unsigned long long dev, ino;
    long long size, mtime_ns;
    Py_ssize_t at, got, committed; /* where it sits in the buffer; bytes read; complete lines */
    Scan s;
} FileRead;

/*
 * Read and scan f into buf[*used:cap]. Returns 0 when it does not fit in what is
 * left (f is untouched, to be read into an empty buffer). A file that is not
 * regular, that the buffer could never hold, or that grew while read is left to
 * the caller (FILE_LEFT); a failed syscall is FILE_ERROR with its errno.
 */
static int
read_file(FileRead *f, unsigned char *buf, Py_ssize_t cap, Py_ssize_t *used,
          Py_ssize_t max_line)
{
    int fd;
    do
        fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        f->status = FILE_ERROR;
        f->err = errno;
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        f->status = FILE_ERROR;
        f->err = errno;
        close(fd);
        return 1;
    }
    /* one byte more than its size: a file that fills it grew while read */
    Py_ssize_t room = st.st_size < cap ? (Py_ssize_t)st.st_size + 1 : cap + 1;
    if (!S_ISREG(st.st_mode) || room > cap) {
        f->status = FILE_LEFT;
        close(fd);
        return 1;
    }
    if (room > cap - *used) {
        close(fd);
        return 0;
    }
    unsigned char *dst = buf + *used;
    Py_ssize_t got = 0;
    while (got < room) {
        ssize_t n = pread(fd, dst + got, (size_t)(room - got), (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            f->status = FILE_ERROR;
            f->err = errno;
            close(fd);
            return 1;
        }
        if (n == 0)
            break;
        got += n;
    }
    close(fd);
    if (got == room) {
        f->status = FILE_LEFT;
        return 1;
    }
    Py_ssize_t committed = got;
    while (committed > 0 && dst[committed - 1] != '\n')
        committed--;
    scan_buffer(dst, committed, max_line, &f->s);
    if (f->s.oom) { /* Python reads it, and says so if memory is still short */
        f->status = FILE_LEFT;
        return 1;
    }
    if (f->fb_session.p != NULL)
        dedupe_lines(&f->s, f->fb_session, f->fb_project);
    f->status = FILE_READ;
    f->dev = (unsigned long long)st.st_dev;
    f->ino = (unsigned long long)st.st_ino;
    f->size = (long long)st.st_size;
#ifdef __APPLE__
    f->mtime_ns = (long long)st.st_mtimespec.tv_sec * 1000000000LL + st.st_mtimespec.tv_nsec;
#else
    f->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
#endif
    f->at = *used;
    f->got = got;
    f->committed = committed;
    *used += got;
    return 1;
}

/* The result of one file (see read_files_doc); NULL with an exception set. */
static PyObject *
file_result(const FileRead *f, const unsigned char *buf, Py_ssize_t head_bytes,
            Py_ssize_t tail_bytes, PyObject *seen, PyObject *record_type, PyObject *session,
            PyObject *project, PyObject *unknown)
{
    if (f->status == FILE_LEFT)
        Py_RETURN_NONE;
    if (f->status == FILE_ERROR)
        return PyLong_FromLong(f->err);
    const unsigned char *data = buf + f->at;
    Py_ssize_t head = f->committed < head_bytes ? f->committed : head_bytes;
    Py_ssize_t tail = f->committed < tail_bytes ? f->committed : tail_bytes;
    PyObject *scanned = build_outcome(&f->s, data, seen, record_type, session, project, unknown, 1);
    if (scanned == NULL)
        return NULL;
    return Py_BuildValue("(KKLLnny#y#N)", f->dev, f->ino, f->size, f->mtime_ns, f->committed,
                         f->got, (const char *)data, head,
                         (const char *)data + f->committed - tail, tail, scanned);
}

PyDoc_STRVAR(read_files_doc,
"read_files(paths, sessions, projects, buf, max_line, head_bytes, tail_bytes, seen,\n"
"           record_type, unknown, /)\n"
"--\n\n"
"Read each file (bytes paths) whole into buf and scan its complete lines, deduped\n"
"(scan with dedupe=True, the fallbacks of sessions[i] and projects[i]). One item\n"
"per path: None, to be read by the caller (not a regular file, as big as buf, grew\n"
"while read); an errno (int) where a syscall failed; or (dev, ino, size, mtime_ns,\n"
"offset, bytes_read, head, tail, (lines, malformed, too_long, records, declined))\n"
"where offset follows the last complete line, head and tail are the bytes up to\n"
"head_bytes before it and from tail_bytes before it, and declined holds\n"
"(index, line bytes).");

static PyObject *
fastscan_read_files(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "read_files() takes 10 arguments");
        return NULL;
    }
    PyObject *paths = args[0], *sessions = args[1], *projects = args[2], *seen = args[7];
    PyObject *record_type = args[8], *unknown = args[9];
    if (!PyList_CheckExact(paths) || !PyList_CheckExact(sessions) ||
        !PyList_CheckExact(projects) || PyList_GET_SIZE(sessions) != PyList_GET_SIZE(paths) ||
        PyList_GET_SIZE(projects) != PyList_GET_SIZE(paths)) {
        PyErr_SetString(PyExc_TypeError, "paths, sessions and projects: lists of one length");
        return NULL;
    }
    if (seen != Py_None && !PyDict_CheckExact(seen)) {
        PyErr_SetString(PyExc_TypeError, "seen must be a dict or None");
        return NULL;
    }
    if (!PyUnicode_Check(unknown)) {
        PyErr_SetString(PyExc_TypeError, "unknown must be str");
        return NULL;
    }
    Py_ssize_t max_line = max_line_of(args[4]);
    Py_ssize_t head_bytes = PyLong_AsSsize_t(args[5]), tail_bytes = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (max_line < 0 || head_bytes < 0 || tail_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "max_line, head_bytes and tail_bytes must be >= 0");
        return NULL;
    }
    use_record_type(record_type);

    /* the lists stay the caller's: their items are held here while the GIL is released */
    Py_ssize_t n = PyList_GET_SIZE(paths);
    PyObject *items = PyTuple_New(3 * n);
    FileRead *files = PyMem_Calloc((size_t)(n ? n : 1), sizeof(FileRead));
    PyObject *out = PyList_New(n);
    Py_buffer view = {0};
    if (items == NULL || files == NULL || out == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *path = PyList_GET_ITEM(paths, i), *session = PyList_GET_ITEM(sessions, i);
        PyObject *project = PyList_GET_ITEM(projects, i);
        PyTuple_SET_ITEM(items, 3 * i, Py_NewRef(path));
        PyTuple_SET_ITEM(items, 3 * i + 1, Py_NewRef(session));
        PyTuple_SET_ITEM(items, 3 * i + 2, Py_NewRef(project));
        if (!PyBytes_CheckExact(path) || !PyUnicode_Check(session) || !PyUnicode_Check(project)) {
            PyErr_SetString(PyExc_TypeError, "paths must be bytes, sessions and projects str");
            goto fail;
        }
        if (strlen(PyBytes_AS_STRING(path)) != (size_t)PyBytes_GET_SIZE(path)) {
            PyErr_SetString(PyExc_ValueError, "embedded null byte in a path");
            goto fail;
        }
        files[i].path = PyBytes_AS_STRING(path);
        fallback_spans(session, project, &files[i].fb_session, &files[i].fb_project);
    }
    if (PyObject_GetBuffer(args[3], &view, PyBUF_WRITABLE) < 0)
        goto fail;
    unsigned char *buf = view.buf;
    Py_ssize_t cap = view.len;
    for (Py_ssize_t first = 0; first < n;) {
        Py_ssize_t end = first, used = 0;
        Py_BEGIN_ALLOW_THREADS
        while (end < n && read_file(&files[end], buf, cap, &used, max_line))
            end++;
        Py_END_ALLOW_THREADS
        for (Py_ssize_t i = first; i < end; i++) {
            PyObject *result = file_result(&files[i], buf, head_bytes, tail_bytes, seen,
                                           record_type, PyTuple_GET_ITEM(items, 3 * i + 1),
                                           PyTuple_GET_ITEM(items, 3 * i + 2), unknown);
            if (result == NULL)
                goto fail;
            PyList_SET_ITEM(out, i, result);
            PyMem_RawFree(files[i].s.items); /* its lines point into buf, reused next round */
            files[i].s.items = NULL;
        }
        first = end;
    }
    PyBuffer_Release(&view);
    for (Py_ssize_t i = 0; i < n; i++)
        PyMem_RawFree(files[i].s.items);
    PyMem_Free(files);
    Py_DECREF(items);
    return out;
fail:
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    if (files != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            PyMem_RawFree(files[i].s.items);
    PyMem_Free(files);
    Py_XDECREF(items);
    Py_XDECREF(out);
    return NULL;
}
#endif /* HAVE_READ_FILES */

static PyMethodDef fastscan_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))fastscan_scan, METH_FASTCALL, scan_doc},
#ifdef HAVE_READ_FILES
    {"read_files", (PyCFunction)(void (*)(void))fastscan_read_files, METH_FASTCALL,
     read_files_doc},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastscan_module = {
    PyModuleDef_HEAD_INIT,
    "_fastscan",
    "C scanner for claude_usaged.parser (see the comment at the top of _fastscan.c).",
    0,
    fastscan_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastscan(void)
{
#ifdef AVX2_DISPATCH
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && getenv("CLAUDE_USAGED_NO_AVX2") == NULL;
#endif
    return PyModuleDef_Init(&fastscan_module);
}
