/*
 * A UsageRecord's slots, read and written from C (_fastscan.c, _fastbatch.c).
 *
 * usage.UsageRecord is a slots dataclass: each field is a member descriptor whose
 * offset says where its value sits in the object. learn_layout finds them once
 * per type, and refuses a type whose fields are not all plain object slots, or
 * whose dataclass runs a __post_init__ (setting the slots would skip it).
 */
#ifndef CLAUDE_USAGED_RECORDS_H
#define CLAUDE_USAGED_RECORDS_H

#include <Python.h>
#include <string.h>
#include <structmember.h>

enum {
    F_KEY, F_MESSAGE, F_TS, F_MODEL, F_SESSION, F_PROJECT, F_SIDECHAIN, F_INPUT,
    F_OUTPUT, F_CACHE_CREATION, F_CACHE_1H, F_CACHE_READ, F_WEB, F_SPEED, F_GEO,
    F_COST, RECORD_FIELDS
};

static const char *const FIELD_NAMES[RECORD_FIELDS] = {
    "key", "message_id", "ts_ms", "model", "session_id", "project", "is_sidechain",
    "input_tokens", "output_tokens", "cache_creation_tokens", "cache_creation_1h_tokens",
    "cache_read_tokens", "web_search_requests", "speed", "inference_geo", "cost_usd",
};

/* Where each field's slot sits in a record of `layout_type` (found once per type). */
static PyTypeObject *layout_type;
static Py_ssize_t offsets[RECORD_FIELDS];

static int
learn_layout(PyTypeObject *type)
{
    Py_ssize_t found[RECORD_FIELDS];
    /* a class (a built-in type has no tp_dict of its own since Python 3.12) */
    if (!PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE) || type->tp_dict == NULL)
        goto no;
    PyObject *post_init = PyDict_GetItemString(type->tp_dict, "__post_init__");
    if (post_init != NULL || type->tp_basicsize != (Py_ssize_t)sizeof(PyObject) +
                                                      RECORD_FIELDS * (Py_ssize_t)sizeof(PyObject *))
        goto no;
    for (int i = 0; i < RECORD_FIELDS; i++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, FIELD_NAMES[i]);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type))
            goto no;
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY))
            goto no;
        found[i] = m->offset;
    }
    memcpy(offsets, found, sizeof(offsets));
    Py_XSETREF(layout_type, (PyTypeObject *)Py_NewRef(type));
    return 0;
no:
    PyErr_Format(PyExc_TypeError, "%.100s has not the slots of a UsageRecord", type->tp_name);
    return -1;
}

static inline PyObject **
slot(PyObject *rec, int field)
{
    return (PyObject **)((char *)rec + offsets[field]);
}

#endif
