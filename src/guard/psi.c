/*
 * psi.c: parsing /proc/pressure files. See psi.h.
 */
#include "guard/psi.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/buf.h"
#include "util/cleanup.h"
#include "util/fsutil.h"

/* A pressure file is two short lines; anything longer is not one. */
#define PSI_FILE_MAX 512

const char *psi_resource_name(enum psi_resource r)
{
    static const char *const names[PSI_N] = {"cpu", "io", "memory"};
    return r < PSI_N ? names[r] : "unknown";
}

static void parse_line(const char *line, struct psi_line *out)
{
    double a10 = 0, a60 = 0, a300 = 0;
    unsigned long long total = 0;
    /* "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" after the first word */
    if (sscanf(line, "%*s avg10=%lf avg60=%lf avg300=%lf total=%llu", &a10, &a60, &a300, &total) ==
        4)
        *out = (struct psi_line){
            .present = true, .avg10 = a10, .avg60 = a60, .avg300 = a300, .total_us = total};
}

int psi_parse(const char *text, struct psi *out)
{
    *out = (struct psi){0};
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, "some ", 5))
            parse_line(p, &out->some);
        else if (!strncmp(p, "full ", 5))
            parse_line(p, &out->full);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return out->some.present ? 0 : -ENODATA;
}

int psi_read(const char *proc_root, enum psi_resource r, struct psi *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/pressure/%s", proc_root ? proc_root : "/proc",
             psi_resource_name(r));
    _cleanup_buf_ struct buf b = BUF_INIT;
    int rc = read_file(path, PSI_FILE_MAX, &b);
    if (rc < 0) {
        *out = (struct psi){0};
        return rc;
    }
    return psi_parse(b.data ? b.data : "", out);
}
