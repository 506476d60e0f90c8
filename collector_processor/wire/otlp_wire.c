/* jobtrail._otlp_wire: the stitcher's per-span work on OTLP trace requests, on their protobuf bytes.
 *
 * Python pays about 100 ns for every object it makes or reads; a request of 512 spans needs several per span
 * (a message wrapper, three ids, a merge, a serialization), which is most of what the processor costs.
 * Here a request is walked once on its bytes and only per-trace results become Python objects:
 *
 *   scan(raw, link_type_key, link_type_value)
 *                 -> what the deciding stage needs: per scope the parentless spans as (trace id, note), the
 *                    spans with a parent and a note, the set of trace ids, how many spans are valid, how many
 *                    are not and the id lengths of the last of those; and the parsed request, for rewrite.
 *                    With the link type given (the enqueued_by shape), the note is the span's claim, (target
 *                    trace id, link span id), as jobtrail.processor.rules decides it, or None; without (rules
 *                    this walk does not know), the note is the bytes of a span with links, or None.
 *   rewrite(parsed, moves, hold)
 *                 -> (the request with every span of a trace in ``moves`` merged with that trace's delta, and
 *                    parentless ones with the root delta too, the spans of traces in ``hold`` and the spans
 *                    with invalid ids taken out, or None when nothing changed; how many spans moved; the held
 *                    spans as one ScopeSpans fragment per trace and scope). Protobuf defines appending a
 *                    message's bytes to another's as merging them, so a move is a concatenation, and every
 *                    byte of every field the stitcher does not touch is written back as it came.
 *
 *   move_fragment(scope_spans, child_delta, root_delta)
 *                 -> a held ScopeSpans whose trace was decided: every span with the child delta appended, and
 *                    parentless ones with the root delta after it.
 *
 * scan returns None for bytes this walk does not take (truncated fields, groups, field number 0): the caller
 * then uses the Python path, which protobuf's own parser backs. The receivers have validated every request
 * with the full OTLP types before it gets here, so that happens only to callers that pass other bytes.
 *
 * Field semantics follow protobuf (and upb, which the Python path uses): a field with another wire type than
 * its declaration is an unknown field; a singular field that comes twice takes its last value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define TRACE_ID_BYTES 16
#define SPAN_ID_BYTES 8
#define WIRE_VARINT 0
#define WIRE_FIXED64 1
#define WIRE_LEN 2
#define WIRE_FIXED32 5
#define TAG_REQUEST_RESOURCE_SPANS 0x0A /* field 1, LEN */
#define TAG_NESTED_FIELD_2 0x12         /* ResourceSpans.scope_spans and ScopeSpans.spans: field 2, LEN */
#define FIELD_TRACE_ID 1
#define FIELD_SPAN_ID 2
#define FIELD_PARENT_SPAN_ID 4
#define FIELD_LINKS 13

typedef struct {
    const uint8_t *start; /* the whole field, tag included */
    const uint8_t *end;
    const uint8_t *value; /* LEN fields: the payload */
    Py_ssize_t length;
    uint64_t number;
    int wire_type;
} Field;

static inline int read_varint(const uint8_t **cursor, const uint8_t *end, uint64_t *out) {
    if (*cursor < end && **cursor < 0x80) { /* one byte: tags of the first 15 fields, lengths under 128 */
        *out = *(*cursor)++;
        return 0;
    }
    uint64_t value = 0;
    for (int shift = 0; shift < 64 && *cursor < end; shift += 7) {
        uint8_t byte = *(*cursor)++;
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
    }
    return -1;
}

/* The field at *cursor; moves *cursor past it. -1 for what this walk does not take. */
static inline int next_field(const uint8_t **cursor, const uint8_t *end, Field *field) {
    uint64_t tag, skipped;
    field->start = *cursor;
    if (read_varint(cursor, end, &tag) < 0) return -1;
    field->number = tag >> 3;
    field->wire_type = (int)(tag & 7);
    field->value = NULL;
    field->length = 0;
    if (field->number == 0 || field->number > 0x1FFFFFFF) return -1;
    switch (field->wire_type) {
    case WIRE_VARINT:
        if (read_varint(cursor, end, &skipped) < 0) return -1;
        break;
    case WIRE_FIXED64:
        if (end - *cursor < 8) return -1;
        *cursor += 8;
        break;
    case WIRE_FIXED32:
        if (end - *cursor < 4) return -1;
        *cursor += 4;
        break;
    case WIRE_LEN:
        if (read_varint(cursor, end, &skipped) < 0 || skipped > (uint64_t)(end - *cursor)) return -1;
        field->value = *cursor;
        field->length = (Py_ssize_t)skipped;
        *cursor += skipped;
        break;
    default: /* groups (3, 4) and the undefined 6, 7 */
        return -1;
    }
    field->end = *cursor;
    return 0;
}

static inline int is_nested(const Field *field, uint64_t number) {
    return field->number == number && field->wire_type == WIRE_LEN;
}

static Py_ssize_t varint_size(uint64_t value) {
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static uint8_t *write_varint(uint8_t *out, uint64_t value) {
    while (value >= 0x80) {
        *out++ = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    *out++ = (uint8_t)value;
    return out;
}

/* A length-delimited field's header: its one-byte tag and the payload's length. */
static inline uint8_t *write_header(uint8_t *out, uint8_t tag, Py_ssize_t length) {
    *out++ = tag;
    return write_varint(out, (uint64_t)length);
}

static inline uint8_t *copy_bytes(uint8_t *out, const void *from, Py_ssize_t length) {
    memcpy(out, from, (size_t)length);
    return out + length;
}

/* A field as it came, tag included. */
static inline uint8_t *copy_field(uint8_t *out, const Field *field) {
    return copy_bytes(out, field->start, field->end - field->start);
}

/* --- one pass over a request into flat arrays ---------------------------------------------------------- */

typedef struct {
    const uint8_t *bytes; /* the span's own bytes (the LEN payload in its ScopeSpans) */
    Py_ssize_t length;
    const uint8_t *trace_id;
    Py_ssize_t trace_id_length, span_id_length, parent_length;
    int links;
} SpanInfo;

typedef struct {
    const uint8_t *body;
    Py_ssize_t length, first_span, spans;
} ScopeInfo;

typedef struct {
    const uint8_t *body;
    Py_ssize_t length, first_scope, scopes;
} ResourceInfo;

typedef struct {
    const uint8_t *body;
    Py_ssize_t length;
    ResourceInfo *resources;
    ScopeInfo *scopes;
    SpanInfo *spans;
    Py_ssize_t resource_count, scope_count, span_count;
    Py_ssize_t resource_capacity, scope_capacity, span_capacity;
} Parsed;

static void parsed_free(Parsed *parsed) {
    PyMem_Free(parsed->resources);
    PyMem_Free(parsed->scopes);
    PyMem_Free(parsed->spans);
}

/* Room for one more element in an array that doubles; -1 (MemoryError set) when there is none. */
static int grow(void **items, Py_ssize_t count, Py_ssize_t *capacity, size_t item_size) {
    if (count < *capacity) return 0;
    Py_ssize_t wanted = *capacity ? *capacity * 2 : 16;
    void *grown = PyMem_Realloc(*items, (size_t)wanted * item_size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *items = grown;
    *capacity = wanted;
    return 0;
}

static inline int span_is_valid(const SpanInfo *span) {
    return span->trace_id_length == TRACE_ID_BYTES && span->span_id_length == SPAN_ID_BYTES &&
           (span->parent_length == 0 || span->parent_length == SPAN_ID_BYTES);
}

/* Notes a span's field (LEN fields only: ids and links). */
static inline void note_span_field(SpanInfo *span, uint64_t number, const uint8_t *value, Py_ssize_t length) {
    switch (number) {
    case FIELD_TRACE_ID:
        span->trace_id = value;
        span->trace_id_length = length;
        break;
    case FIELD_SPAN_ID:
        span->span_id_length = length;
        break;
    case FIELD_PARENT_SPAN_ID:
        span->parent_length = length;
        break;
    case FIELD_LINKS:
        span->links++;
        break;
    }
}

/* The walk every span takes, so its common case (one-byte tags, as the first 15 fields have) is written out
   here instead of going through next_field. */
static int read_span(const uint8_t *bytes, Py_ssize_t length, SpanInfo *span) {
    const uint8_t *cursor = bytes, *end = bytes + length;
    memset(span, 0, sizeof(*span));
    span->bytes = bytes;
    span->length = length;
    while (cursor < end) {
        uint8_t tag = *cursor;
        if (tag & 0x80 || tag < 8) { /* a longer tag, or field number 0: the general walk */
            Field field;
            if (next_field(&cursor, end, &field) < 0) return -1;
            if (field.wire_type == WIRE_LEN) note_span_field(span, field.number, field.value, field.length);
            continue;
        }
        cursor++;
        switch (tag & 7) {
        case WIRE_VARINT: {
            const uint8_t *limit = end - cursor > 10 ? cursor + 10 : end;
            while (cursor < limit && *cursor & 0x80) cursor++;
            if (cursor == limit) return -1;
            cursor++;
            break;
        }
        case WIRE_FIXED64:
            if (end - cursor < 8) return -1;
            cursor += 8;
            break;
        case WIRE_FIXED32:
            if (end - cursor < 4) return -1;
            cursor += 4;
            break;
        case WIRE_LEN: {
            uint64_t value_length;
            if (read_varint(&cursor, end, &value_length) < 0 || value_length > (uint64_t)(end - cursor)) return -1;
            note_span_field(span, (uint64_t)(tag >> 3), cursor, (Py_ssize_t)value_length);
            cursor += value_length;
            break;
        }
        default:
            return -1;
        }
    }
    return 0;
}

/* Calls ``visit`` on each element of a body's nested field ``number``; like the visitors, 1 when every element
   was taken, 0 for bytes this walk does not take, -1 with an error set. */
typedef int (*ElementVisitor)(Parsed *parsed, const uint8_t *element, Py_ssize_t length);

static int each_element(Parsed *parsed, const uint8_t *body, Py_ssize_t length, uint64_t number,
                        ElementVisitor visit) {
    const uint8_t *cursor = body, *end = body + length;
    Field field;
    while (cursor < end) {
        if (next_field(&cursor, end, &field) < 0) return 0;
        if (!is_nested(&field, number)) continue;
        int outcome = visit(parsed, field.value, field.length);
        if (outcome <= 0) return outcome;
    }
    return 1;
}

static int parse_span(Parsed *parsed, const uint8_t *span, Py_ssize_t length) {
    if (grow((void **)&parsed->spans, parsed->span_count, &parsed->span_capacity, sizeof(SpanInfo)) < 0) return -1;
    if (read_span(span, length, &parsed->spans[parsed->span_count]) < 0) return 0;
    parsed->span_count++;
    parsed->scopes[parsed->scope_count - 1].spans++;
    return 1;
}

static int parse_scope(Parsed *parsed, const uint8_t *scope, Py_ssize_t length) {
    if (grow((void **)&parsed->scopes, parsed->scope_count, &parsed->scope_capacity, sizeof(ScopeInfo)) < 0) return -1;
    parsed->scopes[parsed->scope_count++] = (ScopeInfo){scope, length, parsed->span_count, 0};
    parsed->resources[parsed->resource_count - 1].scopes++;
    return each_element(parsed, scope, length, 2, parse_span); /* ScopeSpans.spans */
}

static int parse_resource(Parsed *parsed, const uint8_t *resource, Py_ssize_t length) {
    if (grow((void **)&parsed->resources, parsed->resource_count, &parsed->resource_capacity, sizeof(ResourceInfo)) <
        0)
        return -1;
    parsed->resources[parsed->resource_count++] = (ResourceInfo){resource, length, parsed->scope_count, 0};
    return each_element(parsed, resource, length, 2, parse_scope); /* ResourceSpans.scope_spans */
}

/* 1: parsed; 0: bytes this walk does not take; -1: an error is set. */
static int parse_request(const uint8_t *body, Py_ssize_t length, Parsed *parsed) {
    memset(parsed, 0, sizeof(*parsed));
    parsed->body = body;
    parsed->length = length;
    return each_element(parsed, body, length, 1, parse_resource); /* ExportTraceServiceRequest.resource_spans */
}

/* A parsed request kept between scan and rewrite, with the bytes object its pointers point into. */
typedef struct {
    Parsed parsed;
    PyObject *raw;
} Kept;

#define KEPT_CAPSULE "jobtrail._otlp_wire.parsed"

static void kept_free(PyObject *capsule) {
    Kept *kept = PyCapsule_GetPointer(capsule, KEPT_CAPSULE);
    parsed_free(&kept->parsed);
    Py_XDECREF(kept->raw);
    PyMem_Free(kept);
}

/* --- the enqueued_by shape, as jobtrail.processor.rules reads it --------------------------------------- */

typedef struct {
    const char *data;
    Py_ssize_t length;
} Slice;

static int slice_equals(const uint8_t *data, Py_ssize_t length, Slice expected) {
    return length == expected.length && memcmp(data, expected.data, (size_t)length) == 0;
}

/* The string value of an attribute's AnyValue: every occurrence of KeyValue.value merges, so the oneof member
   set last counts; NULL unless that member is string_value. */
static const uint8_t *any_value_string(const uint8_t *key_value, Py_ssize_t length, Py_ssize_t *out_length) {
    const uint8_t *cursor = key_value, *end = key_value + length, *string = NULL;
    Field field;
    *out_length = 0;
    while (cursor < end && next_field(&cursor, end, &field) == 0) {
        if (!is_nested(&field, 2)) continue;
        const uint8_t *value_cursor = field.value, *value_end = field.value + field.length;
        Field member;
        while (value_cursor < value_end && next_field(&value_cursor, value_end, &member) == 0) {
            /* AnyValue's oneof: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7; with another wire
               type a field is unknown and sets nothing */
            static const int member_wire_types[8] = {-1, WIRE_LEN, WIRE_VARINT, WIRE_VARINT, WIRE_FIXED64,
                                                     WIRE_LEN, WIRE_LEN, WIRE_LEN};
            if (member.number > 7 || member.wire_type != member_wire_types[member.number]) continue;
            int is_string = member.number == 1;
            string = is_string ? member.value : NULL;
            *out_length = is_string ? member.length : 0;
        }
    }
    return string;
}

/* Whether the first attribute of a Link whose key is ``key`` has the string value ``value``. */
static int link_has_type(const uint8_t *link, Py_ssize_t length, Slice key, Slice value) {
    const uint8_t *cursor = link, *end = link + length;
    Field field;
    while (cursor < end && next_field(&cursor, end, &field) == 0) {
        if (!is_nested(&field, 4)) continue; /* Link.attributes */
        const uint8_t *attribute_key = NULL, *attribute_cursor = field.value;
        const uint8_t *attribute_end = field.value + field.length;
        Py_ssize_t attribute_key_length = 0, string_length;
        Field attribute_field;
        while (attribute_cursor < attribute_end &&
               next_field(&attribute_cursor, attribute_end, &attribute_field) == 0) {
            if (is_nested(&attribute_field, 1)) {
                attribute_key = attribute_field.value;
                attribute_key_length = attribute_field.length;
            }
        }
        if (!slice_equals(attribute_key ? attribute_key : (const uint8_t *)"", attribute_key_length, key)) continue;
        const uint8_t *string = any_value_string(field.value, field.length, &string_length);
        return string != NULL && slice_equals(string, string_length, value);
    }
    return 0;
}

static int all_zero(const uint8_t *data, Py_ssize_t length) {
    for (Py_ssize_t i = 0; i < length; i++)
        if (data[i]) return 0;
    return 1;
}

/* The deciding link of a span: the first link whose type is ``value``, if it points at a real span in another
   trace (if not, no link of the span decides). 1 with its ids in *trace_id and *span_id, or 0. */
static int deciding_link(const SpanInfo *span, Slice key, Slice value, const uint8_t **trace_id,
                         const uint8_t **span_id) {
    const uint8_t *cursor = span->bytes, *end = span->bytes + span->length;
    Field field;
    while (cursor < end && next_field(&cursor, end, &field) == 0) {
        if (!is_nested(&field, FIELD_LINKS) || !link_has_type(field.value, field.length, key, value)) continue;
        const uint8_t *link_trace_id = NULL, *link_span_id = NULL, *link_cursor = field.value;
        const uint8_t *link_end = field.value + field.length;
        Py_ssize_t trace_id_length = 0, span_id_length = 0;
        Field link_field;
        while (link_cursor < link_end && next_field(&link_cursor, link_end, &link_field) == 0) {
            if (is_nested(&link_field, 1)) {
                link_trace_id = link_field.value;
                trace_id_length = link_field.length;
            } else if (is_nested(&link_field, 2)) {
                link_span_id = link_field.value;
                span_id_length = link_field.length;
            }
        }
        if (trace_id_length != TRACE_ID_BYTES || span_id_length != SPAN_ID_BYTES ||
            all_zero(link_trace_id, TRACE_ID_BYTES) || all_zero(link_span_id, SPAN_ID_BYTES) ||
            memcmp(link_trace_id, span->trace_id, TRACE_ID_BYTES) == 0)
            return 0;
        *trace_id = link_trace_id;
        *span_id = link_span_id;
        return 1;
    }
    return 0;
}

/* A span's claim, (target trace id, link span id), or None when no link of it decides; NULL on error. */
static PyObject *claim_of(const SpanInfo *span, Slice key, Slice value) {
    const uint8_t *trace_id, *span_id;
    if (!span->links || !deciding_link(span, key, value, &trace_id, &span_id)) Py_RETURN_NONE;
    return Py_BuildValue("(y#y#)", (const char *)trace_id, (Py_ssize_t)TRACE_ID_BYTES, (const char *)span_id,
                         (Py_ssize_t)SPAN_ID_BYTES);
}

/* --- scan ---------------------------------------------------------------------------------------------- */

static PyObject *span_bytes(const SpanInfo *span) {
    return PyBytes_FromStringAndSize((const char *)span->bytes, span->length);
}

/* The trace id of ``span`` as bytes; the previous span's object when it is the same trace (spans of a trace
   usually come together), so a request makes about one object per trace. New reference. */
static PyObject *trace_id_of(const SpanInfo *span, PyObject **previous) {
    if (*previous != NULL && memcmp(PyBytes_AS_STRING(*previous), span->trace_id, TRACE_ID_BYTES) == 0) {
        Py_INCREF(*previous);
        return *previous;
    }
    PyObject *made = PyBytes_FromStringAndSize((const char *)span->trace_id, TRACE_ID_BYTES);
    if (made == NULL) return NULL;
    Py_XSETREF(*previous, made);
    Py_INCREF(made);
    return made;
}

static int append_pair(PyObject *list, PyObject *trace_id, PyObject *second) {
    PyObject *pair = PyTuple_Pack(2, trace_id, second);
    if (pair == NULL) return -1;
    int failed = PyList_Append(list, pair);
    Py_DECREF(pair);
    return failed;
}

static PyObject *scan(PyObject *module, PyObject *args) {
    PyObject *raw;
    Slice key = {NULL, 0}, value = {NULL, 0};
    if (!PyArg_ParseTuple(args, "Sz#z#:scan", &raw, &key.data, &key.length, &value.data, &value.length)) return NULL;
    int decides = key.data != NULL && value.data != NULL;
    Kept *kept = PyMem_Calloc(1, sizeof(Kept));
    if (kept == NULL) return PyErr_NoMemory();
    int outcome = parse_request((const uint8_t *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), &kept->parsed);
    if (outcome <= 0) {
        parsed_free(&kept->parsed);
        PyMem_Free(kept);
        if (outcome < 0) return NULL;
        Py_RETURN_NONE;
    }
    kept->raw = Py_NewRef(raw);
    PyObject *capsule = PyCapsule_New(kept, KEPT_CAPSULE, kept_free);
    if (capsule == NULL) {
        parsed_free(&kept->parsed);
        Py_DECREF(raw);
        PyMem_Free(kept);
        return NULL;
    }
    Parsed parsed = kept->parsed;
    PyObject *roots_per_scope = PyList_New(0), *linked_children = PyList_New(0), *trace_ids = PySet_New(NULL);
    PyObject *previous = NULL, *result = NULL, *last_invalid = Py_None;
    Py_ssize_t valid = 0, rejected = 0;
    Py_INCREF(last_invalid);
    if (roots_per_scope == NULL || linked_children == NULL || trace_ids == NULL) goto done;
    for (Py_ssize_t s = 0; s < parsed.scope_count; s++) {
        const ScopeInfo *scope = &parsed.scopes[s];
        PyObject *roots = PyList_New(0);
        if (roots == NULL || PyList_Append(roots_per_scope, roots) < 0) {
            Py_XDECREF(roots);
            goto done;
        }
        Py_DECREF(roots); /* roots_per_scope holds it */
        for (Py_ssize_t i = scope->first_span; i < scope->first_span + scope->spans; i++) {
            const SpanInfo *span = &parsed.spans[i];
            if (!span_is_valid(span)) {
                rejected++;
                Py_SETREF(last_invalid, Py_BuildValue("(nnn)", span->trace_id_length, span->span_id_length,
                                                      span->parent_length));
                if (last_invalid == NULL) goto done;
                continue;
            }
            valid++;
            int is_new = previous == NULL || memcmp(PyBytes_AS_STRING(previous), span->trace_id, TRACE_ID_BYTES);
            PyObject *trace_id = trace_id_of(span, &previous);
            if (trace_id == NULL) goto done;
            int failed = is_new ? PySet_Add(trace_ids, trace_id) : 0;
            if (!failed && (span->parent_length == 0 || span->links)) {
                /* the claim when this walk decides, else the span's bytes for the rule in Python (or None) */
                PyObject *noted = decides ? claim_of(span, key, value)
                                          : span->links ? span_bytes(span) : Py_NewRef(Py_None);
                if (noted == NULL)
                    failed = 1;
                else if (span->parent_length == 0)
                    failed = append_pair(roots, trace_id, noted) < 0;
                else if (noted != Py_None)
                    failed = append_pair(linked_children, trace_id, noted) < 0;
                Py_XDECREF(noted);
            }
            Py_DECREF(trace_id);
            if (failed) goto done;
        }
    }
    result = Py_BuildValue("(OOOnnOO)", roots_per_scope, linked_children, trace_ids, valid, rejected, last_invalid,
                           capsule);
done:
    Py_XDECREF(previous);
    Py_XDECREF(roots_per_scope);
    Py_XDECREF(linked_children);
    Py_XDECREF(trace_ids);
    Py_XDECREF(last_invalid);
    Py_DECREF(capsule);
    return result;
}

/* --- rewrite ------------------------------------------------------------------------------------------- */

enum { FATE_PASS = 0, FATE_MOVE, FATE_HOLD, FATE_DROP };

typedef struct {
    const uint8_t *trace_id; /* NULL: free slot */
    PyObject *key;           /* the caller's bytes object (borrowed: the caller's dict or set holds it) */
    int fate;
    const char *child_delta, *root_delta;
    Py_ssize_t child_delta_length, root_delta_length;
    /* per scope while collecting held spans */
    Py_ssize_t stamp, spans, size;
    PyObject *fragment;
    uint8_t *cursor;
} Slot;

typedef struct {
    Slot *slots;
    size_t mask;
} Table;

static size_t slot_index(const Table *table, const uint8_t *trace_id) {
    uint64_t head;
    memcpy(&head, trace_id, sizeof(head)); /* trace ids are random: their first bytes hash well enough */
    size_t index = (size_t)((head * 0x9E3779B97F4A7C15ULL) >> 32) & table->mask;
    while (table->slots[index].trace_id != NULL && memcmp(table->slots[index].trace_id, trace_id, TRACE_ID_BYTES))
        index = (index + 1) & table->mask;
    return index;
}

static Slot *table_find(const Table *table, const uint8_t *trace_id) {
    Slot *slot = &table->slots[slot_index(table, trace_id)];
    return slot->trace_id != NULL ? slot : NULL;
}

/* Adds ``key`` (16 bytes, else TypeError/ValueError) with ``fate``; the slot, or NULL with an error set. */
static Slot *table_add(Table *table, PyObject *key, int fate) {
    if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != TRACE_ID_BYTES) {
        PyErr_SetString(PyExc_ValueError, "trace ids must be bytes of length 16");
        return NULL;
    }
    const uint8_t *trace_id = (const uint8_t *)PyBytes_AS_STRING(key);
    Slot *slot = &table->slots[slot_index(table, trace_id)];
    slot->trace_id = trace_id;
    slot->key = key;
    slot->fate = fate;
    slot->stamp = -1;
    return slot;
}

static int table_fill(Table *table, PyObject *moves, PyObject *hold) {
    Py_ssize_t entries = PyDict_GET_SIZE(moves) + PySet_GET_SIZE(hold);
    size_t capacity = 16;
    while (capacity < (size_t)entries * 2) capacity <<= 1;
    table->slots = PyMem_Calloc(capacity, sizeof(Slot));
    table->mask = capacity - 1;
    if (table->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(moves, &position, &key, &value)) {
        Slot *slot = table_add(table, key, FATE_MOVE);
        if (slot == NULL) return -1;
        PyObject *child, *root;
        if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2 ||
            !PyBytes_Check(child = PyTuple_GET_ITEM(value, 0)) ||
            !PyBytes_Check(root = PyTuple_GET_ITEM(value, 1))) {
            PyErr_SetString(PyExc_TypeError, "moves: trace id -> (child delta, root delta), both bytes");
            return -1;
        }
        slot->child_delta = PyBytes_AS_STRING(child);
        slot->child_delta_length = PyBytes_GET_SIZE(child);
        slot->root_delta = PyBytes_AS_STRING(root);
        slot->root_delta_length = PyBytes_GET_SIZE(root);
    }
    PyObject *iterator = PyObject_GetIter(hold);
    if (iterator == NULL) return -1;
    while ((key = PyIter_Next(iterator)) != NULL) {
        Slot *slot = NULL;
        if (PyBytes_Check(key) && PyBytes_GET_SIZE(key) == TRACE_ID_BYTES &&
            table_find(table, (const uint8_t *)PyBytes_AS_STRING(key)) != NULL)
            PyErr_SetString(PyExc_ValueError, "a trace id is both moved and held");
        else
            slot = table_add(table, key, FATE_HOLD);
        Py_DECREF(key); /* the set holds it */
        if (slot == NULL) {
            Py_DECREF(iterator);
            return -1;
        }
    }
    Py_DECREF(iterator);
    return PyErr_Occurred() ? -1 : 0;
}

typedef struct {
    int fate;
    Slot *slot;
    Py_ssize_t out_length; /* the span's bytes in the output, deltas included */
} SpanFate;

typedef struct {
    Parsed parsed;
    SpanFate *fates;
    Py_ssize_t *scope_lengths, *scope_kept, *scope_other_lengths, *resource_lengths, *resource_kept,
        *resource_other_lengths;
    int drop_empty;
} Plan;

static Py_ssize_t nested_size(Py_ssize_t length) {
    return 1 + varint_size((uint64_t)length) + length;
}

/* The sizes of everything rewritten (children before parents, each body walked once); the request's size. */
static Py_ssize_t plan_sizes(Plan *plan) {
    Parsed *parsed = &plan->parsed;
    for (Py_ssize_t s = 0; s < parsed->scope_count; s++) {
        const ScopeInfo *scope = &parsed->scopes[s];
        Py_ssize_t length = 0, kept = 0;
        for (Py_ssize_t i = scope->first_span; i < scope->first_span + scope->spans; i++) {
            if (plan->fates[i].fate == FATE_PASS || plan->fates[i].fate == FATE_MOVE) {
                length += nested_size(plan->fates[i].out_length);
                kept++;
            }
        }
        Py_ssize_t other = 0;
        const uint8_t *cursor = scope->body, *end = scope->body + scope->length;
        Field field;
        while (cursor < end) {
            next_field(&cursor, end, &field); /* parsed before: cannot fail */
            if (!is_nested(&field, 2)) other += field.end - field.start;
        }
        plan->scope_other_lengths[s] = other;
        plan->scope_lengths[s] = other + length;
        plan->scope_kept[s] = kept || !plan->drop_empty;
    }
    for (Py_ssize_t r = 0; r < parsed->resource_count; r++) {
        const ResourceInfo *resource = &parsed->resources[r];
        Py_ssize_t length = 0, kept = 0;
        for (Py_ssize_t s = resource->first_scope; s < resource->first_scope + resource->scopes; s++) {
            if (plan->scope_kept[s]) {
                length += nested_size(plan->scope_lengths[s]);
                kept++;
            }
        }
        Py_ssize_t other = 0;
        const uint8_t *cursor = resource->body, *end = resource->body + resource->length;
        Field field;
        while (cursor < end) {
            next_field(&cursor, end, &field);
            if (!is_nested(&field, 2)) other += field.end - field.start;
        }
        plan->resource_other_lengths[r] = other;
        plan->resource_lengths[r] = other + length;
        plan->resource_kept[r] = kept || !plan->drop_empty;
    }
    Py_ssize_t total = 0;
    const uint8_t *cursor = parsed->body, *end = parsed->body + parsed->length;
    Field field;
    Py_ssize_t r = 0;
    while (cursor < end) {
        next_field(&cursor, end, &field);
        if (!is_nested(&field, 1))
            total += field.end - field.start;
        else if (plan->resource_kept[r++])
            total += nested_size(plan->resource_lengths[r - 1]);
    }
    return total;
}

/* Copies every field of a body but its nested field ``number`` (the "other" fields, in their order). */
static uint8_t *write_others(uint8_t *out, const uint8_t *body, Py_ssize_t length, uint64_t number) {
    const uint8_t *cursor = body, *end = body + length;
    Field field;
    while (cursor < end) {
        next_field(&cursor, end, &field);
        if (!is_nested(&field, number)) {
            out = copy_field(out, &field);
        }
    }
    return out;
}

/* Writes element ``index`` of a message's nested field (a span, a scope, a resource), or nothing when it does
   not go out. */
typedef uint8_t *(*ElementWriter)(uint8_t *out, const Plan *plan, Py_ssize_t index);

/* A message body with every field as it came but its nested field ``number``, whose elements (numbered from
   ``first``) ``write_element`` writes. */
static uint8_t *write_body(uint8_t *out, const Plan *plan, const uint8_t *body, Py_ssize_t length, uint64_t number,
                           Py_ssize_t first, ElementWriter write_element) {
    const uint8_t *cursor = body, *end = body + length;
    Field field;
    while (cursor < end) {
        next_field(&cursor, end, &field); /* parsed before: cannot fail */
        out = is_nested(&field, number) ? write_element(out, plan, first++) : copy_field(out, &field);
    }
    return out;
}

static uint8_t *write_span(uint8_t *out, const Plan *plan, Py_ssize_t i) {
    const SpanFate *fate = &plan->fates[i];
    const SpanInfo *span = &plan->parsed.spans[i];
    if (fate->fate != FATE_PASS && fate->fate != FATE_MOVE) return out;
    out = copy_bytes(write_header(out, TAG_NESTED_FIELD_2, fate->out_length), span->bytes, span->length);
    if (fate->fate == FATE_MOVE) {
        out = copy_bytes(out, fate->slot->child_delta, fate->slot->child_delta_length);
        if (span->parent_length == 0) out = copy_bytes(out, fate->slot->root_delta, fate->slot->root_delta_length);
    }
    return out;
}

static uint8_t *write_scope(uint8_t *out, const Plan *plan, Py_ssize_t s) {
    const ScopeInfo *scope = &plan->parsed.scopes[s];
    if (!plan->scope_kept[s]) return out;
    out = write_header(out, TAG_NESTED_FIELD_2, plan->scope_lengths[s]);
    return write_body(out, plan, scope->body, scope->length, 2, scope->first_span, write_span);
}

static uint8_t *write_resource(uint8_t *out, const Plan *plan, Py_ssize_t r) {
    const ResourceInfo *resource = &plan->parsed.resources[r];
    if (!plan->resource_kept[r]) return out;
    out = write_header(out, TAG_REQUEST_RESOURCE_SPANS, plan->resource_lengths[r]);
    return write_body(out, plan, resource->body, resource->length, 2, resource->first_scope, write_scope);
}

static PyObject *write_request(const Plan *plan, Py_ssize_t size) {
    PyObject *written = PyBytes_FromStringAndSize(NULL, size);
    if (written == NULL) return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(written);
    out = write_body(out, plan, plan->parsed.body, plan->parsed.length, 1, 0, write_resource);
    assert(out == (uint8_t *)PyBytes_AS_STRING(written) + size);
    return written;
}

/* The held spans of one scope as (trace id, resource, fragment, span count) per trace, in order of arrival. */
static int collect_held(const Plan *plan, Py_ssize_t r, Py_ssize_t s, PyObject **resource_bytes, PyObject *held) {
    const ScopeInfo *scope = &plan->parsed.scopes[s];
    const ResourceInfo *resource = &plan->parsed.resources[r];
    Py_ssize_t shell = plan->scope_other_lengths[s], traces = 0;
    Slot **order = PyMem_Malloc(sizeof(Slot *) * (size_t)(scope->spans ? scope->spans : 1));
    int failed = -1;
    if (order == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = scope->first_span; i < scope->first_span + scope->spans; i++) {
        const SpanFate *fate = &plan->fates[i];
        if (fate->fate != FATE_HOLD) continue;
        Slot *slot = fate->slot;
        if (slot->stamp != s) {
            slot->stamp = s;
            slot->spans = 0;
            slot->size = shell;
            slot->fragment = NULL;
            order[traces++] = slot;
        }
        slot->spans++;
        slot->size += nested_size(plan->parsed.spans[i].length);
    }
    if (!traces) {
        PyMem_Free(order);
        return 0;
    }
    if (*resource_bytes == NULL) {
        *resource_bytes = PyBytes_FromStringAndSize(NULL, plan->resource_other_lengths[r]);
        if (*resource_bytes == NULL) goto done;
        write_others((uint8_t *)PyBytes_AS_STRING(*resource_bytes), resource->body, resource->length, 2);
    }
    for (Py_ssize_t t = 0; t < traces; t++) {
        order[t]->fragment = PyBytes_FromStringAndSize(NULL, order[t]->size);
        if (order[t]->fragment == NULL) goto done;
        uint8_t *fragment = (uint8_t *)PyBytes_AS_STRING(order[t]->fragment);
        order[t]->cursor = write_others(fragment, scope->body, scope->length, 2);
    }
    for (Py_ssize_t i = scope->first_span; i < scope->first_span + scope->spans; i++) {
        const SpanFate *fate = &plan->fates[i];
        if (fate->fate != FATE_HOLD) continue;
        const SpanInfo *span = &plan->parsed.spans[i];
        Slot *slot = fate->slot;
        slot->cursor = write_header(slot->cursor, TAG_NESTED_FIELD_2, span->length);
        slot->cursor = copy_bytes(slot->cursor, span->bytes, span->length);
    }
    failed = 0;
    for (Py_ssize_t t = 0; t < traces && !failed; t++) {
        PyObject *entry = Py_BuildValue("(OOOn)", order[t]->key, *resource_bytes, order[t]->fragment, order[t]->spans);
        failed = entry == NULL || PyList_Append(held, entry) < 0;
        Py_XDECREF(entry);
    }
done:
    for (Py_ssize_t t = 0; t < traces; t++) Py_CLEAR(order[t]->fragment);
    PyMem_Free(order);
    return failed ? -1 : 0;
}

static void plan_free(Plan *plan) {
    PyMem_Free(plan->fates);
    PyMem_Free(plan->scope_lengths);
    PyMem_Free(plan->resource_lengths);
}

static PyObject *rewrite(PyObject *module, PyObject *args) {
    PyObject *capsule, *moves, *hold, *payload = NULL, *held = NULL, *result = NULL;
    Plan plan;
    Table table = {NULL, 0};
    Py_ssize_t moved = 0, taken_out = 0;
    if (!PyArg_ParseTuple(args, "OO!O:rewrite", &capsule, &PyDict_Type, &moves, &hold)) return NULL;
    Kept *kept = PyCapsule_GetPointer(capsule, KEPT_CAPSULE); /* TypeError/ValueError for anything else */
    if (kept == NULL) return NULL;
    if (!PyAnySet_Check(hold)) {
        PyErr_SetString(PyExc_TypeError, "hold must be a set of trace ids");
        return NULL;
    }
    memset(&plan, 0, sizeof(plan));
    plan.parsed = kept->parsed; /* borrowed: the capsule owns the arrays */
    if (table_fill(&table, moves, hold) < 0) goto done;
    Parsed *parsed = &plan.parsed;
    plan.fates = PyMem_Malloc(sizeof(SpanFate) * (size_t)(parsed->span_count ? parsed->span_count : 1));
    /* one block for the six per-scope and per-resource arrays */
    plan.scope_lengths = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(3 * parsed->scope_count + 1));
    plan.resource_lengths = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(3 * parsed->resource_count + 1));
    if (plan.fates == NULL || plan.scope_lengths == NULL || plan.resource_lengths == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    plan.scope_kept = plan.scope_lengths + parsed->scope_count;
    plan.scope_other_lengths = plan.scope_kept + parsed->scope_count;
    plan.resource_kept = plan.resource_lengths + parsed->resource_count;
    plan.resource_other_lengths = plan.resource_kept + parsed->resource_count;
    for (Py_ssize_t i = 0; i < parsed->span_count; i++) {
        const SpanInfo *span = &parsed->spans[i];
        SpanFate *fate = &plan.fates[i];
        fate->slot = NULL;
        fate->out_length = span->length;
        if (!span_is_valid(span)) {
            fate->fate = FATE_DROP;
            taken_out++;
            continue;
        }
        fate->slot = table_find(&table, span->trace_id);
        fate->fate = fate->slot ? fate->slot->fate : FATE_PASS;
        if (fate->fate == FATE_MOVE) {
            moved++;
            fate->out_length += fate->slot->child_delta_length;
            if (span->parent_length == 0) fate->out_length += fate->slot->root_delta_length;
        } else if (fate->fate == FATE_HOLD) {
            taken_out++;
        }
    }
    held = PyList_New(0);
    if (held == NULL) goto done;
    if (!moved && !taken_out) {
        result = Py_BuildValue("(OnO)", Py_None, moved, held);
        goto done;
    }
    /* As the Python path: once spans were taken out, scopes and resources left without any go too. */
    plan.drop_empty = taken_out > 0;
    payload = write_request(&plan, plan_sizes(&plan));
    if (payload == NULL) goto done;
    for (Py_ssize_t r = 0; r < parsed->resource_count; r++) {
        const ResourceInfo *resource = &parsed->resources[r];
        PyObject *resource_bytes = NULL;
        int failed = 0;
        for (Py_ssize_t s = resource->first_scope; s < resource->first_scope + resource->scopes && !failed; s++)
            failed = collect_held(&plan, r, s, &resource_bytes, held) < 0;
        Py_XDECREF(resource_bytes);
        if (failed) goto done;
    }
    result = Py_BuildValue("(OnO)", payload, moved, held);
done:
    Py_XDECREF(payload);
    Py_XDECREF(held);
    PyMem_Free(table.slots);
    plan_free(&plan);
    return result;
}

/* --- a held fragment that moves -------------------------------------------------------------------------- */

static PyObject *move_fragment(PyObject *module, PyObject *args) {
    const char *fragment, *child_delta, *root_delta;
    Py_ssize_t fragment_length, child_length, root_length;
    if (!PyArg_ParseTuple(args, "y#y#y#:move_fragment", &fragment, &fragment_length, &child_delta, &child_length,
                          &root_delta, &root_length))
        return NULL;
    const uint8_t *start = (const uint8_t *)fragment, *end = start + fragment_length, *cursor = start;
    Py_ssize_t size = 0;
    Field field;
    SpanInfo span;
    while (cursor < end) { /* sizes first */
        if (next_field(&cursor, end, &field) < 0) goto refused;
        if (!is_nested(&field, 2)) {
            size += field.end - field.start;
            continue;
        }
        if (read_span(field.value, field.length, &span) < 0) goto refused;
        size += nested_size(field.length + child_length + (span.parent_length == 0 ? root_length : 0));
    }
    PyObject *moved = PyBytes_FromStringAndSize(NULL, size);
    if (moved == NULL) return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(moved);
    for (cursor = start; cursor < end;) {
        next_field(&cursor, end, &field); /* walked above: cannot fail */
        if (!is_nested(&field, 2)) {
            out = copy_field(out, &field);
            continue;
        }
        read_span(field.value, field.length, &span);
        Py_ssize_t extra = span.parent_length == 0 ? root_length : 0;
        out = write_header(out, TAG_NESTED_FIELD_2, field.length + child_length + extra);
        out = copy_bytes(copy_bytes(copy_bytes(out, field.value, field.length), child_delta, child_length), root_delta,
                         extra);
    }
    return moved;
refused:
    PyErr_SetString(PyExc_ValueError, "not a serialized ScopeSpans");
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(raw, link_type_key, link_type_value) -> (roots per scope, linked children, trace ids, valid, rejected, "
     "last invalid lengths) or None"},
    {"rewrite", rewrite, METH_VARARGS, "rewrite(parsed, moves, hold) -> (payload or None, moved, held)"},
    {"move_fragment", move_fragment, METH_VARARGS,
     "move_fragment(scope_spans, child_delta, root_delta) -> the ScopeSpans with every span moved"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "jobtrail._otlp_wire",
    .m_doc = "The stitcher's per-span work on OTLP protobuf bytes (see docs/processor.md, Performance).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__otlp_wire(void) {
    return PyModule_Create(&module);
}
