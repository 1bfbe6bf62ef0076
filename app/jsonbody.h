/* jsonbody: a request body parsed as one JSON object, with every refusal a clear JSON error. */
#ifndef VALERIE_JSONBODY_H
#define VALERIE_JSONBODY_H

#include "http.h"

struct json_object;

/*
 * Parses the body of `req` as one JSON object: Content-Type application/json
 * (else 415), well-formed JSON in strict mode with valid UTF-8, no trailing
 * bytes, nesting at most `max_depth` (else 400 saying what is wrong).
 * Returns the object (caller frees with json_object_put), or NULL with `resp`
 * filled with the error.
 */
struct json_object *jsonbody_parse(const struct http_request *req, struct http_response *resp,
    int max_depth);

/* Kinds of field jsonbody_field reads. */
enum jsonbody_type {
	JB_STRING,
	JB_BOOL,
	JB_OBJECT,
	JB_STRING_OR_INT   /* ids sent either way (seed 001's id_empresa); integers in
	                      jsoncheck_int's range */
};

/*
 * Reads field `name` of `obj`: *out is NULL when absent or null. A present
 * field of another type fills `resp` with 400 naming the field and returns -1.
 * Strings holding a NUL byte are refused too, and integers json-c does not
 * hold exactly (jsoncheck_int).
 */
int jsonbody_field(struct json_object *obj, const char *name, enum jsonbody_type type,
    struct json_object **out, struct http_response *resp);

#endif
