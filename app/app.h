/* app: the application as the transport sees it: create, handle a request, destroy. */
#ifndef VALERIE_APP_H
#define VALERIE_APP_H

#include <stddef.h>

#include "http.h"

struct conf;
struct app;         /* per process: configuration and shared state */
struct app_worker;  /* per thread: connections and scratch memory */

/*
 * Creates the application for a validated configuration (borrowed; it must
 * outlive the app). Returns NULL with `err` filled on failure.
 */
struct app *app_create(const struct conf *conf, char *err, size_t errlen);

/* Destroys the app. Accepts NULL. All workers must be destroyed first. */
void app_destroy(struct app *app);

/* Per-thread state for app_handle. NULL on OOM. */
struct app_worker *app_worker_new(struct app *app);
void app_worker_free(struct app_worker *w);

/*
 * Marks the process as draining: readiness answers 503 from now on, so load
 * balancers stop sending work while requests in flight finish. A turn still
 * waiting on a provider when most of VALERIE_SHUTDOWN_TIMEOUT has gone is
 * ended (app_stop_due) so that it answers 503 `shutting_down`, or its stream
 * an `error` event, before the process gives up on it and exits.
 */
void app_set_draining(struct app *app);

/* Whether turns in flight must end now: the process stops (see above). */
int app_stop_due(void);

/*
 * Handles one request and fills `resp` (or streams it through resp's
 * transport). Never fails: every problem becomes a JSON error response.
 * Writes the access log line.
 */
void app_handle(struct app_worker *w, const struct http_request *req,
    struct http_response *resp);

#endif
