// enhance.cu: the enhance family of the PIL ops (color, contrast, brightness, sharpness),
// batched, per-image blend factors.
//
// Layout: images are NHWC uint8, n images of h x w x 3, C-contiguous; element
// ((i * h + y) * w + x) * 3 + c. The output (same layout) is written in full; the input is never
// written. One thread per pixel (all three channels), grid-stride loops.
//
// Ops and launch sequences (host side: ipmix_dali/executors/cupy_ops.py, mirroring
// ipmix_dali/executors/np_ops.py):
//   color:      enhance_color                        blend(grey(px), px, alpha)
//   contrast:   enhance_grey_sum -> enhance_contrast  blend(mean grey of the image, px, alpha)
//   brightness: enhance_brightness                   blend(0, px, alpha) = alpha * px
//   sharpness:  enhance_sharpness                    blend(SMOOTH(image)(px), px, alpha)
//
// Parameter arrays:
//   alpha  float32 (n,): the enhance factor of image i rounded to a C float on the host
//          (params.astype(np.float32), as ImagingBlend receives it).
//   sums   uint32 (n,): zero-initialised by the host; enhance_grey_sum adds every grey value of
//          image i (needs 255 * h * w < 2^32, i.e. images below 16.8 Mpixel).
//
// Rounding rules (np_ops, Pillow's Blend.c / Convert.c / Filter.c / ImageStat):
//   grey = (19595 R + 38470 G + 7471 B + 0x8000) >> 16 in uint32 (convert("L")).
//   mean = (uint8) floor((double)sum / (double)(h * w) + 0.5) (float64, correctly rounded).
//   blend(d, v, alpha) = (float)v - (float)d (exact), times alpha, plus (float)d: float32, one
//   rounded operation at a time (--fmad=false: no fused multiply-add); clipped to [0, 255] when
//   alpha is outside [0, 1] (inside, the value cannot leave that range), then truncated to uint8.
//   brightness: (float)v * alpha, same clip and truncation.
//   SMOOTH (3x3, 1 1 1 / 1 5 1 / 1 1 1, /13): k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f as C floats;
//   per row (left * k + centre * k') + right * k (each product rounded); ss = 0.5f + row(y + 1),
//   ss += row(y), ss += row(y - 1); clipped to [0, 255] and truncated. Border pixels (and whole
//   images under 3 x 3) are copied unchanged.
//
// No __shared__ memory, __syncthreads, warp intrinsics or CUDA headers: kernels/emulator.py runs
// these kernels on the CPU, one thread after another.

__device__ __forceinline__ unsigned int enhance_grey(const unsigned char* px) {
    unsigned int v = (unsigned int)px[0] * 19595u;
    v += (unsigned int)px[1] * 38470u;
    v += (unsigned int)px[2] * 7471u;
    v += 0x8000u;
    return v >> 16;
}

// ImagingBlend(degenerate, image, alpha) for one value, as np_ops._blend.
__device__ __forceinline__ unsigned char enhance_blend(unsigned int degenerate, unsigned int v,
                                                       float alpha) {
    float d = (float)v - (float)degenerate;
    d = d * alpha;
    d = d + (float)degenerate;
    if (alpha < 0.0f || alpha > 1.0f) d = d < 0.0f ? 0.0f : (d > 255.0f ? 255.0f : d);
    return (unsigned char)d;
}

extern "C" __global__ void enhance_color(const unsigned char* __restrict__ in,
                                         unsigned char* __restrict__ out,
                                         const float* __restrict__ alpha, int n, int h, int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const float a = alpha[p / hw];
        const unsigned char* px = in + p * 3;
        const unsigned int g = enhance_grey(px);  // <= 255: the uint8 grey image
        for (int c = 0; c < 3; ++c) out[p * 3 + c] = enhance_blend(g, px[c], a);
    }
}

// sums[i] += grey value of every pixel of image i; one thread per (image, row).
extern "C" __global__ void enhance_grey_sum(const unsigned char* __restrict__ in,
                                            unsigned int* sums, int n, int h, int w) {
    const long long total = (long long)n * h;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < total; r += stride) {
        const unsigned char* px = in + r * w * 3;
        unsigned int s = 0;
        for (int x = 0; x < w; ++x) s += enhance_grey(px + x * 3);
        atomicAdd(sums + r / h, s);
    }
}

extern "C" __global__ void enhance_contrast(const unsigned char* __restrict__ in,
                                            unsigned char* __restrict__ out,
                                            const unsigned int* __restrict__ sums,
                                            const float* __restrict__ alpha, int n, int h,
                                            int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const long long i = p / hw;
        const float a = alpha[i];
        double m = (double)sums[i] / (double)hw;
        m = m + 0.5;
        const unsigned int mean = (unsigned int)floor(m);
        const unsigned char* px = in + p * 3;
        for (int c = 0; c < 3; ++c) out[p * 3 + c] = enhance_blend(mean, px[c], a);
    }
}

extern "C" __global__ void enhance_brightness(const unsigned char* __restrict__ in,
                                              unsigned char* __restrict__ out,
                                              const float* __restrict__ alpha, int n, int h,
                                              int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const float a = alpha[p / hw];
        const bool clip = a < 0.0f || a > 1.0f;
        for (int c = 0; c < 3; ++c) {
            float d = (float)in[p * 3 + c] * a;
            if (clip) d = d < 0.0f ? 0.0f : (d > 255.0f ? 255.0f : d);
            out[p * 3 + c] = (unsigned char)d;
        }
    }
}

// One row of the SMOOTH kernel: (left * kl + centre * kc) + right * kl, products rounded.
__device__ __forceinline__ float enhance_row3(const unsigned char* px, int c, float kl, float kc) {
    float l = (float)px[c - 3] * kl;
    float m = (float)px[c] * kc;
    float r = (float)px[c + 3] * kl;
    float s = l + m;
    return s + r;
}

extern "C" __global__ void enhance_sharpness(const unsigned char* __restrict__ in,
                                             unsigned char* __restrict__ out,
                                             const float* __restrict__ alpha, int n, int h,
                                             int w) {
    const float k1 = 1.0f / 13.0f;
    const float k5 = 5.0f / 13.0f;
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long row = (long long)w * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const long long i = p / hw;
        const long long r = p - i * hw;
        const int y = (int)(r / w);
        const int x = (int)(r - (long long)y * w);
        const float a = alpha[i];
        const unsigned char* px = in + p * 3;
        const bool border = y == 0 || y == h - 1 || x == 0 || x == w - 1;  // also h, w < 3
        for (int c = 0; c < 3; ++c) {
            unsigned int smooth = px[c];
            if (!border) {
                const float below = enhance_row3(px + row, c, k1, k1);
                const float centre = enhance_row3(px, c, k1, k5);
                const float above = enhance_row3(px - row, c, k1, k1);
                float ss = 0.5f + below;
                ss = ss + centre;
                ss = ss + above;
                ss = ss < 0.0f ? 0.0f : (ss > 255.0f ? 255.0f : ss);
                smooth = (unsigned int)(unsigned char)ss;
            }
            out[p * 3 + c] = enhance_blend(smooth, px[c], a);
        }
    }
}
