/*
 * fault.h: named fault-injection points for crash tests (as SQLite does with its test hooks).
 *
 * The pipeline calls fault_point("unpack.apply-layer.start") and friends at each transition's
 * start and end; a backend may name points inside its own steps (overlay.make-root,
 * backend_overlay.c). When the environment variable THINIMG_FAULT names that point, the process
 * kills itself with SIGKILL there: at once ("unpack.apply-layer.start"), or from a timer after
 * a delay ("unpack.apply-layer.start+300ms", to land in the middle of long work). Several points
 * may be listed, comma-separated. THINIMG_FAULT_SKIP=N lets the first N matches pass (to kill at
 * the Nth layer's transition, say). "unpack.apply-layer.start:stop" stops the process there with
 * SIGSTOP instead (a test holds it at a known point while it holds its locks; SIGCONT resumes),
 * once per process: later matches pass (the next layer's apply-layer must not stop it again).
 *
 * Without THINIMG_FAULT this is one cached getenv() per process and a branch per call.
 */
#pragma once

void fault_point(const char *name);
