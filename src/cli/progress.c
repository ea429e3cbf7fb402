/*
 * progress.c: live progress of pipeline runs on a terminal, event lines otherwise. See
 * progress.h.
 */
#include "cli/progress.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/views.h"
#include "util/timeutil.h"

/* An estimate past this is shown as this: it means "stalled", not a date. */
#define PROGRESS_ETA_MAX_S (100.0 * 3600)

#define PROGRESS_MAX_LINES 24

struct rate_sample {
    char version[FSM_ID_LEN + 1];
    uint64_t done;
    double at;
    double rate; /* bytes per second, smoothed */
};

struct seen_run {
    char version[FSM_ID_LEN + 1];
    char state[64];
    uint32_t attempt;
};

struct progress {
    struct fsm_manager *m; /* NULL: fed with progress_update() */
    struct seen_run seen[PROGRESS_MAX_LINES * 4];
    int nseen;
    FILE *out;
    bool tty, quiet;
    int drawn; /* lines drawn last time */
    pthread_mutex_t lock;
    struct rate_sample rates[PROGRESS_MAX_LINES];
    int nrates;
};

void progress_label(const char *type, const char *resource, char *out, size_t n)
{
    view_run_label(type, resource, out, n);
}

static void on_event(const struct fsm_event_info *ev, void *ud)
{
    struct progress *p = ud;
    if (p->quiet || p->tty)
        return;
    char label[96];
    progress_label(ev->run->type, ev->run->resource_id, label, sizeof(label));
    char dur[32] = "";
    if (ev->duration_ms > 0)
        format_duration_ms(ev->duration_ms, dur, sizeof(dur));
    pthread_mutex_lock(&p->lock);
    switch (ev->type) {
    case FSM_EV_COMPLETE:
        fprintf(p->out, "%-8s %-28s %s done%s%s\n", ev->run->type, label, ev->run->state,
                dur[0] ? " in " : "", dur);
        break;
    case FSM_EV_ERROR:
        fprintf(p->out, "%-8s %-28s %s failed (attempt %u), retrying: %s\n", ev->run->type, label,
                ev->run->state, ev->run->attempt + 1, ev->error ? ev->error : "");
        break;
    case FSM_EV_HALT:
        if (ev->outcome == FSM_HANDOFF)
            fprintf(p->out, "%-8s %-28s %s\n", ev->run->type, label,
                    ev->error && *ev->error ? ev->error : "already done");
        else
            fprintf(p->out, "%-8s %-28s %s: %s\n", ev->run->type, label,
                    fsm_outcome_name(ev->outcome), ev->error ? ev->error : "");
        break;
    case FSM_EV_RESUME:
        fprintf(p->out, "%-8s %-28s resumed at %s\n", ev->run->type, label,
                ev->run->state ? ev->run->state : "start");
        break;
    default: break;
    }
    fflush(p->out);
    pthread_mutex_unlock(&p->lock);
}

int progress_start(struct fsm_manager *m, FILE *out, bool tty, bool quiet, struct progress **out_p)
{
    struct progress *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->m = m;
    p->out = out;
    p->tty = tty;
    p->quiet = quiet;
    pthread_mutex_init(&p->lock, NULL);
    if (m)
        fsm_manager_set_observer(m, on_event, p);
    *out_p = p;
    return 0;
}

struct draw_ctx {
    struct progress *p;
    char lines[PROGRESS_MAX_LINES][160];
    int n;
};

static double rate_for(struct progress *p, const struct fsm_run_record *r)
{
    double now = mono_s();
    for (int i = 0; i < p->nrates; i++) {
        struct rate_sample *s = &p->rates[i];
        if (strcmp(s->version, r->version.s) != 0)
            continue;
        double dt = now - s->at;
        if (dt >= 0.5) {
            double inst = r->progress_done >= s->done ? (double)(r->progress_done - s->done) / dt
                                                      : 0;
            s->rate = s->rate > 0 ? 0.6 * s->rate + 0.4 * inst : inst;
            s->done = r->progress_done;
            s->at = now;
        }
        return s->rate;
    }
    int i = p->nrates < PROGRESS_MAX_LINES ? p->nrates++ : 0;
    snprintf(p->rates[i].version, sizeof(p->rates[i].version), "%s", r->version.s);
    p->rates[i].done = r->progress_done;
    p->rates[i].at = now;
    p->rates[i].rate = 0;
    return 0;
}

static int draw_run(const struct fsm_run_record *r, void *ud)
{
    struct draw_ctx *c = ud;
    if (c->n >= PROGRESS_MAX_LINES || !strcmp(r->type, "process"))
        return 0;
    char label[96], amount[64] = "", rate[64] = "";
    progress_label(r->type, r->resource_id, label, sizeof(label));
    const char *phase = r->phase && *r->phase ? r->phase : (r->state ? r->state : "queued");
    if (r->status == FSM_RUN_PENDING)
        phase = "waiting";
    if (r->progress_total > 0 || r->progress_done > 0) {
        char d[24], t[24];
        format_bytes(r->progress_done, d, sizeof(d));
        if (r->progress_total > 0) {
            format_bytes(r->progress_total, t, sizeof(t));
            snprintf(amount, sizeof(amount), "%s / %s (%d%%)", d, t,
                     (int)(100.0 * (double)r->progress_done / (double)r->progress_total));
        } else {
            snprintf(amount, sizeof(amount), "%s", d);
        }
        double bps = rate_for(c->p, r);
        if (bps > 0) {
            char b[24], eta[32] = "";
            format_bytes((uint64_t)bps, b, sizeof(b));
            if (r->progress_total > r->progress_done) {
                char left[24];
                double s = (double)(r->progress_total - r->progress_done) / bps;
                if (s > PROGRESS_ETA_MAX_S)
                    s = PROGRESS_ETA_MAX_S;
                format_duration_ms((int64_t)(s * 1000), left, sizeof(left));
                snprintf(eta, sizeof(eta), ", %s left", left);
            }
            snprintf(rate, sizeof(rate), "%s/s%s", b, eta);
        }
    }
    char attempt[32] = "";
    if (r->attempt > 0)
        snprintf(attempt, sizeof(attempt), " (attempt %u)", r->attempt + 1);
    snprintf(c->lines[c->n++], sizeof(c->lines[0]), "  %-8s %-28.28s %-14.14s %-30s %s%s",
             r->type, label, phase, amount, rate, attempt);
    return 0;
}

/* Redraw the block from the lines in c (tty). */
static void draw_block(struct progress *p, const struct draw_ctx *c)
{
    pthread_mutex_lock(&p->lock);
    if (p->drawn > 0)
        fprintf(p->out, "\033[%dA", p->drawn); /* back to the top of the block */
    for (int i = 0; i < c->n; i++)
        fprintf(p->out, "\033[2K%s\n", c->lines[i]);
    for (int i = c->n; i < p->drawn; i++)
        fprintf(p->out, "\033[2K\n");
    if (p->drawn > c->n)
        fprintf(p->out, "\033[%dA", p->drawn - c->n);
    p->drawn = c->n;
    fflush(p->out);
    pthread_mutex_unlock(&p->lock);
}

void progress_tick(struct progress *p)
{
    if (!p || p->quiet || !p->tty || !p->m)
        return;
    struct draw_ctx c = {.p = p};
    fsm_list_active(p->m, draw_run, &c);
    draw_block(p, &c);
}

/* Without an observer (runs in a daemon): event lines from what changed between two lists. */
static void note_changes(struct progress *p, const struct fsm_run_record *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct fsm_run_record *r = &v[i];
        struct seen_run *s = NULL;
        for (int k = 0; k < p->nseen; k++)
            if (!strcmp(p->seen[k].version, r->version.s))
                s = &p->seen[k];
        char label[96];
        progress_label(r->type, r->resource_id, label, sizeof(label));
        if (s && strcmp(s->state, r->state ? r->state : "") != 0 && s->state[0])
            fprintf(p->out, "%-8s %-28s %s done\n", r->type, label, s->state);
        else if (s && r->attempt > s->attempt)
            fprintf(p->out, "%-8s %-28s %s failed (attempt %u), retrying: %s\n", r->type, label,
                    r->state ? r->state : "", r->attempt, r->error ? r->error : "");
        if (!s) {
            if (p->nseen >= PROGRESS_MAX_LINES * 4)
                continue;
            s = &p->seen[p->nseen++];
            snprintf(s->version, sizeof(s->version), "%s", r->version.s);
        }
        snprintf(s->state, sizeof(s->state), "%s", r->state ? r->state : "");
        s->attempt = r->attempt;
    }
    fflush(p->out);
}

void progress_update(struct progress *p, const struct fsm_run_record *v, size_t n)
{
    if (!p || p->quiet)
        return;
    if (!p->tty) {
        note_changes(p, v, n);
        return;
    }
    struct draw_ctx c = {.p = p};
    for (size_t i = 0; i < n; i++)
        draw_run(&v[i], &c);
    draw_block(p, &c);
}

void progress_stop(struct progress *p)
{
    if (!p)
        return;
    if (p->m)
        fsm_manager_set_observer(p->m, NULL, NULL);
    pthread_mutex_lock(&p->lock);
    if (p->tty && p->drawn > 0) {
        fprintf(p->out, "\033[%dA", p->drawn);
        for (int i = 0; i < p->drawn; i++)
            fprintf(p->out, "\033[2K\n");
        fprintf(p->out, "\033[%dA", p->drawn);
        fflush(p->out);
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
