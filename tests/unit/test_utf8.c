/* test_utf8: UTF-8 validation, counting and truncation on character boundaries. */
#include "config.h"

#include "check.h"
#include "utf8.h"

#define V(s) utf8_valid(s, sizeof(s) - 1)

int
main(void)
{
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
	return check_done("test_utf8");
}
