/* One-row products with packed ggml blocks on the CPU, float32 (kernels/cpu_native.py builds and loads this).
 *
 * y[r] = sum_k w[r, k] * x[k] for rows of Q4_0, Q4_1, Q5_0, Q8_0, Q4_K or Q6_K blocks (layouts: docs/kernels.md,
 * ggml's ggml-common.h), read where they are stored: 4.5-8.5 bits per weight instead of the float16 copy's
 * 16. Per block (sub-block for Q4_K, 16 values for Q6_K) of 32: the codes are widened to float32 and multiplied with x (AVX2
 * FMA), and the scale is applied once to that partial sum: d * sum(q * x) (- or + min * sum(x)), the dequantized
 * value's function in float32 with another order of roundings (relative error ~1e-7, as the reference
 * path's float32 product). Activations stay float32: nothing is quantized.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu_native.h"

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* sum over 32 values: codes lo (elements 0-15) and hi (16-31) as signed bytes, times x[0..31]. */
static inline __m256 dot32_i8(__m128i lo, __m128i hi, const float *x) {
    /* two independent chains (lo, hi): half the dependent FMA latency of one */
    __m256 a = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
    __m256 b = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16));
    a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), a);
    b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), b);
    return _mm256_add_ps(a, b);
}

/* Sums of x over each block of 32. */
static void block_sums(const float *x, float *xsum, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 32;
        __m256 s = _mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8));
        s = _mm256_add_ps(s, _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24)));
        xsum[b] = hsum(s);
    }
}

/* Q4_0 {half d; u8 qs[16]}: w = (q - 8) * d, element j low nibble of byte j, j + 16 its high nibble. */
void gemv_q4_0(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 32;
    const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *blk = w + (size_t)r * nb * 18;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++, blk += 18) {
            __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
            __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
            __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(blk)), dot32_i8(lo, hi, x + b * 32), acc);
        }
        y[r] = hsum(acc);
    }
}

/* Q4_1 {half d; half m; u8 qs[16]}: w = d * q + m. */
void gemv_q4_1(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 32;
    float xsum[nb];
    block_sums(x, xsum, nb);
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *blk = w + (size_t)r * nb * 20;
        __m256 acc = _mm256_setzero_ps();
        float offset = 0.0f;
        for (int64_t b = 0; b < nb; b++, blk += 20) {
            __m128i q = _mm_loadu_si128((const __m128i *)(blk + 4));
            __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(blk)), dot32_i8(lo, hi, x + b * 32), acc);
            offset += f16(blk + 2) * xsum[b];
        }
        y[r] = hsum(acc) + offset;
    }
}

/* Byte j = 0xFF where bit j of `bits` is set, else 0 (ggml's bytes_from_bits_32). */
static inline __m256i bytes_from_bits(uint32_t bits) {
    const __m256i shuffle = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuffle);
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

/* Q5_0 {half d; u32 qh; u8 qs[16]}: w = (q - 16) * d, q = nibble | (bit j of qh) << 4. */
void gemv_q5_0(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 32;
    const __m128i mask = _mm_set1_epi8(0x0F), five = _mm_set1_epi8(0x10), sixteen = _mm_set1_epi8(16);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *blk = w + (size_t)r * nb * 22;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++, blk += 22) {
            uint32_t qh;
            memcpy(&qh, blk + 2, 4);
            __m256i high = bytes_from_bits(qh);
            __m128i q = _mm_loadu_si128((const __m128i *)(blk + 6));
            __m128i lo = _mm_or_si128(_mm_and_si128(q, mask), _mm_and_si128(_mm256_castsi256_si128(high), five));
            __m128i hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), mask),
                                      _mm_and_si128(_mm256_extracti128_si256(high, 1), five));
            lo = _mm_sub_epi8(lo, sixteen);
            hi = _mm_sub_epi8(hi, sixteen);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(blk)), dot32_i8(lo, hi, x + b * 32), acc);
        }
        y[r] = hsum(acc);
    }
}

/* The eight 6-bit scales and mins of a Q4_K block (scales[12], get_scale_min_k4) as float32 lanes 0-7,
 * unpacked four at a time with 32-bit masks (ggml's utmp form) instead of one sub-block at a time. */
static inline void q4_k_scales_mins(const uint8_t *scales, __m256 *sc, __m256 *mn) {
    uint32_t u[3];
    memcpy(u, scales, 12);
    const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, top2 = 0x03030303;
    const uint32_t s0 = u[0] & low6, s1 = (u[2] & low4) | (((u[0] >> 6) & top2) << 4);
    const uint32_t m0 = u[1] & low6, m1 = ((u[2] >> 4) & low4) | (((u[1] >> 6) & top2) << 4);
    *sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)s1, (int)s0)));
    *mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)m1, (int)m0)));
}

/* Q4_K {half d; half dmin; u8 scales[12]; u8 qs[128]}: eight sub-blocks of 32, w = (d * sc) * q - dmin * m;
 * sub-block 2c takes the low nibbles of qs[32c..32c+31], 2c + 1 their high nibbles (get_scale_min_k4).
 * The mins' term of all eight sub-blocks is one 8-lane FMA with the block sums of x; low- and high-nibble
 * sub-blocks accumulate in two chains. */
void gemv_q4_k(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 256;
    float xsum[cols / 32];
    block_sums(x, xsum, cols / 32);
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *blk = w + (size_t)r * nb * 144;
        __m256 acc = _mm256_setzero_ps(), mins = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++, blk += 144) {
            __m256 sc, mn;
            q4_k_scales_mins(blk + 4, &sc, &mn);
            float scale[8];
            _mm256_storeu_ps(scale, _mm256_mul_ps(sc, _mm256_set1_ps(f16(blk))));
            mins = _mm256_fmadd_ps(_mm256_mul_ps(mn, _mm256_set1_ps(f16(blk + 2))), _mm256_loadu_ps(xsum + b * 8), mins);
            const uint8_t *qs = blk + 16;
            const float *xb = x + b * 256;
            __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
            for (int c = 0; c < 4; c++) {
                const __m128i q0 = _mm_loadu_si128((const __m128i *)(qs + 32 * c));
                const __m128i q1 = _mm_loadu_si128((const __m128i *)(qs + 32 * c + 16));
                const __m256 pl = dot32_i8(_mm_and_si128(q0, mask), _mm_and_si128(q1, mask), xb + 64 * c);
                const __m256 ph = dot32_i8(_mm_and_si128(_mm_srli_epi16(q0, 4), mask),
                                           _mm_and_si128(_mm_srli_epi16(q1, 4), mask), xb + 64 * c + 32);
                low = _mm256_fmadd_ps(_mm256_set1_ps(scale[2 * c]), pl, low);
                high = _mm256_fmadd_ps(_mm256_set1_ps(scale[2 * c + 1]), ph, high);
            }
            acc = _mm256_add_ps(acc, _mm256_add_ps(low, high));
        }
        y[r] = hsum(acc) - hsum(mins);
    }
}

/* Q8_0 {half d; i8 qs[32]}: w = q * d. */
void gemv_q8_0(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 32;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *blk = w + (size_t)r * nb * 34;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++, blk += 34) {
            __m128i lo = _mm_loadu_si128((const __m128i *)(blk + 2));
            __m128i hi = _mm_loadu_si128((const __m128i *)(blk + 18));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(blk)), dot32_i8(lo, hi, x + b * 32), acc);
        }
        y[r] = hsum(acc);
    }
}

/* sum over 16 values: signed byte codes q times x[0..15]. */
static inline __m256 dot16_i8(__m128i q, const float *x) {
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_loadu_ps(x));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), _mm256_loadu_ps(x + 8), s);
}

/* Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d}: w = d * scale * (q - 32), q = 4 low bits from ql
 * and 2 high bits from qh; each half of 128 values: element l (0-31) of its four quarters takes the low
 * nibble of ql[l], of ql[l + 32], the high nibble of ql[l], of ql[l + 32], with bits 0-1, 2-3, 4-5, 6-7
 * of qh[l]; one scale per 16 values (ggml's dequantize_row_q6_K). */
void gemv_q6_k(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    const int64_t nb = cols / 256;
    const __m128i low4 = _mm_set1_epi8(0x0F), thirty_two = _mm_set1_epi8(32);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *blk = w + (size_t)r * nb * 210;
        __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps(); /* two chains: quarters 1, 3 and 2, 4 */
        for (int64_t b = 0; b < nb; b++, blk += 210) {
            /* d * scale of the 16 groups of 16, widened once per block */
            const __m128i sc = _mm_loadu_si128((const __m128i *)(blk + 192));
            const __m256 d = _mm256_set1_ps(f16(blk + 208));
            float scale[16];
            _mm256_storeu_ps(scale, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
            _mm256_storeu_ps(scale + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
            for (int n = 0; n < 2; n++) {
                const uint8_t *ql = blk + 64 * n, *qh = blk + 128 + 32 * n;
                const float *s = scale + 8 * n;
                const float *xb = x + b * 256 + 128 * n;
                for (int half = 0; half < 2; half++) { /* l = 0-15, then 16-31: scale index is + half */
                    const int l = 16 * half;
                    __m128i a = _mm_loadu_si128((const __m128i *)(ql + l));
                    __m128i c = _mm_loadu_si128((const __m128i *)(ql + l + 32));
                    __m128i h = _mm_loadu_si128((const __m128i *)(qh + l));
                    __m128i q1 = _mm_or_si128(_mm_and_si128(a, low4), _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi8(0x03)), 4));
                    __m128i q2 = _mm_or_si128(_mm_and_si128(c, low4), _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi8(0x0C)), 2));
                    __m128i q3 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), low4), _mm_and_si128(h, _mm_set1_epi8(0x30)));
                    __m128i q4 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), low4),
                                              _mm_srli_epi16(_mm_and_si128(h, _mm_set1_epi8((char)0xC0)), 2));
                    even = _mm256_fmadd_ps(_mm256_set1_ps(s[half + 0]), dot16_i8(_mm_sub_epi8(q1, thirty_two), xb + l), even);
                    odd = _mm256_fmadd_ps(_mm256_set1_ps(s[half + 2]), dot16_i8(_mm_sub_epi8(q2, thirty_two), xb + l + 32), odd);
                    even = _mm256_fmadd_ps(_mm256_set1_ps(s[half + 4]), dot16_i8(_mm_sub_epi8(q3, thirty_two), xb + l + 64), even);
                    odd = _mm256_fmadd_ps(_mm256_set1_ps(s[half + 6]), dot16_i8(_mm_sub_epi8(q4, thirty_two), xb + l + 96), odd);
                }
            }
        }
        y[r] = hsum(_mm256_add_ps(even, odd));
    }
}

/* The GEMV of a ggml type id (kernels/formats.py), or -1 when there is none. */
int gemv(int32_t type, const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols) {
    switch (type) {
    case GGML_Q4_0: gemv_q4_0(w, x, y, rows, cols); return 0;
    case GGML_Q4_1: gemv_q4_1(w, x, y, rows, cols); return 0;
    case GGML_Q5_0: gemv_q5_0(w, x, y, rows, cols); return 0;
    case GGML_Q8_0: gemv_q8_0(w, x, y, rows, cols); return 0;
    case GGML_Q4_K: gemv_q4_k(w, x, y, rows, cols); return 0;
    case GGML_Q6_K: gemv_q6_k(w, x, y, rows, cols); return 0;
    default: return -1;
    }
}
