// The one C boundary of swift-lora: Debian's OpenBLAS (libopenblas-dev).
#include <cblas.h>
