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
