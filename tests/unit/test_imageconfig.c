/*
 * test_imageconfig.c: what process-image keeps of a registry image besides its layers
 * (pipeline/imageconfig.h, store/oci.h): the manifest and config stored as blobs with the
 * exact bytes, their rows, the run settings summarised from the config (registry.h
 * registry_config_summary) and shown by list-images --json / the API (daemon/views.h), gc
 * keeping both blobs while the image exists and listing them once it is removed, and diff ids
 * going with their blob.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/views.h"
#include "pipeline/imageconfig.h"
#include "pipeline/imagedb.h"
#include "source/registry.h"
#include "store/blobs.h"
#include "store/oci.h"
#include "store/stmt.h"
#include "testutil.h"
#include "util/cleanup.h"

static const char CONFIG[] =
    "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/bin/app\","
    "\"--serve\"],\"Cmd\":[\"x\"],\"Env\":[\"PATH=/bin\",\"A=1\"],\"WorkingDir\":\"/srv\","
    "\"User\":\"1000:1000\",\"ExposedPorts\":{\"8080/tcp\":{}},\"Labels\":{\"evil\":[1]},"
    "\"Volumes\":null},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
static const char MANIFEST[] = "{\"schemaVersion\":2,\"mediaType\":"
                               "\"application/vnd.oci.image.manifest.v1+json\",\"layers\":[]}";

static char *digest_of(const char *s)
{
    uint8_t h[SHA256_LEN];
    assert_int_equal(sha256_buf(s, strlen(s), h), 0);
    char *d = malloc(DIGEST_STR_LEN + 1);
    digest_format(h, d);
    return d;
}

static void registry_ref(struct image_ref *ref)
{
    *ref = (struct image_ref){.kind = REF_REGISTRY};
    ref->manifest = strdup(MANIFEST);
    ref->manifest_len = strlen(MANIFEST);
    ref->config = strdup(CONFIG);
    ref->config_len = strlen(CONFIG);
    ref->manifest_digest = digest_of(MANIFEST);
    ref->config_digest = digest_of(CONFIG);
    ref->manifest_media_type = strdup("application/vnd.oci.image.manifest.v1+json");
    ref->platform = strdup("linux/amd64");
    assert_int_equal(registry_config_summary(CONFIG, strlen(CONFIG), &ref->run_config, NULL), 0);
}

static int collect(const char *digest, const char *path, uint64_t size, void *ud)
{
    (void)path, (void)size;
    strcat(ud, digest);
    strcat(ud, " ");
    return 0;
}

static void test_store_record_show(void **state)
{
    (void)state;
    struct tu_db t;
    assert_int_equal(tu_db_open("imageconfig", &t), 0);
    char blob_dir[4096], tmp_dir[4096];
    snprintf(blob_dir, sizeof(blob_dir), "%s/blobs", t.dir);
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", t.dir);
    struct image_ref ref;
    registry_ref(&ref);

    /* The run settings: the fields a launcher needs, hostile extras dropped. */
    json_t *run = json_loads(ref.run_config, 0, NULL);
    assert_non_null(run);
    assert_string_equal(json_string_value(json_array_get(json_object_get(run, "entrypoint"), 1)),
                        "--serve");
    assert_int_equal(json_array_size(json_object_get(run, "env")), 2);
    assert_string_equal(json_string_value(json_object_get(run, "working_dir")), "/srv");
    assert_string_equal(json_string_value(json_object_get(run, "user")), "1000:1000");
    assert_string_equal(json_string_value(json_array_get(json_object_get(run, "exposed_ports"), 0)),
                        "8080/tcp");
    assert_null(json_object_get(run, "Labels"));
    json_decref(run);

    /* The bytes land in the store by digest, exactly; a second store keeps the file. */
    struct imageconfig c;
    struct err e = {0};
    for (int round = 0; round < 2; round++) {
        assert_int_equal(imageconfig_store_files(t.db, blob_dir, tmp_dir, &ref, &c, &e), 1);
        _cleanup_free_ char *mp = blobfile_path(blob_dir, ref.manifest_digest);
        _cleanup_free_ char *cp = blobfile_path(blob_dir, ref.config_digest);
        size_t n = 0;
        _cleanup_free_ char *mb = tu_read_file(mp, &n);
        assert_true(mb && n == strlen(MANIFEST) && !memcmp(mb, MANIFEST, n));
        _cleanup_free_ char *cb = tu_read_file(cp, &n);
        assert_true(cb && n == strlen(CONFIG) && !memcmp(cb, CONFIG, n));
        if (round == 0)
            imageconfig_free(&c);
    }

    int64_t id = 0;
    assert_int_equal(imagedb_image_upsert(t.db, "docker://h/r@x", "r:1", &id), 0);
    assert_int_equal(imageconfig_record(t.db, id, &c), 0);
    imageconfig_free(&c);
    int64_t n = 0;
    assert_int_equal(db_query_int(t.db,
                                  "SELECT count(*) FROM blobs WHERE media_type IN "
                                  "('application/vnd.oci.image.manifest.v1+json', "
                                  "'application/vnd.oci.image.config.v1+json')",
                                  &n),
                     1);
    assert_int_equal(n, 2);

    /* list-images --json and the API: the config with the image. */
    struct image_rec img = {0};
    assert_int_equal(imagedb_image_get(t.db, id, &img), 0);
    json_t *v = view_image(t.db, &img);
    json_t *vc = json_object_get(v, "config");
    assert_string_equal(json_string_value(json_object_get(vc, "config_digest")), ref.config_digest);
    assert_string_equal(json_string_value(json_object_get(vc, "platform")), "linux/amd64");
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(vc, "run"), "entrypoint"), 0)),
                        "/bin/app");
    json_decref(v);

    /* gc keeps both while the image exists, and lists them once it is gone. */
    char seen[1024] = "";
    assert_int_equal(blobs_list_unreferenced(t.db, collect, seen), 0);
    assert_string_equal(seen, "");
    assert_int_equal(imagedb_image_delete(t.db, id), 0);
    assert_int_equal(blobs_list_unreferenced(t.db, collect, seen), 0);
    assert_non_null(strstr(seen, ref.manifest_digest));
    assert_non_null(strstr(seen, ref.config_digest));

    /* A diff id goes with its blob. */
    char d[DIGEST_STR_LEN + 1];
    assert_int_equal(oci_diff_id_set(t.db, ref.config_digest, ref.manifest_digest), 0);
    assert_int_equal(oci_diff_id_get(t.db, ref.config_digest, d), 1);
    assert_string_equal(d, ref.manifest_digest);
    assert_int_equal(blobs_delete(t.db, ref.config_digest), 0);
    assert_int_equal(oci_diff_id_get(t.db, ref.config_digest, d), 0);

    /* Bytes that are not their digest are never stored. */
    free(ref.config_digest);
    ref.config_digest = digest_of("something else");
    e = (struct err){0};
    assert_int_equal(imageconfig_store_files(t.db, blob_dir, tmp_dir, &ref, &c, &e), -EBADMSG);

    image_rec_free(&img);
    image_ref_free(&ref);
    tu_db_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_record_show),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
