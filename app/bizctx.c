/* bizctx: a company's business context from CONTEXTO_NEGOCIO_ENDPOINT, cached in the session store. */
#include "config.h"

#include "bizctx.h"
#include "conf.h"
#include "handler.h"
#include "httpc.h"
#include "jsoncheck.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "utf8.h"
#include "vtime.h"

#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define BIZCTX_METRIC "valerie_business_context_requests_total"
#define BIZCTX_KEY_ID_MAX 128      /* longer or unusual ids are cached under their SHA-256 */
#define BIZCTX_LOG_ID_MAX 128      /* bytes of a company id in a log line */

/* What a cached entry starts with: the context follows '+'; '-' remembers a failure. */
#define CACHED_OK '+'
#define CACHED_FAILED '-'

#define JSON_PLAIN (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *const json_members[] = {"contexto", "context", "informacion", NULL};

static void
count(const char *result)
{
	char labels[48];

	metrics_labels(labels, sizeof(labels), "result", result, (char *)NULL);
	metrics_counter_add(BIZCTX_METRIC, labels, 1);
}

void
bizctx_metrics_init(const struct conf *conf)
{
	static const char *const results[] = {"hit", "fetched", "error", "error_cached"};
	char labels[48];
	size_t i;

	if (conf->contexto_negocio_endpoint == NULL)
		return;
	for (i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
		metrics_labels(labels, sizeof(labels), "result", results[i], (char *)NULL);
		metrics_counter_add(BIZCTX_METRIC, labels, 0);
	}
}

/* The media type of a Content-Type value, lower case, without parameters. */
static void
media_type(const char *ct, char *out, size_t outlen)
{
	size_t i, n = 0;

	while (*ct == ' ' || *ct == '\t')
		ct++;
	for (i = 0; ct[i] != '\0' && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t' &&
	    n + 1 < outlen; i++)
		out[n++] = (char)(ct[i] >= 'A' && ct[i] <= 'Z' ? ct[i] - 'A' + 'a' : ct[i]);
	out[n] = '\0';
}

static int
is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Whether s[0..len) is the JSON literal null, maybe with spaces around it. */
static int
is_null(const char *s, size_t len)
{
	while (len > 0 && is_space(*s)) {
		s++;
		len--;
	}
	while (len > 0 && is_space(s[len - 1]))
		len--;
	return len == 4 && memcmp(s, "null", 4) == 0;
}

/* Trims, refuses empty text and NUL bytes, cuts on a character boundary, appends. */
static int
put_text(const char *s, size_t len, struct buf *out, const char **why)
{
	while (len > 0 && is_space(*s)) {
		s++;
		len--;
	}
	while (len > 0 && is_space(s[len - 1]))
		len--;
	if (len == 0) {
		*why = "the answer is empty";
		return -1;
	}
	if (memchr(s, '\0', len) != NULL) {
		*why = "the answer holds a NUL character";
		return -1;
	}
	len = utf8_prefix(s, len, BIZCTX_TEXT_MAX);
	/* NOTE: a cut can leave spaces at the end; they are harmless in a prompt. */
	buf_append(out, s, len);
	return 0;
}

/* The text a parsed JSON answer gives: a known string member, a string, or the JSON. */
static int
json_text(struct json_object *doc, struct buf *out, const char **why)
{
	struct json_object *v;
	const char *text;
	size_t i;

	if (json_object_is_type(doc, json_type_object)) {
		for (i = 0; json_members[i] != NULL; i++)
			if (json_object_object_get_ex(doc, json_members[i], &v) &&
			    json_object_is_type(v, json_type_string))
				return put_text(json_object_get_string(v),
				    (size_t)json_object_get_string_len(v), out, why);
		if (json_object_object_length(doc) == 0) {
			*why = "the answer is an empty JSON object";
			return -1;
		}
	} else if (json_object_is_type(doc, json_type_string)) {
		return put_text(json_object_get_string(doc), (size_t)json_object_get_string_len(doc),
		    out, why);
	} else if (json_object_is_type(doc, json_type_array) &&
	    json_object_array_length(doc) == 0) {
		*why = "the answer is an empty JSON array";
		return -1;
	}
	text = json_object_to_json_string_ext(doc, JSON_PLAIN);
	if (text == NULL) {
		out->oom = 1;
		*why = "out of memory";
		return -1;
	}
	return put_text(text, strlen(text), out, why);
}

int
bizctx_answer_text(const char *content_type, const char *body, size_t len, struct buf *out,
    const char **why)
{
	struct json_object *doc;
	char type[64];
	int json, rc;

	if (!utf8_valid(body, len)) {
		*why = "the answer is not valid UTF-8";
		return -1;
	}
	media_type(content_type != NULL ? content_type : "", type, sizeof(type));
	if (strcmp(type, "text/plain") == 0)
		return put_text(body, len, out, why);
	json = strcmp(type, "application/json") == 0 ||
	    (strlen(type) > 5 && strcmp(type + strlen(type) - 5, "+json") == 0);
	doc = jsoncheck_parse(body, len, BIZCTX_JSON_DEPTH);
	if (doc == NULL) {
		/* NOTE: json-c parses "null" to NULL as well. */
		if (is_null(body, len)) {
			*why = "the answer is JSON null";
			return -1;
		}
		if (json) {
			*why = "the answer is not valid JSON";
			return -1;
		}
		/* No type (or an odd one, PHP's text/html) and not JSON: only plain text will do. */
		if (type[0] != '\0') {
			*why = "the answer's Content-Type is neither text/plain nor JSON";
			return -1;
		}
		return put_text(body, len, out, why);
	}
	rc = json_text(doc, out, why);
	json_object_put(doc);
	return rc;
}

/* What the words of a delimiter-like line spell, run together (delimiter_like). */
static const char *const delimiter_words[] = {
	"beginbusinesscontext", "endbusinesscontext",
	"businesscontextbegin", "businesscontextend", NULL
};

static int
is_letter(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/*
 * The next word of line[0..len) from *i (a run of ASCII letters; "the" and
 * "of" are skipped): its start in *w and its length, 0 when none is left.
 * *i moves past it.
 */
static size_t
next_word(const char *line, size_t len, size_t *i, const char **w)
{
	size_t n;

	for (;;) {
		while (*i < len && !is_letter(line[*i]))
			(*i)++;
		for (n = 0; *i + n < len && is_letter(line[*i + n]); n++)
			;
		*w = line + *i;
		*i += n;
		if (n == 0)
			return 0;
		if (!(n == 3 && strncasecmp(*w, "the", 3) == 0) &&
		    !(n == 2 && strncasecmp(*w, "of", 2) == 0))
			return n;
	}
}

/*
 * Whether line[0..len) looks like a delimiter of the section: some run of
 * its consecutive words (runs of ASCII letters, case ignored), leaving out
 * "the" and "of", spells begin or end and "business context" together, in
 * either order. Punctuation, spaces, digits and underscores between them do
 * not count: "=== END business_context ===" and "  # End of the Business
 * Context" are caught, and so is one with more on its line ("--- end
 * business context --- SYSTEM: ..."), which a model reads as the end all
 * the same. A sentence that mentions the business context without begin or
 * end next to it is not.
 */
static int
delimiter_like(const char *line, size_t len)
{
	char text[24];
	const char *w;
	size_t i = 0, j, n, wl, k;

	while ((wl = next_word(line, len, &i, &w)) > 0) {
		/* The words from this one on, run together while they fit a delimiter. */
		for (n = 0, j = i; wl > 0 && n + wl < sizeof(text); wl = next_word(line, len, &j, &w)) {
			for (k = 0; k < wl; k++)
				text[n++] = (char)(w[k] | 0x20); /* ASCII lower case */
			text[n] = '\0';
			for (k = 0; delimiter_words[k] != NULL; k++)
				if (strcmp(text, delimiter_words[k]) == 0)
					return 1;
		}
	}
	return 0;
}

/*
 * The end of the line starting at p (before `end`), its break included: a
 * line ends at LF, CR, VT or FF, or at U+0085, U+2028 or U+2029, as a model
 * may read any of them as a new line.
 */
static const char *
line_end(const char *p, const char *end)
{
	for (; p < end; p++) {
		if (*p == '\n' || *p == '\r' || *p == '\v' || *p == '\f')
			return p + 1;
		if (end - p >= 2 && (unsigned char)p[0] == 0xc2 && (unsigned char)p[1] == 0x85)
			return p + 2;
		if (end - p >= 3 && (unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x80 &&
		    ((unsigned char)p[2] == 0xa8 || (unsigned char)p[2] == 0xa9))
			return p + 3;
	}
	return end;
}

/*
 * NOTE: the text comes from outside (and its endpoint may pass on what anyone
 * typed into the company's systems): a line of it that looks like a delimiter
 * is quoted with "> ", so the text cannot end the section early and go on as
 * the system prompt.
 */
void
bizctx_section(struct buf *sys, const char *company, const char *text, size_t len)
{
	const char *line = text, *end = text + len, *next;

	if (sys->len > 0)
		buf_puts(sys, "\n\n");
	buf_printf(sys, "Business context for company %s (reference information from the "
	    "company's own systems):\n--- begin business context ---\n", company);
	while (line < end) {
		next = line_end(line, end);
		if (delimiter_like(line, (size_t)(next - line)))
			buf_puts(sys, "> ");
		buf_append(sys, line, (size_t)(next - line));
		line = next;
	}
	buf_puts(sys, "\n--- end business context ---");
}

/* The cache key of a company id: the id itself when short and plain, else its SHA-256. */
static void
cache_key(const char *id, size_t len, char *out, size_t outlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;
	size_t plain = strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789_.:-");
	int w;

	if (len <= BIZCTX_KEY_ID_MAX && plain == len) {
		snprintf(out, outlen, "bizctx:id:%s", id);
		return;
	}
	EVP_Digest(id, len, md, &n, EVP_sha256(), NULL);
	w = snprintf(out, outlen, "bizctx:sha256:");
	for (i = 0; i < n && w > 0 && (size_t)w + 2 < outlen; i++)
		w += snprintf(out + w, outlen - (size_t)w, "%02x", md[i]);
}

static int
client_gone(void *p)
{
	struct handler_ctx *ctx = p;

	return http_client_gone(ctx->resp);
}

/*
 * POSTs the request and reads the answer's text into `out`. Returns 0, or -1
 * with `why` filled; *cancelled says the client left (not the endpoint's fault).
 */
static int
fetch(struct handler_ctx *ctx, struct json_object *company, long long deadline_ms,
    struct buf *out, char *why, size_t whylen, int *cancelled)
{
	static const char *const headers[] = {
		"Content-Type: application/json", "Accept: application/json, text/plain", NULL
	};
	struct json_object *req = json_object_new_object();
	struct httpc_request hr;
	struct httpc_response r;
	enum httpc_result hres;
	long long total = ctx->conf->contexto_negocio_timeout * 1000, left;
	const char *body, *reason = NULL;
	char err[160];
	int rc = -1;

	memset(&r, 0, sizeof(r));
	*cancelled = 0;
	if (req == NULL || json_object_object_add(req, "id_empresa", json_object_get(company)) != 0 ||
	    (body = json_object_to_json_string_ext(req, JSON_PLAIN)) == NULL) {
		snprintf(why, whylen, "out of memory");
		out->oom = 1;
		goto out;
	}
	if (deadline_ms > 0) {
		left = deadline_ms - vtime_mono_ms();
		if (left <= 0) {
			snprintf(why, whylen, "no time left in the turn");
			goto out;
		}
		if (left < total)
			total = left;
	}
	memset(&hr, 0, sizeof(hr));
	hr.method = "POST";
	hr.url = ctx->conf->contexto_negocio_endpoint;
	hr.headers = headers;
	hr.body = body;
	hr.body_len = strlen(body);
	hr.total_timeout_ms = (long)total;
	hr.connect_timeout_ms = (long)(total < BIZCTX_CONNECT_TIMEOUT_MS ? total :
	    BIZCTX_CONNECT_TIMEOUT_MS);
	hr.max_bytes = BIZCTX_BODY_MAX;
	hr.cancelled = client_gone;
	hr.ctx = ctx;
	hres = httpc_perform(ctx->http, &hr, &r, err, sizeof(err));
	switch (hres) {
	case HTTPC_OK:
		break;
	case HTTPC_TIMEOUT:
	case HTTPC_FIRST_BYTE_TIMEOUT:
		snprintf(why, whylen, "no answer within %lld ms", total);
		goto out;
	case HTTPC_TOO_LARGE:
		snprintf(why, whylen, "the answer is larger than %d bytes", BIZCTX_BODY_MAX);
		goto out;
	case HTTPC_CANCELLED:
		*cancelled = 1;
		snprintf(why, whylen, "the client went away");
		goto out;
	case HTTPC_NOMEM:
		out->oom = 1;
		snprintf(why, whylen, "out of memory");
		goto out;
	default:
		snprintf(why, whylen, "%s", err);
		goto out;
	}
	if (r.status < 200 || r.status > 299) {
		snprintf(why, whylen, "HTTP status %ld", r.status);
		goto out;
	}
	if (bizctx_answer_text(r.content_type, r.body.data != NULL ? r.body.data : "", r.body.len,
	    out, &reason) != 0) {
		snprintf(why, whylen, "%s", reason);
		goto out;
	}
	rc = 0;
out:
	httpc_response_free(&r);
	json_object_put(req);
	return rc;
}

enum bizctx_result
bizctx_get(struct handler_ctx *ctx, struct json_object *company, long long deadline_ms,
    struct buf *out)
{
	const struct conf *conf = ctx->conf;
	struct json_object *f;
	struct buf cached = {0}, text = {0};
	enum bizctx_result res = BIZCTX_ERROR;
	char key[STORE_CACHE_KEY_MAX + 1], why[200];
	const char *id;
	size_t idlen;
	long long t0, ttl = conf->contexto_negocio_cache_ttl;
	int cancelled = 0;

	if (conf->contexto_negocio_endpoint == NULL || company == NULL ||
	    !(json_object_is_type(company, json_type_string) ||
	    json_object_is_type(company, json_type_int)))
		return BIZCTX_NONE;
	id = json_object_get_string(company);
	idlen = json_object_is_type(company, json_type_string) ?
	    (size_t)json_object_get_string_len(company) : strlen(id);
	if (idlen == 0)
		return BIZCTX_NONE;
	cache_key(id, idlen, key, sizeof(key));

	if (ttl > 0 && store_cache_get(ctx->store, key, &cached) == STORE_OK && cached.len > 0) {
		if (cached.data[0] == CACHED_OK && cached.len > 1) {
			buf_append(out, cached.data + 1, cached.len - 1);
			count("hit");
			res = BIZCTX_HIT;
			goto out;
		}
		if (cached.data[0] == CACHED_FAILED) {
			count("error_cached");
			res = BIZCTX_ERROR_CACHED;
			goto out;
		}
	}
	/* NOTE: a store that fails here fails the turn later; the context is fetched anyway. */

	t0 = vtime_mono_ms();
	buf_append(&text, &(char){CACHED_OK}, 1);
	if (fetch(ctx, company, deadline_ms, &text, why, sizeof(why), &cancelled) == 0 && !text.oom) {
		if (ttl > 0)
			store_cache_put(ctx->store, key, text.data, text.len, ttl);
		buf_append(out, text.data + 1, text.len - 1);
		count("fetched");
		res = BIZCTX_FETCHED;
		goto out;
	}
	if (text.oom) {
		out->oom = 1;
		goto out;
	}
	if (cancelled)
		goto out;
	count("error");
	f = json_object_new_object();
	if (f != NULL) {
		json_object_object_add(f, "request_id", json_object_new_string(ctx->req->request_id));
		json_object_object_add(f, "company", json_object_new_string_len(id,
		    (int)utf8_prefix(id, idlen, BIZCTX_LOG_ID_MAX)));
		json_object_object_add(f, "error", json_object_new_string(why));
		json_object_object_add(f, "duration_ms", json_object_new_int64(vtime_mono_ms() - t0));
	}
	log_emit(LOG_LVL_WARNING, "business context unavailable; the turn goes on without it", f);
	json_object_put(f);
	if (ttl > 0)
		store_cache_put(ctx->store, key, &(char){CACHED_FAILED}, 1,
		    ttl < BIZCTX_NEGATIVE_TTL_S ? ttl : BIZCTX_NEGATIVE_TTL_S);
out:
	buf_free(&cached);
	buf_free(&text);
	return res;
}
