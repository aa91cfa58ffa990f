// smoke.cu: the mask hash and the wrap cast of common.cuh as kernels, so a GPU test can compare
// them with ipmix_dali/ops/masks.py and float_ops.to_uint8_wrap element for element.
#include "common.cuh"

extern "C" __global__ void smoke_uniform(unsigned int seed, const unsigned int* index, float* out,
                                         int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = ipmix_uniform(seed, index[i]);
}

extern "C" __global__ void smoke_wrap_u8(const float* c, unsigned char* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = ipmix_wrap_u8(c[i]);
}

// Products of floats (a subnormal result shows whether the build flushes subnormals to zero).
extern "C" __global__ void smoke_mul(const float* a, const float* b, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] * b[i];
}

// float32 -> half bits as the executors' float16 outputs are written.
extern "C" __global__ void smoke_f16(const float* x, unsigned short* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = ipmix_f16_bits(x[i]);
}
