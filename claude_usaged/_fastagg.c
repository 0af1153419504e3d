/*
 * claude_usaged._fastagg: every aggregate of time-sorted responses in one pass.
 *
 * aggregate(rows, bucket_ms, hour_ms, window_ms, columns=None) takes the rows
 * that aggregates.Aggregator.feed takes, (ts, model, session, project, input,
 * output, cache_creation, cache_read, cost or None), all at once and in time
 * order (or longer rows holding those values at `columns`), and returns
 * (buckets, sessions, projects, blocks): the rows of Aggregator.result(), the
 * blocks as tuples (start, first, last, entries,
 * input, output, cache_creation, cache_read, cost, unpriced, models,
 * unpriced_models). Aggregator is the specification (tests compare both, floats
 * bit for bit): groups in first-seen order, integers summed exactly, each
 * group's cost added response by response in time order.
 *
 * Sums that do not fit 64 bits raise OverflowError (Python's integers then do
 * it); rows out of time order raise ValueError, as Aggregator does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int64_t entries, input, output, cache_creation, cache_read, unpriced, first, last;
    double cost;
} Acc;

/* One row's numbers. */
typedef struct {
    int64_t ts, tokens[4];
    double cost;
    int priced;
} Nums;

static int
acc_add(Acc *a, const Nums *r)
{
    if (__builtin_add_overflow(a->input, r->tokens[0], &a->input) ||
        __builtin_add_overflow(a->output, r->tokens[1], &a->output) ||
        __builtin_add_overflow(a->cache_creation, r->tokens[2], &a->cache_creation) ||
        __builtin_add_overflow(a->cache_read, r->tokens[3], &a->cache_read)) {
        PyErr_SetString(PyExc_OverflowError, "a token sum does not fit 64 bits");
        return -1;
    }
    a->entries++;
    if (r->priced)
        a->cost += r->cost;
    else
        a->unpriced++;
    a->last = r->ts;
    return 0;
}

/* Put n new references (NULL where making one failed) into tuple[at:at + n]; if any
 * is NULL, release the others instead and return -1. */
static int
put_all(PyObject *tuple, Py_ssize_t at, PyObject **v, int n)
{
    int ok = 1;
    for (int i = 0; i < n; i++)
        ok = ok && v[i] != NULL;
    for (int i = 0; i < n; i++) {
        if (ok)
            PyTuple_SET_ITEM(tuple, at + i, v[i]);
        else
            Py_XDECREF(v[i]);
    }
    return ok ? 0 : -1;
}

/* The sums as Python objects: entries, input, output, cache_creation, cache_read,
 * cost, unpriced (the order of Aggregator's accumulators). */
static int
put_sums(PyObject *tuple, Py_ssize_t at, const Acc *a)
{
    PyObject *v[7] = {
        PyLong_FromLongLong(a->entries),        PyLong_FromLongLong(a->input),
        PyLong_FromLongLong(a->output),         PyLong_FromLongLong(a->cache_creation),
        PyLong_FromLongLong(a->cache_read),     PyFloat_FromDouble(a->cost),
        PyLong_FromLongLong(a->unpriced),
    };
    return put_all(tuple, at, v, 7);
}

/* ---- groups: a dict from key to index, and the accumulators ------------------ */

typedef struct {
    Acc *items;
    Py_ssize_t n, cap;
    PyObject *index; /* key -> int */
    PyObject *keys;  /* the keys, first seen first */
} Table;

static int
table_init(Table *t)
{
    memset(t, 0, sizeof(*t));
    t->index = PyDict_New();
    t->keys = PyList_New(0);
    return t->index && t->keys ? 0 : -1;
}

static void
table_free(Table *t)
{
    PyMem_Free(t->items);
    Py_XDECREF(t->index);
    Py_XDECREF(t->keys);
}

/* The index of `key` (a new reference, consumed), added with no sums if new. */
static Py_ssize_t
table_slot(Table *t, PyObject *key, int64_t ts)
{
    if (key == NULL)
        return -1;
    PyObject *found = PyDict_GetItemWithError(t->index, key);
    if (found != NULL) {
        Py_DECREF(key);
        return PyLong_AsSsize_t(found);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return -1;
    }
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 256;
        Acc *grown = PyMem_Realloc(t->items, (size_t)cap * sizeof(Acc));
        if (grown == NULL) {
            Py_DECREF(key);
            PyErr_NoMemory();
            return -1;
        }
        t->items = grown;
        t->cap = cap;
    }
    PyObject *i = PyLong_FromSsize_t(t->n);
    int failed = i == NULL || PyDict_SetItem(t->index, key, i) < 0 ||
                 PyList_Append(t->keys, key) < 0;
    Py_XDECREF(i);
    Py_DECREF(key);
    if (failed)
        return -1;
    Acc *a = &t->items[t->n];
    memset(a, 0, sizeof(*a));
    a->first = ts;
    return t->n++;
}

/* ---- blocks ------------------------------------------------------------------ */

typedef struct {
    Acc acc;
    int64_t start;
    PyObject *models, *unpriced_models; /* sets */
} Block;

typedef struct {
    Block *items;
    Py_ssize_t n, cap;
} Blocks;

static void
blocks_free(Blocks *b)
{
    for (Py_ssize_t i = 0; i < b->n; i++) {
        Py_XDECREF(b->items[i].models);
        Py_XDECREF(b->items[i].unpriced_models);
    }
    PyMem_Free(b->items);
}

static Block *
blocks_open(Blocks *b, int64_t start, int64_t ts)
{
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 64;
        Block *grown = PyMem_Realloc(b->items, (size_t)cap * sizeof(Block));
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        b->items = grown;
        b->cap = cap;
    }
    Block *k = &b->items[b->n];
    memset(k, 0, sizeof(*k));
    k->start = start;
    k->acc.first = ts;
    k->models = PySet_New(NULL);
    k->unpriced_models = PySet_New(NULL);
    b->n++; /* counted now, so blocks_free releases what was made */
    return k->models && k->unpriced_models ? k : NULL;
}

/* ---- one row ------------------------------------------------------------------ */

static int
as_int64(PyObject *v, int64_t *out)
{
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)x;
    return 0;
}

/* Where the 9 values sit in a row: (ts, model, session, project, input, output,
 * cache_creation, cache_read, cost); and the row's least length. */
typedef struct {
    Py_ssize_t at[9], width;
} Columns;

static int
read_row(PyObject *row, const Columns *c, Nums *r, PyObject **model, PyObject **session,
         PyObject **project)
{
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < c->width) {
        PyErr_SetString(PyExc_TypeError, "a row is a tuple holding the 9 values");
        return -1;
    }
    if (as_int64(PyTuple_GET_ITEM(row, c->at[0]), &r->ts) < 0)
        return -1;
    for (int i = 0; i < 4; i++)
        if (as_int64(PyTuple_GET_ITEM(row, c->at[4 + i]), &r->tokens[i]) < 0)
            return -1;
    PyObject *cost = PyTuple_GET_ITEM(row, c->at[8]);
    r->priced = cost != Py_None;
    if (r->priced) {
        r->cost = PyFloat_AsDouble(cost);
        if (r->cost == -1.0 && PyErr_Occurred())
            return -1;
    }
    *model = PyTuple_GET_ITEM(row, c->at[1]);
    *session = PyTuple_GET_ITEM(row, c->at[2]);
    *project = PyTuple_GET_ITEM(row, c->at[3]);
    return 0;
}

/* The columns argument: None for (0, 1, ..., 8), or a tuple of 9 non-negative ints. */
static int
read_columns(PyObject *arg, Columns *c)
{
    c->width = 9;
    for (int i = 0; i < 9; i++)
        c->at[i] = i;
    if (arg == Py_None)
        return 0;
    if (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != 9) {
        PyErr_SetString(PyExc_TypeError, "columns must be a tuple of 9 indexes");
        return -1;
    }
    c->width = 0;
    for (int i = 0; i < 9; i++) {
        c->at[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(arg, i));
        if (c->at[i] < 0 || c->at[i] >= PY_SSIZE_T_MAX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a column index out of range");
            return -1;
        }
        if (c->at[i] + 1 > c->width)
            c->width = c->at[i] + 1;
    }
    return 0;
}

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* ---- results ------------------------------------------------------------------ */

/* key parts are copied from `key` (at the positions in `parts`), then the sums. */
static PyObject *
table_rows(const Table *t, const int *parts, int n_parts, int spans)
{
    PyObject *out = PyList_New(t->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        const Acc *a = &t->items[i];
        PyObject *key = PyList_GET_ITEM(t->keys, i);
        Py_ssize_t width = n_parts + (spans ? 2 : 0) + 7;
        PyObject *row = PyTuple_New(width);
        if (row == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, row);
        for (int p = 0; p < n_parts; p++) {
            PyObject *v = PyTuple_GET_ITEM(key, parts[p]);
            Py_INCREF(v);
            PyTuple_SET_ITEM(row, p, v);
        }
        Py_ssize_t at = n_parts;
        if (spans) {
            PyObject *span[2] = {PyLong_FromLongLong(a->first), PyLong_FromLongLong(a->last)};
            if (put_all(row, at, span, 2) < 0) {
                Py_DECREF(out);
                return NULL;
            }
            at += 2;
        }
        if (put_sums(row, at, a) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *
block_rows(const Blocks *b)
{
    PyObject *out = PyList_New(b->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        const Block *k = &b->items[i];
        PyObject *row = PyTuple_New(12);
        if (row == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, row);
        PyObject *times[3] = {
            PyLong_FromLongLong(k->start),
            PyLong_FromLongLong(k->acc.first),
            PyLong_FromLongLong(k->acc.last),
        };
        if (put_all(row, 0, times, 3) < 0 || put_sums(row, 3, &k->acc) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        Py_INCREF(k->models);
        Py_INCREF(k->unpriced_models);
        PyTuple_SET_ITEM(row, 10, k->models);
        PyTuple_SET_ITEM(row, 11, k->unpriced_models);
    }
    return out;
}

/* ---- aggregate ------------------------------------------------------------------ */

/* A table's last key (its parts, compared by identity) and index: consecutive rows
 * often share it, and then need no key built nor looked up. */
typedef struct {
    PyObject *a, *b, *c;
    int64_t n;
    Py_ssize_t index;
} Recent;

/* The index of the group keyed (a, b, c), or (a, b) when c is NULL: the last one when
 * the parts are the same objects, else looked up (added if new); -1 on error. */
static Py_ssize_t
group_of(Table *t, Recent *recent, PyObject *a, PyObject *b, PyObject *c, int64_t ts)
{
    if (recent->index >= 0 && a == recent->a && b == recent->b && c == recent->c)
        return recent->index;
    PyObject *key = c != NULL ? PyTuple_Pack(3, a, b, c) : PyTuple_Pack(2, a, b);
    recent->index = table_slot(t, key, ts);
    recent->a = a;
    recent->b = b;
    recent->c = c;
    return recent->index;
}

PyDoc_STRVAR(aggregate_doc,
"aggregate(rows, bucket_ms, hour_ms, window_ms, columns=None)\n"
"    -> (buckets, sessions, projects, blocks)\n"
"\n"
"Every aggregate of time-sorted response rows; see aggregates.aggregate. columns:\n"
"where the 9 values sit in a row (default: the first 9, in order).");

static PyObject *
aggregate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "aggregate takes 4 or 5 arguments");
        return NULL;
    }
    Columns columns;
    if (read_columns(nargs == 5 ? args[4] : Py_None, &columns) < 0)
        return NULL;
    PyObject *rows = args[0];
    int64_t bucket_ms, hour_ms, window_ms;
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list");
        return NULL;
    }
    if (as_int64(args[1], &bucket_ms) < 0 || as_int64(args[2], &hour_ms) < 0 ||
        as_int64(args[3], &window_ms) < 0)
        return NULL;
    if (bucket_ms <= 0 || hour_ms <= 0) {
        PyErr_SetString(PyExc_ValueError, "bucket_ms and hour_ms must be positive");
        return NULL;
    }
    Table buckets, sessions, projects;
    Blocks blocks = {NULL, 0, 0};
    Recent rb = {NULL, NULL, NULL, 0, -1}, rs = rb, rp = rb;
    Block *current = NULL;
    int64_t previous_ts = INT64_MIN;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *result = NULL;
    int ready = table_init(&buckets) == 0;
    ready = table_init(&sessions) == 0 && ready;
    ready = table_init(&projects) == 0 && ready;
    if (!ready)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Nums r;
        PyObject *model, *session, *project;
        if (read_row(PyList_GET_ITEM(rows, i), &columns, &r, &model, &session, &project) < 0)
            goto done;
        if (r.ts < previous_ts) {
            PyErr_SetString(PyExc_ValueError, "aggregate needs rows in time order");
            goto done;
        }
        previous_ts = r.ts;

        int64_t bucket = floor_div(r.ts, bucket_ms);
        if (rb.index < 0 || bucket != rb.n || model != rb.a) {
            PyObject *number = PyLong_FromLongLong(bucket);
            PyObject *key = number ? PyTuple_Pack(2, number, model) : NULL;
            Py_XDECREF(number);
            rb.index = table_slot(&buckets, key, r.ts);
            if (rb.index < 0)
                goto done;
            rb.n = bucket;
            rb.a = model;
        }
        if (acc_add(&buckets.items[rb.index], &r) < 0)
            goto done;

        if (group_of(&sessions, &rs, session, project, model, r.ts) < 0 ||
            acc_add(&sessions.items[rs.index], &r) < 0)
            goto done;
        if (group_of(&projects, &rp, project, model, NULL, r.ts) < 0 ||
            acc_add(&projects.items[rp.index], &r) < 0)
            goto done;

        /* windows.build_blocks: a new block when more than window_ms after the block's
         * start (the hour) or after the previous response */
        if (current == NULL || r.ts - current->start > window_ms ||
            r.ts - current->acc.last > window_ms) {
            int64_t start = floor_div(r.ts, hour_ms) * hour_ms;
            current = blocks_open(&blocks, start, r.ts);
            if (current == NULL)
                goto done;
        }
        if (acc_add(&current->acc, &r) < 0 || PySet_Add(current->models, model) < 0 ||
            (!r.priced && PySet_Add(current->unpriced_models, model) < 0))
            goto done;
    }
    {
        static const int bucket_parts[] = {0, 1};       /* (bucket, model) */
        static const int session_parts[] = {0, 2, 1};   /* (session, project, model) */
        static const int project_parts[] = {0, 1};      /* (project, model) */
        PyObject *b = table_rows(&buckets, bucket_parts, 2, 0);
        PyObject *s = b ? table_rows(&sessions, session_parts, 3, 1) : NULL;
        PyObject *p = s ? table_rows(&projects, project_parts, 2, 1) : NULL;
        PyObject *k = p ? block_rows(&blocks) : NULL;
        if (k != NULL)
            result = PyTuple_Pack(4, b, s, p, k);
        Py_XDECREF(b);
        Py_XDECREF(s);
        Py_XDECREF(p);
        Py_XDECREF(k);
    }
done:
    table_free(&buckets);
    table_free(&sessions);
    table_free(&projects);
    blocks_free(&blocks);
    return result;
}

static PyMethodDef methods[] = {
    {"aggregate", (PyCFunction)(void (*)(void))aggregate, METH_FASTCALL, aggregate_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_fastagg",
    "Every aggregate of time-sorted responses, in C (see the comment at the top of _fastagg.c).",
    0,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastagg(void)
{
    return PyModuleDef_Init(&module);
}
