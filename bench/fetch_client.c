/*
 * fetch_client.c: the benchmark's thinimg side: the fetch machine's download core
 * (fetch_stream_object: ranged GET through the source layer, sha256 of every byte, buffered
 * writes) into a file, then fsync, exactly as the download step does, without the database.
 *
 *   fetch_client LOCATION OUT      (S3 endpoint from AWS_ENDPOINT_URL)
 *
 * Prints "bytes seconds digest".
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "pipeline/fetch.h"
#include "util/hash.h"
#include "util/timeutil.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fetch_client LOCATION OUT\n");
        return 2;
    }
    struct source *s = NULL;
    char *key = NULL;
    struct err e = {0};
    if (source_open(argv[1], NULL, &s, &key, &e) < 0) {
        fprintf(stderr, "%s\n", err_str(&e));
        return 1;
    }
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    struct sha256 h;
    sha256_init(&h);
    struct fetch_stream st = {.fd = fd, .hash = &h};
    struct source_get_info info;
    double t0 = mono_s();
    int r = fetch_stream_object(s, key, 0, NULL, &st, &info, &e);
    if (r == 0 && fsync(fd) < 0)
        r = -1;
    double dt = mono_s() - t0;
    if (r < 0) {
        fprintf(stderr, "fetch failed: %s\n", err_str(&e));
        return 1;
    }
    uint8_t d[SHA256_LEN];
    char digest[DIGEST_STR_LEN + 1];
    sha256_final(&h, d);
    digest_format(d, digest);
    printf("%" PRIu64 " %.3f %s\n", info.bytes, dt, digest);
    close(fd);
    source_free(s);
    return 0;
}
