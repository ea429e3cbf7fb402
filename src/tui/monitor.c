/*
 * monitor.c: the ncurses screens of `thinimg monitor`. See monitor.h; the data is feed.c's.
 *
 * Each frame is drawn from scratch into stdscr (erase + draw + refresh: ncurses sends only what
 * changed), so a resize needs nothing but a redraw at the new LINES/COLS. Text is ASCII and
 * clipped to the width; sections give up rows in a fixed order when the terminal is short
 * (log first, then recent runs, activations, active runs).
 */
#include "tui/monitor.h"

#include <curses.h>
#include <errno.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tui/feed.h"
#include "util/timeutil.h"

/* Last: its capability macros (lines, columns, ...) would clash with ordinary names. */
#include <term.h>

/* After both: ncursesw is loaded on first use, and stdscr, LINES, COLS, cur_term (in the
 * macros above too) are read through their addresses. */
#include "tui/curses_lib.h"

/* Below this the screens do not fit; the monitor says so instead of drawing garbage. */
#define MONITOR_MIN_COLS  40
#define MONITOR_MIN_LINES 12

enum view { VIEW_DASHBOARD = 0, VIEW_SOURCE };

struct monitor {
    const struct monitor_opts *o;
    struct feed *feed;
    struct feed_snapshot snap;
    struct feed_catalog cat;
    bool cat_loaded;
    enum view view;
    size_t sel, top; /* source view: selected entry, first visible */
    char status[512];
};

/* ---- drawing helpers ------------------------------------------------------------------------- */

static void put(int y, int x, int attr, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(int y, int x, int attr, const char *fmt, ...)
{
    if (y < 0 || y >= LINES || x >= COLS)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++) /* control characters would move the cursor */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    attron(attr);
    mvaddnstr(y, x, buf, COLS - x);
    attroff(attr);
}

/* A whole line in reverse video (title, keys). */
static void bar(int y, const char *text)
{
    attron(A_REVERSE);
    mvhline(y, 0, ' ', COLS);
    attroff(A_REVERSE);
    put(y, 0, A_REVERSE, "%s", text);
}

static void meter(char *out, size_t n, double pct, int width)
{
    if (width > 40)
        width = 40;
    int fill = (int)(pct / 100.0 * width + 0.5);
    if (fill < 0)
        fill = 0;
    if (fill > width)
        fill = width;
    char b[48];
    for (int i = 0; i < width; i++)
        b[i] = i < fill ? '#' : '.';
    b[width] = '\0';
    snprintf(out, n, "[%s] %5.1f%%", b, pct);
}

/* s cut to w characters from the left ("...39673/big-layer.tar"): the end of a location says
 * more than its start. */
static const char *tail_fit(const char *s, int w, char *out, size_t n)
{
    size_t len = strlen(s);
    if (w < 4 || len <= (size_t)w)
        return s;
    snprintf(out, n, "...%s", s + len - (size_t)(w - 3));
    return out;
}

static void age(int64_t ms, char *out, size_t n)
{
    if (!ms) {
        snprintf(out, n, "-");
        return;
    }
    format_duration_ms(now_ms() - ms, out, n);
}

/* ---- dashboard ------------------------------------------------------------------------------- */

static void draw_pool(const struct feed_pool *p, int y)
{
    if (!p->known) {
        put(y, 0, A_BOLD, "POOL %s: %s", p->name, p->note[0] ? p->note : "unknown");
        return;
    }
    char d[80], m[80], used[32], total[32];
    int w = COLS >= 110 ? 20 : 10;
    meter(d, sizeof(d), p->data_pct, w);
    meter(m, sizeof(m), p->meta_pct, w);
    format_bytes(p->data_used, used, sizeof(used));
    format_bytes(p->data_total, total, sizeof(total));
    put(y, 0, A_BOLD, "POOL %s", p->name);
    put(y, 6 + (int)strlen(p->name), 0, "data %s (%s of %s)  meta %s  mode %s%s%s", d, used, total,
        m, p->mode, p->usable ? "" : "  REFUSING: ", p->usable ? "" : p->note);
}

static void run_progress(const struct feed_run *r, char *out, size_t n)
{
    char d[24], t[24];
    if (r->total > 0) {
        format_bytes(r->done, d, sizeof(d));
        format_bytes(r->total, t, sizeof(t));
        snprintf(out, n, "%s %s/%s (%d%%)", r->phase, d, t,
                 (int)(100.0 * (double)r->done / (double)r->total));
    } else if (r->done > 0) {
        format_bytes(r->done, d, sizeof(d));
        snprintf(out, n, "%s %s", r->phase, d);
    } else {
        snprintf(out, n, "%s", r->phase[0] ? r->phase : "");
    }
}

/* Rows for each section: what it wants, cut to fit. */
static void allot(int avail, int want[4], int got[4])
{
    static const int shrink_order[] = {3, 1, 2, 0}; /* log, recent, activations, active */
    int total = 0;
    for (int i = 0; i < 4; i++) {
        got[i] = want[i];
        total += want[i];
    }
    for (int k = 0; k < 4 && total > avail; k++) {
        int i = shrink_order[k];
        int min = i == 3 ? 0 : 1;
        int cut = got[i] - min < total - avail ? got[i] - min : total - avail;
        got[i] -= cut;
        total -= cut;
    }
    if (total < avail) /* the log takes what is left */
        got[3] += avail - total;
}

static void draw_dashboard(struct monitor *m)
{
    const struct feed_snapshot *s = &m->snap;
    int y = 2;
    draw_pool(&s->pool, y++);
    if (s->error[0])
        put(y, 0, A_BOLD, "! %s%s%s%s", s->error_kind[0] ? "[" : "", s->error_kind,
            s->error_kind[0] ? "] " : "", s->error);
    else if (s->queues[0])
        put(y, 0, 0, "QUEUES %s", s->queues);
    y++;
    if (s->orphans[0])
        put(y++, 0, 0, "ORPHANS %s", s->orphans);
    const char *logs[FEED_MAX_LOGS];
    size_t nlogs = feed_logs(m->feed, logs, FEED_MAX_LOGS);
    int want[4] = {(int)(s->n_active ? s->n_active : 1) + 1, (int)(s->n_recent ? s->n_recent : 1),
                   (int)(s->n_acts ? s->n_acts : 1), s->live ? 3 : 1};
    want[0] = want[0] > 9 ? 9 : want[0];
    want[1] = want[1] > 6 ? 6 : want[1];
    want[2] = want[2] > 6 ? 6 : want[2];
    int got[4];
    int avail = LINES - y - 1 - 4; /* 4 section headers, the key bar */
    allot(avail < 4 ? 4 : avail, want, got);

    put(y++, 0, A_BOLD, "ACTIVE RUNS (%zu)", s->total_active);
    put(y++, 2, A_UNDERLINE, "%-8s %-26s %-16s %-34s %s", "MACHINE", "WHAT", "STATE", "PROGRESS",
        "ATTEMPT");
    int rows = got[0] - 1;
    if (s->n_active == 0 && rows > 0) {
        put(y++, 2, 0, "(none)");
        rows--;
    }
    for (size_t i = 0; i < s->n_active && rows > 0; i++, rows--) {
        const struct feed_run *r = &s->active[i];
        char prog[80], st[64], what[32];
        run_progress(r, prog, sizeof(prog));
        snprintf(st, sizeof(st), "%s%s", r->status[0] == 'p' ? "waiting " : "", r->state);
        put(y++, 2, 0, "%-8s %-26.26s %-16.16s %-34.34s %s", r->type,
            tail_fit(r->what, 26, what, sizeof(what)), st, prog, r->attempt ? "retrying" : "");
        if (r->attempt && r->error[0])
            put(y - 1, 2 + 8 + 1 + 26 + 1 + 16 + 1 + 34 + 1 + 9, 0, "%s", r->error);
    }
    y += rows > 0 ? rows : 0;

    put(y++, 0, A_BOLD, "RECENT RUNS");
    rows = got[1];
    if (s->n_recent == 0 && rows > 0) {
        put(y++, 2, 0, "(none)");
        rows--;
    }
    for (size_t i = 0; i < s->n_recent && rows > 0; i++, rows--) {
        const struct feed_run *r = &s->recent[i];
        char a[32], what[32];
        age(r->finished_ms ? r->finished_ms : r->created_ms, a, sizeof(a));
        put(y++, 2, !strcmp(r->outcome, "ok") || !strcmp(r->outcome, "handoff") ? 0 : A_BOLD,
            "%-13s %-8s %-26.26s %6s ago  %s", r->outcome, r->type,
            tail_fit(r->what, 26, what, sizeof(what)), a, r->error);
    }
    y += rows > 0 ? rows : 0;

    put(y++, 0, A_BOLD, "ACTIVATIONS (%zu)", s->n_acts);
    rows = got[2];
    if (s->n_acts == 0 && rows > 0) {
        put(y++, 2, 0, "(none)");
        rows--;
    }
    for (size_t i = 0; i < s->n_acts && rows > 0; i++, rows--) {
        const struct feed_act *a = &s->acts[i];
        put(y++, 2, 0, "%-24.24s %-20.20s %-9s %s", a->name, a->image, a->state, a->device);
    }
    y += rows > 0 ? rows : 0;

    put(y++, 0, A_BOLD, "LOG");
    rows = got[3];
    if (!s->live) {
        if (rows > 0)
            put(y, 2, 0, "(log lines come from a running daemon)");
        return;
    }
    size_t first = nlogs > (size_t)rows ? nlogs - (size_t)rows : 0;
    for (size_t i = first; i < nlogs && y < LINES - 1; i++)
        put(y++, 2, 0, "%s", logs[i]);
}

/* ---- the source browser ---------------------------------------------------------------------- */

static void load_catalog(struct monitor *m)
{
    m->status[0] = '\0';
    put(LINES - 2, 0, A_BOLD, "listing %s ...", m->o->browse ? m->o->browse : m->o->cfg->source);
    refresh();
    feed_catalog_load(m->o->cfg, m->o->source, m->o->browse, &m->cat);
    m->cat_loaded = true;
    m->sel = m->top = 0;
}

static void draw_source(struct monitor *m)
{
    const struct feed_catalog *c = &m->cat;
    int y = 2;
    put(y++, 0, A_BOLD, "SOURCE %s (%zu image%s and object%s)", c->source, c->n,
        c->n == 1 ? "" : "s", c->n == 1 ? "" : "s");
    if (c->error[0])
        put(y, 0, A_BOLD, "! %s", c->error);
    y++;
    put(y++, 2, A_UNDERLINE, "%-28s %-24s %s", "IMAGE", "SIZE", "LOCATION");
    int rows = LINES - y - 2; /* status line and key bar */
    if (rows < 1)
        return;
    if (m->sel < m->top)
        m->top = m->sel;
    if (m->sel >= m->top + (size_t)rows)
        m->top = m->sel - (size_t)rows + 1;
    for (size_t i = m->top; i < c->n && y < LINES - 2; i++) {
        const struct feed_entry *en = &c->v[i];
        bool sel = i == m->sel;
        if (sel) {
            attron(A_REVERSE);
            mvhline(y, 0, ' ', COLS);
            attroff(A_REVERSE);
        }
        put(y++, 0, sel ? A_REVERSE : 0, "%s %-28.28s %-24.24s %s", sel ? ">" : " ", en->label,
            en->info, en->location);
    }
}

static void start_selected(struct monitor *m)
{
    if (!m->cat.n) {
        snprintf(m->status, sizeof(m->status), "nothing to process");
        return;
    }
    const struct feed_entry *en = &m->cat.v[m->sel];
    char run[64];
    struct err e = {0};
    if (feed_process(m->feed, en->location, run, sizeof(run), &e) < 0)
        snprintf(m->status, sizeof(m->status), "cannot start process-image of %s: %s", en->label,
                 err_str(&e));
    else
        snprintf(m->status, sizeof(m->status),
                 "process-image %s started: run %s (see the dashboard, key 1)", en->label, run);
}

/* ---- frame and keys -------------------------------------------------------------------------- */

static void draw(struct monitor *m)
{
    erase();
    if (COLS < MONITOR_MIN_COLS || LINES < MONITOR_MIN_LINES) {
        put(0, 0, A_BOLD, "terminal too small (%dx%d); need %dx%d", COLS, LINES, MONITOR_MIN_COLS,
            MONITOR_MIN_LINES);
        refresh();
        return;
    }
    char title[512], clock[16];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
    snprintf(title, sizeof(title), " thinimg monitor | %s | state %s | %s",
             m->view == VIEW_DASHBOARD ? "dashboard" : "source", m->o->cfg->state_dir, clock);
    bar(0, title);
    put(1, 0, m->snap.live ? 0 : A_BOLD, "%s", m->snap.banner);
    if (m->view == VIEW_DASHBOARD)
        draw_dashboard(m);
    else
        draw_source(m);
    if (m->status[0])
        put(LINES - 2, 0, A_BOLD, "%s", m->status);
    if (m->view == VIEW_DASHBOARD)
        bar(LINES - 1, " q quit | 1 dashboard | 2/Tab source | r refresh");
    else
        bar(LINES - 1, m->snap.live ? " q quit | 1/Tab dashboard | Up/Down select | Enter "
                                      "process-image | l reload"
                                    : " q quit | 1/Tab dashboard | Up/Down select | l reload | "
                                      "read-only: cannot start work");
    refresh();
}

/* Returns false to quit. */
static bool on_key(struct monitor *m, int ch, int64_t *next_refresh)
{
    switch (ch) {
    case 'q':
    case 'Q':
        return false;
    case '1':
        m->view = VIEW_DASHBOARD;
        return true;
    case '2':
    case '\t':
        if (m->view == VIEW_SOURCE && ch == '\t') {
            m->view = VIEW_DASHBOARD;
            return true;
        }
        m->view = VIEW_SOURCE;
        if (!m->cat_loaded)
            load_catalog(m);
        return true;
    case 'r':
        *next_refresh = 0;
        return true;
    default:
        break;
    }
    if (m->view != VIEW_SOURCE)
        return true;
    size_t n = m->cat.n;
    switch (ch) {
    case KEY_UP:
    case 'k':
        if (m->sel > 0)
            m->sel--;
        break;
    case KEY_DOWN:
    case 'j':
        if (m->sel + 1 < n)
            m->sel++;
        break;
    case KEY_PPAGE:
        m->sel = m->sel > 10 ? m->sel - 10 : 0;
        break;
    case KEY_NPAGE:
        m->sel = n && m->sel + 10 < n ? m->sel + 10 : (n ? n - 1 : 0);
        break;
    case KEY_HOME:
        m->sel = 0;
        break;
    case KEY_END:
        m->sel = n ? n - 1 : 0;
        break;
    case 'l':
        load_catalog(m);
        break;
    case '\n':
    case '\r':
    case KEY_ENTER:
    case 'p':
        start_selected(m);
        *next_refresh = 0;
        break;
    default:
        break;
    }
    return true;
}

int monitor_run(const struct monitor_opts *o, struct err *e)
{
    struct monitor m = {.o = o};
    int r = curses_lib_load(e);
    if (r < 0)
        return r;
    r = feed_open(o->cfg, &m.feed);
    if (r < 0)
        return err_set(e, r, "out of memory");
    setlocale(LC_ALL, "");
    if (!newterm(NULL, stdout, stdin)) {
        feed_close(m.feed);
        return err_set(e, -ENOTTY, "cannot use this terminal (TERM=%s)",
                       getenv("TERM") ? getenv("TERM") : "unset");
    }
    if (o->inline_mode && enter_ca_mode && exit_ca_mode) {
        /* newterm() queued the switch to the alternate screen: let it out (refresh), switch
         * back, and forget both strings, so everything is drawn on the normal screen and stays
         * there when the monitor quits. */
        char *leave = exit_ca_mode;
        enter_ca_mode = NULL;
        exit_ca_mode = NULL;
        refresh();
        tputs(leave, 1, putchar);
        fflush(stdout);
        clearok(stdscr, TRUE);
    }
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    int refresh_ms = o->refresh_ms > 0 ? o->refresh_ms : MONITOR_DEFAULT_REFRESH_MS;
    int64_t next_refresh = 0;
    for (;;) {
        int64_t now = mono_ms();
        if (now >= next_refresh) {
            feed_refresh(m.feed, &m.snap);
            next_refresh = now + refresh_ms;
        }
        draw(&m);
        int wait = (int)(next_refresh - mono_ms());
        timeout(wait < 10 ? 10 : wait);
        int ch = getch();
        if (ch == ERR || ch == KEY_RESIZE)
            continue; /* KEY_RESIZE: ncurses has the new LINES/COLS; the loop redraws */
        if (!on_key(&m, ch, &next_refresh))
            break;
    }
    endwin();
    if (o->inline_mode)
        fputs("\n", stdout);
    feed_catalog_free(&m.cat);
    feed_close(m.feed);
    return 0;
}
