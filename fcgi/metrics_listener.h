/* metrics_listener: the pool's metrics over plain HTTP on the replica's own port. */
#ifndef VALERIE_METRICS_LISTENER_H
#define VALERIE_METRICS_LISTENER_H

#include <stddef.h>

struct app;
struct conf;
struct metrics_listener;

/*
 * Listens on conf->metrics_addr:conf->metrics_port (which must be > 0) and
 * serves GET and HEAD /metrics and /health/live from two background threads
 * (one answers the scrapes, which may wait on the session store; the other
 * everything else, at once), through the app's own request pipeline; other
 * paths get 404, other methods 405. Every worker process of the pool can listen on the same port at once.
 * Call after the worker blocked its signals (the thread inherits the mask).
 * `app` and `conf` are borrowed and must outlive the listener. Returns the
 * listener, or NULL with `err` filled (for example when the port is taken).
 */
struct metrics_listener *metrics_listener_start(struct app *app, const struct conf *conf,
    char *err, size_t errlen);

/*
 * Closes the port, ends the connections still open and joins the threads
 * (after the scrape in progress, if any); frees the listener. Accepts NULL.
 */
void metrics_listener_stop(struct metrics_listener *l);

#endif
