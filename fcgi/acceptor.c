/* acceptor: the listening socket the pool shares (fd 0): idle wake-ups and TCP accepts. */
#include "config.h"

#include "acceptor.h"

#include "app/log.h"
#include "app/vtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define ACCEPTOR_REFUSED_LOG_MS 10000 /* at most one line per process this often */

/* The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

enum acceptor_status
acceptor_parse_addrs(struct acceptor *a, const char *list, char *err, size_t errlen)
{
	const char *p, *end, *b, *e;
	char one[INET6_ADDRSTRLEN + 1];
	struct acceptor_addr *d;

	a->naddrs = 0;
	if (list == NULL || *list == '\0')
		return ACCEPTOR_OK;
	for (p = list;; p = end + 1) {
		end = strchr(p, ',');
		if (end == NULL)
			end = p + strlen(p);
		for (b = p; b < end && (*b == ' ' || *b == '\t'); b++)
			;
		for (e = end; e > b && (e[-1] == ' ' || e[-1] == '\t'); e--)
			;
		if (e == b || (size_t)(e - b) >= sizeof(one)) {
			snprintf(err, errlen, "FCGI_WEB_SERVER_ADDRS: '%.*s' is not an IPv4 or IPv6 "
			    "address (list the web servers' addresses, separated by commas)",
			    (int)(end - p > 64 ? 64 : end - p), p);
			return ACCEPTOR_BAD_ADDRS;
		}
		if (a->naddrs == ACCEPTOR_MAX_ADDRS) {
			snprintf(err, errlen, "FCGI_WEB_SERVER_ADDRS: more than %d addresses",
			    ACCEPTOR_MAX_ADDRS);
			return ACCEPTOR_BAD_ADDRS;
		}
		memcpy(one, b, (size_t)(e - b));
		one[e - b] = '\0';
		d = &a->addrs[a->naddrs];
		memset(d, 0, sizeof(*d));
		if (inet_pton(AF_INET, one, d->addr) == 1) {
			d->family = AF_INET;
		} else if (inet_pton(AF_INET6, one, d->addr) == 1) {
			d->family = AF_INET6;
			/*
			 * "::ffff:a.b.c.d" is that IPv4 address: kept as such, it also
			 * matches the peer of an IPv4 socket, not only a dual-stack one's.
			 */
			if (memcmp(d->addr, v4mapped, sizeof(v4mapped)) == 0) {
				memmove(d->addr, d->addr + 12, 4);
				memset(d->addr + 4, 0, 12);
				d->family = AF_INET;
			}
		} else {
			snprintf(err, errlen, "FCGI_WEB_SERVER_ADDRS: '%s' is not an IPv4 or IPv6 "
			    "address (list the web servers' addresses, separated by commas)", one);
			return ACCEPTOR_BAD_ADDRS;
		}
		a->naddrs++;
		if (*end == '\0')
			return ACCEPTOR_OK;
	}
}

/*
 * NOTE: shutdown without signals to worker threads. The listening socket gets
 * a receive timeout, which Linux applies to accept(2): an idle thread's
 * accept returns EAGAIN every ACCEPTOR_WAKE_MS and the thread looks at the
 * stop flag. accept() keeps its wake-one semantics (no thundering herd), and
 * a thread busy with a request is never interrupted, so requests in flight
 * finish. shutdown() on the socket is no alternative: every worker process
 * of the pool shares it, and it would stop them all.
 */
enum acceptor_status
acceptor_open(struct acceptor *a, int fd, const char *web_server_addrs, char *err,
    size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct timeval tv = {0, ACCEPTOR_WAKE_MS * 1000};

	memset(a, 0, sizeof(*a));
	a->fd = fd;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
		snprintf(err, errlen, "file descriptor %d is not a listening socket: start the "
		    "worker with spawn-fcgi (see scripts/run-local.sh)", fd);
		return ACCEPTOR_NOT_LISTENING;
	}
	a->tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
	return acceptor_parse_addrs(a, web_server_addrs, err, errlen);
}

int
acceptor_allowed(const struct acceptor *a, const struct sockaddr *sa)
{
	const unsigned char *v4 = NULL, *v6 = NULL;
	size_t i;

	if (sa->sa_family == AF_INET) {
		v4 = (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

		v6 = in6->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(in6))
			v4 = v6 + 12;
	} else {
		return 1;
	}
	if (a->naddrs == 0)
		return 1;
	for (i = 0; i < a->naddrs; i++) {
		if (a->addrs[i].family == AF_INET && v4 != NULL &&
		    memcmp(a->addrs[i].addr, v4, 4) == 0)
			return 1;
		if (a->addrs[i].family == AF_INET6 && v6 != NULL &&
		    memcmp(a->addrs[i].addr, v6, 16) == 0)
			return 1;
	}
	return 0;
}

/* One line now and then: a peer outside the allow list is a misconfiguration or a probe. */
static void
log_refused(const struct sockaddr_storage *ss)
{
	static atomic_llong last_ms;
	long long now = vtime_mono_ms(), last = atomic_load(&last_ms);
	char addr[INET6_ADDRSTRLEN] = "?";
	struct json_object *f;

	if (last != 0 && now - last < ACCEPTOR_REFUSED_LOG_MS)
		return;
	if (!atomic_compare_exchange_strong(&last_ms, &last, now))
		return;
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, addr,
		    sizeof(addr));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr,
		    addr, sizeof(addr));
	f = json_object_new_object();
	if (f != NULL)
		json_object_object_add(f, "peer", json_object_new_string(addr));
	log_emit(LOG_LVL_WARNING, "FastCGI connection refused: the peer is not in "
	    "FCGI_WEB_SERVER_ADDRS (at most one such line every 10 s)", f);
	json_object_put(f);
}

/*
 * Errors of one connection, not of the socket: accept(2) on Linux passes a new
 * connection's pending network error on (the list is accept(2)'s, plus those
 * libfcgi retries), and the thread waits for the next one.
 */
static int
connection_error(int e)
{
	switch (e) {
	case EAGAIN:
#if EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
	case EINTR:
	case ECONNABORTED:
	case ECONNRESET:
	case EPROTO:
	case ETIMEDOUT:
	case ENETDOWN:
	case ENETUNREACH:
	case EHOSTDOWN:
	case EHOSTUNREACH:
	case ENOPROTOOPT:
	case ENONET:
	case EOPNOTSUPP:
		return 1;
	default:
		return 0;
	}
}

/*
 * NOTE: why TCP pools accept here and not in libfcgi. A TCP socket returned
 * by accept() inherits the listening socket's receive timeout (unix sockets
 * do not), and FCGX_Accept_r reads the request's BEGIN_REQUEST and PARAMS
 * records before it returns: with the timeout still on, a request whose first
 * bytes came ACCEPTOR_WAKE_MS after the connect was dropped (nginx: 502), or
 * taken with its params cut short. Here the timeout is replaced before any
 * read by ACCEPTOR_READ_TIMEOUT_MS, nginx's longest fastcgi_send_timeout (a
 * gap nginx itself would not wait out): a peer that died or was cut off
 * half-way through its request (a host gone, a partition: no FIN or RST
 * comes, and the kernel's keepalive waits hours) costs a thread that long,
 * not until the worker restarts. Unix sockets have no such peers.
 * The allow list is the one libfcgi applies (FCGI_WEB_SERVER_ADDRS), IPv6 peers
 * included, which libfcgi 2.4.2 let through unchecked.
 */
int
acceptor_accept(const struct acceptor *a)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct timeval rcv = {ACCEPTOR_READ_TIMEOUT_MS / 1000,
	    (ACCEPTOR_READ_TIMEOUT_MS % 1000) * 1000};
	int fd, e, one = 1;

	fd = accept4(a->fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
	if (fd < 0) {
		e = errno;
		errno = connection_error(e) ? EAGAIN : e;
		return -1;
	}
	if (!acceptor_allowed(a, (struct sockaddr *)&ss)) {
		log_refused(&ss);
		close(fd);
		errno = EAGAIN;
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
	/* No replies to outgoing data, so no Nagle (as libfcgi does on TCP). */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}
