/* pool: the worker's threads, each looping on FCGX_Accept_r, and graceful shutdown. */
#ifndef VALERIE_POOL_H
#define VALERIE_POOL_H

struct app;
struct conf;

/*
 * Serves FastCGI on file descriptor 0 (as spawn-fcgi hands it over) with
 * conf->threads threads until SIGTERM, SIGINT, SIGQUIT or SIGUSR1 (multiwatch's
 * stop signal): then stops accepting, lets requests in flight finish (at most
 * conf->shutdown_timeout seconds) and returns. Returns 0 on a clean stop, 1 if
 * the threads (or the metrics port, when conf->metrics_port is set) could not
 * start. The metrics port answers until the drain ends. Shortly before the
 * drain limit, answers still being written (to clients that do not read them)
 * are cut (transport_cut). When the drain times out all the same it ends the
 * process with _exit(1): the threads still running own memory nobody may free.
 */
int pool_run(struct app *app, const struct conf *conf);

#endif
