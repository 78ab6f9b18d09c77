// C helpers shared by the package's cgo preambles.
#ifndef POBOX_GO_H
#define POBOX_GO_H

#include <stdlib.h>
#include <pobox.h>

// The last error is per OS thread, and a goroutine may move between threads
// from one cgo call to the next: each wrapper fetches the message in the
// same call that failed. On failure the result is a malloc'ed string (free
// it); NULL on success.
static inline char *pobox_go_error(pobox_result r) {
	if (r == POBOX_OK) return NULL;
	size_t needed = 0, written = 0;
	pobox_last_error(NULL, 0, &needed);
	char *buf = malloc(needed > 0 ? needed : 1);
	if (buf == NULL) return NULL;
	if (pobox_last_error(buf, needed, &written) != POBOX_OK) buf[0] = 0;
	return buf;
}

#endif
