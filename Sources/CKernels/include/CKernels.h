#ifndef SWIFT_LORA_CKERNELS_H
#define SWIFT_LORA_CKERNELS_H
// Hand-written kernels where the BLAS has none: bf16 matrix products with AVX512-BF16
// (vdpbf16ps: fp32 accumulation of bf16 pairs). Debian's OpenBLAS ships without sbgemm.
// Every function here is compiled for AVX512-BF16 and must only be called when
// ck_has_avx512bf16() returns 1; the Swift side checks once and keeps its fp32 path otherwise.
#include <stdint.h>

/// 1 when the CPU (and OS) support AVX512F, AVX512BW and AVX512-BF16.
int ck_has_avx512bf16(void);

/// Token groups for ck_bf16_xwt: x [m, k] fp32 (row stride ldx, k even) rounded to bf16 (nearest
/// even) and laid out as groups of 16 tokens, out[g][kk][t] = the bf16 pair (x[16g+t, 2kk],
/// x[16g+t, 2kk+1]) as one uint32. Fills groups [g_begin, g_end); tokens past m are zero.
void ck_pack_tokens_bf16(int m, int k, const float *x, int ldx, uint32_t *out, int g_begin, int g_end);

/// y[i, j] = x[i, :] · w[j, :] (+ beta · y[i, j]) for every token i < m and j in [j_begin, j_end):
/// x given as packed token groups (ck_pack_tokens_bf16, the group count rounded up to even),
/// w bf16 row-major [n, k]. The forward product of a frozen bf16 linear layer.
void ck_bf16_xwt(int m, int k, const uint32_t *xp, const uint16_t *w, int j_begin, int j_end,
                 float *y, int ldy, float beta);

/// The same for a few tokens (decoding): x as bf16 rows xb [m, k] (ck_rows_to_bf16), one dot
/// product per (i, j).
void ck_bf16_xwt_small(int m, int k, const uint16_t *xb, const uint16_t *w, int j_begin, int j_end,
                       float *y, int ldy, float beta);

/// Rows of fp32 to bf16 (nearest even): out [m, n] row-major, from a [m, n] matrix of row stride ld.
void ck_rows_to_bf16(int m, int n, const float *a, int ld, uint16_t *out, int row_begin, int row_end);

/// dx[i, c] = Σ_j dy[i, j] · w[j, c] (+ beta · dx[i, c]) for every i < m and c in [c_begin, c_end):
/// dy as bf16 rows [m, n] (n even), w bf16 row-major [n, k]. The input gradient of a frozen bf16
/// linear layer. `scratch`: 64-byte aligned, 64·n bytes (one 32-column strip of W interleaved).
void ck_bf16_dyw(int m, int n, int k, const uint16_t *dyb, const uint16_t *w, int c_begin, int c_end,
                 float *dx, int lddx, float beta, void *scratch);

#endif
