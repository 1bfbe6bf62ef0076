/* main: the valerie command: serve FastCGI (the default) or an operator's verb. */
#include "config.h"

#include "pool.h"

#include "app/app.h"
#include "app/conf.h"
#include "app/log.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#define EXIT_CONFIG 78 /* sysexits EX_CONFIG: systemd and scripts can tell it apart */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: valerie [serve]        serve FastCGI on fd 0 (started by spawn-fcgi)\n"
	    "       valerie check-config   print the effective configuration, secrets redacted\n"
	    "       valerie version        print the version\n");
}

static int
load(struct conf *conf, int as_json_log)
{
	char err[256];
	int level;

	if (conf_load_env(conf, err, sizeof(err)) != CONF_OK) {
		if (as_json_log) {
			struct json_object *f = json_object_new_object();

			log_emit(LOG_LVL_ERROR, err, f);
			json_object_put(f);
		} else {
			fprintf(stderr, "valerie: invalid configuration: %s\n", err);
		}
		return -1;
	}
	level = log_level_parse(conf->log_level);
	log_set_level(level < 0 ? LOG_LVL_INFO : (enum log_level)level);
	return 0;
}

static int
cmd_check_config(void)
{
	struct conf conf;
	struct json_object *doc;

	if (load(&conf, 0) != 0)
		return EXIT_CONFIG;
	doc = conf_to_json(&conf);
	if (doc == NULL) {
		fprintf(stderr, "valerie: out of memory\n");
		return 1;
	}
	printf("%s\n", json_object_to_json_string_ext(doc,
	    JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(doc);
	return 0;
}

static int
cmd_serve(void)
{
	struct conf conf;
	struct app *app;
	char err[256];
	int rc;

	if (load(&conf, 1) != 0)
		return EXIT_CONFIG;
	app = app_create(&conf, err, sizeof(err));
	if (app == NULL) {
		log_msg(LOG_LVL_ERROR, "cannot start: %s", err);
		return 1;
	}
	rc = pool_run(app, &conf);
	app_destroy(app);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "serve") == 0)
		return cmd_serve();
	if (strcmp(argv[1], "check-config") == 0)
		return cmd_check_config();
	if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("valerie %s\n", PACKAGE_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "valerie: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
