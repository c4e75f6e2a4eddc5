#define _GNU_SOURCE
#include <fcntl.h>
#if defined(__linux__) && defined(__GLIBC__)
#include <malloc.h>
#endif
#include "CLinux.h"

int wharf_start_writeback(int fd, int64_t offset, int64_t length) {
#ifdef __linux__
    return sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

int wharf_release_free_memory(void) {
#if defined(__linux__) && defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}
