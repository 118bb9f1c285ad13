/*
 * restore._headerscan: the header scan of restore.identity.facts_of, in C.
 *
 * A cold scan fingerprints every message of a store, and splitting the
 * header block, finding the few fields identity reads and unfolding them is
 * most of what that costs in Python. This module does exactly what the
 * Python fast path does (identity.scan_headers_py, and plain_date_py,
 * plain_address_py and bracketed_id_py for the Date:, From: and Message-ID
 * shapes), for the blocks that path accepts; for any other block it
 * returns None and identity.py takes its general path. The Python code is
 * the reference: tests compare the two on generated and hostile messages,
 * and a machine without a C compiler runs the Python code alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_NAME 200    /* a longer field name sends the block to the general path */

/* [!-9;-~]: printable ASCII but space and colon, what a field name may hold. */
static inline int
is_name_char(unsigned char c)
{
    return (c >= '!' && c <= '9') || (c >= ';' && c <= '~');
}

/* Python's bytes.strip(): ASCII whitespace. */
static inline int
is_byte_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

static void
strip_bytes(const char **start, const char **end)
{
    while (*start < *end && is_byte_space((unsigned char)**start))
        (*start)++;
    while (*end > *start && is_byte_space((unsigned char)(*end)[-1]))
        (*end)--;
}

/* Header bytes as text: UTF-8, else Latin-1 (identity._text), then str.strip(). */
static PyObject *
decode_text(const char *start, Py_ssize_t length)
{
    PyObject *text = PyUnicode_DecodeUTF8(start, length, NULL);
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return NULL;
        PyErr_Clear();
        text = PyUnicode_DecodeLatin1(start, length, NULL);
        if (text == NULL)
            return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n == 0)
        return text;
    /* Decoding can reveal whitespace bytes.strip() kept (\x1c-\x1f, NBSP, ...). */
    if (Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(text, 0))
        || Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(text, n - 1))) {
        PyObject *stripped = PyObject_CallMethod(text, "strip", NULL);
        Py_DECREF(text);
        return stripped;
    }
    return text;
}

/* A field's value and continuation lines as identity._unfold joins them:
   each line stripped, joined by single spaces. */
static PyObject *
unfold(const char *start, const char *end)
{
    const char *newline = memchr(start, '\n', (size_t)(end - start));
    if (newline == NULL) {
        strip_bytes(&start, &end);
        return decode_text(start, end - start);
    }
    char *joined = PyMem_Malloc((size_t)(end - start) + 1);
    if (joined == NULL)
        return PyErr_NoMemory();
    char *out = joined;
    const char *part = start;
    for (;;) {
        const char *part_end = memchr(part, '\n', (size_t)(end - part));
        if (part_end == NULL)
            part_end = end;
        const char *s = part, *e = part_end;
        strip_bytes(&s, &e);
        if (out != joined)
            *out++ = ' ';
        memcpy(out, s, (size_t)(e - s));
        out += e - s;
        if (part_end == end)
            break;
        part = part_end + 1;
    }
    const char *s = joined, *e = out;
    strip_bytes(&s, &e);
    PyObject *text = decode_text(s, e - s);
    PyMem_Free(joined);
    return text;
}

/* Where a header line's field name ends, or -1 when the line is not one the
   fast path accepts (identity._ODD_HEADER_LINE): a continuation (0), or a
   name of 1-200 name characters, optionally followed by blanks, and a colon
   within the line's first 201 bytes. *colon is set to the colon's offset. */
static Py_ssize_t
field_name_length(const char *line, const char *end, Py_ssize_t *colon)
{
    Py_ssize_t limit = end - line, n = 0;
    while (n < limit && n <= MAX_NAME && is_name_char((unsigned char)line[n]))
        n++;
    if (n == 0 || n > MAX_NAME || n == limit)
        return -1;
    Py_ssize_t c = n;
    while (c < limit && (line[c] == ' ' || line[c] == '\t'))
        c++;
    if (c >= limit || line[c] != ':' || c > MAX_NAME)
        return -1;
    *colon = c;
    return n;
}

static int
equal_lowered(const char *raw, const char *lower, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return 1;
}

/* Data with CRLF and lone CR turned into LF (identity.normalize_newlines). */
static char *
normalized_newlines(const char *data, Py_ssize_t size, Py_ssize_t *new_size)
{
    char *copy = PyMem_Malloc((size_t)size + 1);
    if (copy == NULL)
        return NULL;
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (data[i] == '\r') {
            copy[j++] = '\n';
            if (i + 1 < size && data[i + 1] == '\n')
                i++;
        }
        else
            copy[j++] = data[i];
    }
    *new_size = j;
    return copy;
}

/* A '>' at a line start that opens ">+From ": mbox quoting, undone for comparison. */
static int
opens_quoted_from(const char *body, const char *p, const char *end)
{
    if (p != body && p[-1] != '\n')
        return 0;
    while (p < end && *p == '>')
        p++;
    return end - p >= 5 && memcmp(p, "From ", 5) == 0;
}

/* The body as identity.normalize_body gives it (newlines are LF already):
   every ">+From " line start made "From ", trailing newlines dropped. */
static PyObject *
compared_body(const char *body, const char *end)
{
    while (end > body && end[-1] == '\n')
        end--;
    const char *quote = NULL;
    for (const char *p = body; (p = memchr(p, '>', (size_t)(end - p))) != NULL; p++) {
        if (opens_quoted_from(body, p, end)) {
            quote = p;
            break;
        }
    }
    if (quote == NULL)
        return PyBytes_FromStringAndSize(body, end - body);
    PyObject *result = PyBytes_FromStringAndSize(NULL, end - body);
    if (result == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(result);
    const char *p = body;
    while (quote != NULL) {
        memcpy(out, p, (size_t)(quote - p));
        out += quote - p;
        p = quote;
        while (*p == '>')
            p++;
        memcpy(out, p, 5);     /* "From " */
        out += 5;
        p += 5;
        quote = NULL;
        for (const char *q = p; (q = memchr(q, '>', (size_t)(end - q))) != NULL; q++) {
            if (opens_quoted_from(body, q, end)) {
                quote = q;
                break;
            }
        }
    }
    memcpy(out, p, (size_t)(end - p));
    out += end - p;
    _PyBytes_Resize(&result, out - PyBytes_AS_STRING(result));
    return result;
}

typedef struct {
    const char *text;   /* UTF-8 of the lower-case name */
    Py_ssize_t length;
    PyObject *name;     /* the str used as dict key */
    int envelope;
} Wanted;

static const char RECEIVED[] = "received";

/* The scan proper on LF-only data; see scan_headers for what it returns. */
static PyObject *
scan(const char *data, Py_ssize_t size, Wanted *wanted, Py_ssize_t n_wanted)
{
    const char *p = data, *end = data + size;
    if (size >= 5 && memcmp(p, "From ", 5) == 0) {     /* a stray mbox From_ line */
        const char *newline = memchr(p, '\n', (size_t)size);
        p = newline ? newline + 1 : end;
    }
    const char *block = p, *block_end, *body;
    if (p < end && *p == '\n') {
        block_end = p;
        body = p + 1;
    }
    else {
        const char *blank = NULL;
        for (const char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) {
            if (q + 1 < end && q[1] == '\n') {
                blank = q;
                break;
            }
        }
        block_end = blank ? blank : end;
        body = blank ? blank + 2 : end;
    }

    PyObject *first = PyDict_New(), *envelope = PyDict_New(), *received = NULL, *result = NULL;
    if (first == NULL || envelope == NULL)
        goto done;
    const char *line = block;
    while (line < block_end) {
        const char *line_end = memchr(line, '\n', (size_t)(block_end - line));
        if (line_end == NULL)
            line_end = block_end;
        if (*line == ' ' || *line == '\t') {      /* a continuation: read with its field */
            line = line_end + 1;
            continue;
        }
        Py_ssize_t colon, n = field_name_length(line, line_end, &colon);
        if (n < 0) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        /* the value runs on over continuation lines */
        const char *value_end = line_end;
        while (value_end < block_end && value_end + 1 < block_end
               && (value_end[1] == ' ' || value_end[1] == '\t')) {
            const char *next = memchr(value_end + 1, '\n', (size_t)(block_end - value_end - 1));
            value_end = next ? next : block_end;
        }
        const char *value = line + colon + 1;
        if (n == (Py_ssize_t)sizeof(RECEIVED) - 1 && equal_lowered(line, RECEIVED, n)) {
            if (received == NULL && (received = unfold(value, value_end)) == NULL)
                goto done;
        }
        else {
            for (Py_ssize_t i = 0; i < n_wanted; i++) {
                Wanted *w = &wanted[i];
                if (w->length != n || !equal_lowered(line, w->text, n))
                    continue;
                if (w->envelope) {
                    PyObject *text = unfold(value, value_end);
                    if (text == NULL)
                        goto done;
                    PyObject *values = PyDict_GetItemWithError(envelope, w->name);
                    int failed = (values == NULL && PyErr_Occurred());
                    if (!failed && values == NULL) {
                        values = PyList_New(0);
                        failed = values == NULL || PyDict_SetItem(envelope, w->name, values) < 0;
                        Py_XDECREF(values);    /* the dict holds it */
                    }
                    failed = failed || PyList_Append(values, text) < 0
                             || PyDict_SetDefault(first, w->name, text) == NULL;
                    Py_DECREF(text);
                    if (failed)
                        goto done;
                }
                else {
                    int known = PyDict_Contains(first, w->name);
                    if (known < 0)
                        goto done;
                    if (!known) {
                        PyObject *text = unfold(value, value_end);
                        if (text == NULL)
                            goto done;
                        int failed = PyDict_SetItem(first, w->name, text) < 0;
                        Py_DECREF(text);
                        if (failed)
                            goto done;
                    }
                }
                break;
            }
        }
        line = value_end + 1;
    }
    PyObject *body_bytes = compared_body(body, end);
    if (body_bytes == NULL)
        goto done;
    result = Py_BuildValue("(OOON)", first, envelope, received ? received : Py_None, body_bytes);
done:
    Py_XDECREF(first);
    Py_XDECREF(envelope);
    Py_XDECREF(received);
    return result;
}

PyDoc_STRVAR(scan_headers_doc,
"scan_headers(data, names, envelope_count) -> (first, envelope, received, body) | None\n\n"
"The fields ``names`` (lower-case str; the first ``envelope_count`` of them\n"
"envelope headers, every value kept) and the topmost Received: header of a\n"
"message, with its body as compared (identity.normalize_body); None when\n"
"the header block has a line the fast path does not accept.");

static PyObject *
scan_headers(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer data;
    PyObject *names;
    Py_ssize_t envelope_count;
    if (!PyArg_ParseTuple(args, "y*O!n:scan_headers", &data, &PyTuple_Type, &names, &envelope_count))
        return NULL;
    PyObject *result = NULL;
    char *normalized = NULL;
    Py_ssize_t n_wanted = PyTuple_GET_SIZE(names);
    Wanted *wanted = PyMem_Calloc((size_t)(n_wanted ? n_wanted : 1), sizeof(Wanted));
    if (wanted == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_wanted; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            goto done;
        }
        wanted[i].name = name;
        wanted[i].text = PyUnicode_AsUTF8AndSize(name, &wanted[i].length);
        if (wanted[i].text == NULL)
            goto done;
        wanted[i].envelope = i < envelope_count;
    }
    const char *bytes = data.buf;
    Py_ssize_t size = data.len;
    if (memchr(bytes, '\r', (size_t)size) != NULL) {
        normalized = normalized_newlines(bytes, size, &size);
        if (normalized == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        bytes = normalized;
    }
    result = scan(bytes, size, wanted, n_wanted);
done:
    PyMem_Free(normalized);
    PyMem_Free(wanted);
    PyBuffer_Release(&data);
    return result;
}

/* -- the plain shapes of Date: and From: (identity._PLAIN_DATE, _PLAIN_FROM) -- */

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t length, at;
} Cursor;

static inline Py_UCS4
peek(const Cursor *c)
{
    return c->at < c->length ? PyUnicode_READ(c->kind, c->data, c->at) : 0;
}

/* A cursor at the start of ``value``; 0, with a TypeError set, if it is not a str. */
static int
start_cursor(PyObject *value, const char *function, Cursor *c)
{
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a str", function);
        return 0;
    }
    *c = (Cursor){PyUnicode_KIND(value), PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value), 0};
    return 1;
}

static inline int
is_blank(Py_UCS4 ch)
{
    return ch == ' ' || ch == '\t';
}

static Py_ssize_t
skip_blanks(Cursor *c)
{
    Py_ssize_t start = c->at;
    while (c->at < c->length && is_blank(peek(c)))
        c->at++;
    return c->at - start;
}

/* Exactly ``count`` ASCII digits (at most ``max`` when count is 0), as a number; -1 if not. */
static long
digits(Cursor *c, int min, int max)
{
    long value = 0;
    int n = 0;
    while (n < max && c->at < c->length) {
        Py_UCS4 ch = peek(c);
        if (ch < '0' || ch > '9')
            break;
        value = value * 10 + (long)(ch - '0');
        c->at++;
        n++;
    }
    return n >= min ? value : -1;
}

static int
word_is(const Cursor *c, const char *word)
{
    for (Py_ssize_t i = 0; word[i]; i++) {
        if (c->at + i >= c->length || PyUnicode_READ(c->kind, c->data, c->at + i) != (Py_UCS4)(unsigned char)word[i])
            return 0;
    }
    return 1;
}

static const char *const MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const WEEKDAYS[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int
month_length(long year, int month)
{
    static const int lengths[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : lengths[month - 1];
}

PyDoc_STRVAR(plain_date_doc,
"plain_date(value) -> int | None\n\n"
"Epoch seconds of a date of the plain RFC 5322 shape (identity._PLAIN_DATE);\n"
"None when the value has another shape or names no real instant, for the\n"
"general parser to decide.");

static PyObject *
plain_date(PyObject *Py_UNUSED(module), PyObject *value)
{
    Cursor c;
    if (!start_cursor(value, "plain_date", &c))
        return NULL;
    skip_blanks(&c);
    for (int i = 0; i < 7; i++) {
        if (word_is(&c, WEEKDAYS[i])) {
            if (c.at + 3 < c.length && PyUnicode_READ(c.kind, c.data, c.at + 3) == ',') {
                c.at += 4;
                skip_blanks(&c);
            }
            break;
        }
    }
    long day = digits(&c, 1, 2);
    if (day < 0 || !skip_blanks(&c))
        Py_RETURN_NONE;
    int month = 0;
    for (int i = 0; i < 12 && !month; i++)
        if (word_is(&c, MONTHS[i]))
            month = i + 1;
    if (!month)
        Py_RETURN_NONE;
    c.at += 3;
    if (!skip_blanks(&c))
        Py_RETURN_NONE;
    Py_UCS4 century = peek(&c);
    long year = (century == '1' || century == '2') ? digits(&c, 4, 4) : -1;
    if (year < 0 || !skip_blanks(&c))
        Py_RETURN_NONE;
    long hour = digits(&c, 2, 2);
    if (hour < 0 || peek(&c) != ':')
        Py_RETURN_NONE;
    c.at++;
    long minute = digits(&c, 2, 2);
    if (minute < 0 || peek(&c) != ':')
        Py_RETURN_NONE;
    c.at++;
    long second = digits(&c, 2, 2);
    if (second < 0 || !skip_blanks(&c))
        Py_RETURN_NONE;
    Py_UCS4 sign = peek(&c);
    if (sign != '+' && sign != '-')
        Py_RETURN_NONE;
    c.at++;
    long zone_h = digits(&c, 2, 2), zone_m = zone_h < 0 ? -1 : digits(&c, 2, 2);
    if (zone_m < 0 || (c.at < c.length && !is_blank(peek(&c))))
        Py_RETURN_NONE;    /* anything may follow the zone after a blank: a comment, garbage */
    long offset = zone_h * 3600 + zone_m * 60;
    if (day < 1 || day > month_length(year, month) || hour >= 24 || minute >= 60 || offset >= 86400)
        Py_RETURN_NONE;    /* what datetime and timezone refuse */
    long long seconds = days_from_civil(year, (unsigned)month, (unsigned)day) * 86400
                        + hour * 3600 + minute * 60 + (second < 59 ? second : 59);
    return PyLong_FromLongLong(sign == '-' ? seconds + offset : seconds - offset);
}

/* atext of RFC 5322 (identity._ATOM) */
static inline int
is_atext(Py_UCS4 ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
           || (ch < 128 && ch && strchr("!#$%&'*+/=?^_`{|}~-", (int)ch) != NULL);
}

static inline int
is_label_char(Py_UCS4 ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
}

/* Whether [start, end) is an addr-spec of identity._ADDR_SPEC: dot-atoms @ dotted labels. */
static int
is_addr_spec(const Cursor *c, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t i = start, run = 0;
    for (; i < end; i++) {
        Py_UCS4 ch = PyUnicode_READ(c->kind, c->data, i);
        if (ch == '@')
            break;
        if (ch == '.') {
            if (!run)
                return 0;
            run = 0;
        }
        else if (is_atext(ch))
            run++;
        else
            return 0;
    }
    if (i == end || !run)
        return 0;
    run = 0;
    for (i++; i < end; i++) {
        Py_UCS4 ch = PyUnicode_READ(c->kind, c->data, i);
        if (ch == '.') {
            if (!run)
                return 0;
            run = 0;
        }
        else if (is_label_char(ch))
            run++;
        else
            return 0;
    }
    return run > 0;
}

static PyObject *
lowered_ascii(const Cursor *c, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *result = PyUnicode_New(end - start, 127);
    if (result == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    for (Py_ssize_t i = start; i < end; i++) {
        Py_UCS4 ch = PyUnicode_READ(c->kind, c->data, i);
        out[i - start] = (Py_UCS1)(ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch);
    }
    return result;
}

/* Beyond ASCII too: email.utils takes any such character as part of an atom. */
static inline int
is_phrase_char(Py_UCS4 ch)
{
    return is_atext(ch) || ch == '.' || ch == ' ' || ch == '\t' || ch >= 128;
}

PyDoc_STRVAR(plain_address_doc,
"plain_address(value) -> str | None\n\n"
"The lower-case address of a From: value of the plain shape\n"
"(identity._PLAIN_FROM): a bare addr-spec, one followed by a (comment), or\n"
"one in angle brackets after an atom phrase or a quoted string; None for any\n"
"other shape.");

static PyObject *
plain_address(PyObject *Py_UNUSED(module), PyObject *value)
{
    Cursor c;
    if (!start_cursor(value, "plain_address", &c))
        return NULL;
    Py_ssize_t end = c.length;
    while (end > 0 && is_blank(PyUnicode_READ(c.kind, c.data, end - 1)))
        end--;
    skip_blanks(&c);
    if (c.at < end && is_addr_spec(&c, c.at, end))
        return lowered_ascii(&c, c.at, end);
    /* addr-spec (comment): RFC 822's way to name the sender. The comment's
       "(" is the last one; it may hold no parenthesis, quote or backslash. */
    if (end - c.at >= 2 && PyUnicode_READ(c.kind, c.data, end - 1) == ')') {
        Py_ssize_t open = end - 2;
        while (open >= c.at && PyUnicode_READ(c.kind, c.data, open) != '(')
            open--;
        int plain_comment = open > c.at;
        for (Py_ssize_t i = open + 1; plain_comment && i < end - 1; i++) {
            Py_UCS4 ch = PyUnicode_READ(c.kind, c.data, i);
            plain_comment = ch != '(' && ch != ')' && ch != '\\' && ch != '"' && ch != '\r' && ch != '\n';
        }
        Py_ssize_t addr_end = open;
        while (addr_end > c.at && is_blank(PyUnicode_READ(c.kind, c.data, addr_end - 1)))
            addr_end--;
        if (plain_comment && addr_end > c.at && is_addr_spec(&c, c.at, addr_end))
            return lowered_ascii(&c, c.at, addr_end);
    }
    /* A phrase (or quoted string), then <addr-spec>, then blanks only. */
    if (peek(&c) == '"') {
        for (c.at++;; c.at++) {
            Py_UCS4 ch = peek(&c);
            if (c.at >= c.length || ch == '\\' || ch == '\r' || ch == '\n')
                Py_RETURN_NONE;
            if (ch == '"')
                break;
        }
        c.at++;
        skip_blanks(&c);
    }
    else {
        while (c.at < c.length && is_phrase_char(peek(&c)))
            c.at++;
    }
    if (peek(&c) != '<' || c.at >= c.length || end < 1 || PyUnicode_READ(c.kind, c.data, end - 1) != '>')
        Py_RETURN_NONE;
    Py_ssize_t start = c.at + 1, stop = end - 1;
    if (stop <= start || !is_addr_spec(&c, start, stop))
        Py_RETURN_NONE;
    return lowered_ascii(&c, start, stop);
}

PyDoc_STRVAR(bracketed_id_doc,
"bracketed_id(value) -> str | None\n\n"
"The first <id> of a Message-ID value, an id without spaces or brackets\n"
"(identity._MID); None when there is none.");

static PyObject *
bracketed_id(PyObject *Py_UNUSED(module), PyObject *value)
{
    Cursor c;
    if (!start_cursor(value, "bracketed_id", &c))
        return NULL;
    for (Py_ssize_t open = 0; open < c.length; open++) {
        if (PyUnicode_READ(c.kind, c.data, open) != '<')
            continue;
        Py_ssize_t close = open + 1;
        for (; close < c.length; close++) {
            Py_UCS4 ch = PyUnicode_READ(c.kind, c.data, close);
            if (ch == '<' || ch == '>' || Py_UNICODE_ISSPACE(ch))
                break;
        }
        if (close > open + 1 && close < c.length && PyUnicode_READ(c.kind, c.data, close) == '>')
            return PyUnicode_Substring(value, open, close + 1);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_headers", scan_headers, METH_VARARGS, scan_headers_doc},
    {"plain_date", plain_date, METH_O, plain_date_doc},
    {"plain_address", plain_address, METH_O, plain_address_doc},
    {"bracketed_id", bracketed_id, METH_O, bracketed_id_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "restore._headerscan",
    "The header scan of restore.identity, in C (see identity.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__headerscan(void)
{
    return PyModule_Create(&module);
}
