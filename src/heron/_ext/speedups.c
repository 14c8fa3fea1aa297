/* heron._speedups: C versions of byte-crunching hot paths.
 *
 * Only leaf functions with trivial semantics live here; each has a pure
 * Python twin in heron/protocol/_mask.py, and the tests run both and fuzz one
 * against the other. Set HERON_NO_EXTENSIONS=1 to use the pure versions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* XOR n bytes of src into dst with the 4-byte mask m, starting at mask
 * position `phase` (the offset of src in the masked payload, mod 4).
 * Works 8 bytes at a time. */
static void
xor_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t n, const unsigned char *m, Py_ssize_t phase)
{
    Py_ssize_t i = 0;
    unsigned char m8[8];
    for (int k = 0; k < 8; k++) {
        m8[k] = m[(k + phase) & 3];
    }
    uint64_t key;
    memcpy(&key, m8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= key;
        memcpy(dst + i, &word, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ m8[i & 7];
    }
}

/* apply_mask(data, mask) -> bytes: XOR data with the 4-byte mask repeated
 * (RFC 6455 section 5.3). */
static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)data.buf;
    const unsigned char *m = (const unsigned char *)mask.buf;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t n = data.len;

    Py_BEGIN_ALLOW_THREADS
    xor_mask(src, dst, n, m, 0);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

/* apply_mask_join(pieces, mask) -> bytes: the pieces (a list of bytes-like
 * objects) joined, XORed with the mask as one payload: b"".join(pieces) then
 * apply_mask(), in one pass and without the intermediate copy. */
static PyObject *
apply_mask_join(PyObject *self, PyObject *args)
{
    PyObject *pieces;
    Py_buffer mask;
    if (!PyArg_ParseTuple(args, "O!y*:apply_mask_join", &PyList_Type, &pieces, &mask)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(pieces);
    Py_buffer *views = PyMem_Calloc(count ? count : 1, sizeof(Py_buffer));
    if (views == NULL) {
        PyBuffer_Release(&mask);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t got = 0, total = 0;
    for (; got < count; got++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(pieces, got), &views[got], PyBUF_SIMPLE) < 0) {
            goto done;
        }
        total += views[got].len;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result != NULL) {
        const unsigned char *m = (const unsigned char *)mask.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_ssize_t offset = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < count; k++) {
            xor_mask((const unsigned char *)views[k].buf, dst + offset, views[k].len, m, offset & 3);
            offset += views[k].len;
        }
        Py_END_ALLOW_THREADS
    }
done:
    for (Py_ssize_t k = 0; k < got; k++) {
        PyBuffer_Release(&views[k]);
    }
    PyMem_Free(views);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "XOR data with a repeated 4-byte WebSocket mask."},
    {"apply_mask_join", apply_mask_join, METH_VARARGS,
     "Join a list of bytes-like pieces and XOR them with a 4-byte WebSocket mask, in one pass."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "heron._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
