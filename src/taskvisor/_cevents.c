/*
 * taskvisor._cevents: the events of a packed log, built in C (optional accelerator).
 *
 * The same contract as ``_events.unpack_python`` (the reference, in Python): a run of ``RECORD``
 * values ``kind, seq, at, task, task_id, attempt, duration, outcome`` becomes an ``Event``
 * with every field stored; a run whose ``kind`` is ``None`` holds an event stored whole in
 * its second place; the kinds in ``SLOTTED`` carry ``slot`` and ``reason`` in the last two
 * places. The ``Event`` is allocated by its own type and its slots are filled through the
 * offsets of its member descriptors, as ``EventDraft``'s attribute stores and the
 * ``__class__`` swap do in Python: about 50 ns per event built, handed out and freed,
 * instead of about 250 (`python -m benchmarks fanout:unpack`).
 *
 * ``Unpacker(event_type, slots, slotted)`` checks its arguments once; calling it on a log
 * returns an iterator over that log's events. ``_events.py`` builds the one unpacker at
 * import and falls back to Python when this module is absent or disabled.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define RECORD 8
#define MAX_SLOTTED 8

/* The fields, in the order of ``_events._FIELDS`` (the ``slots`` argument follows it). */
enum {
    F_SEQ, F_AT, F_KIND, F_TASK, F_TASK_ID, F_ATTEMPT, F_REASON, F_EXIT_CODE, F_DELAY,
    F_TIMEOUT, F_DURATION, F_BACKOFF_SOURCE, F_OUTCOME, F_REJECTION, F_SLOT, NFIELDS
};

typedef struct {
    PyObject_HEAD
    PyTypeObject *event_type;
    Py_ssize_t offsets[NFIELDS];
    PyObject *slotted;                  /* the kinds, kept alive for the pointers below */
    PyObject *slotted_kinds[MAX_SLOTTED];
    Py_ssize_t n_slotted;
} Unpacker;

typedef struct {
    PyObject_HEAD
    Unpacker *unpacker;
    PyObject *log;                      /* NULL once exhausted */
    Py_ssize_t pos;
} Events;

static PyTypeObject Unpacker_Type;
static PyTypeObject Events_Type;

/* ---------------------------------------------------------------------------- Unpacker */

static PyObject *
unpacker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *event_type, *slots, *slotted;
    static char *kwlist[] = {"event_type", "slots", "slotted", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O:Unpacker", kwlist, &PyType_Type,
                                     &event_type, &PyTuple_Type, &slots, &slotted)) {
        return NULL;
    }
    PyTypeObject *etype = (PyTypeObject *)event_type;
    if (PyTuple_GET_SIZE(slots) != NFIELDS) {
        PyErr_Format(PyExc_ValueError, "slots: expected %d member descriptors, got %zd",
                     NFIELDS, PyTuple_GET_SIZE(slots));
        return NULL;
    }
    Unpacker *self = (Unpacker *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < NFIELDS; i++) {
        PyObject *d = PyTuple_GET_ITEM(slots, i);
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "slots[%zd]: expected a slot's member descriptor", i);
            goto fail;
        }
        PyMemberDescrObject *md = (PyMemberDescrObject *)d;
        PyMemberDef *member = md->d_member;
        /* An object slot of a base of the event type, inside its instances. */
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)
            || !PyType_IsSubtype(etype, PyDescr_TYPE(md))
            || member->offset < (Py_ssize_t)sizeof(PyObject)
            || member->offset + (Py_ssize_t)sizeof(PyObject *) > etype->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "slots[%zd]: not a writable object slot of %s", i,
                         etype->tp_name);
            goto fail;
        }
        self->offsets[i] = member->offset;
    }
    if (etype->tp_itemsize != 0 || etype->tp_dictoffset != 0 || etype->tp_weaklistoffset != 0) {
        PyErr_Format(PyExc_TypeError, "event_type: %s must have slots only", etype->tp_name);
        goto fail;
    }
    PyObject *kinds = PySequence_Tuple(slotted);
    if (kinds == NULL) {
        goto fail;
    }
    if (PyTuple_GET_SIZE(kinds) > MAX_SLOTTED) {
        Py_DECREF(kinds);
        PyErr_Format(PyExc_ValueError, "slotted: at most %d kinds", MAX_SLOTTED);
        goto fail;
    }
    self->slotted = kinds;
    self->n_slotted = PyTuple_GET_SIZE(kinds);
    for (Py_ssize_t i = 0; i < self->n_slotted; i++) {
        self->slotted_kinds[i] = PyTuple_GET_ITEM(kinds, i);
    }
    Py_INCREF(etype);
    self->event_type = etype;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *
unpacker_call(Unpacker *self, PyObject *args, PyObject *kwds)
{
    PyObject *log;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Unpacker() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!:Unpacker", &PyList_Type, &log)) {
        return NULL;
    }
    Events *it = PyObject_GC_New(Events, &Events_Type);
    if (it == NULL) {
        return NULL;
    }
    Py_INCREF(self);
    it->unpacker = self;
    Py_INCREF(log);
    it->log = log;
    it->pos = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static int
unpacker_traverse(Unpacker *self, visitproc visit, void *arg)
{
    Py_VISIT(self->event_type);
    Py_VISIT(self->slotted);
    return 0;
}

static int
unpacker_clear(Unpacker *self)
{
    Py_CLEAR(self->event_type);
    Py_CLEAR(self->slotted);
    self->n_slotted = 0;
    return 0;
}

static void
unpacker_dealloc(Unpacker *self)
{
    PyObject_GC_UnTrack(self);
    unpacker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject Unpacker_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskvisor._cevents.Unpacker",
    .tp_doc = PyDoc_STR("Unpacker(event_type, slots, slotted): call it on a packed log to "
                        "iterate over its events."),
    .tp_basicsize = sizeof(Unpacker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = unpacker_new,
    .tp_call = (ternaryfunc)unpacker_call,
    .tp_traverse = (traverseproc)unpacker_traverse,
    .tp_clear = (inquiry)unpacker_clear,
    .tp_dealloc = (destructor)unpacker_dealloc,
};

/* ------------------------------------------------------------------------------ Events */

static PyObject *
events_next(Events *it)
{
    PyObject *log = it->log;
    if (log == NULL) {
        return NULL;
    }
    Py_ssize_t pos = it->pos;
    Py_ssize_t size = PyList_GET_SIZE(log);
    if (pos >= size) {
        Py_CLEAR(it->log);
        return NULL;
    }
    if (pos + RECORD > size) {
        Py_CLEAR(it->log);
        PyErr_Format(PyExc_ValueError, "a packed log's length must be a multiple of %d", RECORD);
        return NULL;
    }
    PyObject **v = ((PyListObject *)log)->ob_item + pos;
    it->pos = pos + RECORD;
    PyObject *kind = v[0];
    if (kind == Py_None) {  /* stored whole */
        return Py_NewRef(v[1]);
    }
    Unpacker *u = it->unpacker;
    PyTypeObject *etype = u->event_type;
    if (etype == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the unpacker was cleared");
        return NULL;
    }
    PyObject *event = etype->tp_alloc(etype, 0);
    if (event == NULL) {
        return NULL;
    }
    /* The allocation may have run a garbage collection, hence finalizers: read the run again,
       and refuse a log that changed under the iterator rather than read freed memory. */
    if (pos + RECORD > PyList_GET_SIZE(log) || ((PyListObject *)log)->ob_item[pos] != kind) {
        Py_DECREF(event);
        Py_CLEAR(it->log);
        PyErr_SetString(PyExc_RuntimeError, "a packed log changed while it was unpacked");
        return NULL;
    }
    v = ((PyListObject *)log)->ob_item + pos;
    int slotted = 0;
    for (Py_ssize_t i = 0; i < u->n_slotted; i++) {
        if (kind == u->slotted_kinds[i]) {
            slotted = 1;
            break;
        }
    }
    /* No Python code runs from here to the return: the list's items stay put. */
    const Py_ssize_t *off = u->offsets;
    char *base = (char *)event;
#define STORE(field, value) (*(PyObject **)(base + off[field]) = Py_NewRef(value))
    STORE(F_SEQ, v[1]);
    STORE(F_AT, v[2]);
    STORE(F_KIND, kind);
    STORE(F_TASK, v[3]);
    STORE(F_TASK_ID, v[4]);
    STORE(F_ATTEMPT, v[5]);
    STORE(F_EXIT_CODE, Py_None);
    STORE(F_DELAY, Py_None);
    STORE(F_TIMEOUT, Py_None);
    STORE(F_BACKOFF_SOURCE, Py_None);
    STORE(F_REJECTION, Py_None);
    if (slotted) {
        STORE(F_SLOT, v[6]);
        STORE(F_REASON, v[7]);
        STORE(F_DURATION, Py_None);
        STORE(F_OUTCOME, Py_None);
    }
    else {
        STORE(F_DURATION, v[6]);
        STORE(F_OUTCOME, v[7]);
        STORE(F_SLOT, Py_None);
        STORE(F_REASON, Py_None);
    }
#undef STORE
    return event;
}

static PyObject *
events_length_hint(Events *it, PyObject *Py_UNUSED(ignored))
{
    if (it->log == NULL) {
        return PyLong_FromSsize_t(0);
    }
    Py_ssize_t left = PyList_GET_SIZE(it->log) - it->pos;
    return PyLong_FromSsize_t(left > 0 ? (left + RECORD - 1) / RECORD : 0);
}

static PyMethodDef events_methods[] = {
    {"__length_hint__", (PyCFunction)events_length_hint, METH_NOARGS,
     PyDoc_STR("The number of events not reached yet.")},
    {NULL, NULL, 0, NULL},
};

static int
events_traverse(Events *it, visitproc visit, void *arg)
{
    Py_VISIT(it->unpacker);
    Py_VISIT(it->log);
    return 0;
}

static void
events_dealloc(Events *it)
{
    PyObject_GC_UnTrack(it);
    Py_CLEAR(it->unpacker);
    Py_CLEAR(it->log);
    PyObject_GC_Del(it);
}

static PyTypeObject Events_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "taskvisor._cevents.Events",
    .tp_doc = PyDoc_STR("The events of one packed log, built as they are reached."),
    .tp_basicsize = sizeof(Events),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)events_traverse,
    .tp_dealloc = (destructor)events_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)events_next,
    .tp_methods = events_methods,
};

/* ------------------------------------------------------------------------------ module */

static struct PyModuleDef cevents_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "taskvisor._cevents",
    .m_doc = PyDoc_STR("The events of a packed log, built in C (see _events.unpack)."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cevents(void)
{
    if (PyType_Ready(&Unpacker_Type) < 0 || PyType_Ready(&Events_Type) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&cevents_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "RECORD", RECORD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&Unpacker_Type);
    if (PyModule_AddObject(m, "Unpacker", (PyObject *)&Unpacker_Type) < 0) {
        Py_DECREF(&Unpacker_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
