/* fuzz_json: differential target: what jsoncheck accepts, json-c must parse the same way. */
#include "config.h"

#include "jsoncheck.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_tokener *tok;
	struct json_object *obj;
	const char *why;
	size_t off;
	char *copy;

	if (jsoncheck((const char *)data, size, 16, &off, &why) != JSONCHECK_OK) {
		if (off > size || why == NULL)
			abort();
		return 0;
	}
	/* Accepted: json-c must build it (with a terminator so numbers end). */
	copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	tok = json_tokener_new_ex(18);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, copy, (int)size + 1);
	if (obj == NULL && json_tokener_get_error(tok) != json_tokener_success)
		abort();
	json_object_put(obj);
	json_tokener_free(tok);
	free(copy);
	return 0;
}
