/*
 * table.h: aligned text tables for human output (`--json` output uses jansson instead).
 *
 *     struct table t = TABLE_INIT;
 *     table_header(&t, "NAME", "SIZE", NULL);
 *     table_row(&t, name, size_str, NULL);
 *     table_print(&t, stdout);
 *     table_free(&t);
 *
 * Cells are copied. Columns are padded to the widest cell (in bytes; names here are ASCII).
 */
#pragma once

#include <stddef.h>
#include <stdio.h>

struct table {
    char **cells; /* rows * cols, row-major; row 0 is the header */
    size_t rows, cols, cap;
};

#define TABLE_INIT {NULL, 0, 0, 0}

int table_header(struct table *t, ...) __attribute__((sentinel));
int table_row(struct table *t, ...) __attribute__((sentinel));
void table_print(const struct table *t, FILE *out);
void table_free(struct table *t);
