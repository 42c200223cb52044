#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "keel_wal_buffer.h"

// How it stays as safe as SQLite's own writes (docs/architecture.md, "A commit's log writes in
// one system call"):
// - Only files opened as write-ahead logs are buffered, and only contiguous writes; any other
//   call on the log (read, sync, size, truncate, close, ...) first writes what is held.
// - A transaction's last frame ends its buffer: once the page of a commit frame (a frame header
//   whose "database size" field is not zero) is in, the buffer goes to the file inside that
//   xWrite call, so a failed write fails the commit exactly as it would have without the buffer.
// - Before SQLite publishes a commit to other connections (it writes the second copy of the
//   wal-index header after xShmBarrier) and before it releases a lock on the wal-index, what the
//   process holds for that database's log is written. What a commit frame did not flush is a frame
//   of no commit yet, so a failed write there loses nothing committed, except at the barrier,
//   where the process aborts rather than publish a commit whose frames are not in the file.

/// Above this a buffer is written out before it grows further (a transaction of many pages).
/// SQLite's unix VFS writes at most 128 KiB per call (it masks the length with 0x1ffff, so a
/// longer write comes out short or empty and fails as SQLITE_FULL): stay below that.
#define KEEL_WAL_BUFFER_LIMIT (120 * 1024)
/// SQLite's WAL frame header; the only 24-byte writes it makes to a log.
#define KEEL_WAL_FRAME_HEADER 24

typedef struct BufferedFile BufferedFile;
struct BufferedFile {
    sqlite3_file base;
    sqlite3_file *real;
    int isLog;
    /// The file's path (SQLite keeps the name it opened a file with until the file is closed).
    const char *name;
    /// The writes SQLite asked of this handle, and those that reached the file.
    uint64_t requested;
    uint64_t written;
    // For logs, guarded by `lock`.
    /// KEEL_WAL_BUFFER_LIMIT bytes, allocated at the log's first write (readers never write).
    unsigned char *data;
    int length;
    sqlite3_int64 offset;
    /// The last write was the header of a commit frame: its page ends the transaction.
    int commitPageNext;
    /// `length > 0`, readable without the lock: a reader's log never holds anything, and its
    /// reads (every page it finds in the log) need not take the lock to learn that.
    atomic_int holding;
    BufferedFile *previousLog;
    BufferedFile *nextLog;
};

static sqlite3_vfs *realVFS;
static sqlite3_vfs bufferedVFS;
static pthread_once_t installOnce = PTHREAD_ONCE_INIT;
static int installResult = SQLITE_OK;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static BufferedFile *openLogs;
/// Logs whose buffer holds bytes: lets the barrier and unlocks skip the lock when none does.
static atomic_int pendingLogs;

static sqlite3_io_methods methods[3];

static const sqlite3_io_methods *realMethods(sqlite3_file *file) { return ((BufferedFile *)file)->real->pMethods; }

/// Writes to the file itself, counting the write.
static int writeThrough(BufferedFile *file, const void *data, int amount, sqlite3_int64 offset) {
    file->written += 1;
    return file->real->pMethods->xWrite(file->real, data, amount, offset);
}

/// Writes `file`'s buffer; the buffer is emptied whether or not the write succeeds (SQLite
/// rolls the transaction back on a failure, and its frames must not reach the file later).
/// Called with `lock` held.
static int flushLocked(BufferedFile *file) {
    if (file->length == 0) return SQLITE_OK;
    int rc = writeThrough(file, file->data, file->length, file->offset);
    file->length = 0;
    file->commitPageNext = 0;
    atomic_store(&file->holding, 0);
    atomic_fetch_sub(&pendingLogs, 1);
    return rc;
}

static int flush(BufferedFile *file) {
    if (!file->isLog || !atomic_load(&file->holding)) return SQLITE_OK;
    pthread_mutex_lock(&lock);
    int rc = flushLocked(file);
    pthread_mutex_unlock(&lock);
    return rc;
}

/// Whether `log` is the write-ahead log of the database `database` (SQLite names it after the
/// database's full path, with `-wal`).
static int isLogOf(const BufferedFile *log, const BufferedFile *database) {
    if (log->name == NULL || database->name == NULL) return 0;
    size_t length = strlen(database->name);
    return strncmp(log->name, database->name, length) == 0 && strcmp(log->name + length, "-wal") == 0;
}

/// Writes the buffers of `database`'s logs; at a barrier a failure aborts the process (see the
/// top).
static void flushLogsOf(BufferedFile *database, int abortOnFailure) {
    if (atomic_load(&pendingLogs) == 0) return;
    pthread_mutex_lock(&lock);
    for (BufferedFile *log = openLogs; log != NULL; log = log->nextLog) {
        if (!atomic_load(&log->holding) || !isLogOf(log, database)) continue;
        int rc = flushLocked(log);
        if (rc != SQLITE_OK) {
            sqlite3_log(rc, "keel-wal-buffer: writing held frames of %s failed", log->name);
            if (abortOnFailure) abort();
        }
    }
    pthread_mutex_unlock(&lock);
}

static int bufferedClose(sqlite3_file *file) {
    BufferedFile *buffered = (BufferedFile *)file;
    int rc = SQLITE_OK;
    if (buffered->isLog) {
        pthread_mutex_lock(&lock);
        rc = flushLocked(buffered);
        if (buffered->previousLog) buffered->previousLog->nextLog = buffered->nextLog;
        else openLogs = buffered->nextLog;
        if (buffered->nextLog) buffered->nextLog->previousLog = buffered->previousLog;
        pthread_mutex_unlock(&lock);
        free(buffered->data);
        buffered->data = NULL;
    }
    int closed = buffered->real->pMethods->xClose(buffered->real);
    return rc != SQLITE_OK ? rc : closed;
}

static int bufferedRead(sqlite3_file *file, void *data, int amount, sqlite3_int64 offset) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xRead(((BufferedFile *)file)->real, data, amount, offset);
}

static int append(BufferedFile *file, const void *data, int amount, sqlite3_int64 offset) {
    if (file->length > 0 && (offset != file->offset + file->length || file->length + amount > KEEL_WAL_BUFFER_LIMIT)) {
        int rc = flushLocked(file);
        if (rc != SQLITE_OK) return rc;
    }
    if (file->data == NULL) file->data = malloc(KEEL_WAL_BUFFER_LIMIT);
    // Too large to hold, or no memory to hold it in (then the buffer is empty): written as is.
    if (amount > KEEL_WAL_BUFFER_LIMIT || file->data == NULL) return writeThrough(file, data, amount, offset);
    if (file->length == 0) {
        file->offset = offset;
        atomic_store(&file->holding, 1);
        atomic_fetch_add(&pendingLogs, 1);
    }
    memcpy(file->data + file->length, data, (size_t)amount);
    file->length += amount;
    if (amount == KEEL_WAL_FRAME_HEADER) {
        const unsigned char *header = data;
        file->commitPageNext = (header[4] | header[5] | header[6] | header[7]) != 0;
        return SQLITE_OK;
    }
    if (file->commitPageNext) return flushLocked(file);
    return SQLITE_OK;
}

static int bufferedWrite(sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset) {
    BufferedFile *buffered = (BufferedFile *)file;
    if (!buffered->isLog) return buffered->real->pMethods->xWrite(buffered->real, data, amount, offset);
    pthread_mutex_lock(&lock);
    buffered->requested += 1;
    int rc = append(buffered, data, amount, offset);
    pthread_mutex_unlock(&lock);
    return rc;
}

static int bufferedTruncate(sqlite3_file *file, sqlite3_int64 size) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xTruncate(((BufferedFile *)file)->real, size);
}

static int bufferedSync(sqlite3_file *file, int flags) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xSync(((BufferedFile *)file)->real, flags);
}

static int bufferedFileSize(sqlite3_file *file, sqlite3_int64 *size) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xFileSize(((BufferedFile *)file)->real, size);
}

static int bufferedLock(sqlite3_file *file, int level) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xLock(((BufferedFile *)file)->real, level);
}

static int bufferedUnlock(sqlite3_file *file, int level) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xUnlock(((BufferedFile *)file)->real, level);
}

static int bufferedCheckReservedLock(sqlite3_file *file, int *reserved) {
    return realMethods(file)->xCheckReservedLock(((BufferedFile *)file)->real, reserved);
}

static int bufferedFileControl(sqlite3_file *file, int op, void *argument) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xFileControl(((BufferedFile *)file)->real, op, argument);
}

static int bufferedSectorSize(sqlite3_file *file) { return realMethods(file)->xSectorSize(((BufferedFile *)file)->real); }

static int bufferedDeviceCharacteristics(sqlite3_file *file) {
    return realMethods(file)->xDeviceCharacteristics(((BufferedFile *)file)->real);
}

static int bufferedShmMap(sqlite3_file *file, int region, int size, int extend, void volatile **mapped) {
    return realMethods(file)->xShmMap(((BufferedFile *)file)->real, region, size, extend, mapped);
}

static int bufferedShmLock(sqlite3_file *file, int offset, int count, int flags) {
    if (flags & SQLITE_SHM_UNLOCK) flushLogsOf((BufferedFile *)file, 0);
    return realMethods(file)->xShmLock(((BufferedFile *)file)->real, offset, count, flags);
}

static void bufferedShmBarrier(sqlite3_file *file) {
    flushLogsOf((BufferedFile *)file, 1);
    realMethods(file)->xShmBarrier(((BufferedFile *)file)->real);
}

static int bufferedShmUnmap(sqlite3_file *file, int deleteFlag) {
    flushLogsOf((BufferedFile *)file, 0);
    return realMethods(file)->xShmUnmap(((BufferedFile *)file)->real, deleteFlag);
}

static int bufferedFetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **pointer) {
    int rc = flush((BufferedFile *)file);
    if (rc != SQLITE_OK) return rc;
    return realMethods(file)->xFetch(((BufferedFile *)file)->real, offset, amount, pointer);
}

static int bufferedUnfetch(sqlite3_file *file, sqlite3_int64 offset, void *pointer) {
    return realMethods(file)->xUnfetch(((BufferedFile *)file)->real, offset, pointer);
}

/// The real file lives right after the BufferedFile, at an 8-byte boundary.
static size_t bufferedFileSize8(void) { return (sizeof(BufferedFile) + 7) & ~(size_t)7; }

static int bufferedOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *outFlags) {
    (void)vfs;
    BufferedFile *buffered = (BufferedFile *)file;
    memset(buffered, 0, sizeof(BufferedFile));
    buffered->real = (sqlite3_file *)((char *)file + bufferedFileSize8());
    int rc = realVFS->xOpen(realVFS, name, buffered->real, flags, outFlags);
    if (buffered->real->pMethods == NULL) return rc == SQLITE_OK ? SQLITE_CANTOPEN : rc;
    if (rc != SQLITE_OK) {
        buffered->real->pMethods->xClose(buffered->real);
        return rc;
    }
    int version = buffered->real->pMethods->iVersion;
    if (version < 1) version = 1;
    if (version > 3) version = 3;
    buffered->base.pMethods = &methods[version - 1];
    buffered->name = name;
    if (flags & SQLITE_OPEN_WAL) {
        buffered->isLog = 1;
        pthread_mutex_lock(&lock);
        buffered->nextLog = openLogs;
        if (openLogs) openLogs->previousLog = buffered;
        openLogs = buffered;
        pthread_mutex_unlock(&lock);
    }
    return SQLITE_OK;
}

static int bufferedDelete(sqlite3_vfs *vfs, const char *name, int syncDirectory) {
    (void)vfs;
    return realVFS->xDelete(realVFS, name, syncDirectory);
}

static int bufferedAccess(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return realVFS->xAccess(realVFS, name, flags, result);
}

static int bufferedFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return realVFS->xFullPathname(realVFS, name, size, out);
}

static void *bufferedDlOpen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return realVFS->xDlOpen(realVFS, name);
}

static void bufferedDlError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    realVFS->xDlError(realVFS, size, message);
}

static void (*bufferedDlSym(sqlite3_vfs *vfs, void *library, const char *symbol))(void) {
    (void)vfs;
    return realVFS->xDlSym(realVFS, library, symbol);
}

static void bufferedDlClose(sqlite3_vfs *vfs, void *library) {
    (void)vfs;
    realVFS->xDlClose(realVFS, library);
}

static int bufferedRandomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return realVFS->xRandomness(realVFS, size, out);
}

static int bufferedSleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return realVFS->xSleep(realVFS, microseconds);
}

static int bufferedCurrentTime(sqlite3_vfs *vfs, double *now) {
    (void)vfs;
    return realVFS->xCurrentTime(realVFS, now);
}

static int bufferedGetLastError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    return realVFS->xGetLastError ? realVFS->xGetLastError(realVFS, size, message) : 0;
}

static int bufferedCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    return realVFS->xCurrentTimeInt64(realVFS, now);
}

static int bufferedSetSystemCall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr call) {
    (void)vfs;
    return realVFS->xSetSystemCall(realVFS, name, call);
}

static sqlite3_syscall_ptr bufferedGetSystemCall(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return realVFS->xGetSystemCall(realVFS, name);
}

static const char *bufferedNextSystemCall(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return realVFS->xNextSystemCall(realVFS, name);
}

static void install(void) {
    installResult = sqlite3_initialize();
    if (installResult != SQLITE_OK) return;
    realVFS = sqlite3_vfs_find(NULL);
    if (realVFS == NULL) {
        installResult = SQLITE_ERROR;
        return;
    }
    for (int index = 0; index < 3; index++) {
        methods[index] = (sqlite3_io_methods){
            .iVersion = index + 1,
            .xClose = bufferedClose,
            .xRead = bufferedRead,
            .xWrite = bufferedWrite,
            .xTruncate = bufferedTruncate,
            .xSync = bufferedSync,
            .xFileSize = bufferedFileSize,
            .xLock = bufferedLock,
            .xUnlock = bufferedUnlock,
            .xCheckReservedLock = bufferedCheckReservedLock,
            .xFileControl = bufferedFileControl,
            .xSectorSize = bufferedSectorSize,
            .xDeviceCharacteristics = bufferedDeviceCharacteristics,
            .xShmMap = index >= 1 ? bufferedShmMap : NULL,
            .xShmLock = index >= 1 ? bufferedShmLock : NULL,
            .xShmBarrier = index >= 1 ? bufferedShmBarrier : NULL,
            .xShmUnmap = index >= 1 ? bufferedShmUnmap : NULL,
            .xFetch = index >= 2 ? bufferedFetch : NULL,
            .xUnfetch = index >= 2 ? bufferedUnfetch : NULL,
        };
    }
    bufferedVFS = (sqlite3_vfs){
        .iVersion = realVFS->iVersion < 3 ? realVFS->iVersion : 3,
        .szOsFile = (int)bufferedFileSize8() + realVFS->szOsFile,
        .mxPathname = realVFS->mxPathname,
        .zName = "keel-wal-buffer",
        .xOpen = bufferedOpen,
        .xDelete = bufferedDelete,
        .xAccess = bufferedAccess,
        .xFullPathname = bufferedFullPathname,
        .xDlOpen = bufferedDlOpen,
        .xDlError = bufferedDlError,
        .xDlSym = bufferedDlSym,
        .xDlClose = bufferedDlClose,
        .xRandomness = bufferedRandomness,
        .xSleep = bufferedSleep,
        .xCurrentTime = bufferedCurrentTime,
        .xGetLastError = bufferedGetLastError,
        .xCurrentTimeInt64 = realVFS->iVersion >= 2 ? bufferedCurrentTimeInt64 : NULL,
        .xSetSystemCall = realVFS->iVersion >= 3 ? bufferedSetSystemCall : NULL,
        .xGetSystemCall = realVFS->iVersion >= 3 ? bufferedGetSystemCall : NULL,
        .xNextSystemCall = realVFS->iVersion >= 3 ? bufferedNextSystemCall : NULL,
    };
    installResult = sqlite3_vfs_register(&bufferedVFS, 1);
}

int keel_wal_buffer_install(void) {
    pthread_once(&installOnce, install);
    return installResult;
}

int keel_wal_buffer_installed(void) { return sqlite3_vfs_find(NULL) == &bufferedVFS; }

void keel_wal_buffer_log_counts(const char *path, uint64_t *requested, uint64_t *written) {
    *requested = 0;
    *written = 0;
    pthread_mutex_lock(&lock);
    for (BufferedFile *log = openLogs; log != NULL; log = log->nextLog) {
        if (log->name == NULL || strcmp(log->name, path) != 0) continue;
        *requested += log->requested;
        *written += log->written;
    }
    pthread_mutex_unlock(&lock);
}
