// SQLite's session extension (changesets) for the replicated history: Debian's libsqlite3 is
// built with it, but its declarations in sqlite3.h are behind SQLITE_ENABLE_SESSION. These
// wrappers take the connection as an opaque pointer, so Swift needs no SQLite module of its own.
#ifndef KEEL_SQLITE_SESSION_H
#define KEEL_SQLITE_SESSION_H

/// Starts recording every change to the connection's main database. Returns an SQLite result
/// code; on success `*session` is set.
int keel_session_begin(void *connection, void **session);

/// The changes recorded so far as a changeset (`*bytes` from sqlite3_malloc: free it with
/// keel_session_free_bytes; NULL with `*count` 0 when nothing changed).
int keel_session_changeset(void *session, int *count, void **bytes);

/// Stops recording and frees the session (NULL: nothing).
void keel_session_end(void *session);

void keel_session_free_bytes(void *bytes);

/// Applies a changeset to the connection's main database, inside the caller's transaction. Any
/// conflict (a row missing, different or already there) aborts it: a follower that applies
/// every changeset of the log in order never meets one, so one means the files diverged.
/// `*conflicts` counts them. Returns an SQLite result code (SQLITE_ABORT after a conflict).
int keel_changeset_apply(void *connection, int count, const void *bytes, int *conflicts);

#endif
