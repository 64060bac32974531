// bf16 products with AVX512-BF16. vdpbf16ps multiplies 16 lanes of bf16 pairs and adds both
// products to 16 fp32 accumulators: acc[l] += a[2l]·b[2l] + a[2l+1]·b[2l+1]. So both operands
// must hold pairs along the summed dimension:
//   y = x·Wᵀ (sum over k):   W rows are pairs along k as stored; a pair of W[j] is broadcast
//                            and multiplied with 16 tokens' pairs (tokens packed in groups).
//   dx = dy·W (sum over j):  dy rows are pairs along j as stored; W rows 2jj and 2jj+1 are
//                            interleaved on the fly into pairs for 16 columns.
// Products are exact in fp32 (bf16·bf16 fits), sums in fp32: the error is the rounding of
// activations and weights to bf16, as torch.autocast does.
#include "CKernels.h"
#include <immintrin.h>
#include <string.h>

#define CK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx512dq")))

int ck_has_avx512bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512bf16");
}

static inline uint16_t bf16_round(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);   // NaN stays NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

void ck_pack_tokens_bf16(int m, int k, const float *x, int ldx, uint32_t *out, int g_begin, int g_end) {
    int k2 = k / 2;
    for (int g = g_begin; g < g_end; g++) {
        uint32_t *group = out + (long)g * k2 * 16;
        for (int t = 0; t < 16; t++) {
            int i = g * 16 + t;
            if (i >= m) {
                for (int kk = 0; kk < k2; kk++) group[kk * 16 + t] = 0;
                continue;
            }
            const float *row = x + (long)i * ldx;
            for (int kk = 0; kk < k2; kk++) {
                group[kk * 16 + t] = (uint32_t)bf16_round(row[2 * kk]) | ((uint32_t)bf16_round(row[2 * kk + 1]) << 16);
            }
        }
    }
}

void ck_rows_to_bf16(int m, int n, const float *a, int ld, uint16_t *out, int row_begin, int row_end) {
    (void)m;
    for (int i = row_begin; i < row_end; i++) {
        const float *row = a + (long)i * ld;
        uint16_t *o = out + (long)i * n;
        for (int j = 0; j < n; j++) o[j] = bf16_round(row[j]);
    }
}

// 8 rows of W × 32 tokens (two groups) per micro-tile: 16 accumulators.
#define XWT_J 12
CK_TARGET
void ck_bf16_xwt(int m, int k, const uint32_t *xp, const uint16_t *w, int j_begin, int j_end,
                 float *y, int ldy, float beta) {
    const int k2 = k / 2;
    const uint32_t *w32 = (const uint32_t *)w;    // row j, pair kk at w32[j * k2 + kk]
    const int groups = (m + 15) / 16;
    float tile[XWT_J][32];
    for (int j0 = j_begin; j0 < j_end; j0 += XWT_J) {
        const int nj = j_end - j0 < XWT_J ? j_end - j0 : XWT_J;
        const uint32_t *rows[XWT_J];
        for (int r = 0; r < XWT_J; r++) rows[r] = w32 + (long)(j0 + (r < nj ? r : nj - 1)) * k2;
        for (int g = 0; g < groups; g += 2) {
            const uint32_t *b0p = xp + (long)g * k2 * 16;
            const uint32_t *b1p = b0p + (long)k2 * 16;   // the group count is rounded up to even
            __m512 acc[XWT_J][2];
            for (int r = 0; r < XWT_J; r++) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
            for (int kk = 0; kk < k2; kk++) {
                __m512bh b0 = (__m512bh)_mm512_loadu_si512(b0p + kk * 16);
                __m512bh b1 = (__m512bh)_mm512_loadu_si512(b1p + kk * 16);
                for (int r = 0; r < XWT_J; r++) {
                    __m512bh a = (__m512bh)_mm512_set1_epi32((int)rows[r][kk]);
                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
                }
            }
            for (int r = 0; r < XWT_J; r++) {
                _mm512_storeu_ps(tile[r], acc[r][0]);
                _mm512_storeu_ps(tile[r] + 16, acc[r][1]);
            }
            const int t_end = m - g * 16 < 32 ? m - g * 16 : 32;
            for (int t = 0; t < t_end; t++) {
                float *out = y + (long)(g * 16 + t) * ldy + j0;
                if (beta == 0) {
                    for (int r = 0; r < nj; r++) out[r] = tile[r][t];
                } else {
                    for (int r = 0; r < nj; r++) out[r] = tile[r][t] + beta * out[r];
                }
            }
        }
    }
}

static inline float hsum(__m512 v) CK_TARGET;
static inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

CK_TARGET
void ck_bf16_xwt_small(int m, int k, const uint16_t *xb, const uint16_t *w, int j_begin, int j_end,
                       float *y, int ldy, float beta) {
    // 32 bf16 (16 pairs) per vector; k is even, the tail is masked by whole pairs.
    const int k2 = k / 2, full = k2 / 16, rest = k2 % 16;
    const __mmask16 tail = (__mmask16)((1u << rest) - 1);
    for (int i = 0; i < m; i++) {
        const uint32_t *x32 = (const uint32_t *)(xb + (long)i * k);
        int j = j_begin;
        for (; j + 4 <= j_end; j += 4) {
            const uint32_t *r0 = (const uint32_t *)(w + (long)j * k), *r1 = r0 + k2, *r2 = r1 + k2, *r3 = r2 + k2;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            for (int v = 0; v < full; v++) {
                __m512bh xv = (__m512bh)_mm512_loadu_si512(x32 + v * 16);
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(r0 + v * 16), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(r1 + v * 16), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(r2 + v * 16), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(r3 + v * 16), xv);
            }
            if (rest) {
                __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi32(tail, x32 + full * 16);
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi32(tail, r0 + full * 16), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi32(tail, r1 + full * 16), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_maskz_loadu_epi32(tail, r2 + full * 16), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_maskz_loadu_epi32(tail, r3 + full * 16), xv);
            }
            float *out = y + (long)i * ldy + j;
            float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
            for (int r = 0; r < 4; r++) out[r] = beta == 0 ? s[r] : s[r] + beta * out[r];
        }
        for (; j < j_end; j++) {
            const uint32_t *r0 = (const uint32_t *)(w + (long)j * k);
            __m512 a0 = _mm512_setzero_ps();
            for (int v = 0; v < full; v++) {
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(r0 + v * 16), (__m512bh)_mm512_loadu_si512(x32 + v * 16));
            }
            if (rest) {
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi32(tail, r0 + full * 16),
                                      (__m512bh)_mm512_maskz_loadu_epi32(tail, x32 + full * 16));
            }
            float *out = y + (long)i * ldy + j;
            *out = beta == 0 ? hsum(a0) : hsum(a0) + beta * *out;
        }
    }
}

// 12 rows of dy × 32 columns of dx per micro-tile: 24 accumulators. For each 32-column strip,
// the pairs (W[2jj, c], W[2jj+1, c]) are interleaved once into `strip` and reused by every
// row block, so the inner loop is loads, broadcasts and vdpbf16ps only.
#define DYW_I 12
CK_TARGET
void ck_bf16_dyw(int m, int n, int k, const uint16_t *dyb, const uint16_t *w, int c_begin, int c_end,
                 float *dx, int lddx, float beta, void *scratch) {
    const int n2 = n / 2;
    uint16_t lo_index[32], hi_index[32];
    for (int l = 0; l < 16; l++) {
        lo_index[2 * l] = (uint16_t)l;        lo_index[2 * l + 1] = (uint16_t)(32 + l);
        hi_index[2 * l] = (uint16_t)(16 + l); hi_index[2 * l + 1] = (uint16_t)(48 + l);
    }
    const __m512i lo_idx = _mm512_loadu_si512(lo_index), hi_idx = _mm512_loadu_si512(hi_index);
    __m512i *strip = (__m512i *)scratch;
    for (int c0 = c_begin; c0 < c_end; c0 += 32) {
        const int nc = c_end - c0 < 32 ? c_end - c0 : 32;
        const __mmask32 load_mask = nc == 32 ? 0xffffffffu : (__mmask32)((1ull << nc) - 1);
        const __mmask16 store0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
        const __mmask16 store1 = nc <= 16 ? 0 : (nc == 32 ? 0xffff : (__mmask16)((1u << (nc - 16)) - 1));
        for (int jj = 0; jj < n2; jj++) {
            __m512i r0 = _mm512_maskz_loadu_epi16(load_mask, w + (long)(2 * jj) * k + c0);
            __m512i r1 = _mm512_maskz_loadu_epi16(load_mask, w + (long)(2 * jj + 1) * k + c0);
            _mm512_store_si512(strip + 2 * jj, _mm512_permutex2var_epi16(r0, lo_idx, r1));
            _mm512_store_si512(strip + 2 * jj + 1, _mm512_permutex2var_epi16(r0, hi_idx, r1));
        }
        for (int i0 = 0; i0 < m; i0 += DYW_I) {
            const int ni = m - i0 < DYW_I ? m - i0 : DYW_I;
            const uint32_t *drows[DYW_I];
            for (int r = 0; r < DYW_I; r++) drows[r] = (const uint32_t *)(dyb + (long)(i0 + (r < ni ? r : ni - 1)) * n);
            __m512 acc[DYW_I][2];
            for (int r = 0; r < DYW_I; r++) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
            for (int jj = 0; jj < n2; jj++) {
                __m512bh lo = (__m512bh)_mm512_load_si512(strip + 2 * jj);
                __m512bh hi = (__m512bh)_mm512_load_si512(strip + 2 * jj + 1);
                for (int r = 0; r < DYW_I; r++) {
                    __m512bh a = (__m512bh)_mm512_set1_epi32((int)drows[r][jj]);
                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, lo);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, hi);
                }
            }
            for (int r = 0; r < ni; r++) {
                float *out = dx + (long)(i0 + r) * lddx + c0;
                __m512 v0 = acc[r][0], v1 = acc[r][1];
                if (beta != 0) {
                    __m512 b = _mm512_set1_ps(beta);
                    v0 = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(store0, out), v0);
                    v1 = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(store1, out + 16), v1);
                }
                _mm512_mask_storeu_ps(out, store0, v0);
                _mm512_mask_storeu_ps(out + 16, store1, v1);
            }
        }
    }
}
