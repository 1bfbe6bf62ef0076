/* acceptor: the listening socket the pool shares (fd 0): idle wake-ups and TCP accepts. */
#ifndef VALERIE_ACCEPTOR_H
#define VALERIE_ACCEPTOR_H

#include <stddef.h>
#include <sys/socket.h>

#define ACCEPTOR_WAKE_MS 250     /* how often an idle thread looks at the stop flag */
#define ACCEPTOR_MAX_ADDRS 32    /* entries of FCGI_WEB_SERVER_ADDRS */
#define ACCEPTOR_READ_TIMEOUT_MS 300000 /* silent this long, a TCP peer is gone (acceptor_accept) */

/* One allowed peer address: 4 bytes for AF_INET, 16 for AF_INET6, network order. */
struct acceptor_addr {
	int family;
	unsigned char addr[16];
};

/*
 * The listening socket and who may connect to it. Plain data, filled by
 * acceptor_open; read-only afterwards, so every thread may use it at once.
 */
struct acceptor {
	int fd;
	int tcp;                       /* AF_INET or AF_INET6: the pool accepts itself */
	size_t naddrs;                 /* 0: any address may connect */
	struct acceptor_addr addrs[ACCEPTOR_MAX_ADDRS];
};

enum acceptor_status {
	ACCEPTOR_OK = 0,
	ACCEPTOR_NOT_LISTENING,        /* fd is not a socket (not started by spawn-fcgi) */
	ACCEPTOR_BAD_ADDRS             /* FCGI_WEB_SERVER_ADDRS has an entry that is no address */
};

/*
 * Parses FCGI_WEB_SERVER_ADDRS (`list`, may be NULL or empty: any address):
 * IPv4 or IPv6 addresses separated by commas, blanks around them ignored;
 * an IPv4-mapped IPv6 one (::ffff:a.b.c.d) is kept as its IPv4 address.
 * Fills a->addrs and a->naddrs. On ACCEPTOR_BAD_ADDRS `err` names the entry.
 */
enum acceptor_status acceptor_parse_addrs(struct acceptor *a, const char *list, char *err,
    size_t errlen);

/*
 * Takes `fd` (the listening socket) for the pool: gives it the receive timeout
 * that wakes idle threads every ACCEPTOR_WAKE_MS and, for TCP, parses the
 * allow list `web_server_addrs`. `err` says what is wrong otherwise.
 */
enum acceptor_status acceptor_open(struct acceptor *a, int fd, const char *web_server_addrs,
    char *err, size_t errlen);

/*
 * Whether a peer at `sa` may send requests: the list is empty, or it names the
 * address (an IPv4 entry also matches its IPv4-mapped IPv6 form). Unix-socket
 * peers always may.
 */
int acceptor_allowed(const struct acceptor *a, const struct sockaddr *sa);

/*
 * TCP pools: waits at most about ACCEPTOR_WAKE_MS for a connection from an
 * allowed address and returns it ready for libfcgi (a receive timeout of
 * ACCEPTOR_READ_TIMEOUT_MS, Nagle off); the caller owns it. Returns -1 with
 * errno EAGAIN when there is nothing to serve yet (the wait ended, or a
 * connection was refused or aborted): look at the stop flag and call again.
 * Any other errno: the socket is broken.
 */
int acceptor_accept(const struct acceptor *a);

#endif
