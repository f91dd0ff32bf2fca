/* The CPU decode GEMVs of cpu_native.c, shared with the one-call decode step of cpu_step.c. */
#ifndef WORKER_ORCD_CPU_NATIVE_H
#define WORKER_ORCD_CPU_NATIVE_H
#include <stdint.h>

/* ggml type ids (kernels/formats.py GGMLType). */
enum { GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q6_K = 14 };

void gemv_q4_0(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);
void gemv_q4_1(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);
void gemv_q5_0(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);
void gemv_q8_0(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);
void gemv_q4_k(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);
void gemv_q6_k(const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);
/* y = w x for a row-major matrix of ggml type `type`; -1 (nothing written) for a type without a GEMV. */
int gemv(int32_t type, const uint8_t *w, const float *x, float *y, int64_t rows, int64_t cols);

#endif
