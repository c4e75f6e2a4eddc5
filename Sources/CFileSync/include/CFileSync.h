#ifndef WHARF_CFILESYNC_H
#define WHARF_CFILESYNC_H

#include <stdint.h>

/// Starts writeback of a file range without waiting for it (Linux sync_file_range with
/// SYNC_FILE_RANGE_WRITE). Swift's Glibc module does not see it: it is behind _GNU_SOURCE.
/// Returns 0, or -1 with errno set; elsewhere than Linux it does nothing and returns 0.
int wharf_start_writeback(int fd, int64_t offset, int64_t length);

#endif
