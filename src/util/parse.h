/*
 * parse.h: parsing of operator-typed values shared by the commands.
 */
#pragma once

#include <stdint.h>

/* "64K", "4G", "1.5T"-free integers with an optional K/M/G/T suffix (binary: K = 1024),
 * optionally followed by "iB"/"B": "512", "64K", "4GiB". -EINVAL for anything else, -ERANGE on
 * overflow. */
int parse_size(const char *s, uint64_t *out);

/* A plain decimal count: digits only, no sign, no suffix. -EINVAL for anything else (an empty
 * string too), -ERANGE on overflow. */
int parse_u64(const char *s, uint64_t *out);
