/* bizctx: a company's business context from CONTEXTO_NEGOCIO_ENDPOINT, cached in the session store. */
#ifndef VALERIE_BIZCTX_H
#define VALERIE_BIZCTX_H

#include <stddef.h>

#include "buf.h"

struct conf;
struct handler_ctx;
struct json_object;

#define BIZCTX_BODY_MAX (64 * 1024)      /* bytes of an answer read; more is a failure */
#define BIZCTX_TEXT_MAX (8 * 1024)       /* bytes of context put into a prompt */
#define BIZCTX_NEGATIVE_TTL_S 30         /* a failure is remembered (not retried) this long */
#define BIZCTX_CONNECT_TIMEOUT_MS 5000   /* at most, within CONTEXTO_NEGOCIO_TIMEOUT */
#define BIZCTX_JSON_DEPTH 32             /* nesting of a JSON answer */

enum bizctx_result {
	BIZCTX_NONE = 0,     /* nothing to fetch: no endpoint, or no company */
	BIZCTX_HIT,          /* from the cache */
	BIZCTX_FETCHED,      /* fetched now (and cached) */
	BIZCTX_ERROR,        /* the fetch failed now (logged, counted, remembered) */
	BIZCTX_ERROR_CACHED  /* a recent failure is remembered: not fetched again yet */
};

/*
 * The business context of `company` (the persona's id_empresa: a JSON string
 * or integer, borrowed, sent to the endpoint as it is; NULL for none). With
 * HIT or FETCHED the text (UTF-8, 1..BIZCTX_TEXT_MAX bytes, no NUL) is
 * appended to `out`, the caller's buffer. Looks in the store's cache first
 * (CONTEXTO_NEGOCIO_CACHE_TTL); else POSTs {"id_empresa": company} to
 * CONTEXTO_NEGOCIO_ENDPOINT within CONTEXTO_NEGOCIO_TIMEOUT and before
 * `deadline_ms` (vtime_mono_ms clock; 0: none), abandoning it when the client
 * goes away. A failure is logged as a warning (never the content), counted in
 * valerie_business_context_requests_total and cached for
 * BIZCTX_NEGATIVE_TTL_S; it never fails the turn. Out of memory sets out->oom.
 */
enum bizctx_result bizctx_get(struct handler_ctx *ctx, struct json_object *company,
    long long deadline_ms, struct buf *out);

/*
 * The text of one answer of the endpoint, by the wire format of DEPLOYMENT.md
 * ("Business context"): `content_type` as received ("" when none), `body` of
 * `len` bytes. text/plain is used as it is; JSON (application/json, +json, or
 * a body that parses whole when the type is missing or not text/plain) gives
 * the string member contexto, context or informacion of an object, a
 * top-level string, or else its compact JSON text. Trimmed, cut to
 * BIZCTX_TEXT_MAX bytes on a character boundary and appended to `out`.
 * Returns 0, or -1 with *why a static reason (not UTF-8, not JSON, empty,
 * NUL byte, unexpected type).
 */
int bizctx_answer_text(const char *content_type, const char *body, size_t len, struct buf *out,
    const char **why);

/*
 * Appends the business context section to a system prompt `sys`: a blank
 * line when `sys` already holds text, a header naming `company`, then `text`
 * (`len` bytes) between begin and end lines. A line of `text` that looks like
 * one of those is written quoted, with "> " before it: some of its
 * consecutive words, case and punctuation ignored and "the" and "of" left
 * out, are begin or end and "business context" ("=== END OF BUSINESS CONTEXT
 * ===", "# begin business_context", "--- end business context --- and more").
 * Lines end at LF, CR, VT, FF, U+0085, U+2028, U+2029.
 */
void bizctx_section(struct buf *sys, const char *company, const char *text, size_t len);

/* Registers valerie_business_context_requests_total at 0 for every result when an endpoint is set. */
void bizctx_metrics_init(const struct conf *conf);

#endif
