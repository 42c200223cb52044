// A VFS over SQLite's default one that gathers the writes of a transaction to its write-ahead log
// into one `pwrite`: SQLite writes each WAL frame's 24-byte header and its page apart, so a
// commit of six pages cost twelve system calls on the coordinator's busiest thread.
#ifndef KEEL_WAL_BUFFER_H
#define KEEL_WAL_BUFFER_H

#include <stdint.h>

/// Registers the VFS as the process's default (once; later calls do nothing). Connections opened
/// before keep the VFS they had. Returns an SQLite result code.
int keel_wal_buffer_install(void);

/// Whether the VFS is the process's default now.
int keel_wal_buffer_installed(void);

/// For the write-ahead log at `path` (the database's path with `-wal`), over the handles open to
/// it now: the writes SQLite asked, and those that reached the file.
void keel_wal_buffer_log_counts(const char *path, uint64_t *requested, uint64_t *written);

#endif
