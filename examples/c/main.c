/*
 * Loads Kubernetes manifests, picks endpoints for a destination, and prints
 * them, one per line: the C version of `pobox -f FILE resolve DEST --count N`.
 *
 *   cc main.c $(pkg-config --cflags --libs pobox-static) -o pick
 *   ./pick ../k8s/demo.yaml web.default:http 5
 */
#include <pobox.h>

#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, pobox_result r) {
  char message[512];
  size_t written;
  if (pobox_last_error(message, sizeof message, &written) != POBOX_OK) message[0] = '\0';
  fprintf(stderr, "%s: %s: %s\n", what, pobox_result_name(r), message);
  return 1;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  unsigned char *buf = NULL;
  size_t cap = 0;
  *len = 0;
  for (;;) {
    if (*len == cap) {
      cap = cap ? cap * 2 : 4096;
      unsigned char *grown = realloc(buf, cap);
      if (grown == NULL) break;
      buf = grown;
    }
    size_t n = fread(buf + *len, 1, cap - *len, f);
    if (n == 0) break;
    *len += n;
  }
  fclose(f);
  return buf;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MANIFEST DEST [COUNT]\n", argv[0]);
    return 2;
  }
  int count = argc > 3 ? atoi(argv[3]) : 1;

  size_t len = 0;
  unsigned char *doc = read_file(argv[1], &len);
  if (doc == NULL) {
    perror(argv[1]);
    return 2;
  }

  pobox_mesh *mesh = NULL;
  pobox_result r = pobox_mesh_new("{\"node\":\"node-a\",\"zone\":\"zone-a\"}", &mesh);
  if (r != POBOX_OK) return fail("pobox_mesh_new", r);
  r = pobox_mesh_apply(mesh, doc, len);
  free(doc);
  if (r != POBOX_OK) {
    pobox_mesh_free(mesh);
    return fail(argv[1], r);
  }

  int status = 0;
  for (int i = 0; i < count; i++) {
    char endpoint[POBOX_ADDRSTRLEN];
    size_t written;
    r = pobox_mesh_pick(mesh, argv[2], NULL, endpoint, sizeof endpoint, &written);
    if (r != POBOX_OK) {
      status = fail(argv[2], r);
      break;
    }
    printf("%s\n", endpoint);
  }
  pobox_mesh_free(mesh);
  return status;
}
