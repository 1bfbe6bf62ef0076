/* test_utf8: UTF-8 validation, counting and truncation on character boundaries. */
#include "config.h"

#include "buf.h"
#include "check.h"
#include "utf8.h"

/* utf8_repair of a literal, as a NUL-terminated string in b. */
static const char *
repair(struct buf *b, const char *s, size_t len)
{
	buf_reset(b, 0);
	utf8_repair(b, s, len, "#");
	buf_append(b, "", 0);
	return b->len > 0 ? b->data : "";
}

#define V(s) utf8_valid(s, sizeof(s) - 1)

int
main(void)
{
	/* utf8_scrub: in place, bad bytes to '?', the rest untouched. */
	{
		char cut[] = "caf\xc3\xa9 \xc3", latin[] = "na\xefve \xe2\x82\xac", ok[] = "fine";

		utf8_scrub(cut);
		CHECK_STR(cut, "caf\xc3\xa9 ?");
		utf8_scrub(latin);
		CHECK_STR(latin, "na?ve \xe2\x82\xac");
		utf8_scrub(ok);
		CHECK_STR(ok, "fine");
	}
	CHECK(V("plain ascii"));
	CHECK(V("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
	CHECK(!V("\xc3"));                 /* truncated */
	CHECK(!V("\xc0\xaf"));             /* overlong '/' */
	CHECK(!V("\xe0\x80\xaf"));         /* overlong */
	CHECK(!V("\xed\xa0\x80"));         /* surrogate */
	CHECK(!V("\xf4\x90\x80\x80"));     /* above U+10FFFF */
	CHECK(!V("\xff"));
	CHECK(!V("a\x80"));                /* lone continuation */
	CHECK_INT(utf8_count("caf\xc3\xa9", 5), 4);
	CHECK_INT(utf8_count("\xf0\x9f\x98\x80!", 5), 2);
	CHECK_INT(utf8_prefix("caf\xc3\xa9", 5, 4), 3);   /* does not cut the é */
	CHECK_INT(utf8_prefix("caf\xc3\xa9", 5, 5), 5);
	CHECK_INT(utf8_prefix("abc", 3, 10), 3);
	CHECK_INT(utf8_prefix("\xf0\x9f\x98\x80", 4, 3), 0);
	{
		struct buf b = {0};

		CHECK_STR(repair(&b, "caf\xc3\xa9", 5), "caf\xc3\xa9");
		CHECK_STR(repair(&b, "caf\xc3", 4), "caf#");                 /* cut short */
		CHECK_STR(repair(&b, "\xc0\xaf!", 3), "##!");                /* overlong */
		CHECK_STR(repair(&b, "\xed\xa0\x80x", 4), "###x");          /* surrogate */
		CHECK_STR(repair(&b, "a\x80\xf0\x9f\x98\x80", 6), "a#\xf0\x9f\x98\x80");
		buf_free(&b);
	}
	return check_done("test_utf8");
}
