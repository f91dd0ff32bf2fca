/* One-row products with packed ggml blocks on the CPU, float32 (kernels/cpu_native.py builds and loads this).
 *
 * y[r] = sum_k w[r, k] * x[k] for rows of Q4_0, Q4_1 or Q8_0 blocks (layouts: docs/kernels.md, ggml's
 * ggml-common.h), read where they are stored: 4.5-8.5 bits per weight instead of the float16 copy's 16.
 * Per block of 32: the codes are widened to float32 and multiplied with x (AVX2 FMA), and the block's
 * scale is applied once to that partial sum: d * sum(q * x) (+ m * sum(x) for Q4_1), the dequantized
 * value's function in float32 with another order of roundings (relative error ~1e-7, as the reference
 * path's float32 product). Activations stay float32: nothing is quantized.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), s);
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
    for (int64_t b = 0; b < nb; b++) {
        __m256 s = _mm256_add_ps(_mm256_loadu_ps(x + b * 32), _mm256_loadu_ps(x + b * 32 + 8));
        s = _mm256_add_ps(s, _mm256_add_ps(_mm256_loadu_ps(x + b * 32 + 16), _mm256_loadu_ps(x + b * 32 + 24)));
        xsum[b] = hsum(s);
    }
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
