// The one C boundary of swift-lora: Debian's OpenBLAS (libopenblas-dev), with its LAPACK.
#include <cblas.h>
#include <stddef.h>

// LAPACK's divide-and-conquer SVD, as OpenBLAS exports it (Fortran calling convention: every
// argument by pointer, then the hidden length of each character argument).
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s, float *u, const int *ldu,
             float *vt, const int *ldvt, float *work, const int *lwork, int *iwork, int *info, size_t jobz_len);
