/* trio_sudp.vpn._csum: Internet checksums and TCP segmentation for TSO TUN reads.
 *
 * The optional compiled helper of trio_sudp/vpn/segment.py, which keeps the pure
 * Python path as the fallback and tests both against one reference. Everything here
 * mirrors a function there:
 *
 *   sums(data, start, size, count) -> list[int]   segment.pure_sums
 *   checksum(data, start) -> int                  segment._sum
 *   cut(data, v4, ip, hdr, mss) -> list[bytes]    segment._cut (after validation)
 *
 * Sums are taken over native-endian words into a 64-bit accumulator and folded: the
 * ones' complement sum does not depend on byte order up to a final byte swap
 * (RFC 1071 §2(B)), so only results that leave as numbers are swapped back.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define VNET_HEADER_SIZE 10
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80

static uint64_t add_words(const uint8_t *p, Py_ssize_t n, uint64_t acc) {
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        acc += (uint64_t)a + b;
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        acc += w;
        p += 2;
        n -= 2;
    }
    if (n) { /* an odd last byte is the high byte of a big-endian word */
        uint16_t w = 0;
        memcpy(&w, p, 1);
        acc += w;
    }
    return acc;
}

static uint16_t fold(uint64_t acc) {
    while (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16);
    return (uint16_t)acc;
}

static uint16_t as_big_endian(uint16_t native) {
    const uint8_t b[2] = {(uint8_t)native, (uint8_t)(native >> 8)};
    uint16_t probe = 1;
    if (*(const uint8_t *)&probe) /* little-endian host: swap */
        return (uint16_t)((b[0] << 8) | b[1]);
    return native;
}

static PyObject *sums(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, size, count;
    if (!PyArg_ParseTuple(args, "y*nnn", &buf, &start, &size, &count))
        return NULL;
    if (start < 0 || size <= 0 || count < 0 || start + size * count > buf.len) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "chunks outside the data");
        return NULL;
    }
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)buf.buf + start;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint16_t s = as_big_endian(fold(add_words(p + i * size, size, 0)));
        PyObject *item = PyLong_FromLong(s);
        if (item == NULL) {
            Py_DECREF(out);
            PyBuffer_Release(&buf);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyBuffer_Release(&buf);
    return out;
}

static PyObject *checksum(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &start))
        return NULL;
    if (start < 0 || start > buf.len) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "start outside the data");
        return NULL;
    }
    uint16_t s = as_big_endian(fold(add_words((const uint8_t *)buf.buf + start, buf.len - start, 0)));
    PyBuffer_Release(&buf);
    return PyLong_FromLong(s % 0xFFFF); /* as segment._sum: 0..0xFFFE */
}

static void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static PyObject *cut(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int v4;
    Py_ssize_t ip, hdr, mss;
    if (!PyArg_ParseTuple(args, "y*pnnn", &buf, &v4, &ip, &hdr, &mss))
        return NULL;
    const uint8_t *in = (const uint8_t *)buf.buf + VNET_HEADER_SIZE;
    Py_ssize_t length = buf.len - VNET_HEADER_SIZE;
    Py_ssize_t payload = length - hdr;
    if (mss <= 0 || ip < 20 || hdr < ip + 20 || payload <= 0 || (v4 && ip > 60)) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "not a validated GSO packet");
        return NULL;
    }
    Py_ssize_t count = (payload + mss - 1) / mss;
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const uint8_t *tcp = in + ip;
    uint32_t seq0 = ((uint32_t)tcp[4] << 24) | ((uint32_t)tcp[5] << 16) | ((uint32_t)tcp[6] << 8) | tcp[7];
    uint32_t ident0 = v4 ? (uint32_t)((in[4] << 8) | in[5]) : 0;
    uint8_t flags = tcp[13];
    /* The pseudo-header's addresses (and protocol) do not change per segment. */
    uint64_t pseudo = v4 ? add_words(in + 12, 8, 0) : add_words(in + 8, 32, 0);
    uint8_t proto[2] = {0, 6};
    pseudo = add_words(proto, 2, pseudo);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t from = hdr + i * mss;
        Py_ssize_t n = from + mss <= length ? mss : length - from;
        PyObject *segment = PyBytes_FromStringAndSize(NULL, hdr + n);
        if (segment == NULL) {
            Py_DECREF(out);
            PyBuffer_Release(&buf);
            return NULL;
        }
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(segment);
        memcpy(o, in, hdr);
        memcpy(o + hdr, in + from, n);
        uint8_t *t = o + ip;
        uint32_t seq = seq0 + (uint32_t)(i * mss);
        t[4] = (uint8_t)(seq >> 24);
        t[5] = (uint8_t)(seq >> 16);
        t[6] = (uint8_t)(seq >> 8);
        t[7] = (uint8_t)seq;
        uint8_t f = flags;
        if (count > 1) {
            if (i != count - 1)
                f &= (uint8_t)~(TCP_FIN | TCP_PSH);
            if (i != 0)
                f &= (uint8_t)~TCP_CWR;
        }
        t[13] = f;
        if (v4) {
            put16(o + 2, (uint32_t)(hdr + n));
            put16(o + 4, (ident0 + (uint32_t)i) & 0xFFFF);
            o[10] = o[11] = 0;
            uint16_t c = (uint16_t)~fold(add_words(o, ip, 0));
            memcpy(o + 10, &c, 2);
        } else {
            put16(o + 4, (uint32_t)(hdr - 40 + n));
        }
        Py_ssize_t tcp_length = hdr - ip + n;
        uint8_t len_word[2] = {(uint8_t)(tcp_length >> 8), (uint8_t)tcp_length};
        t[16] = t[17] = 0;
        uint16_t c = (uint16_t)~fold(add_words(t, tcp_length, add_words(len_word, 2, pseudo)));
        if (count == 1 && c == 0)
            c = 0xFFFF; /* not cut: the kernel would complete it (skb_checksum_help) */
        memcpy(t + 16, &c, 2);
        PyList_SET_ITEM(out, i, segment);
    }
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"sums", sums, METH_VARARGS, "Ones' complement sums of count chunks of size bytes."},
    {"checksum", checksum, METH_VARARGS, "The ones' complement sum of data[start:], mod 0xFFFF."},
    {"cut", cut, METH_VARARGS, "The segments of a validated TCP GSO read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "trio_sudp.vpn._csum", NULL, -1, methods};

PyMODINIT_FUNC PyInit__csum(void) { return PyModule_Create(&module); }
