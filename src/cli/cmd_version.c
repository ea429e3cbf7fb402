/*
 * cmd_version.c: `thinimg version`: the version and the library versions it runs with.
 */
#include <archive.h>
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <libdevmapper.h>
#include <openssl/opensslv.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "source/curl_lib.h"
#include "util/archive_lib.h"
#include "util/crypto_lib.h"
#include "util/version.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: thinimg version [--json]\n\nPrint thinimg's version and the versions "
                 "of the libraries it runs with (those loaded on first use, libarchive and "
                 "libcurl: as built "
                 "with).\n");
}

int cmd_version(struct cli *cli, int argc, char **argv)
{
    (void)cli;
    bool json = false;
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = cli_common_option("version", c, usage, &json, NULL);
        if (rc != CLI_OPTION_TAKEN)
            return rc;
    }
    int operands_rc = cli_check_operands("version", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    char dm[64] = "unknown";
    dm_get_library_version(dm, sizeof(dm));
    /* libcurl, libarchive and libcrypto are loaded on first use (source/curl_lib.h,
     * util/archive_lib.h, util/crypto_lib.h) and `version` does not use them: their versions
     * are the ones thinimg was built with; the soname says which library is loaded. */
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "version", THINIMG_VERSION,
                              "sqlite", sqlite3_libversion(), "libarchive",
                              ARCHIVE_VERSION_ONLY_STRING, "libdevmapper", dm, "curl",
                              LIBCURL_VERSION, "openssl", OPENSSL_VERSION_TEXT);
        cli_print_json(o);
        return EXIT_OK;
    }
    printf("thinimg %s\n", THINIMG_VERSION);
    printf("  sqlite %s, libdevmapper %s\n", sqlite3_libversion(), dm);
    printf("  loaded on use, as built with: libarchive %s (%s), curl %s (%s), %s (%s)\n",
           ARCHIVE_VERSION_ONLY_STRING, archive_lib_soname(), LIBCURL_VERSION, curl_lib_soname(),
           OPENSSL_VERSION_TEXT, crypto_lib_soname());
    return EXIT_OK;
}
