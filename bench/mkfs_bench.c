/*
 * mkfs_bench.c: benchmark helper for bench/vm.sh: runs thinimg's mkfs of a layer device
 * (dm_mkfs_ext4: the options the unpack machine uses, docs/dm.md) on DEV and prints the
 * seconds it took. The script compares it with mkfs.ext4 under the options thinimg used
 * before (zeroing the inode tables and the journal) on a device of the same size.
 *
 *   mkfs_bench DEV
 */
#include <stdio.h>

#include "dm/thin.h"
#include "util/log.h"
#include "util/timeutil.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkfs_bench DEV\n");
        return 2;
    }
    log_setup(LOG_FMT_LOGFMT, LOG_LVL_WARN, 2);
    struct err e = {0};
    double t0 = mono_s();
    if (dm_mkfs_ext4(argv[1], "bench", &e) < 0) {
        fprintf(stderr, "mkfs_bench: %s\n", err_str(&e));
        return 1;
    }
    printf("%.6f\n", mono_s() - t0);
    return 0;
}
