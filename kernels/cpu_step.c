/* The whole decode step of a llama / qwen2 / phi3 model in one call on the CPU (kernels/cpu_step.py).
 *
 * A tiny model's decode step is a hundred PyTorch calls of a few microseconds each around GEMVs that take
 * less; this is the same step with no call boundaries: per layer RMSNorm, the q/k/v products (+ biases),
 * RoPE at the position, the K/V write into the engine's cache, attention over positions 0..pos, the output
 * product and residual, RMSNorm, gate/up, SwiGLU, down and residual; then the final norm and the logits.
 * The same float32 function as the Python step (`kernels/cpu_decode.py`), with other orders of roundings
 * (tests/kernels/test_cpu_step.py bounds the difference). Weights are read where they are stored (the
 * GEMVs of cpu_native.c); the KV cache and the RoPE tables are the engine's tensors; `work` is the
 * caller's scratch (`step_work_floats`). Single-threaded, like the GEMVs.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_native.h"

typedef struct {
    const uint8_t *data; /* packed blocks, row-major */
    int32_t type;        /* ggml type id */
    int64_t rows, cols;
    const float *bias;   /* rows values, or NULL */
} Matrix;

typedef struct {
    const float *attn_norm, *ffn_norm;
    Matrix q, k, v;      /* separate products; q.rows == 0 when qkv is fused */
    Matrix qkv;          /* phi3: [q; k; v] */
    Matrix out;          /* attn_output */
    Matrix gate, up;     /* separate products; gate.rows == 0 when gate_up is fused */
    Matrix gate_up;      /* phi3: [gate; up] in ffn_up */
    Matrix down;
} Layer;

typedef struct {
    int64_t dim, n_layer, n_head, n_head_kv, head_dim, ffn_dim, rope_half, capacity;
    float norm_eps, scale;
    int32_t neox;                  /* RoPE pairs (i, i + half) instead of (2i, 2i + 1) */
    const float *rope_cos, *rope_sin; /* [context, rope_half] */
    const Layer *layers;
    const float *output_norm;
    Matrix output;
} Model;

/* Floats of scratch one step needs (the layout of `step`). */
int64_t step_work_floats(const Model *m) {
    const int64_t q_dim = m->n_head * m->head_dim, kv_dim = m->n_head_kv * m->head_dim;
    return 2 * m->dim + q_dim + 2 * kv_dim + q_dim + 2 * m->ffn_dim + m->capacity;
}

static void rms_norm(const float *x, const float *weight, float eps, float *out, int64_t n) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float inv = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * inv * weight[i];
}

static int product(const Matrix *w, const float *x, float *y) {
    if (gemv(w->type, w->data, x, y, w->rows, w->cols) != 0) return -1;
    if (w->bias)
        for (int64_t r = 0; r < w->rows; r++) y[r] += w->bias[r];
    return 0;
}

/* sum a[i] * b[i], i < n: eight lanes of FMA, then the rest. */
static inline float dot(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    float total = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
    for (; i < n; i++) total += a[i] * b[i];
    return total;
}

/* One head's vector of head_dim values rotated in place at one position (as kernels/cpu_decode.rope_store). */
static void rope(float *v, const float *c, const float *s, int64_t half, int32_t neox) {
    for (int64_t i = 0; i < half; i++) {
        float *a = neox ? v + i : v + 2 * i, *b = neox ? v + i + half : v + 2 * i + 1;
        const float x1 = *a, x2 = *b;
        *a = x1 * c[i] - x2 * s[i];
        *b = x2 * c[i] + x1 * s[i];
    }
}

/* x: the token's embedding row (dim floats), overwritten; keys/values: the cache
 * [n_layer, n_head_kv, capacity, head_dim] float32; logits: output.rows floats. 0, or -1 when a matrix
 * has a type without a GEMV (nothing useful written then). */
static int run_step(const Model *m, float *x, float *keys, float *values, int64_t pos, float *logits, float *work) {
    const int64_t dim = m->dim, d = m->head_dim, cap = m->capacity;
    const int64_t q_dim = m->n_head * d, kv_dim = m->n_head_kv * d, group = m->n_head / m->n_head_kv;
    float *h = work, *o = h + dim, *qkv = o + dim, *att = qkv + q_dim + 2 * kv_dim, *ffn = att + q_dim;
    float *scores = ffn + 2 * m->ffn_dim;
    const float *c = m->rope_cos + pos * m->rope_half, *s = m->rope_sin + pos * m->rope_half;
    for (int64_t li = 0; li < m->n_layer; li++) {
        const Layer *L = &m->layers[li];
        rms_norm(x, L->attn_norm, m->norm_eps, h, dim);
        if (L->q.rows) {
            if (product(&L->q, h, qkv) || product(&L->k, h, qkv + q_dim) || product(&L->v, h, qkv + q_dim + kv_dim))
                return -1;
        } else if (product(&L->qkv, h, qkv)) {
            return -1;
        }
        float *q = qkv, *k = qkv + q_dim, *v = qkv + q_dim + kv_dim;
        for (int64_t hd = 0; hd < m->n_head; hd++) rope(q + hd * d, c, s, m->rope_half, m->neox);
        float *layer_keys = keys + li * m->n_head_kv * cap * d, *layer_values = values + li * m->n_head_kv * cap * d;
        for (int64_t kv = 0; kv < m->n_head_kv; kv++) {
            rope(k + kv * d, c, s, m->rope_half, m->neox);
            memcpy(layer_keys + (kv * cap + pos) * d, k + kv * d, d * sizeof(float));
            memcpy(layer_values + (kv * cap + pos) * d, v + kv * d, d * sizeof(float));
        }
        for (int64_t hd = 0; hd < m->n_head; hd++) { /* softmax(q K^T * scale) V over positions 0..pos */
            const float *qh = q + hd * d;
            const float *kh = layer_keys + (hd / group) * cap * d, *vh = layer_values + (hd / group) * cap * d;
            float best = -INFINITY;
            for (int64_t p = 0; p <= pos; p++) {
                scores[p] = dot(qh, kh + p * d, d) * m->scale;
                if (scores[p] > best) best = scores[p];
            }
            float total = 0.0f;
            for (int64_t p = 0; p <= pos; p++) total += (scores[p] = expf(scores[p] - best));
            float *out = att + hd * d;
            memset(out, 0, d * sizeof(float));
            for (int64_t p = 0; p <= pos; p++) {
                const float w = scores[p] / total;
                const float *restrict vp = vh + p * d;
                float *restrict acc = out;
                for (int64_t i = 0; i < d; i++) acc[i] += w * vp[i];
            }
        }
        if (product(&L->out, att, o)) return -1;
        for (int64_t i = 0; i < dim; i++) x[i] += o[i];
        rms_norm(x, L->ffn_norm, m->norm_eps, h, dim);
        float *gate = ffn, *up = ffn + m->ffn_dim;
        if (L->gate.rows) {
            if (product(&L->gate, h, gate) || product(&L->up, h, up)) return -1;
        } else if (product(&L->gate_up, h, ffn)) {
            return -1;
        }
        for (int64_t i = 0; i < m->ffn_dim; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
        if (product(&L->down, gate, o)) return -1;
        for (int64_t i = 0; i < dim; i++) x[i] += o[i];
    }
    rms_norm(x, m->output_norm, m->norm_eps, h, dim);
    return product(&m->output, h, logits);
}

/* The exported entry points. (Named model_*: an exported `step` would be bound to libc's legacy regexp
 * `step` when called from inside this library.) */
int model_step(const Model *m, float *x, float *keys, float *values, int64_t pos, float *logits, float *work) {
    return run_step(m, x, keys, values, pos, logits, work);
}

/* The step from a token id: its row of the float16 embedding table [vocab, dim] (the CPU fast path's
 * copy of token_embd, kernels/cpu_dense.py) widened into x (dim floats), then the step. */
int model_step_token(const Model *m, const uint16_t *embedding, int64_t token, float *x, float *keys, float *values,
               int64_t pos, float *logits, float *work) {
    const uint16_t *row = embedding + token * m->dim;
    int64_t i = 0;
    for (; i + 8 <= m->dim; i += 8) _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i))));
    for (; i < m->dim; i++) x[i] = _cvtsh_ss(row[i]);
    return run_step(m, x, keys, values, pos, logits, work);
}
