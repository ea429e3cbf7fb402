/*
 * table.c: aligned text tables. See table.h.
 */
#include "cli/table.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

static int table_add(struct table *t, va_list ap, bool header)
{
    const char *cellv[32];
    size_t n = 0;
    const char *c;
    while ((c = va_arg(ap, const char *)) != NULL && n < 32)
        cellv[n++] = c;
    if (header)
        t->cols = n;
    if (t->cols == 0)
        return -EINVAL;
    if ((t->rows + 1) * t->cols > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : t->cols * 16;
        while (cap < (t->rows + 1) * t->cols)
            cap *= 2;
        char **p = realloc(t->cells, cap * sizeof(char *));
        if (!p)
            return -ENOMEM;
        t->cells = p;
        t->cap = cap;
    }
    for (size_t i = 0; i < t->cols; i++)
        t->cells[t->rows * t->cols + i] = strdup(i < n && cellv[i] ? cellv[i] : "");
    t->rows++;
    return 0;
}

int table_header(struct table *t, ...)
{
    va_list ap;
    va_start(ap, t);
    int r = table_add(t, ap, true);
    va_end(ap);
    return r;
}

int table_row(struct table *t, ...)
{
    va_list ap;
    va_start(ap, t);
    int r = table_add(t, ap, false);
    va_end(ap);
    return r;
}

void table_print(const struct table *t, FILE *out)
{
    size_t width[32] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols && c < 32; c++) {
            const char *s = t->cells[r * t->cols + c];
            size_t w = s ? strlen(s) : 0;
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols && c < 32; c++) {
            const char *s = t->cells[r * t->cols + c];
            if (c + 1 == t->cols)
                fprintf(out, "%s", s ? s : "");
            else
                fprintf(out, "%-*s  ", (int)width[c], s ? s : "");
        }
        fputc('\n', out);
    }
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->cols = t->cap = 0;
}
