/* test_acceptor: FCGI_WEB_SERVER_ADDRS parsed and applied to IPv4, IPv6 and mapped peers. */
#include "config.h"

#include "check.h"
#include "fcgi/acceptor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Whether a peer at the literal address `ip` may connect under `list`. */
static int
allowed(const char *list, const char *ip)
{
	struct acceptor a;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
	char err[256];

	if (acceptor_parse_addrs(&a, list, err, sizeof(err)) != ACCEPTOR_OK)
		return -1;
	memset(&in4, 0, sizeof(in4));
	memset(&in6, 0, sizeof(in6));
	if (inet_pton(AF_INET, ip, &in4.sin_addr) == 1) {
		in4.sin_family = AF_INET;
		return acceptor_allowed(&a, (struct sockaddr *)&in4);
	}
	if (inet_pton(AF_INET6, ip, &in6.sin6_addr) == 1) {
		in6.sin6_family = AF_INET6;
		return acceptor_allowed(&a, (struct sockaddr *)&in6);
	}
	return -2;
}

/*
 * acceptor_accept on a real TCP listener: a connection comes back with a
 * bounded receive timeout (a dead peer cannot hold the thread for ever, a
 * slow one is not cut at the listener's wake-up) and Nagle off; one from an
 * address not listed is closed and reads as "nothing yet" (EAGAIN).
 */
static void
test_accept(void)
{
	struct acceptor a;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct timeval tv;
	char err[256];
	int lfd, cfd, fd, one = 0;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    listen(lfd, 8) == 0 && getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
	CHECK_INT(acceptor_open(&a, lfd, "127.0.0.1", err, sizeof(err)), ACCEPTOR_OK);
	CHECK_INT(a.tcp, 1);

	cfd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	fd = acceptor_accept(&a);
	CHECK(fd >= 0);
	len = sizeof(tv);
	memset(&tv, 0, sizeof(tv));
	CHECK(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0);
	CHECK_INT((long long)tv.tv_sec * 1000 + tv.tv_usec / 1000, ACCEPTOR_READ_TIMEOUT_MS);
	CHECK(ACCEPTOR_READ_TIMEOUT_MS > 10 * ACCEPTOR_WAKE_MS);
	len = sizeof(one);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, &len) == 0 && one != 0);
	close(fd);
	close(cfd);

	/* Nothing waiting: EAGAIN after about ACCEPTOR_WAKE_MS. */
	errno = 0;
	CHECK_INT(acceptor_accept(&a), -1);
	CHECK_INT(errno, EAGAIN);

	/* A peer not listed: closed, and EAGAIN. */
	CHECK_INT(acceptor_parse_addrs(&a, "127.0.0.2", err, sizeof(err)), ACCEPTOR_OK);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	errno = 0;
	CHECK_INT(acceptor_accept(&a), -1);
	CHECK_INT(errno, EAGAIN);
	CHECK(recv(cfd, err, 1, 0) <= 0);
	close(cfd);
	close(lfd);
}

/* acceptor_parse_addrs' status for `list`; its message in err. */
static enum acceptor_status
parse(const char *list, char *err, size_t errlen)
{
	struct acceptor a;

	err[0] = '\0';
	return acceptor_parse_addrs(&a, list, err, errlen);
}

int
main(void)
{
	struct acceptor a;
	struct sockaddr_un un;
	char err[256], many[2048];
	size_t i;

	/* No list: anyone (libfcgi's rule); unix peers always. */
	CHECK_INT(allowed(NULL, "192.0.2.7"), 1);
	CHECK_INT(allowed("", "2001:db8::1"), 1);
	CHECK_INT(acceptor_parse_addrs(&a, "127.0.0.1", err, sizeof(err)), ACCEPTOR_OK);
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	CHECK_INT(acceptor_allowed(&a, (struct sockaddr *)&un), 1);

	/* IPv4 entries, blanks around them ignored. */
	CHECK_INT(allowed("127.0.0.1", "127.0.0.1"), 1);
	CHECK_INT(allowed("127.0.0.1", "127.0.0.2"), 0);
	CHECK_INT(allowed("10.0.0.5, 172.28.0.10", "172.28.0.10"), 1);
	CHECK_INT(allowed(" 10.0.0.5 ,\t172.28.0.10 ", "10.0.0.5"), 1);
	CHECK_INT(allowed("10.0.0.5,172.28.0.10", "10.0.0.6"), 0);

	/* IPv6: checked (libfcgi 2.4.2 let every IPv6 peer through). */
	CHECK_INT(allowed("127.0.0.1", "::1"), 0);
	CHECK_INT(allowed("127.0.0.1,::1", "::1"), 1);
	CHECK_INT(allowed("2001:db8::10", "2001:db8::10"), 1);
	CHECK_INT(allowed("2001:db8::10", "2001:db8::11"), 0);
	/* A dual-stack socket sees IPv4 peers mapped: the IPv4 entry still matches. */
	CHECK_INT(allowed("172.28.0.10", "::ffff:172.28.0.10"), 1);
	CHECK_INT(allowed("172.28.0.10", "::ffff:172.28.0.11"), 0);
	CHECK_INT(allowed("::ffff:172.28.0.10", "::ffff:172.28.0.10"), 1);
	/* And an entry written mapped is that IPv4 address, on an IPv4 socket too. */
	CHECK_INT(allowed("::ffff:172.28.0.10", "172.28.0.10"), 1);
	CHECK_INT(allowed("::ffff:172.28.0.10", "172.28.0.11"), 0);
	CHECK_INT(allowed("::FFFF:ac1c:000a", "172.28.0.10"), 1);

	/* Anything that is no address refuses to start, naming the entry. */
	CHECK_INT(parse("nginx", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_CONTAINS(err, "FCGI_WEB_SERVER_ADDRS");
	CHECK_CONTAINS(err, "'nginx'");
	CHECK_INT(parse("127.0.0.1,", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse(",127.0.0.1", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse(" ", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse("127.0.0.1 10.0.0.1", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse("127.0.0.1/8", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse("256.0.0.1", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse("fe80::1%eth0", err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb", err,
	    sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_INT(parse("127.0.0.1, ::1", err, sizeof(err)), ACCEPTOR_OK);

	/* At most ACCEPTOR_MAX_ADDRS entries. */
	many[0] = '\0';
	for (i = 0; i < ACCEPTOR_MAX_ADDRS; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s10.0.0.%zu",
		    i ? "," : "", i + 1);
	CHECK_INT(parse(many, err, sizeof(err)), ACCEPTOR_OK);
	CHECK_INT(allowed(many, "10.0.0.32"), 1);
	snprintf(many + strlen(many), sizeof(many) - strlen(many), ",10.0.1.1");
	CHECK_INT(parse(many, err, sizeof(err)), ACCEPTOR_BAD_ADDRS);
	CHECK_CONTAINS(err, "more than");

	test_accept();
	return check_done("test_acceptor");
}
