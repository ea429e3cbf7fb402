/*
 * dynlib.c: load a shared library on first use and resolve its functions. See dynlib.h.
 */
#include "util/dynlib.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "util/log.h"

/* One lock for every library's first load: loads are rare (once per library and process) and
 * dlopen() serializes on the loader's own lock anyway. */
static pthread_mutex_t dynlib_mutex = PTHREAD_MUTEX_INITIALIZER;

/* The load itself, under dynlib_mutex: 1, or -ELIBACC with lib->error set. */
static int dynlib_open(struct dynlib *lib)
{
    void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lib->error, sizeof(lib->error),
                 "%s, needed by %s, cannot be loaded (%s); install %s", lib->soname, lib->used_for,
                 dlerror(), lib->package);
        return -ELIBACC;
    }
    for (size_t i = 0; i < lib->count; i++) {
        dlerror();
        void *fn = dlsym(h, lib->names[i]);
        if (!fn) {
            const char *why = dlerror();
            snprintf(lib->error, sizeof(lib->error),
                     "%s, needed by %s, has no function %s (%s): it is older than the one "
                     "thinimg was built with; install the current %s",
                     lib->soname, lib->used_for, lib->names[i], why ? why : "NULL", lib->package);
            dlclose(h);
            return -ELIBACC;
        }
        lib->slots[i] = fn;
    }
    /* The handle stays open for the life of the process: the slots point into it. */
    log_debug("library loaded", "soname=%s functions=%zu", lib->soname, lib->count);
    return 1;
}

int dynlib_load(struct dynlib *lib, struct err *e)
{
    int st = __atomic_load_n(&lib->state, __ATOMIC_ACQUIRE);
    if (st == 0) {
        pthread_mutex_lock(&dynlib_mutex);
        st = lib->state;
        if (st == 0) {
            st = dynlib_open(lib);
            __atomic_store_n(&lib->state, st, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&dynlib_mutex);
    }
    if (st < 0)
        return err_set(e, st, "%s", lib->error);
    return 0;
}

void *dynlib_fn(struct dynlib *lib, size_t i)
{
    if (dynlib_load(lib, NULL) == 0)
        return lib->slots[i];
    if (!__atomic_exchange_n(&lib->logged, true, __ATOMIC_ACQ_REL))
        log_error("library unavailable", "error=%s", lib->error);
    return NULL;
}

bool dynlib_loaded(const struct dynlib *lib)
{
    return __atomic_load_n(&lib->state, __ATOMIC_ACQUIRE) > 0;
}
