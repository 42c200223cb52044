#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

#include "keel_sqlite_session.h"

int keel_session_begin(void *connection, void **session) {
    sqlite3_session *created = 0;
    int rc = sqlite3session_create((sqlite3 *)connection, "main", &created);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3session_attach(created, 0);
    if (rc != SQLITE_OK) {
        sqlite3session_delete(created);
        return rc;
    }
    *session = created;
    return SQLITE_OK;
}

int keel_session_changeset(void *session, int *count, void **bytes) {
    return sqlite3session_changeset((sqlite3_session *)session, count, bytes);
}

void keel_session_end(void *session) {
    if (session != 0) sqlite3session_delete((sqlite3_session *)session);
}

void keel_session_free_bytes(void *bytes) { sqlite3_free(bytes); }

static int abort_on_conflict(void *context, int reason, sqlite3_changeset_iter *iterator) {
    (void)reason;
    (void)iterator;
    *(int *)context += 1;
    return SQLITE_CHANGESET_ABORT;
}

int keel_changeset_apply(void *connection, int count, const void *bytes, int *conflicts) {
    *conflicts = 0;
    return sqlite3changeset_apply((sqlite3 *)connection, count, (void *)bytes, 0, abort_on_conflict, conflicts);
}
