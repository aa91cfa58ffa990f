// mixing.cu: the float stages of the executors on the GPU, the twins of
// ipmix_dali/executors/float_ops.py and numpy_exec.py's mixing steps.
//
// Compiled with --fmad=false (g++ -ffp-contract=off in the emulator): every float expression is
// one IEEE-rounded operation at a time, in float_ops' order:
//   to_float:   x / 255                                  (true division, like ToTensor)
//   normalize:  (x - mean_c) / std_c
//   add:        ((a * (2x - 1) + b * (2y - 1)) + 1) / 2
//   multiply:   ((float)pow((double)(2x), a) * (float)pow((double)max(2y, 1e-37), b)) / 2
//   pixels/elems: mask ? x : y, mask = ipmix_uniform(seed, index) < p (common.cuh layout)
//   combine:    (1 - m) * pre(x) + m * (((0 + w0 pre(y0)) + w1 pre(y1)) + ...)
// Ops: 0 add, 1 multiply, 2 random_pixels, 3 random_elems (ops/table.py MIX_OPS).
// Output casts: clip01 (PixMix, LayerMix), ToPILImage's wrap (IPMix) or clip (overflow="clip").
// Every kernel uses a grid-stride loop over its work items.
#include "common.cuh"

#define MIX_ADD 0
#define MIX_MUL 1
#define MIX_PIX 2
#define MIX_ELEM 3
#define OUT_CLIP01 0
#define OUT_WRAP_U8 1
#define OUT_CLIP_U8 2

__device__ __forceinline__ float mx_to_float(unsigned char v) { return (float)v / 255.0f; }

__device__ __forceinline__ float mx_mix(int op, float x, float y, float a, float b,
                                        float p, unsigned int seed, unsigned int pix_index,
                                        unsigned int elem_index) {
    if (op == MIX_ADD) {
        float x2 = x * 2.0f - 1.0f;
        float y2 = y * 2.0f - 1.0f;
        return (a * x2 + b * y2 + 1.0f) / 2.0f;
    }
    if (op == MIX_MUL) {
        float pa = (float)pow((double)(x * 2.0f), (double)a);
        float yc = y * 2.0f;
        yc = yc > 1e-37f ? yc : 1e-37f;  // np.maximum (y is never NaN here: it comes from uint8)
        float pb = (float)pow((double)yc, (double)b);
        return (pa * pb) / 2.0f;
    }
    unsigned int index = op == MIX_PIX ? pix_index : elem_index;
    return ipmix_uniform(seed, index) < p ? x : y;
}

// (x - mean) / std of uint8 NHWC pixels (u8 != 0) or float32 ones; out float32, same layout.
extern "C" __global__ void mix_normalize(const unsigned char* __restrict__ in_u8,
                                         const float* __restrict__ in_f, float* __restrict__ out,
                                         long long count, const float* __restrict__ mean,
                                         const float* __restrict__ stdv, int u8) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        int c = (int)(i % 3);
        float x = u8 ? mx_to_float(in_u8[i]) : in_f[i];
        out[i] = (x - mean[c]) / stdv[c];
    }
}

// uint8 -> float32 x / 255.
extern "C" __global__ void mix_to_float(const unsigned char* __restrict__ in,
                                        float* __restrict__ out, long long count) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride)
        out[i] = mx_to_float(in[i]);
}

// AugMix / IPMix combination. clean: (n, hw3) uint8; chains: (n, v, k, hw3) uint8;
// weights: (n, v, k) float32; m: (n, v) float32; out: (v, n, hw3) float32.
extern "C" __global__ void mix_combine(const unsigned char* __restrict__ clean,
                                       const unsigned char* __restrict__ chains,
                                       const float* __restrict__ weights,
                                       const float* __restrict__ m, float* __restrict__ out,
                                       int n, int v, int k, long long hw3,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ stdv) {
    const long long count = (long long)v * n * hw3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        long long e = t % hw3;
        long long vi = t / hw3;
        int i = (int)(vi % n);
        int vv = (int)(vi / n);
        int c = (int)(e % 3);
        float pre_x = (mx_to_float(clean[(long long)i * hw3 + e]) - mean[c]) / stdv[c];
        float mix = 0.0f;
        const long long base = ((long long)i * v + vv) * k;
        for (int j = 0; j < k; ++j) {
            float pre_y = (mx_to_float(chains[(base + j) * hw3 + e]) - mean[c]) / stdv[c];
            float term = pre_y * weights[base + j];
            mix = mix + term;
        }
        float mm = m[(long long)i * v + vv];
        out[t] = (1.0f - mm) * pre_x + mix * mm;
    }
}

// Whole-image mixing of rows (PixMix rounds, LayerMix blends), in place on z (float32):
// z[row[j]] = clip01(mix(op_j, z[row[j]], y_j)), y_j = partner_u8[j] / 255 (y_is_u8) or
// partner_f[j]. Per-row op, a, b, mask p and seed; hw = H * W.
extern "C" __global__ void mix_rows_full(float* __restrict__ z, const int* __restrict__ rows,
                                         const unsigned char* __restrict__ partner_u8,
                                         const float* __restrict__ partner_f, int y_is_u8,
                                         const int* __restrict__ ops, const float* __restrict__ a,
                                         const float* __restrict__ b, const float* __restrict__ p,
                                         const unsigned int* __restrict__ seeds, int r,
                                         long long hw) {
    const long long hw3 = hw * 3;
    const long long count = (long long)r * hw3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        int j = (int)(t / hw3);
        long long e = t % hw3;
        long long pix = e / 3;
        int c = (int)(e % 3);
        long long zi = (long long)rows[j] * hw3 + e;
        float y = y_is_u8 ? mx_to_float(partner_u8[t]) : partner_f[t];
        float v = mx_mix(ops[j], z[zi], y, a[j], b[j], p[j], seeds[j], (unsigned int)pix,
                         (unsigned int)(c * hw + pix));
        z[zi] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);  // torch.clip (NaN stays NaN)
    }
}

// IPMix patch steps of many rows in one launch. Row j mixes the box (top, left, height, width)
// of y[rows[j]] (uint8 images, (rows, H, W, 3)) with the same box of partner[j] and writes the
// result back cast to uint8 (wrap or clip). Work items: r * max_area * 3; items outside a row's
// box do nothing. Mask indices are patch-local: pixel py * width + px, element
// (c * height + py) * width + px.
extern "C" __global__ void mix_patch(unsigned char* __restrict__ y, const int* __restrict__ rows,
                                     const unsigned char* __restrict__ partner,
                                     const int* __restrict__ box, const int* __restrict__ ops,
                                     const float* __restrict__ a, const float* __restrict__ b,
                                     const float* __restrict__ p,
                                     const unsigned int* __restrict__ seeds, int r, int h, int w,
                                     long long max_area, int out_mode) {
    const long long count = (long long)r * max_area * 3;
    const long long hw3 = (long long)h * w * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        int j = (int)(t / (max_area * 3));
        long long e = t % (max_area * 3);
        int c = (int)(e % 3);
        long long q = e / 3;
        int top = box[4 * j], left = box[4 * j + 1], bh = box[4 * j + 2], bw = box[4 * j + 3];
        if (q >= (long long)bh * bw) continue;
        int py = (int)(q / bw), px = (int)(q % bw);
        long long off = ((long long)(top + py) * w + (left + px)) * 3 + c;
        long long yi = (long long)rows[j] * hw3 + off;
        float xv = mx_to_float(y[yi]);
        float pv = mx_to_float(partner[(long long)j * hw3 + off]);
        float v = mx_mix(ops[j], xv, pv, a[j], b[j], p[j], seeds[j], (unsigned int)q,
                         (unsigned int)(((long long)c * bh + py) * bw + px));
        unsigned char u;
        if (out_mode == OUT_WRAP_U8) {
            u = ipmix_wrap_u8(v);
        } else {
            float s = v * 255.0f;
            if (s != s) s = 0.0f;  // nan -> 0 (np.nan_to_num)
            s = s < 0.0f ? 0.0f : (s > 255.0f ? 255.0f : s);
            u = (unsigned char)s;
        }
        y[yi] = u;
    }
}
