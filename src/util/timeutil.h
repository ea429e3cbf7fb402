/*
 * timeutil.h: clocks and time formatting. Wall-clock milliseconds (CLOCK_REALTIME) are what
 * the database stores; monotonic milliseconds are for timeouts and durations only.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

int64_t now_ms(void);           /* Unix time in ms */
int64_t mono_ms(void);          /* CLOCK_MONOTONIC in ms */
double mono_s(void);            /* CLOCK_MONOTONIC in seconds, for benchmarks */
/* "2026-11-26T04:49:16.123Z" (UTC) into out (at least 32 bytes). */
void format_rfc3339_ms(int64_t ms, char *out, size_t n);
/* Human duration, e.g. "1.2s", "3m04s", "2h10m". */
void format_duration_ms(int64_t ms, char *out, size_t n);
/* Human size, e.g. "12.3 MiB". */
void format_bytes(uint64_t bytes, char *out, size_t n);
/* Sleep ms milliseconds (restarts on EINTR). */
void sleep_ms(int64_t ms);
