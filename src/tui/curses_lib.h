/*
 * curses_lib.h: ncursesw (and the terminfo library it pulls in, libtinfo), loaded on first use
 * (util/dynlib.h explains why and how).
 *
 * Only `thinimg monitor` draws a screen; linked, the two libraries were a third of the symbol
 * bindings every other command paid before main() (both are built with BIND_NOW). curses_lib.c
 * defines the curses functions monitor.c calls and forwards each to the library, dlopen()ed by
 * the soname found at build time. The library's variables (stdscr, LINES, COLS, cur_term) are
 * reached through their addresses: included after <curses.h> and <term.h>, this header makes
 * each name (and every curses macro that uses it, such as refresh() or exit_ca_mode) read the
 * library's own variable.
 *
 * monitor_run() loads it first and fails with -ELIBACC (the reason and the package) when it is
 * missing.
 */
#pragma once

#include <curses.h>
#include <stdbool.h>
#include <term.h>

#include "util/err.h"

/* Loads ncursesw once: 0, or -ELIBACC with the reason and the package to install in e. */
int curses_lib_load(struct err *e);

/* True when ncursesw is loaded in this process. */
bool curses_lib_loaded(void);

/* The soname thinimg loads ("libncursesw.so.6"). */
const char *curses_lib_soname(void);

/* The addresses of the library's variables (never NULL: a placeholder when it is not loaded). */
WINDOW **curses_lib_stdscr(void);
int *curses_lib_lines(void);
int *curses_lib_cols(void);
TERMINAL **curses_lib_cur_term(void);

#ifndef CURSES_LIB_SHIM
#undef stdscr
#undef LINES
#undef COLS
#undef cur_term
#define stdscr   (*curses_lib_stdscr())
#define LINES    (*curses_lib_lines())
#define COLS     (*curses_lib_cols())
#define cur_term (*curses_lib_cur_term())
#endif
