"""ggml tensor formats, reference dequantizers and quantized matmul (CPU and CUDA)."""
