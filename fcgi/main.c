/* main: the valerie command: serve FastCGI (the default) or an operator's verb. */
#include "config.h"

#include "acceptor.h"
#include "pool.h"

#include "app/app.h"
#include "app/auth.h"
#include "app/conf.h"
#include "app/httpc.h"
#include "app/log.h"
#include "app/redis_dump.h"

#include <json-c/json.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXIT_CONFIG 78 /* sysexits EX_CONFIG: systemd and scripts can tell it apart */
#define EXIT_DATAERR 65       /* EX_DATAERR: not an export, truncated, damaged */
#define EXIT_UNAVAILABLE 69   /* EX_UNAVAILABLE: Redis unreachable or refusing */
#define EXIT_IOERR 74         /* EX_IOERR: the file cannot be read or written */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: valerie [serve]        serve FastCGI on fd 0 (started by spawn-fcgi)\n"
	    "       valerie check-config   print the effective configuration, secrets redacted\n"
	    "       valerie token --sub NAME --role user|admin [--company ID] [--ttl MINUTES]\n"
	    "                              print a JWT signed with the configured key\n"
	    "       valerie apikey new --name NAME --role user|admin [--company ID]\n"
	    "                              print a new API key (once) and its keys-file line\n"
	    "       valerie redis-export FILE  write Valerie's Redis keys (DUMP, with their TTLs)\n"
	    "                              to FILE (- for stdout)\n"
	    "       valerie redis-import FILE  restore them from FILE (- for stdin), replacing\n"
	    "                              keys of the same names\n"
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

/*
 * FCGI_WEB_SERVER_ADDRS, read by the worker itself (fcgi/acceptor.c) rather
 * than by libfcgi: an entry that is no address stops the worker at start, as
 * any invalid setting does, instead of refusing every web server later.
 * Returns 0, or -1 with the reason in `err`.
 */
static int
web_server_addrs_check(char *err, size_t errlen)
{
	struct acceptor a;

	return acceptor_parse_addrs(&a, getenv("FCGI_WEB_SERVER_ADDRS"), err, errlen) ==
	    ACCEPTOR_OK ? 0 : -1;
}

static int
cmd_check_config(void)
{
	struct conf conf;
	struct json_object *doc;
	struct auth *auth = NULL;
	char err[512];

	if (load(&conf, 0) != 0)
		return EXIT_CONFIG;
	/*
	 * The files the settings name (CA bundle, JWT public key, API keys), read
	 * as a worker reads them at start: one it would refuse is refused here,
	 * not by every worker exiting 1 under multiwatch.
	 */
	if (web_server_addrs_check(err, sizeof(err)) != 0 ||
	    httpc_global_init(conf.ca_bundle, err, sizeof(err)) != 0 ||
	    (auth = auth_open(&conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "valerie: invalid configuration: %s\n", err);
		return EXIT_CONFIG;
	}
	auth_close(auth);
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

/* The value of `--name VALUE` among argv[from..argc), or NULL; -1 in *bad for an unknown flag. */
static const char *
flag(int argc, char **argv, int from, const char *name, const char *const *known, int *bad)
{
	const char *found = NULL;
	int i, j, ok;

	for (i = from; i < argc; i += 2) {
		for (ok = 0, j = 0; known[j] != NULL; j++)
			ok |= strcmp(argv[i], known[j]) == 0;
		if (!ok || i + 1 >= argc) {
			*bad = 1;
			return NULL;
		}
		if (strcmp(argv[i], name) == 0)
			found = argv[i + 1];
	}
	return found;
}

static int
cmd_token(int argc, char **argv)
{
	static const char *const known[] = {"--sub", "--role", "--company", "--ttl", NULL};
	struct conf conf;
	char err[256], *end, *token;
	const char *sub, *role, *company, *ttl;
	long long minutes = 0;
	int bad = 0;

	sub = flag(argc, argv, 2, "--sub", known, &bad);
	role = flag(argc, argv, 2, "--role", known, &bad);
	company = flag(argc, argv, 2, "--company", known, &bad);
	ttl = flag(argc, argv, 2, "--ttl", known, &bad);
	if (bad || sub == NULL || role == NULL) {
		usage(stderr);
		return 2;
	}
	if (ttl != NULL) {
		minutes = strtoll(ttl, &end, 10);
		if (*ttl == '\0' || *end != '\0' || minutes < 1 || minutes > 525600) {
			fprintf(stderr, "valerie: --ttl: minutes from 1 to 525600\n");
			return 2;
		}
	}
	if (load(&conf, 0) != 0)
		return EXIT_CONFIG;
	token = auth_token_mint(&conf, sub, role, company, minutes, err, sizeof(err));
	if (token == NULL) {
		fprintf(stderr, "valerie: %s\n", err);
		return EXIT_CONFIG;
	}
	printf("%s\n", token);
	free(token);
	return 0;
}

static int
cmd_apikey(int argc, char **argv)
{
	static const char *const known[] = {"--name", "--role", "--company", NULL};
	char key[128], line[400], err[256];
	const char *name, *role, *company;
	int bad = 0;

	if (argc < 3 || strcmp(argv[2], "new") != 0) {
		usage(stderr);
		return 2;
	}
	name = flag(argc, argv, 3, "--name", known, &bad);
	role = flag(argc, argv, 3, "--role", known, &bad);
	company = flag(argc, argv, 3, "--company", known, &bad);
	if (bad || name == NULL || role == NULL) {
		usage(stderr);
		return 2;
	}
	if (auth_apikey_new(name, role, company, key, sizeof(key), line, sizeof(line), err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "valerie: %s\n", err);
		return 2;
	}
	printf("key:  %s\n(shown once: give it to the caller; only its hash is kept)\n"
	    "line: %s\n(add it to VALERIE_API_KEYS_FILE; workers pick it up within a second)\n",
	    key, line);
	explicit_bzero(key, sizeof(key));
	return 0;
}

/*
 * redis-export FILE / redis-import FILE: Valerie's keys of VALERIE_SESSION_REDIS_URL
 * to a file and back (redis_dump.h). One summary line on stderr. Exit 0, 2 usage,
 * 65 a bad or truncated file, 69 Redis unreachable or refusing, 74 file I/O,
 * 78 configuration.
 */
static int
cmd_redis_dump(int argc, char **argv, int import)
{
	static const int exit_of[] = {
		[REDIS_DUMP_OK] = 0, [REDIS_DUMP_UNAVAILABLE] = EXIT_UNAVAILABLE,
		[REDIS_DUMP_BADFILE] = EXIT_DATAERR, [REDIS_DUMP_IO] = EXIT_IOERR,
		[REDIS_DUMP_NOMEM] = 1,
	};
	const char *verb = import ? "redis-import" : "redis-export";
	struct redis_dump_stats stats;
	struct conf conf;
	enum redis_dump_status s;
	char err[512];
	const char *path;
	FILE *f;
	int fd, std;

	if (argc != 3) {
		usage(stderr);
		return 2;
	}
	path = argv[2];
	std = strcmp(path, "-") == 0;
	if (load(&conf, 0) != 0)
		return EXIT_CONFIG;
	if (conf.session_redis_url == NULL || conf.session_redis_url[0] == '\0') {
		fprintf(stderr, "valerie: %s: VALERIE_SESSION_REDIS_URL is not set\n", verb);
		return EXIT_CONFIG;
	}
	/* A connection or pipe closed under us is an error to report, not a silent death. */
	signal(SIGPIPE, SIG_IGN);
	if (std) {
		f = import ? stdin : stdout;
	} else {
		/* The export holds every session's turns: readable by its owner only. */
		fd = import ? open(path, O_RDONLY | O_CLOEXEC) :
		    open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		f = fd < 0 ? NULL : fdopen(fd, import ? "rb" : "wb");
		if (f == NULL) {
			fprintf(stderr, "valerie: %s: %s: %s\n", verb, path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return EXIT_IOERR;
		}
	}
	s = import ? redis_dump_import(conf.session_redis_url, f, &stats, err, sizeof(err)) :
	    redis_dump_export(conf.session_redis_url, f, &stats, err, sizeof(err));
	if (!std && fclose(f) != 0 && s == REDIS_DUMP_OK) {
		snprintf(err, sizeof(err), "%s: %s", path, strerror(errno));
		s = REDIS_DUMP_IO;
	}
	if (s != REDIS_DUMP_OK) {
		fprintf(stderr, "valerie: %s: %s\n", verb, err);
		/* NOTE: a half-written export is removed; it could only mislead. */
		if (!import && !std)
			unlink(path);
		return exit_of[s];
	}
	if (import)
		fprintf(stderr, "valerie: redis-import: %lld key(s) restored from %s\n", stats.keys,
		    std ? "stdin" : path);
	else
		fprintf(stderr, "valerie: redis-export: %lld key(s) exported to %s (%lld vanished "
		    "while exporting)\n", stats.keys, std ? "stdout" : path, stats.vanished);
	return 0;
}

/*
 * VALERIE_ENV=production refuses a FastCGI socket on TCP (fd 0, from
 * spawn-fcgi) that any host may connect to: FCGI_WEB_SERVER_ADDRS, which
 * libfcgi enforces, must name the web servers.
 */
static int
open_tcp_refused(const struct conf *conf)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const char *addrs = getenv("FCGI_WEB_SERVER_ADDRS");

	if (strcmp(conf->env, "production") != 0 || getsockname(0, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
	    (addrs == NULL || *addrs == '\0')) {
		log_msg(LOG_LVL_ERROR, "FCGI_WEB_SERVER_ADDRS: required with VALERIE_ENV=production "
		    "when the FastCGI socket is TCP (list nginx's addresses)");
		return 1;
	}
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
	if (open_tcp_refused(&conf))
		return EXIT_CONFIG;
	if (web_server_addrs_check(err, sizeof(err)) != 0) {
		log_msg(LOG_LVL_ERROR, "%s", err);
		return EXIT_CONFIG;
	}
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
	if (strcmp(argv[1], "token") == 0)
		return cmd_token(argc, argv);
	if (strcmp(argv[1], "apikey") == 0)
		return cmd_apikey(argc, argv);
	if (strcmp(argv[1], "redis-export") == 0)
		return cmd_redis_dump(argc, argv, 0);
	if (strcmp(argv[1], "redis-import") == 0)
		return cmd_redis_dump(argc, argv, 1);
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
