#ifndef WHARF_CLINUX_H
#define WHARF_CLINUX_H

#include <stdint.h>

// Linux calls that Swift's Glibc module does not expose (they sit behind _GNU_SOURCE or in
// headers it does not import). Elsewhere than Linux/glibc each does nothing and returns 0.

/// Starts writeback of a file range without waiting for it (sync_file_range with
/// SYNC_FILE_RANGE_WRITE). Returns 0, or -1 with errno set.
int wharf_start_writeback(int fd, int64_t offset, int64_t length);

/// Hands malloc's free memory back to the system (glibc malloc_trim(0)). Returns 1 if memory was released.
int wharf_release_free_memory(void);

#endif
