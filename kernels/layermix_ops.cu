// layermix_ops.cu: LayerMix's 12 torchvision v2 float ops, batched, one parameter per image.
//
// Each kernel reproduces ipmix_dali/executors/layermix_ops.py (the NumPy twin of torchvision)
// step by step, with the twin's float32 / float64 operations in the twin's order. The host side
// (ipmix_dali/executors/cupy_layermix.py, plain NumPy) builds the per-image tables with the twin's
// own expressions and chooses the launch sequence; tests/test_kernels_emulated_layermix.py runs the
// same sequence on the CPU emulator against the twin.
//
// Layout: images are float32 NHWC, n images of h x w x 3, C-contiguous; element
// ((i * h + y) * w + x) * 3 + c. Outputs have the same layout and are written in full; the input is
// never written.
//
// Ops (ids of ipmix_dali.ops.table.LAYERMIX_OPS) and their launch sequences:
//   (uint8 -> float)        layermix_to_float: u8 * float32(1/255) (ToDtype(float32, scale=True)).
//   equalize                layermix_equalize_hist -> layermix_equalize_lut
//                           -> layermix_equalize_apply
//   posterize(_increasing)  layermix_posterize
//   solarize(_increasing)   layermix_solarize
//   autocontrast            layermix_minmax -> layermix_autocontrast_apply
//   grayscale               layermix_grayscale
//   rotate, shear_x/y,      layermix_affine_bilinear (per-image mode: rotate's exact fast paths
//   translate_x/y           or the general affine_grid + grid_sample)
//
// Rounding rules. Compiled with --fmad=false (and g++ -ffp-contract=off in the emulator): every
// float expression below is one correctly rounded IEEE operation at a time, except lm_fma, which
// stands where the twin emulates one of torch's fused multiply-adds in float64: grayscale's two
// add_(alpha=...), the affine grid's batched matmul fma(y, r1, x * r0), grid_sample's unnormalize
// fma(g + 1, size / 2, -0.5) and the bilinear corner sum
// fma(se_v, se, fma(sw_v, sw, fma(ne_v, ne, nw_v * nw))). lm_fma(a, b, c) is the twin's
// emulation itself: a double fma of the float operands (the product is exact in double, so this
// is the twin's float64 multiply + add, one rounding), then the cast to float. A float32 fmaf
// differs from it on double-rounding ties (about 2^-29 per operation on random data, e.g. a
// product exactly halfway between two floats plus a subnormal accumulator, as one of the
// emulated test images has): there the kernels follow the twin, not a true fused operation.
//
// Constants that the twin holds as NumPy float32 scalars (1/255, 255.999, the grey weights, the
// half sizes) are passed in by the host as float arguments, so both sides use the same bits.
//
// No __shared__ memory, __syncthreads, warp intrinsics or CUDA headers: kernels/emulator.py runs
// these kernels on the CPU, one thread after another. Every kernel uses a grid-stride loop.

#define LM_INT_MAX 2147483647
#define LM_INT_MIN (-2147483647 - 1)

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

// The twin's fused multiply-add: the exact product of two floats (it fits a double), plus c,
// rounded once to double, then to float -- float64 fma followed by a float cast, which is exactly
// the twin's np.multiply(..., dtype=float64) + add + astype(float32). (A float32 fmaf would round
// once; the two differ on double-rounding ties, e.g. a product exactly halfway between two floats
// plus a subnormal addend, and the twin is the reference.)
__device__ __forceinline__ float lm_fma(float a, float b, float c) {
    return (float)fma((double)a, (double)b, (double)c);
}

// a / b for 0 <= a, 0 < b: a 32-bit division when both fit (64-bit division is slow on GPUs).
__device__ __forceinline__ long long lm_div(long long a, long long b) {
    if (a <= 0xFFFFFFFFLL && b <= 0xFFFFFFFFLL) {
        return (long long)((unsigned int)a / (unsigned int)b);
    }
    return a / b;
}

// Equalize's float -> uint8: x * 255.999 in float32, then NumPy's astype(intp) (truncation to
// int64; x86 gives INT64_MIN, low byte 0, for NaN and out-of-range values), low 8 bits kept.
__device__ __forceinline__ int lm_u8_index(float x, float to_u8) {
    const float v = x * to_u8;
    if (!(v > -9.2233720368547758e18f && v < 9.2233720368547758e18f)) return 0;
    const long long t = (long long)v;
    return (int)(t & 255);
}

// Order-preserving int key of a non-NaN float: key(a) < key(b) iff a < b (and -0 < +0, which no
// result depends on: min and max only feed a difference and an equality test).
__device__ __forceinline__ int lm_key(float v) {
    const int s = (int)__float_as_uint(v);
    return s >= 0 ? s : (s ^ 0x7FFFFFFF);
}

__device__ __forceinline__ float lm_unkey(int k) {
    const int s = k >= 0 ? k : (k ^ 0x7FFFFFFF);
    return __uint_as_float((unsigned int)s);
}

// ---------------------------------------------------------------------------------------------
// uint8 -> float: out = float(u8) * inv255 (inv255 = float32(1 / 255)).
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void layermix_to_float(const unsigned char* __restrict__ in,
                                             float* __restrict__ out, int n, int h, int w,
                                             float inv255) {
    const long long total = (long long)n * h * w * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        out[e] = (float)in[e] * inv255;
    }
}

// ---------------------------------------------------------------------------------------------
// equalize
// ---------------------------------------------------------------------------------------------

// Per image and channel histograms of the uint8 indices: hist[(i * 3 + c) * 256 + v] += 1
// (hist int32 (n, 3, 256), zeroed by the host). One thread per pixel.
extern "C" __global__ void layermix_equalize_hist(const float* __restrict__ in, int* hist, int n,
                                                  int h, int w, float to_u8) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const long long i = lm_div(p, hw);
        const float* px = in + p * 3;
        int* hi = hist + i * 768;
        atomicAdd(hi + lm_u8_index(px[0], to_u8), 1);
        atomicAdd(hi + 256 + lm_u8_index(px[1], to_u8), 1);
        atomicAdd(hi + 512 + lm_u8_index(px[2], to_u8), 1);
    }
}

// PIL's equalization LUT as float values, one thread per (image, channel) t in [0, 3n):
// last = last non-empty bin, step = (h * w - hist[last]) // 255; step == 0: identity; otherwise
// lut[0] = 0, lut[k] = min((cumsum(hist)[k - 1] + step // 2) // step, 255). Stored as
// float(lut[k]) * inv255 (lut float32 (n, 3, 256)).
extern "C" __global__ void layermix_equalize_lut(const int* __restrict__ hist,
                                                 float* __restrict__ lut, int n, int h, int w,
                                                 float inv255) {
    const long long total = (long long)n * 3;
    const long long npix = (long long)h * w;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int* hc = hist + t * 256;
        float* lc = lut + t * 256;
        int last = 0;
        for (int v = 0; v < 256; ++v) {
            if (hc[v] > 0) last = v;
        }
        const long long step = (npix - hc[last]) / 255;  // both >= 0: C division is floor
        if (step == 0) {
            for (int v = 0; v < 256; ++v) lc[v] = (float)v * inv255;
            continue;
        }
        long long cum = 0;  // histogram sum below v
        for (int v = 0; v < 256; ++v) {
            long long value = (cum + step / 2) / step;
            if (value > 255) value = 255;
            lc[v] = (float)(int)value * inv255;
            cum += hc[v];
        }
    }
}

// One pixel's three channels through its image's LUT li (3 x 256).
__device__ __forceinline__ void lm_equalize_pixel(const float* __restrict__ li,
                                                  const float* __restrict__ px,
                                                  float* __restrict__ o, float to_u8) {
    o[0] = li[lm_u8_index(px[0], to_u8)];
    o[1] = li[256 + lm_u8_index(px[1], to_u8)];
    o[2] = li[512 + lm_u8_index(px[2], to_u8)];
}

// out[e] = lut[(i * 3 + c) * 256 + index(in[e])] for every element e. One thread per pixel.
extern "C" __global__ void layermix_equalize_apply(const float* __restrict__ in,
                                                   float* __restrict__ out,
                                                   const float* __restrict__ lut, int n, int h,
                                                   int w, float to_u8) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const float* li = lut + lm_div(p, hw) * 768;
        const float* px = in + p * 3;
        float* o = out + p * 3;
        lm_equalize_pixel(li, px, o, to_u8);
    }
}

// The same, one thread per image (the host's form: no division per pixel).
extern "C" __global__ void layermix_equalize_apply_images(const float* __restrict__ in,
                                                          float* __restrict__ out,
                                                          const float* __restrict__ lut, int n,
                                                          int h, int w, float to_u8) {
    const long long hw = (long long)h * w;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float* li = lut + i * 768;
        const float* px = in + i * hw * 3;
        float* o = out + i * hw * 3;
        for (long long p = 0; p < hw * 3; p += 3) {
            lm_equalize_pixel(li, px + p, o + p, to_u8);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// posterize: post float32 (n, 3) = (levels = 2^bits, levels - 1, 1 / levels) per image.
// t = floor(x * levels), np.clip(t, 0, levels - 1) with an array bound (NumPy's generic loop:
// NaN kept, t > 0 ? t : 0, then t < hi ? t : hi, so a zero comes out as +0), times 1 / levels.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ float lm_posterize(float x, float levels, float top, float inv) {
    float t = x * levels;
    t = floorf(t);
    if (t == t) {  // not NaN
        t = t > 0.0f ? t : 0.0f;
        t = t < top ? t : top;
    }
    return t * inv;
}

extern "C" __global__ void layermix_posterize(const float* __restrict__ in,
                                              float* __restrict__ out,
                                              const float* __restrict__ post, int n, int h, int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const float* pp = post + lm_div(e, hw * 3) * 3;
        out[e] = lm_posterize(in[e], pp[0], pp[1], pp[2]);
    }
}

// The same, one thread per image (the host's form).
extern "C" __global__ void layermix_posterize_images(const float* __restrict__ in,
                                                     float* __restrict__ out,
                                                     const float* __restrict__ post, int n,
                                                     int h, int w) {
    const long long hw3 = (long long)h * w * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float levels = post[i * 3], top = post[i * 3 + 1], inv = post[i * 3 + 2];
        const float* src = in + i * hw3;
        float* dst = out + i * hw3;
        for (long long e = 0; e < hw3; ++e) dst[e] = lm_posterize(src[e], levels, top, inv);
    }
}

// ---------------------------------------------------------------------------------------------
// solarize: thr float32 (n,): x >= thr ? 1 - x : x.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ float lm_solarize(float x, float thr) {
    return x >= thr ? 1.0f - x : x;
}

extern "C" __global__ void layermix_solarize(const float* __restrict__ in,
                                             float* __restrict__ out,
                                             const float* __restrict__ thr, int n, int h, int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        out[e] = lm_solarize(in[e], thr[lm_div(e, hw * 3)]);
    }
}

// The same, one thread per image (the host's form).
extern "C" __global__ void layermix_solarize_images(const float* __restrict__ in,
                                                    float* __restrict__ out,
                                                    const float* __restrict__ thr, int n, int h,
                                                    int w) {
    const long long hw3 = (long long)h * w * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float t = thr[i];
        const float* src = in + i * hw3;
        float* dst = out + i * hw3;
        for (long long e = 0; e < hw3; ++e) dst[e] = lm_solarize(src[e], t);
    }
}

// ---------------------------------------------------------------------------------------------
// autocontrast
// ---------------------------------------------------------------------------------------------

// Per image and channel min / max as order-preserving int keys: keys int32 (n, 3, 2) =
// (min key, max key), initialised by the host to (INT_MAX, INT_MIN). A NaN sets the max key to
// INT_MAX (above every float's key: +inf is 0x7F800000), which marks the channel as NaN (NumPy's
// min and max propagate NaN). Thread t = i * lanes + l reduces pixels l, l + lanes, ... of image
// i, then does one atomicMin / atomicMax per channel (min and max are exact and
// order-independent).
extern "C" __global__ void layermix_minmax(const float* __restrict__ in, int* keys, int n, int h,
                                           int w, int lanes) {
    const long long hw = (long long)h * w;
    const long long total = (long long)n * lanes;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const long long i = t / lanes;
        const long long l = t - i * lanes;
        if (l >= hw) continue;
        const float* src = in + i * hw * 3;
        int kmin[3] = {LM_INT_MAX, LM_INT_MAX, LM_INT_MAX};
        int kmax[3] = {LM_INT_MIN, LM_INT_MIN, LM_INT_MIN};
        for (long long p = l; p < hw; p += lanes) {
            for (int c = 0; c < 3; ++c) {
                const float v = src[p * 3 + c];
                if (v != v) {
                    kmax[c] = LM_INT_MAX;
                    continue;
                }
                const int k = lm_key(v);
                if (k < kmin[c]) kmin[c] = k;
                if (k > kmax[c]) kmax[c] = k;
            }
        }
        int* ki = keys + i * 6;
        for (int c = 0; c < 3; ++c) {
            atomicMin(ki + c * 2, kmin[c]);
            atomicMax(ki + c * 2 + 1, kmax[c]);
        }
    }
}

// One thread per pixel: (x - mn) / scale per channel, scale = mx - mn; mn = 0 and scale = 1 where mx == mn; then
// np.clip(., 0, 1) with scalar bounds (NumPy's fast loop: x < 0 ? 0 : x, then x > 1 ? 1 : x; NaN
// and -0 kept). A NaN channel gives mn = mx = NaN, hence NaN everywhere.
extern "C" __global__ void layermix_autocontrast_apply(const float* __restrict__ in,
                                                       float* __restrict__ out,
                                                       const int* __restrict__ keys, int n,
                                                       int h, int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const int* ki = keys + lm_div(p, hw) * 6;
        const float* px = in + p * 3;
        float* o = out + p * 3;
        for (int c = 0; c < 3; ++c) {
            const int* k = ki + c * 2;
            float mn, scale;
            if (k[1] == LM_INT_MAX) {
                mn = __uint_as_float(0x7FC00000u);
                scale = mn;
            } else {
                mn = lm_unkey(k[0]);
                const float mx = lm_unkey(k[1]);
                scale = mx - mn;
                if (mx == mn) {
                    mn = 0.0f;
                    scale = 1.0f;
                }
            }
            float t = px[c] - mn;
            t = __fdiv_rn(t, scale);
            t = t < 0.0f ? 0.0f : t;
            t = t > 1.0f ? 1.0f : t;
            o[c] = t;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// grayscale: l = r * wr, l = fma(g, wg, l), l = fma(b, wb, l), written to all three channels.
// ---------------------------------------------------------------------------------------------
extern "C" __global__ void layermix_grayscale(const float* __restrict__ in,
                                              float* __restrict__ out, int n, int h, int w,
                                              float wr, float wg, float wb) {
    const long long total = (long long)n * h * w;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const float* px = in + p * 3;
        float l = px[0] * wr;
        l = lm_fma(px[1], wg, l);
        l = lm_fma(px[2], wb, l);
        float* o = out + p * 3;
        o[0] = l;
        o[1] = l;
        o[2] = l;
    }
}

// ---------------------------------------------------------------------------------------------
// rotate, shear_x, shear_y, translate_x, translate_y
// ---------------------------------------------------------------------------------------------
#define LM_AFFINE_GENERAL 0
#define LM_AFFINE_COPY 1
#define LM_AFFINE_ROT180 2
#define LM_AFFINE_ROT90 3
#define LM_AFFINE_ROT270 4

// One thread per output pixel (all three channels).
//   mode int32 (n,): LM_AFFINE_COPY / ROT180 / ROT90 / ROT270 are rotate's exact fast paths
//     (angle % 360 == 0 / 180, and 90 / 270 on square images: np.rot90 with k = 1 / 3);
//     LM_AFFINE_GENERAL is the affine grid + bilinear grid_sample below.
//   coef float32 (n, 6): r[k][j] at coef[i * 6 + k * 2 + j], the rescaled matrix
//     theta^T / [w / 2, h / 2] computed by the host in float32 exactly as the twin
//     (theta from torchvision's _get_inverse_affine_matrix in Python doubles).
//   halfw, halfh: float32(w) / 2, float32(h) / 2.
// Per output pixel (x, y), with base grid bx = x - (w - 1) / 2, by = y - (h - 1) / 2 (exact
// half-integers) and j = 0 (x) / 1 (y):
//   g_j = fma(by, r[1][j], bx * r[0][j]) + r[2][j] + 1      (float32 adds, in that order)
//   s_j = fma(g_j, size_j / 2, -0.5)                         (grid_sample's unnormalize)
//   x0 = floor(sx), we = sx - x0, ea = 1 - we; y0 = floor(sy), no = sy - y0, so = 1 - no
//   nw = so * ea, ne = so * we, sw = no * ea, se = no * we
//   corners (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1) read 0 outside the image
//   out = fma(se_v, se, fma(sw_v, sw, fma(ne_v, ne, nw_v * nw)))
// x0 / y0 are clamped to [-2, w] / [-2, h] before the int conversion (the twin does the same:
// both corners of a clamped pair stay outside); a NaN coordinate clamps to -2 (corners 0, NaN
// weights: the twin's NaN result).
// The general affine map of output pixel x in a row whose centred coordinate is by: the
// bilinear weights of its four source corners and the top-left corner (ix, iy).
__device__ __forceinline__ void lm_affine_source(int x, float by, const float* __restrict__ a,
                                                 double cx, float fw, float fh, float halfw,
                                                 float halfh, float* wnw, float* wne,
                                                 float* wsw, float* wse, int* ix, int* iy) {
    const float bx = (float)((double)x - cx);
    float gx = lm_fma(by, a[2], bx * a[0]);
    gx = gx + a[4];
    gx = gx + 1.0f;
    float gy = lm_fma(by, a[3], bx * a[1]);
    gy = gy + a[5];
    gy = gy + 1.0f;
    const float sx = lm_fma(gx, halfw, -0.5f);
    const float sy = lm_fma(gy, halfh, -0.5f);

    float x0 = floorf(sx);
    float y0 = floorf(sy);
    const float we = sx - x0;
    const float ea = 1.0f - we;
    const float no = sy - y0;
    const float so = 1.0f - no;
    *wnw = so * ea;
    *wne = so * we;
    *wsw = no * ea;
    *wse = no * we;
    x0 = x0 >= -2.0f ? (x0 <= fw ? x0 : fw) : -2.0f;  // NaN -> -2
    y0 = y0 >= -2.0f ? (y0 <= fh ? y0 : fh) : -2.0f;
    *ix = (int)x0;
    *iy = (int)y0;
}

// The bilinear corner sum into dst (3 channels); corners outside the image read 0.
__device__ __forceinline__ void lm_affine_gather(const float* __restrict__ src,
                                                 float* __restrict__ dst, int ix, int iy, int h,
                                                 int w, float wnw, float wne, float wsw,
                                                 float wse) {
    const bool west = ix >= 0 && ix < w;
    const bool east = ix + 1 >= 0 && ix + 1 < w;
    const bool north = iy >= 0 && iy < h;
    const bool south = iy + 1 >= 0 && iy + 1 < h;
    const long long on = ((long long)iy * w + ix) * 3;  // only read when inside
    const long long os = on + (long long)w * 3;
    for (int c = 0; c < 3; ++c) {
        const float vnw = (north && west) ? src[on + c] : 0.0f;
        const float vne = (north && east) ? src[on + 3 + c] : 0.0f;
        const float vsw = (south && west) ? src[os + c] : 0.0f;
        const float vse = (south && east) ? src[os + 3 + c] : 0.0f;
        float acc = vnw * wnw;
        acc = lm_fma(vne, wne, acc);
        acc = lm_fma(vsw, wsw, acc);
        acc = lm_fma(vse, wse, acc);
        dst[c] = acc;
    }
}

// Rotate's exact pixel moves (mode != LM_AFFINE_GENERAL): output (x, y) copies one source pixel.
__device__ __forceinline__ void lm_affine_move(const float* __restrict__ src,
                                               float* __restrict__ dst, int m, int x, int y,
                                               int h, int w) {
    int sx = x, sy = y;
    if (m == LM_AFFINE_ROT180) {
        sx = w - 1 - x;
        sy = h - 1 - y;
    } else if (m == LM_AFFINE_ROT90) {  // square: out[y, x] = in[x, w - 1 - y]
        sx = w - 1 - y;
        sy = x;
    } else if (m == LM_AFFINE_ROT270) {  // square: out[y, x] = in[w - 1 - x, y]
        sx = y;
        sy = w - 1 - x;
    }
    const float* s = src + ((long long)sy * w + sx) * 3;
    dst[0] = s[0];
    dst[1] = s[1];
    dst[2] = s[2];
}

extern "C" __global__ void layermix_affine_bilinear(const float* __restrict__ in,
                                                    float* __restrict__ out,
                                                    const float* __restrict__ coef,
                                                    const int* __restrict__ mode, int n, int h,
                                                    int w, float halfw, float halfh) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    const double cx = (double)(w - 1) * 0.5;
    const double cy = (double)(h - 1) * 0.5;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const long long i = lm_div(p, hw);
        const long long r = p - i * hw;
        const int y = (int)lm_div(r, w);
        const int x = (int)(r - (long long)y * w);
        const float* src = in + i * hw * 3;
        const int m = mode[i];
        if (m != LM_AFFINE_GENERAL) {
            lm_affine_move(src, out + p * 3, m, x, y, h, w);
            continue;
        }
        float wnw, wne, wsw, wse;
        int ix, iy;
        lm_affine_source(x, (float)((double)y - cy), coef + i * 6, cx, (float)w, (float)h, halfw,
                         halfh, &wnw, &wne, &wsw, &wse, &ix, &iy);
        lm_affine_gather(src, out + p * 3, ix, iy, h, w, wnw, wne, wsw, wse);
    }
}

// The same pixels, one thread per output row (image i, row y), in chunks of LM_ROW_CHUNK
// pixels: first every pixel's weights and corner (straight-line code that g++ vectorises
// with -fno-trapping-math, as ipmix_dali/executors/native.py builds it), then the corner sums.
// For the host's launch, one thread for the whole batch: ~35 % faster there than the per-pixel
// kernel (docs/cpu_stage.md); the same functions, so the
// same bits (tests/test_native.py).
#define LM_ROW_CHUNK 32
extern "C" __global__ void layermix_affine_bilinear_rows(const float* __restrict__ in,
                                                         float* __restrict__ out,
                                                         const float* __restrict__ coef,
                                                         const int* __restrict__ mode, int n,
                                                         int h, int w, float halfw, float halfh) {
    const long long hw = (long long)h * w;
    const long long rows = (long long)n * h;
    const long long stride = (long long)blockDim.x * gridDim.x;
    const double cx = (double)(w - 1) * 0.5;
    const double cy = (double)(h - 1) * 0.5;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < rows; t += stride) {
        const long long i = lm_div(t, h);
        const int y = (int)(t - i * h);
        const float* src = in + i * hw * 3;
        float* dst = out + t * w * 3;
        const int m = mode[i];
        if (m != LM_AFFINE_GENERAL) {
            for (int x = 0; x < w; ++x) lm_affine_move(src, dst + (long long)x * 3, m, x, y, h, w);
            continue;
        }
        const float* a = coef + i * 6;
        const float by = (float)((double)y - cy);
        float wnw[LM_ROW_CHUNK], wne[LM_ROW_CHUNK], wsw[LM_ROW_CHUNK], wse[LM_ROW_CHUNK];
        int ix[LM_ROW_CHUNK], iy[LM_ROW_CHUNK];
        for (int x0 = 0; x0 < w; x0 += LM_ROW_CHUNK) {
            const int cnt = w - x0 < LM_ROW_CHUNK ? w - x0 : LM_ROW_CHUNK;
            for (int k = 0; k < cnt; ++k) {
                lm_affine_source(x0 + k, by, a, cx, (float)w, (float)h, halfw, halfh, &wnw[k],
                                 &wne[k], &wsw[k], &wse[k], &ix[k], &iy[k]);
            }
            for (int k = 0; k < cnt; ++k) {
                lm_affine_gather(src, dst + (long long)(x0 + k) * 3, ix[k], iy[k], h, w, wnw[k],
                                 wne[k], wsw[k], wse[k]);
            }
        }
    }
}
