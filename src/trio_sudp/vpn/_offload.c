/* trio_sudp.vpn._offload: TCP segmentation and receive offload for the TUN task.
 *
 * The optional compiled helper of trio_sudp/vpn/segment.py and coalesce.py, which
 * keep their pure Python paths as the fallback; the tests hold both to one
 * reference. Everything here mirrors a function there:
 *
 *   sums(data, start, size, count) -> list[int]   segment.pure_sums
 *   checksum(data, start) -> int                  segment._sum
 *   cut(data, v4, ip, hdr, mss) -> list[bytes]    segment._cut (after validation)
 *   coalesce(packets) -> list[list[bytes]]        coalesce.pure_coalesce
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


/* ------------------------------------------------------------------ coalesce */

#define MAX_SEGMENTS 64
#define MAX_IP_LENGTH 65535
#define TCP_ACK 0x10
#define NEEDS_CSUM 1
#define GSO_TCPV4 1
#define GSO_TCPV6 4

typedef struct {
    PyObject *first;        /* borrowed from the list of packets */
    const uint8_t *key;     /* addresses and ports, inside first */
    Py_ssize_t key_len;
    const uint8_t *options; /* TCP options, inside first */
    Py_ssize_t options_len;
    Py_ssize_t ip, header, segment, length;
    uint32_t next_seq, ack, window;
    uint64_t ip_fields;
    int open, push, count; /* count: payloads merged after the first */
    Py_ssize_t head, tail; /* the merged packets' indices, linked through next[] */
} Merge;

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint32_t be16(const uint8_t *p) { return (uint32_t)((p[0] << 8) | p[1]); }

static uint32_t fold32(uint64_t total) {
    while (total > 0xFFFF)
        total = (total & 0xFFFF) + (total >> 16);
    return (uint32_t)total;
}

static uint64_t words_be(const uint8_t *p, Py_ssize_t n) {
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i + 1 < n; i += 2)
        total += be16(p + i);
    return total;
}

static PyObject *plain_write(PyObject *plain_header, PyObject *packet) {
    PyObject *write = PyList_New(2);
    if (write == NULL)
        return NULL;
    Py_INCREF(plain_header);
    Py_INCREF(packet);
    PyList_SET_ITEM(write, 0, plain_header);
    PyList_SET_ITEM(write, 1, packet);
    return write;
}

static PyObject *merged_write(PyObject *plain_header, Merge *m, PyObject *packets,
                              const Py_ssize_t *next) {
    if (m->count == 0)
        return plain_write(plain_header, m->first);
    const uint8_t *first = (const uint8_t *)PyBytes_AS_STRING(m->first);
    Py_ssize_t ip = m->ip, hdr = m->header;
    PyObject *write = PyList_New(3 + m->count);
    if (write == NULL)
        return NULL;
    PyObject *header = PyBytes_FromStringAndSize((const char *)first, hdr);
    if (header == NULL)
        goto fail;
    uint8_t *h = (uint8_t *)PyBytes_AS_STRING(header);
    Py_ssize_t tcp_length = m->length - ip;
    uint64_t pseudo;
    int gso_type;
    if (ip == 20) {
        put16(h + 2, (uint32_t)m->length);
        h[10] = h[11] = 0;
        put16(h + 10, ~fold32(words_be(h, 20)) & 0xFFFF);
        pseudo = words_be(first + 12, 8) + 6 + (uint64_t)tcp_length;
        gso_type = GSO_TCPV4;
    } else {
        put16(h + 4, (uint32_t)tcp_length);
        pseudo = words_be(first + 8, 32) + 6 + (uint64_t)tcp_length;
        gso_type = GSO_TCPV6;
    }
    if (m->push)
        h[ip + 13] |= TCP_PSH;
    put16(h + ip + 16, fold32(pseudo));
    struct {
        uint8_t flags, gso_type;
        uint16_t hdr_len, gso_size, csum_start, csum_offset;
    } vnet = {NEEDS_CSUM, (uint8_t)gso_type, (uint16_t)hdr, (uint16_t)m->segment, (uint16_t)ip, 16};
    PyObject *vnet_bytes = PyBytes_FromStringAndSize((const char *)&vnet, 10);
    if (vnet_bytes == NULL) {
        Py_DECREF(header);
        goto fail;
    }
    PyList_SET_ITEM(write, 0, vnet_bytes);
    PyList_SET_ITEM(write, 1, header);
    PyObject *rest = PyBytes_FromStringAndSize((const char *)first + hdr, PyBytes_GET_SIZE(m->first) - hdr);
    if (rest == NULL)
        goto fail;
    PyList_SET_ITEM(write, 2, rest);
    Py_ssize_t slot = 3;
    for (Py_ssize_t i = m->head; i >= 0; i = next[i]) {
        PyObject *packet = PyList_GET_ITEM(packets, i);
        PyObject *payload = PyBytes_FromStringAndSize(PyBytes_AS_STRING(packet) + hdr, PyBytes_GET_SIZE(packet) - hdr);
        if (payload == NULL)
            goto fail;
        PyList_SET_ITEM(write, slot++, payload);
    }
    return write;
fail:
    Py_DECREF(write);
    return NULL;
}

static PyObject *coalesce(PyObject *self, PyObject *args) {
    PyObject *packets, *plain_header;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &packets, &PyBytes_Type, &plain_header))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(packets);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyBytes_Check(PyList_GET_ITEM(packets, i))) {
            PyErr_SetString(PyExc_TypeError, "packets must be bytes");
            return NULL;
        }
    /* items[i] >= 0: packet i written alone; < 0: merge -items[i] - 1 */
    Py_ssize_t *items = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    Py_ssize_t *next = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    Merge *merges = PyMem_Malloc(sizeof(Merge) * (size_t)(n + 1));
    PyObject *out = NULL;
    if (items == NULL || next == NULL || merges == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t item_count = 0, merge_count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *object = PyList_GET_ITEM(packets, i);
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(object);
        Py_ssize_t size = PyBytes_GET_SIZE(object);
        next[i] = -1;
        uint8_t first = size > 40 ? p[0] : 0;
        Py_ssize_t ip, key_len;
        uint64_t ip_fields;
        const uint8_t *t;
        if (first == 0x45) {
            uint32_t frag = be16(p + 6);
            if (p[9] != 6 || (frag & 0x3FFF) || be16(p + 2) != (uint32_t)size) {
                items[item_count++] = i;
                continue;
            }
            ip = 20;
            key_len = 12;
            ip_fields = ((uint64_t)p[1] << 24) | ((uint64_t)frag << 8) | p[8];
        } else if ((first >> 4) == 6 && size > 60) {
            if (p[6] != 6 || be16(p + 4) != (uint32_t)(size - 40)) {
                items[item_count++] = i;
                continue;
            }
            ip = 40;
            key_len = 36;
            ip_fields = ((uint64_t)be32(p) << 8) | p[7];
        } else {
            items[item_count++] = i;
            continue;
        }
        t = p + ip;
        const uint8_t *key = p + (ip == 20 ? 12 : 8);
        uint32_t seq = be32(t + 4), ack = be32(t + 8);
        uint8_t offset = t[12], flags = t[13];
        uint32_t window = (be16(t + 14) << 16) | be16(t + 18);
        Py_ssize_t header = ip + (offset >> 4) * 4;
        if ((offset & 0x0F) || offset < 0x50 || header >= size || (flags & ~TCP_PSH) != TCP_ACK) {
            items[item_count++] = i;
            continue;
        }
        const uint8_t *options = p + ip + 20;
        Py_ssize_t options_len = header - ip - 20;
        Merge *merge = NULL;
        for (Py_ssize_t j = merge_count - 1; j >= 0; j--)
            if (merges[j].key_len == key_len && memcmp(merges[j].key, key, (size_t)key_len) == 0) {
                merge = &merges[j]; /* the latest merge of this flow */
                break;
            }
        if (merge != NULL && merge->open) {
            Py_ssize_t payload = size - header;
            if (seq == merge->next_seq && payload <= merge->segment && ack == merge->ack &&
                window == merge->window && ip_fields == merge->ip_fields && header == merge->header &&
                options_len == merge->options_len &&
                memcmp(options, merge->options, (size_t)options_len) == 0 &&
                merge->length + payload <= MAX_IP_LENGTH && merge->count + 1 < MAX_SEGMENTS) {
                if (merge->tail >= 0)
                    next[merge->tail] = i;
                else
                    merge->head = i;
                merge->tail = i;
                merge->count++;
                merge->length += payload;
                merge->next_seq = seq + (uint32_t)payload;
                if (payload < merge->segment || (flags & TCP_PSH)) {
                    merge->open = 0;
                    merge->push = (flags & TCP_PSH) != 0;
                }
                continue;
            }
            merge->open = 0;
        }
        Merge *m = &merges[merge_count];
        m->first = object;
        m->key = key;
        m->key_len = key_len;
        m->options = options;
        m->options_len = options_len;
        m->ip = ip;
        m->header = header;
        m->segment = size - header;
        m->length = size;
        m->next_seq = seq + (uint32_t)(size - header);
        m->ack = ack;
        m->window = window;
        m->ip_fields = ip_fields;
        m->open = (flags & TCP_PSH) == 0;
        m->push = 0;
        m->count = 0;
        m->head = m->tail = -1;
        items[item_count++] = -(merge_count + 1);
        merge_count++;
    }
    out = PyList_New(item_count);
    if (out == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < item_count; k++) {
        PyObject *write = items[k] >= 0
            ? plain_write(plain_header, PyList_GET_ITEM(packets, items[k]))
            : merged_write(plain_header, &merges[-items[k] - 1], packets, next);
        if (write == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, k, write);
    }
done:
    PyMem_Free(items);
    PyMem_Free(next);
    PyMem_Free(merges);
    return out;
}

static PyMethodDef methods[] = {
    {"sums", sums, METH_VARARGS, "Ones' complement sums of count chunks of size bytes."},
    {"checksum", checksum, METH_VARARGS, "The ones' complement sum of data[start:], mod 0xFFFF."},
    {"cut", cut, METH_VARARGS, "The segments of a validated TCP GSO read."},
    {"coalesce", coalesce, METH_VARARGS, "The writev buffers of packets, TCP segments merged."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "trio_sudp.vpn._offload", NULL, -1, methods};

PyMODINIT_FUNC PyInit__offload(void) { return PyModule_Create(&module); }
