/*
 * claude_usaged._fastbatch: a batch's per-response work before it is stored, in C.
 *
 * best_priced(record_lists, plans, plan_of, geo, web_search) -> dict
 *     One UsageRecord per key over every record of every list (usage.dedupe:
 *     the larger total wins, equal totals go to the smaller (ts, session,
 *     project), the first seen stays on a tie), in first-seen order, each
 *     winner's cost_usd set as PriceTable.cost prices it. `plans` is
 *     PriceTable's memo of `plan(model)`, which is called for a model not in it.
 * rows(records) -> list
 *     store's `responses` row of each record (batch.response_row).
 * split_rows(records, loaded) -> (new, better)
 *     those rows against the rows a bulk load stored so far (batch.split_rows).
 * pack_rows(rows) -> bytes, unpack_rows(data) -> list
 *     `responses` rows as the staged table keeps them (batch.pack_rows: the
 *     format is described there). Text that is not UTF-8 raises
 *     UnicodeEncodeError, as binding it in SQLite would; a value the format
 *     does not hold raises TypeError or OverflowError (the caller pickles).
 *
 * batch.py holds the specification in Python (tests compare both, floats bit
 * for bit; no contraction of a*b+c into one rounding). Records are read from
 * their slots: a record that is not exactly a UsageRecord with its usual slots,
 * or an integer beyond 64 bits, raises TypeError or OverflowError before
 * anything is changed, and the caller runs the Python instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include "_records.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF /* and -ffp-contract=off (setup.py) for gcc */
#endif
#if FLT_EVAL_METHOD != 0
#error "doubles must round as Python's floats do (FLT_EVAL_METHOD 0)"
#endif

/* The field (borrowed), or NULL with TypeError: the record's type is not the one
 * learned, or the slot is empty (Python would raise AttributeError). */
static int
check_record(PyObject *rec, PyTypeObject *type)
{
    if (Py_TYPE(rec) != type) {
        PyErr_SetString(PyExc_TypeError, "records of several types");
        return -1;
    }
    for (int i = 0; i < RECORD_FIELDS; i++)
        if (*slot(rec, i) == NULL) {
            PyErr_Format(PyExc_TypeError, "a record has no %s", FIELD_NAMES[i]);
            return -1;
        }
    return 0;
}

/* An int as int64: TypeError for another type, OverflowError beyond 64 bits. */
static int
as_i64(PyObject *v, int64_t *out)
{
    if (!PyLong_Check(v)) { /* no __index__: no Python code runs while rows are borrowed */
        PyErr_SetString(PyExc_TypeError, "an int expected");
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

static int
int_field(PyObject *rec, int field, int64_t *out)
{
    return as_i64(*slot(rec, field), out);
}

/* What decides between two snapshots of one key (UsageRecord.rank, batch.rank): the
 * larger total, then the earlier time, then the smaller session and project. */
typedef struct {
    PyObject *counts[4], *ts, *session, *project;
} Rank;

static const int COUNTED[4] = {F_INPUT, F_OUTPUT, F_CACHE_CREATION, F_CACHE_READ};

static void
record_rank(PyObject *rec, Rank *r)
{
    for (int i = 0; i < 4; i++)
        r->counts[i] = *slot(rec, COUNTED[i]);
    r->ts = *slot(rec, F_TS);
    r->session = *slot(rec, F_SESSION);
    r->project = *slot(rec, F_PROJECT);
}

static void
row_rank(PyObject *row, Rank *r)
{
    for (int i = 0; i < 4; i++)
        r->counts[i] = PyTuple_GET_ITEM(row, COUNTED[i]);
    r->ts = PyTuple_GET_ITEM(row, F_TS);
    r->session = PyTuple_GET_ITEM(row, F_SESSION);
    r->project = PyTuple_GET_ITEM(row, F_PROJECT);
}

static int
total_of(const Rank *r, int64_t *out)
{
    int64_t sum = 0, v;
    for (int i = 0; i < 4; i++) {
        if (as_i64(r->counts[i], &v) < 0)
            return -1;
        if (__builtin_add_overflow(sum, v, &sum)) {
            PyErr_SetString(PyExc_OverflowError, "a total beyond 64 bits");
            return -1;
        }
    }
    *out = sum;
    return 0;
}

/* Times are compared only as int, sessions and projects only as str (another type's
 * comparison could run Python code while rows are borrowed): TypeError, and the
 * Python compares them. */
static int
not_text(void)
{
    PyErr_SetString(PyExc_TypeError, "times must be int, sessions and projects str");
    return -1;
}

/* 1 when `a` ranks before `b`, 0 when not, -1 on error. */
static int
ranks_before(const Rank *a, const Rank *b)
{
    int64_t a_total, b_total, a_ts, b_ts;
    if (total_of(a, &a_total) < 0 || total_of(b, &b_total) < 0)
        return -1;
    if (a_total != b_total)
        return a_total > b_total;
    if (as_i64(a->ts, &a_ts) < 0 || as_i64(b->ts, &b_ts) < 0)
        return -1;
    if (a_ts != b_ts)
        return a_ts < b_ts;
    /* then (session, project), as tuples compare: the first unequal one decides */
    PyObject *texts[2][2] = {{a->session, b->session}, {a->project, b->project}};
    for (int i = 0; i < 2; i++) {
        PyObject *x = texts[i][0], *y = texts[i][1];
        if (!PyUnicode_CheckExact(x) || !PyUnicode_CheckExact(y))
            return not_text();
        int equal = PyObject_RichCompareBool(x, y, Py_EQ);
        if (equal < 0)
            return -1;
        if (!equal)
            return PyObject_RichCompareBool(x, y, Py_LT);
    }
    return 0;
}

/* 1 when `rec` beats `old` (same key), 0 when not, -1 on error: usage.dedupe. */
static int
beats(PyObject *rec, PyObject *old)
{
    Rank a, b;
    record_rank(rec, &a);
    record_rank(old, &b);
    return ranks_before(&a, &b);
}

/* ---- cost: PriceTable.cost over PriceTable.plan's tuples -------------------- */

typedef struct {
    double in, out, w5, w1, cr;
} Rates;

static int
rates_at(PyObject *t, Py_ssize_t at, Rates *r)
{
    double *fields[5] = {&r->in, &r->out, &r->w5, &r->w1, &r->cr};
    for (int i = 0; i < 5; i++) {
        *fields[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(t, at + i));
        if (*fields[i] == -1.0 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int
is_plan_tuple(PyObject *t, Py_ssize_t n)
{
    if (PyTuple_Check(t) && PyTuple_GET_SIZE(t) == n)
        return 1;
    PyErr_SetString(PyExc_TypeError, "a price plan is not as PriceTable.plan makes it");
    return 0;
}

typedef struct {
    PyObject *plans, *plan_of, *geo, *fast;
    double web_search;
} Pricer;

/* The plan of `model`: a new reference (None when it has no price), or NULL. */
static PyObject *
plan_for(Pricer *p, PyObject *model)
{
    PyObject *plan = PyDict_GetItemWithError(p->plans, model);
    if (plan != NULL)
        return Py_NewRef(plan);
    if (PyErr_Occurred())
        return NULL;
    return PyObject_CallOneArg(p->plan_of, model);
}

/* The cost of one record: a new reference to a float or None, or NULL. */
static PyObject *
cost_of(Pricer *p, PyObject *rec)
{
    PyObject *plan = plan_for(p, *slot(rec, F_MODEL)), *result = NULL;
    if (plan == NULL)
        return NULL;
    if (Py_TYPE(rec) != layout_type) { /* plan_of ran code that learned another type */
        PyErr_SetString(PyExc_TypeError, "the record layout changed while pricing");
        goto done;
    }
    if (plan == Py_None) {
        result = plan;
        plan = NULL;
        goto done;
    }
    if (!PyTuple_Check(plan)) {
        is_plan_tuple(plan, -1);
        goto done;
    }
    int64_t ts, in, out, cw, cw1h, cr, web;
    if (int_field(rec, F_TS, &ts) < 0 || int_field(rec, F_INPUT, &in) < 0 ||
        int_field(rec, F_OUTPUT, &out) < 0 || int_field(rec, F_CACHE_CREATION, &cw) < 0 ||
        int_field(rec, F_CACHE_1H, &cw1h) < 0 || int_field(rec, F_CACHE_READ, &cr) < 0 ||
        int_field(rec, F_WEB, &web) < 0)
        goto done;
    /* a row: (start, end, input, output, write_5m, write_1h, read, fast, tiers) */
    PyObject *row = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
        PyObject *r = PyTuple_GET_ITEM(plan, i);
        int64_t start, end;
        if (!is_plan_tuple(r, 9) || as_i64(PyTuple_GET_ITEM(r, 0), &start) < 0 ||
            as_i64(PyTuple_GET_ITEM(r, 1), &end) < 0)
            goto done;
        if (start <= ts && ts < end) {
            row = r;
            break;
        }
    }
    if (row == NULL) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    Rates rates;
    if (rates_at(row, 2, &rates) < 0)
        goto done;
    PyObject *tiers = PyTuple_GET_ITEM(row, 8);
    if (!PyTuple_Check(tiers)) {
        is_plan_tuple(tiers, -1);
        goto done;
    }
    if (PyTuple_GET_SIZE(tiers)) {
        int64_t request_input;
        if (__builtin_add_overflow(in, cw, &request_input) ||
            __builtin_add_overflow(request_input, cr, &request_input)) {
            PyErr_SetString(PyExc_OverflowError, "a request beyond 64 bits");
            goto done;
        }
        /* a tier: (above, start, end, input, output, write_5m, write_1h, read) */
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tiers); i++) {
            PyObject *t = PyTuple_GET_ITEM(tiers, i);
            int64_t above, start, end;
            if (!is_plan_tuple(t, 8) || as_i64(PyTuple_GET_ITEM(t, 0), &above) < 0 ||
                as_i64(PyTuple_GET_ITEM(t, 1), &start) < 0 ||
                as_i64(PyTuple_GET_ITEM(t, 2), &end) < 0)
                goto done;
            if (request_input > above && start <= ts && ts < end) {
                if (rates_at(t, 3, &rates) < 0)
                    goto done;
                break;
            }
        }
    }
    int64_t cw5;
    if (__builtin_sub_overflow(cw, cw1h, &cw5)) {
        PyErr_SetString(PyExc_OverflowError, "a cache write beyond 64 bits");
        goto done;
    }
    /* each step rounds as in Python: int to float, then one operation at a time */
    double usd = (double)in * rates.in;
    usd = usd + (double)cw5 * rates.w5;
    usd = usd + (double)cw1h * rates.w1;
    usd = usd + (double)cr * rates.cr;
    usd = usd + (double)out * rates.out;
    usd = usd / 1000000.0;
    PyObject *speed = *slot(rec, F_SPEED);
    if (speed != Py_None) {
        int fast = PyObject_RichCompareBool(speed, p->fast, Py_EQ);
        if (fast < 0)
            goto done;
        if (fast) {
            double times = PyFloat_AsDouble(PyTuple_GET_ITEM(row, 7));
            if (times == -1.0 && PyErr_Occurred())
                goto done;
            usd = usd * times;
        }
    }
    PyObject *geo = *slot(rec, F_GEO);
    int has_geo = PyObject_IsTrue(geo);
    if (has_geo < 0)
        goto done;
    if (has_geo) {
        PyObject *times = PyDict_GetItemWithError(p->geo, geo);
        if (times == NULL && PyErr_Occurred())
            goto done;
        if (times != NULL) {
            double x = PyFloat_AsDouble(times);
            if (x == -1.0 && PyErr_Occurred())
                goto done;
            usd = usd * x;
        } else {
            usd = usd * 1.0;
        }
    }
    if (web)
        usd = usd + (double)web * p->web_search;
    result = PyFloat_FromDouble(usd);
done:
    Py_XDECREF(plan);
    return result;
}

/* ---- the functions --------------------------------------------------------- */

static PyTypeObject *
record_type_of(PyObject *rec)
{
    PyTypeObject *type = Py_TYPE(rec);
    if (type != layout_type && learn_layout(type) < 0)
        return NULL;
    return type;
}

PyDoc_STRVAR(best_priced_doc,
"best_priced(record_lists, plans, plan_of, geo, web_search, /)\n--\n\n"
"One record per key (usage.dedupe), each priced (PriceTable.cost): a dict.");

static PyObject *
best_priced(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "best_priced() takes 5 arguments");
        return NULL;
    }
    Pricer p = {.plans = args[1], .plan_of = args[2], .geo = args[3]};
    if (!PyDict_Check(p.plans) || !PyDict_Check(p.geo)) {
        PyErr_SetString(PyExc_TypeError, "plans and geo must be dicts");
        return NULL;
    }
    p.web_search = PyFloat_AsDouble(args[4]);
    if (p.web_search == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *lists = PySequence_Fast(args[0], "record_lists must be a sequence");
    if (lists == NULL)
        return NULL;
    PyObject *best = PyDict_New(), **costs = NULL;
    PyTypeObject *type = NULL;
    Py_ssize_t n = 0;
    if (best == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(lists); i++) {
        PyObject *records = PySequence_Fast_GET_ITEM(lists, i);
        if (!PyList_Check(records)) {
            PyErr_SetString(PyExc_TypeError, "record_lists must hold lists");
            goto fail;
        }
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(records); j++) {
            PyObject *rec = PyList_GET_ITEM(records, j);
            if (type == NULL && (type = record_type_of(rec)) == NULL)
                goto fail;
            if (check_record(rec, type) < 0)
                goto fail;
            PyObject *key = *slot(rec, F_KEY);
            PyObject *old = PyDict_GetItemWithError(best, key);
            int replace = 1;
            if (old == NULL && PyErr_Occurred())
                goto fail;
            if (old != NULL && (replace = beats(rec, old)) < 0)
                goto fail;
            if (replace && PyDict_SetItem(best, key, rec) < 0)
                goto fail;
        }
    }
    /* every cost first: an error changes no record */
    n = PyDict_GET_SIZE(best);
    costs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (costs == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    p.fast = PyUnicode_InternFromString("fast");
    if (p.fast == NULL)
        goto fail;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *rec;
    while (PyDict_Next(best, &pos, &key, &rec)) {
        Py_INCREF(rec); /* plan_of runs Python: hold what is being read */
        costs[i] = cost_of(&p, rec);
        Py_DECREF(rec);
        if (costs[i++] == NULL)
            goto fail;
    }
    pos = 0;
    i = 0;
    while (PyDict_Next(best, &pos, &key, &rec))
        Py_SETREF(*slot(rec, F_COST), costs[i++]);
    PyMem_Free(costs);
    Py_DECREF(p.fast);
    Py_DECREF(lists);
    return best;
fail:
    if (costs != NULL)
        for (Py_ssize_t k = 0; k < n; k++)
            Py_XDECREF(costs[k]);
    PyMem_Free(costs);
    Py_XDECREF(p.fast);
    Py_XDECREF(best);
    Py_DECREF(lists);
    return NULL;
}

/* The `responses` row of a checked record (a new reference), or NULL. */
static PyObject *
row_of(PyObject *rec, PyObject *zero)
{
    PyObject *sidechain = *slot(rec, F_SIDECHAIN);
    if (!PyBool_Check(sidechain)) {
        PyErr_SetString(PyExc_TypeError, "is_sidechain is not a bool");
        return NULL;
    }
    PyObject *row = PyTuple_New(RECORD_FIELDS);
    if (row == NULL)
        return NULL;
    for (int f = 0; f < RECORD_FIELDS; f++) {
        PyObject *v = *slot(rec, f);
        if (f == F_SIDECHAIN)
            v = PyLong_FromLong(v == Py_True); /* int(bool): a small, shared int */
        else if ((f == F_SPEED || f == F_GEO) && v == Py_None)
            v = Py_NewRef(zero);
        else
            Py_INCREF(v);
        PyTuple_SET_ITEM(row, f, v);
    }
    return row;
}

/* Each record's row (checked, as row_of makes it), passed to `take`; -1 on error. */
static int
each_row(PyObject *records, int (*take)(PyObject *row, void *arg), void *arg)
{
    if (!PyList_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "records must be a list");
        return -1;
    }
    PyObject *zero = PyLong_FromLong(0);
    PyTypeObject *type = NULL;
    int status = zero == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; status == 0 && i < PyList_GET_SIZE(records); i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if ((type == NULL && (type = record_type_of(rec)) == NULL) ||
            check_record(rec, type) < 0) {
            status = -1;
            break;
        }
        PyObject *row = row_of(rec, zero);
        status = row == NULL ? -1 : take(row, arg); /* take consumes the row */
    }
    Py_XDECREF(zero);
    return status;
}

static int
append_row(PyObject *row, void *list)
{
    int status = PyList_Append((PyObject *)list, row);
    Py_DECREF(row);
    return status;
}

PyDoc_STRVAR(rows_doc,
"rows(records, /)\n--\n\n"
"The `responses` row of each record (batch.response_row): a list of tuples.");

static PyObject *
rows(PyObject *module, PyObject *records)
{
    (void)module;
    PyObject *out = PyList_New(0);
    if (out != NULL && each_row(records, append_row, out) < 0)
        Py_CLEAR(out);
    return out;
}

/* 1 when `row` ranks before `old` (batch.rank), 0 when not, -1 on error. */
static int
row_ranks_before(PyObject *row, PyObject *old)
{
    if (!PyTuple_CheckExact(old) || PyTuple_GET_SIZE(old) != RECORD_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a row is a tuple of 16 columns");
        return -1;
    }
    Rank a, b;
    row_rank(row, &a);
    row_rank(old, &b);
    return ranks_before(&a, &b);
}

typedef struct {
    PyObject *loaded, *new, *better;
} Split;

static int
split_row(PyObject *row, void *arg)
{
    Split *sp = arg;
    PyObject *old = PyDict_GetItemWithError(sp->loaded, PyTuple_GET_ITEM(row, F_KEY));
    int status = 0;
    if (old == NULL)
        status = PyErr_Occurred() ? -1 : PyList_Append(sp->new, row);
    else {
        int before = row_ranks_before(row, old);
        status = before < 0 ? -1 : before ? PyList_Append(sp->better, row) : 0;
    }
    Py_DECREF(row);
    return status;
}

PyDoc_STRVAR(split_rows_doc,
"split_rows(records, loaded, /)\n--\n\n"
"The records' rows against the rows stored so far by key (batch.split_rows):\n"
"(new rows, rows that rank before the stored one of their key).");

static PyObject *
split_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "split_rows(records, loaded: dict)");
        return NULL;
    }
    Split sp = {args[1], PyList_New(0), PyList_New(0)};
    PyObject *out = NULL;
    if (sp.new != NULL && sp.better != NULL && each_row(args[0], split_row, &sp) == 0)
        out = PyTuple_Pack(2, sp.new, sp.better);
    Py_XDECREF(sp.new);
    Py_XDECREF(sp.better);
    return out;
}

/* ---- staged rows: pack_rows / unpack_rows (batch.py describes the format) ---- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_ENDIAN_HOST 1
#else
#define LITTLE_ENDIAN_HOST 0
#endif

#define NO_TEXT 0xFFFFFFFFu /* speed or geo: the int 0 that stands for none */

typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Buf;

static int
buf_put(Buf *b, const void *data, Py_ssize_t n)
{
    if (b->n + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        char *grown = PyMem_Realloc(b->p, (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, (size_t)n);
    b->n += n;
    return 0;
}

static int
put_u32(Buf *b, Py_ssize_t v)
{
    if (v < 0 || v >= (Py_ssize_t)NO_TEXT) {
        PyErr_SetString(PyExc_OverflowError, "a length beyond 32 bits");
        return -1;
    }
    uint32_t x = (uint32_t)v;
    return buf_put(b, &x, 4);
}

/* Text as its length and UTF-8 bytes (UnicodeEncodeError for surrogates). */
static int
put_text(Buf *b, PyObject *s)
{
    if (!PyUnicode_CheckExact(s)) {
        PyErr_SetString(PyExc_TypeError, "text expected");
        return -1;
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (utf8 == NULL || put_u32(b, n) < 0)
        return -1;
    return buf_put(b, utf8, n);
}

/* The index of `s` in the string table (added if new), as it goes into a row. */
static int
put_shared(Buf *row, Buf *table, PyObject *index, PyObject *s)
{
    if (!PyUnicode_CheckExact(s)) {
        PyErr_SetString(PyExc_TypeError, "text expected");
        return -1;
    }
    PyObject *found = PyDict_GetItemWithError(index, s);
    Py_ssize_t i;
    if (found != NULL) {
        i = PyLong_AsSsize_t(found);
    } else {
        if (PyErr_Occurred() || put_text(table, s) < 0)
            return -1;
        i = PyDict_GET_SIZE(index);
        PyObject *value = PyLong_FromSsize_t(i);
        int failed = value == NULL || PyDict_SetItem(index, s, value) < 0;
        Py_XDECREF(value);
        if (failed)
            return -1;
    }
    return put_u32(row, i);
}

static int
put_i64(Buf *b, PyObject *v)
{
    int64_t x;
    if (!PyLong_CheckExact(v)) { /* not even a subclass: the Python packs `type(v) is int` */
        PyErr_SetString(PyExc_TypeError, "an int expected");
        return -1;
    }
    return as_i64(v, &x) < 0 ? -1 : buf_put(b, &x, 8);
}

/* The columns of a row, in order: 'T' text, 'S' shared text, 'I' int, 'O' shared text
 * or the int 0, 'C' cost (float or None). */
static const char ROW_KINDS[RECORD_FIELDS + 1] = "TTISSSIIIIIIIOOC";

PyDoc_STRVAR(pack_rows_doc,
"pack_rows(rows, /)\n--\n\n"
"`responses` rows as the staged table keeps them (batch.pack_rows).");

static PyObject *
pack_rows(PyObject *module, PyObject *rows)
{
    (void)module;
    if (!LITTLE_ENDIAN_HOST) {
        PyErr_SetString(PyExc_TypeError, "the packed format is little-endian");
        return NULL;
    }
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list");
        return NULL;
    }
    Buf table = {0}, body = {0};
    PyObject *index = PyDict_New(), *out = NULL;
    if (index == NULL)
        return NULL;
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(rows); r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != RECORD_FIELDS) {
            PyErr_SetString(PyExc_TypeError, "a row is a tuple of 16 columns");
            goto done;
        }
        for (int f = 0; f < RECORD_FIELDS; f++) {
            PyObject *v = PyTuple_GET_ITEM(row, f);
            int failed;
            switch (ROW_KINDS[f]) {
            case 'T':
                failed = put_text(&body, v);
                break;
            case 'S':
                failed = put_shared(&body, &table, index, v);
                break;
            case 'I':
                failed = put_i64(&body, v);
                break;
            case 'O':
                if (PyLong_CheckExact(v) && PyLong_AsLong(v) == 0) {
                    uint32_t none = NO_TEXT;
                    failed = buf_put(&body, &none, 4);
                } else {
                    PyErr_Clear(); /* a huge int: refused as not text below */
                    failed = put_shared(&body, &table, index, v);
                }
                break;
            default: { /* 'C' */
                unsigned char priced = v != Py_None;
                double cost = 0.0;
                if (priced && !PyFloat_CheckExact(v)) {
                    PyErr_SetString(PyExc_TypeError, "a cost is a float or None");
                    goto done;
                }
                if (priced)
                    cost = PyFloat_AS_DOUBLE(v);
                failed = buf_put(&body, &priced, 1) < 0 || buf_put(&body, &cost, 8) < 0;
            }
            }
            if (failed)
                goto done;
        }
    }
    Buf head = {0};
    if (put_u32(&head, PyList_GET_SIZE(rows)) < 0 ||
        put_u32(&head, PyDict_GET_SIZE(index)) < 0) {
        PyMem_Free(head.p);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, head.n + table.n + body.n);
    if (out != NULL) {
        char *p = PyBytes_AS_STRING(out);
        memcpy(p, head.p, (size_t)head.n);
        if (table.n)
            memcpy(p + head.n, table.p, (size_t)table.n);
        if (body.n)
            memcpy(p + head.n + table.n, body.p, (size_t)body.n);
    }
    PyMem_Free(head.p);
done:
    PyMem_Free(table.p);
    PyMem_Free(body.p);
    Py_DECREF(index);
    return out;
}

typedef struct {
    const char *p, *end;
} Reader;

static int
take(Reader *r, void *out, Py_ssize_t n)
{
    if (r->end - r->p < n) {
        PyErr_SetString(PyExc_ValueError, "packed rows cut short");
        return -1;
    }
    memcpy(out, r->p, (size_t)n);
    r->p += n;
    return 0;
}

static PyObject *
take_text(Reader *r)
{
    uint32_t n;
    if (take(r, &n, 4) < 0)
        return NULL;
    if (r->end - r->p < (Py_ssize_t)n) {
        PyErr_SetString(PyExc_ValueError, "packed rows cut short");
        return NULL;
    }
    PyObject *s = PyUnicode_DecodeUTF8(r->p, (Py_ssize_t)n, "strict");
    r->p += n;
    return s;
}

PyDoc_STRVAR(unpack_rows_doc,
"unpack_rows(data, /)\n--\n\n"
"The rows pack_rows packed: a list of tuples.");

static PyObject *
unpack_rows(PyObject *module, PyObject *data)
{
    (void)module;
    if (!LITTLE_ENDIAN_HOST) {
        PyErr_SetString(PyExc_TypeError, "the packed format is little-endian");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Reader r = {view.buf, (const char *)view.buf + view.len};
    PyObject *strings = NULL, *out = NULL, *zero = PyLong_FromLong(0);
    uint32_t n_rows, n_strings;
    if (zero == NULL || take(&r, &n_rows, 4) < 0 || take(&r, &n_strings, 4) < 0)
        goto fail;
    /* each string takes 4 bytes at least, each row 8 + 93: allocate no more than that */
    if ((uint64_t)n_strings * 4 + (uint64_t)n_rows * 101 > (uint64_t)(r.end - r.p)) {
        PyErr_SetString(PyExc_ValueError, "packed rows cut short");
        goto fail;
    }
    strings = PyList_New(n_strings);
    if (strings == NULL)
        goto fail;
    for (uint32_t i = 0; i < n_strings; i++) {
        PyObject *s = take_text(&r);
        if (s == NULL)
            goto fail;
        PyList_SET_ITEM(strings, i, s);
    }
    out = PyList_New(n_rows);
    if (out == NULL)
        goto fail;
    for (uint32_t i = 0; i < n_rows; i++) {
        PyObject *row = PyTuple_New(RECORD_FIELDS);
        if (row == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, row);
        for (int f = 0; f < RECORD_FIELDS; f++) {
            PyObject *v = NULL;
            switch (ROW_KINDS[f]) {
            case 'T':
                v = take_text(&r);
                break;
            case 'I': {
                int64_t x;
                if (take(&r, &x, 8) == 0)
                    v = PyLong_FromLongLong(x);
                break;
            }
            case 'S':
            case 'O': {
                uint32_t at;
                if (take(&r, &at, 4) < 0)
                    break;
                if (ROW_KINDS[f] == 'O' && at == NO_TEXT)
                    v = Py_NewRef(zero);
                else if (at < n_strings)
                    v = Py_NewRef(PyList_GET_ITEM(strings, at));
                else
                    PyErr_SetString(PyExc_ValueError, "packed rows name a missing string");
                break;
            }
            default: { /* 'C' */
                unsigned char priced;
                double cost;
                if (take(&r, &priced, 1) == 0 && take(&r, &cost, 8) == 0)
                    v = priced ? PyFloat_FromDouble(cost) : Py_NewRef(Py_None);
            }
            }
            if (v == NULL)
                goto fail;
            PyTuple_SET_ITEM(row, f, v);
        }
    }
    if (r.p != r.end) {
        PyErr_SetString(PyExc_ValueError, "packed rows followed by other bytes");
        goto fail;
    }
    Py_DECREF(strings);
    Py_DECREF(zero);
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(strings);
    Py_XDECREF(zero);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"best_priced", (PyCFunction)(void (*)(void))best_priced, METH_FASTCALL, best_priced_doc},
    {"rows", rows, METH_O, rows_doc},
    {"split_rows", (PyCFunction)(void (*)(void))split_rows, METH_FASTCALL, split_rows_doc},
    {"pack_rows", pack_rows, METH_O, pack_rows_doc},
    {"unpack_rows", unpack_rows, METH_O, unpack_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_fastbatch",
    "A batch's per-response work, in C (see the comment at the top of _fastbatch.c).",
    0,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastbatch(void)
{
    return PyModuleDef_Init(&module);
}
