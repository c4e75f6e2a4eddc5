// libzstd (Debian's libzstd-dev): streaming decompression of zstd-compressed OCI layers.
#include <zstd.h>
