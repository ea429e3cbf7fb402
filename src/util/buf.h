/*
 * buf.h: a growable byte buffer (for response bodies, JSON, XML, command output).
 *
 * Invariants: `data` is NULL until the first append, and after any append it is NUL-terminated
 * at `len` (the terminator is not counted), so a text buffer can be used as a C string.
 * The buffer owns `data`; buf_free() releases it and resets the struct; buf_steal() hands
 * ownership to the caller. Appends return 0 or -ENOMEM and leave the buffer unchanged on failure.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT {NULL, 0, 0}

int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
void buf_reset(struct buf *b); /* len = 0, keeps the allocation */
void buf_free(struct buf *b);
char *buf_steal(struct buf *b); /* returns data ("" allocated if empty) or NULL on ENOMEM */

static inline void buf_freep(struct buf *b)
{
    buf_free(b);
}
#define _cleanup_buf_ __attribute__((cleanup(buf_freep)))
