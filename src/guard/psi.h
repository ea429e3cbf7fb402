/*
 * psi.h: the kernel's pressure stall information (/proc/pressure/{cpu,io,memory}).
 *
 * Each file has a "some" line (share of time at least one task stalled on the resource) and,
 * for io and memory (cpu too since 5.13), a "full" line (share of time all non-idle tasks
 * stalled): avg10/avg60/avg300 in percent and total in microseconds. A kernel built without
 * CONFIG_PSI, or booted with psi=0, has no such files (or they fail to read with EOPNOTSUPP).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct psi_line {
    bool present;
    double avg10, avg60, avg300; /* percent */
    uint64_t total_us;
};

struct psi {
    struct psi_line some, full;
};

enum psi_resource { PSI_CPU = 0, PSI_IO, PSI_MEMORY, PSI_N };
const char *psi_resource_name(enum psi_resource r); /* "cpu", "io", "memory" */

/* Parse a pressure file's text. -ENODATA when it has no "some" line. */
int psi_parse(const char *text, struct psi *out);

/* Read <proc_root>/pressure/<resource> (proc_root NULL = /proc). -ENOENT or -EOPNOTSUPP when
 * the kernel has no PSI. */
int psi_read(const char *proc_root, enum psi_resource r, struct psi *out);
