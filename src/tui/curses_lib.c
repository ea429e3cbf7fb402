/*
 * curses_lib.c: the curses functions and variables `thinimg monitor` uses, forwarded to
 * ncursesw loaded on first use. See curses_lib.h and util/dynlib.h.
 */
#define CURSES_LIB_SHIM /* the real names, not curses_lib.h's redirections */
#include "tui/curses_lib.h"

#include "util/dynlib.h"

#ifndef THINIMG_NCURSESW_SONAME
#error "THINIMG_NCURSESW_SONAME is defined by CMakeLists.txt (thinimg_loaded_on_use)"
#endif

/* Every curses function and variable monitor.c uses (tputs and cur_term come from libtinfo,
 * which ncursesw depends on: dlsym() on ncursesw's handle finds them there). */
#define CURSES_LIB_SYMBOLS(X)                                                                      \
    X(newterm)                                                                                     \
    X(endwin)                                                                                      \
    X(cbreak)                                                                                      \
    X(noecho)                                                                                      \
    X(keypad)                                                                                      \
    X(curs_set)                                                                                    \
    X(clearok)                                                                                     \
    X(wtimeout)                                                                                    \
    X(wgetch)                                                                                      \
    X(werase)                                                                                      \
    X(wrefresh)                                                                                    \
    X(wmove)                                                                                       \
    X(waddnstr)                                                                                    \
    X(whline)                                                                                      \
    X(wattr_on)                                                                                    \
    X(wattr_off)                                                                                   \
    X(tputs)                                                                                       \
    X(stdscr)                                                                                      \
    X(LINES)                                                                                       \
    X(COLS)                                                                                        \
    X(cur_term)

DYNLIB_DEFINE(curses_lib, CURSES_LIB_SYMBOLS, .soname = THINIMG_NCURSESW_SONAME,
              .used_for = "the terminal screens of `thinimg monitor`",
              .package = "libncursesw6 (Debian, Ubuntu; Fedora: ncurses-libs)");

DYNLIB_ACCESSORS(curses_lib, curses_lib)

/* FORWARD(ret, name, (params), (args)): curses' own failure value (ERR) without the library. */
#define FORWARD(ret, name, params, args) DYNLIB_FORWARD(curses_lib, ret, name, ERR, params, args)

FORWARD(int, endwin, (void), ())
FORWARD(int, cbreak, (void), ())
FORWARD(int, noecho, (void), ())
FORWARD(int, keypad, (WINDOW * w, bool on), (w, on))
FORWARD(int, curs_set, (int visibility), (visibility))
FORWARD(int, clearok, (WINDOW * w, bool on), (w, on))
FORWARD(int, wgetch, (WINDOW * w), (w))
FORWARD(int, werase, (WINDOW * w), (w))
FORWARD(int, wrefresh, (WINDOW * w), (w))
FORWARD(int, wmove, (WINDOW * w, int y, int x), (w, y, x))
FORWARD(int, waddnstr, (WINDOW * w, const char *s, int n), (w, s, n))
FORWARD(int, whline, (WINDOW * w, chtype ch, int n), (w, ch, n))
FORWARD(int, wattr_on, (WINDOW * w, attr_t a, void *opts), (w, a, opts))
FORWARD(int, wattr_off, (WINDOW * w, attr_t a, void *opts), (w, a, opts))
FORWARD(int, tputs, (const char *str, int affcnt, int (*putc)(int)), (str, affcnt, putc))
DYNLIB_FORWARD(curses_lib, SCREEN *, newterm, NULL, (const char *type, FILE *out, FILE *in),
               (type, out, in))

DYNLIB_FORWARD_VOID(curses_lib, wtimeout, (WINDOW * w, int delay), (w, delay))

/* VAR(type, name, accessor): the variable's address, or a placeholder's without the library. */
#define VAR(type, name, accessor)                                                                  \
    type *accessor(void)                                                                           \
    {                                                                                              \
        static type placeholder;                                                                   \
        type *p = DYNLIB_REAL(curses_lib, name);                                                   \
        return p ? p : &placeholder;                                                               \
    }

VAR(WINDOW *, stdscr, curses_lib_stdscr)
VAR(int, LINES, curses_lib_lines)
VAR(int, COLS, curses_lib_cols)
VAR(TERMINAL *, cur_term, curses_lib_cur_term)
