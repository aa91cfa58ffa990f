// common.cuh: helpers shared by the ipmix-dali kernels.
//
// Mask hash: the CUDA twin of ipmix_dali/ops/masks.py. A mask element of random_pixels /
// random_elems is (ipmix_uniform(seed, index) < p), index patch-local and row-major:
//   random_pixels: y * w + x            (one value per pixel, shared by the channels)
//   random_elems:  (c * h + y) * w + x  (CHW order, like the reference's torch.rand([C, H, W]))
// Any change here must be made in masks.py too (tests compare the two).
#pragma once

__device__ __forceinline__ unsigned int ipmix_mix32(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

__device__ __forceinline__ float ipmix_uniform(unsigned int seed, unsigned int index) {
    unsigned int s = ipmix_mix32(seed ^ 0x9E3779B9u);
    unsigned int h = ipmix_mix32(index ^ s);
    h = ipmix_mix32(h + s);
    return (float)(h >> 8) * 5.9604644775390625e-08f;  // 2^-24
}

// ToPILImage's float->uint8 cast as the reference runs it (docs/augmentations.md §3.3): v = c * 255 in float32,
// truncated toward zero to int64, low 8 bits kept. Non-finite or out-of-int64-range values give 0
// (what x86's cvttss2si produces, 0x8000000000000000, whose low byte is 0).
__device__ __forceinline__ unsigned char ipmix_wrap_u8(float c) {
    float v = c * 255.0f;
    if (!(v > -9.2233720368547758e18f && v < 9.2233720368547758e18f)) return 0;
    long long i = (long long)v;
    return (unsigned char)(i & 0xFF);
}

// float32 -> IEEE half bits, rounded to nearest even like NumPy's astype(float16) (and CUDA's
// __float2half_rn): subnormal halves kept, overflow to infinity, NaN quietened. Written with
// integer operations so that the CPU emulator computes exactly what the GPU does.
__device__ __forceinline__ unsigned short ipmix_f16_bits(float f) {
    const unsigned int x = __float_as_uint(f);
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int a = x & 0x7FFFFFFFu;
    if (a >= 0x7F800000u)  // infinity or NaN
        return (unsigned short)(sign | 0x7C00u | (a > 0x7F800000u ? 0x200u | ((a >> 13) & 0x3FFu) : 0u));
    if (a >= 0x477FF000u) return (unsigned short)(sign | 0x7C00u);  // >= 65520 rounds to infinity
    const unsigned int e = a >> 23;
    if (e < 102u) return (unsigned short)sign;  // below 2^-25: rounds to zero
    unsigned int q, rem, halfway;
    if (e < 113u) {  // a subnormal half: units of 2^-24
        const unsigned int mant = (a & 0x7FFFFFu) | 0x800000u;
        const unsigned int shift = 126u - e;  // 14 .. 24
        q = mant >> shift;
        rem = mant & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1u);
    } else {
        q = ((e - 112u) << 10) | ((a & 0x7FFFFFu) >> 13);
        rem = a & 0x1FFFu;
        halfway = 0x1000u;
    }
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;  // a carry moves into the exponent
    return (unsigned short)(sign | q);
}
