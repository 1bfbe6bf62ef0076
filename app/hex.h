/* hex: the value of one hexadecimal digit, for the modules that decode %XX and hex text. */
#ifndef VALERIE_HEX_H
#define VALERIE_HEX_H

/* 0 to 15 for [0-9a-fA-F], -1 for any other character. */
static inline int
hex_digit(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

#endif
