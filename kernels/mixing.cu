// mixing.cu: the float stages of the executors on the GPU, the twins of
// ipmix_dali/executors/float_ops.py and numpy_exec.py's mixing steps, and the row copies that
// let the CuPy executor work on whole batches without CuPy's gathers and scatters.
//
// Compiled without multiply-add contraction or flushing of subnormals (g++ -ffp-contract=off in
// the emulator): every float expression is one IEEE-rounded operation at a time, in float_ops'
// order:
//   to_float:   x / 255                                  (true division, like ToTensor)
//   normalize:  (x - mean_c) / std_c
//   add:        ((a * (2x - 1) + b * (2y - 1)) + 1) / 2
//   multiply:   ((float)pow((double)(2x), a) * (float)pow((double)max(2y, 1e-37), b)) / 2
//               Where an operand is uint8 data / 255 (IPMix's patches, PixMix's mixing partner)
//               its power takes one of 256 values per row: mix_pow_tables computes those once
//               with the same expression, and mix_patch / mix_rows_full look them up, so the
//               per-element work has no double precision (1/64 of the float rate on consumer
//               GPUs) and the pixels are the same.
//   pixels/elems: mask ? x : y, mask = ipmix_uniform(seed, index) < p (common.cuh layout)
//   combine:    (1 - m) * pre(x) + m * (((0 + w0 pre(y0)) + w1 pre(y1)) + ...)
// Ops: 0 add, 1 multiply, 2 random_pixels, 3 random_elems (ops/table.py MIX_OPS).
// Output casts: clip01 (PixMix, LayerMix), ToPILImage's wrap (IPMix) or clip (overflow="clip").
//
// Final outputs (mix_normalize, mix_combine) are written as views (v, i, y, x, c) at element
// offset v * s_v + i * s_n + y * s_y + x * s_x + c * s_c, in float32 or (half != 0) as IEEE
// half bits rounded like NumPy's astype(float16): any layout (NHWC, NCHW, samples interleaved
// for DALI's batched copy) and dtype in the same single pass.
//
// Partner rows (mix_rows_full, mix_patch): prow[j] >= 0 reads row prow[j] of partner_a,
// prow[j] < 0 reads row -1 - prow[j] of partner_b (mixing pictures and augmented partners
// without gathering them into one array first).
// Every kernel uses a grid-stride loop over its work items.
#include "common.cuh"

#define MIX_ADD 0
#define MIX_MUL 1
#define MIX_PIX 2
#define MIX_ELEM 3
#define OUT_CLIP01 0
#define OUT_WRAP_U8 1
#define OUT_CLIP_U8 2
#define MX_ROW_CHUNK 256  // pixels per chunk of the host forms' row loops

__device__ __forceinline__ float mx_to_float(unsigned char v) { return (float)v / 255.0f; }

__device__ __forceinline__ float mx_pow_x(float x, float a) {
    return (float)pow((double)(x * 2.0f), (double)a);
}

__device__ __forceinline__ float mx_pow_y(float y, float b) {
    float yc = y * 2.0f;
    yc = yc > 1e-37f ? yc : 1e-37f;  // np.maximum (y is never NaN here: it comes from uint8)
    return (float)pow((double)yc, (double)b);
}

__device__ __forceinline__ float mx_mix(int op, float x, float y, float a, float b,
                                        float p, unsigned int seed, unsigned int pix_index,
                                        unsigned int elem_index) {
    if (op == MIX_ADD) {
        float x2 = x * 2.0f - 1.0f;
        float y2 = y * 2.0f - 1.0f;
        return (a * x2 + b * y2 + 1.0f) / 2.0f;
    }
    if (op == MIX_MUL) return (mx_pow_x(x, a) * mx_pow_y(y, b)) / 2.0f;
    unsigned int index = op == MIX_PIX ? pix_index : elem_index;
    return ipmix_uniform(seed, index) < p ? x : y;
}

__device__ __forceinline__ void mx_store_at(float* out_f, unsigned short* out_h, int half,
                                            long long off, float v) {
    if (half)
        out_h[off] = ipmix_f16_bits(v);
    else
        out_f[off] = v;
}

// The output image row t of the host forms (one thread per row (vv, i, y)): t = (vv * n + i)
// * h + y.
__device__ __forceinline__ void mx_view_row(long long t, int n, int h, int* vv, int* i, int* y) {
    *y = (int)(t % h);
    const long long vi = t / h;
    *i = (int)(vi % n);
    *vv = (int)(vi / n);
}

// The element (vv, i, e) of an output view, e = (y * w + x) * 3 + c.
__device__ __forceinline__ void mx_store(float* out_f, unsigned short* out_h, int half, int vv,
                                         int i, long long e, int w, long long s_v, long long s_n,
                                         long long s_y, long long s_x, long long s_c, float v) {
    const long long pix = e / 3;
    const int c = (int)(e - pix * 3);
    const long long y = pix / w;
    const long long x = pix - y * w;
    mx_store_at(out_f, out_h, half, vv * s_v + i * s_n + y * s_y + x * s_x + c * s_c, v);
}

// Rows of bytes: dst[dst_rows[j]] = src[src_rows[j]] for j < r, rows of row_bytes bytes
// (word != 0: copied as 4-byte words; row_bytes and both buffers are then multiples of 4).
extern "C" __global__ void copy_rows(const unsigned char* __restrict__ src,
                                     const int* __restrict__ src_rows,
                                     unsigned char* __restrict__ dst,
                                     const int* __restrict__ dst_rows, int r, long long row_bytes,
                                     int word) {
    const long long unit = word ? 4 : 1;
    const long long per_row = row_bytes / unit;
    const long long count = (long long)r * per_row;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        const long long j = t / per_row;
        const long long k = t - j * per_row;
        const long long s = (long long)src_rows[j] * per_row + k;
        const long long d = (long long)dst_rows[j] * per_row + k;
        if (word)
            ((unsigned int*)dst)[d] = ((const unsigned int*)src)[s];
        else
            dst[d] = src[s];
    }
}

// The same copy, one thread per row (the host's form, ipmix_dali/executors/native.py: a plain
// byte loop the compiler turns into memcpy, no division per word).
extern "C" __global__ void copy_whole_rows(const unsigned char* __restrict__ src,
                                           const int* __restrict__ src_rows,
                                           unsigned char* __restrict__ dst,
                                           const int* __restrict__ dst_rows, int r,
                                           long long row_bytes, int word) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < r; j += stride) {
        const unsigned char* s = src + (long long)src_rows[j] * row_bytes;
        unsigned char* d = dst + (long long)dst_rows[j] * row_bytes;
        for (long long k = 0; k < row_bytes; ++k) d[k] = s[k];
    }
}

// DALI's samples into one batch: out[i] = the row_bytes bytes at address ptrs[i] (word != 0:
// copied as 4-byte words, every address and row_bytes being multiples of 4).
extern "C" __global__ void gather_samples(const unsigned long long* __restrict__ ptrs,
                                          unsigned char* __restrict__ out, int n,
                                          long long row_bytes, int word) {
    const long long unit = word ? 4 : 1;
    const long long per_row = row_bytes / unit;
    const long long count = (long long)n * per_row;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        const long long i = t / per_row;
        const long long k = t - i * per_row;
        if (word)
            ((unsigned int*)out)[t] = ((const unsigned int*)ptrs[i])[k];
        else
            out[t] = ((const unsigned char*)ptrs[i])[k];
    }
}

// Mixing pictures from a bank of square uint8 pictures (m, side, side, 3): out[i] is the
// size x size crop of picture index[i] at (top[i], left[i]).
extern "C" __global__ void crop_bank(const unsigned char* __restrict__ bank,
                                     const int* __restrict__ index, const int* __restrict__ top,
                                     const int* __restrict__ left, unsigned char* __restrict__ out,
                                     int n, int side, int size) {
    const long long row = (long long)size * 3;
    const long long per_image = row * size;
    const long long count = per_image * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        const long long i = t / per_image;
        const long long e = t - i * per_image;
        const long long y = e / row;
        const long long k = e - y * row;  // x * 3 + c
        const long long src = (((long long)index[i] * side + top[i] + y) * side + left[i]) * 3 + k;
        out[t] = bank[src];
    }
}

// Normalised views: for view vv of sample i, (x - mean) / std of input row
// i * in_views + vv % in_views, uint8 (u8 != 0, divided by 255 first) or float32 rows of
// h * w * 3 values; written as described at the top.
extern "C" __global__ void mix_normalize(const unsigned char* __restrict__ in_u8,
                                         const float* __restrict__ in_f, int u8,
                                         float* __restrict__ out_f,
                                         unsigned short* __restrict__ out_h, int half, int n,
                                         int views, int in_views, int h, int w, long long s_v,
                                         long long s_n, long long s_y, long long s_x,
                                         long long s_c, const float* __restrict__ mean,
                                         const float* __restrict__ stdv) {
    const long long hw3 = (long long)h * w * 3;
    const long long count = (long long)views * n * hw3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        const long long e = t % hw3;
        const long long vi = t / hw3;
        const int i = (int)(vi % n);
        const int vv = (int)(vi / n);
        const long long src = ((long long)i * in_views + vv % in_views) * hw3 + e;
        const int c = (int)(e % 3);
        const float x = u8 ? mx_to_float(in_u8[src]) : in_f[src];
        mx_store(out_f, out_h, half, vv, i, e, w, s_v, s_n, s_y, s_x, s_c, (x - mean[c]) / stdv[c]);
    }
}

// The same, one thread per output image row (vv, i, y) (the host's form).
extern "C" __global__ void mix_normalize_rows(const unsigned char* __restrict__ in_u8,
                                              const float* __restrict__ in_f, int u8,
                                              float* __restrict__ out_f,
                                              unsigned short* __restrict__ out_h, int half,
                                              int n, int views, int in_views, int h, int w,
                                              long long s_v, long long s_n, long long s_y,
                                              long long s_x, long long s_c,
                                              const float* __restrict__ mean,
                                              const float* __restrict__ stdv) {
    const long long hw3 = (long long)h * w * 3;
    const long long count = (long long)views * n * h;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        int vv, i, y;
        mx_view_row(t, n, h, &vv, &i, &y);
        const long long src = ((long long)i * in_views + vv % in_views) * hw3 + (long long)y * w * 3;
        for (int c = 0; c < 3; ++c) {
            const float m = mean[c], sd = stdv[c];
            const long long dst = vv * s_v + i * s_n + y * s_y + c * s_c;
            if (!half && s_x == 1) {  // channels first: a contiguous output run
                float* __restrict__ o = out_f + dst;
                if (u8) {
                    const unsigned char* __restrict__ in = in_u8 + src + c;
                    for (int x = 0; x < w; ++x) o[x] = (mx_to_float(in[x * 3]) - m) / sd;
                } else {
                    const float* __restrict__ in = in_f + src + c;
                    for (int x = 0; x < w; ++x) o[x] = (in[x * 3] - m) / sd;
                }
                continue;
            }
            for (int x = 0; x < w; ++x) {
                const long long e = src + x * 3 + c;
                const float v = u8 ? mx_to_float(in_u8[e]) : in_f[e];
                mx_store_at(out_f, out_h, half, dst + x * s_x, (v - m) / sd);
            }
        }
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
// weights: (n, v, k) float32; m: (n, v) float32; out: views (v, n, h, w, 3) as described above.
extern "C" __global__ void mix_combine(const unsigned char* __restrict__ clean,
                                       const unsigned char* __restrict__ chains,
                                       const float* __restrict__ weights,
                                       const float* __restrict__ m, float* __restrict__ out_f,
                                       unsigned short* __restrict__ out_h, int half, int n, int v,
                                       int k, int h, int w, long long s_v, long long s_n,
                                       long long s_y, long long s_x, long long s_c,
                                       const float* __restrict__ mean,
                                       const float* __restrict__ stdv) {
    const long long hw3 = (long long)h * w * 3;
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
        mx_store(out_f, out_h, half, vv, i, e, w, s_v, s_n, s_y, s_x, s_c,
                 (1.0f - mm) * pre_x + mix * mm);
    }
}

// The same, one thread per output image row (vv, i, y) (the host's form), a channel at a time
// and in chunks of MX_ROW_CHUNK pixels: each chain's term added to the chunk's sums in a loop
// of its own (the same additions in the same order), which the compiler vectorises; the
// channels-first float32 output is stored contiguously.
extern "C" __global__ void mix_combine_rows(const unsigned char* __restrict__ clean,
                                            const unsigned char* __restrict__ chains,
                                            const float* __restrict__ weights,
                                            const float* __restrict__ m,
                                            float* __restrict__ out_f,
                                            unsigned short* __restrict__ out_h, int half, int n,
                                            int v, int k, int h, int w, long long s_v,
                                            long long s_n, long long s_y, long long s_x,
                                            long long s_c, const float* __restrict__ mean,
                                            const float* __restrict__ stdv) {
    const long long hw3 = (long long)h * w * 3;
    const long long count = (long long)v * n * h;
    const long long stride = (long long)blockDim.x * gridDim.x;
    float mix[MX_ROW_CHUNK];
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        int vv, i, y;
        mx_view_row(t, n, h, &vv, &i, &y);
        const long long row = (long long)y * w * 3;
        const long long base = ((long long)i * v + vv) * k;
        const float mm = m[(long long)i * v + vv];
        const unsigned char* __restrict__ cx = clean + (long long)i * hw3 + row;
        for (int c = 0; c < 3; ++c) {
            const float mc = mean[c], sc = stdv[c];
            const long long dst = vv * s_v + i * s_n + y * s_y + c * s_c;
            for (int x0 = 0; x0 < w; x0 += MX_ROW_CHUNK) {
                const int cnt = w - x0 < MX_ROW_CHUNK ? w - x0 : MX_ROW_CHUNK;
                for (int q = 0; q < cnt; ++q) mix[q] = 0.0f;
                for (int j = 0; j < k; ++j) {
                    const unsigned char* __restrict__ cy =
                        chains + (base + j) * hw3 + row + (long long)x0 * 3 + c;
                    const float wj = weights[base + j];
                    for (int q = 0; q < cnt; ++q) {
                        const float pre_y = (mx_to_float(cy[q * 3]) - mc) / sc;
                        const float term = pre_y * wj;
                        mix[q] = mix[q] + term;
                    }
                }
                const unsigned char* __restrict__ px = cx + (long long)x0 * 3 + c;
                if (!half && s_x == 1) {
                    float* __restrict__ o = out_f + dst + x0;
                    for (int q = 0; q < cnt; ++q) {
                        const float pre_x = (mx_to_float(px[q * 3]) - mc) / sc;
                        o[q] = (1.0f - mm) * pre_x + mix[q] * mm;
                    }
                } else {
                    for (int q = 0; q < cnt; ++q) {
                        const float pre_x = (mx_to_float(px[q * 3]) - mc) / sc;
                        mx_store_at(out_f, out_h, half, dst + (x0 + q) * s_x,
                                    (1.0f - mm) * pre_x + mix[q] * mm);
                    }
                }
            }
        }
    }
}

// multiply's powers of every uint8 value for the rows whose op is multiply: ta[j][v] =
// (2 (v / 255))^a[j] (with_a != 0) and tb[j][v] = max(2 (v / 255), 1e-37)^b[j], v < 256; the
// other rows' entries are left as they are (never read).
extern "C" __global__ void mix_pow_tables(const int* __restrict__ ops,
                                          const float* __restrict__ a,
                                          const float* __restrict__ b, float* __restrict__ ta,
                                          float* __restrict__ tb, int r, int with_a) {
    const long long count = (long long)r * 256;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        const int j = (int)(t / 256);
        if (ops[j] != MIX_MUL) continue;
        const float x = mx_to_float((unsigned char)(t % 256));
        if (with_a) ta[t] = mx_pow_x(x, a[j]);
        tb[t] = mx_pow_y(x, b[j]);
    }
}

// Whole-image mixing of rows (PixMix rounds, LayerMix blends), in place on z (float32):
// z[rows[j]] = clip01(mix(op_j, z[rows[j]], y_j)). y_j is uint8 (y_is_u8 != 0, divided by 255)
// from partner_a / partner_b as prow[j] says, or float32 row prow[j] of partner_f. Per-row op,
// a, b, mask p and seed; hw = H * W. With a uint8 partner, multiply reads its power from
// pow_b (mix_pow_tables, r x 256).
extern "C" __global__ void mix_rows_full(float* __restrict__ z, const int* __restrict__ rows,
                                         const unsigned char* __restrict__ partner_a,
                                         const unsigned char* __restrict__ partner_b,
                                         const float* __restrict__ partner_f, int y_is_u8,
                                         const int* __restrict__ prow,
                                         const int* __restrict__ ops, const float* __restrict__ a,
                                         const float* __restrict__ b, const float* __restrict__ p,
                                         const unsigned int* __restrict__ seeds,
                                         const float* __restrict__ pow_b, int r,
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
        const int q = prow[j];
        float v;
        if (!y_is_u8) {
            v = mx_mix(ops[j], z[zi], partner_f[(long long)q * hw3 + e], a[j], b[j], p[j],
                       seeds[j], (unsigned int)pix, (unsigned int)(c * hw + pix));
        } else {
            const unsigned char yu = q >= 0 ? partner_a[(long long)q * hw3 + e]
                                            : partner_b[(long long)(-1 - q) * hw3 + e];
            if (ops[j] == MIX_MUL)
                v = (mx_pow_x(z[zi], a[j]) * pow_b[(long long)j * 256 + yu]) / 2.0f;
            else
                v = mx_mix(ops[j], z[zi], mx_to_float(yu), a[j], b[j], p[j], seeds[j],
                           (unsigned int)pix, (unsigned int)(c * hw + pix));
        }
        z[zi] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);  // torch.clip (NaN stays NaN)
    }
}

// One row of mix_rows_full with its op fixed (so that the op test leaves the element loop),
// in chunks of MX_ROW_CHUNK pixels: the masks' draws of a chunk first, as a loop of integer
// arithmetic the compiler vectorises (one draw per pixel for random_pixels, where mx_mix draws
// the same value once per channel), then the elements.
template <int OP>
__device__ __forceinline__ void mx_mix_row(float* __restrict__ zr, const float* __restrict__ yr,
                                           const unsigned char* __restrict__ yu,
                                           const float* __restrict__ pb, float a, float b,
                                           float p, unsigned int seed, long long hw) {
    bool keep[3][MX_ROW_CHUNK];
    for (long long pix0 = 0; pix0 < hw; pix0 += MX_ROW_CHUNK) {
        const int cnt = hw - pix0 < MX_ROW_CHUNK ? (int)(hw - pix0) : MX_ROW_CHUNK;
        if (OP == MIX_PIX || OP == MIX_ELEM) {
            for (int c = 0; c < (OP == MIX_PIX ? 1 : 3); ++c) {
                const unsigned int first = (unsigned int)(c * hw + pix0);
                for (int k = 0; k < cnt; ++k)
                    keep[c][k] = ipmix_uniform(seed, first + (unsigned int)k) < p;
            }
        }
        for (int k = 0; k < cnt; ++k) {
            for (int c = 0; c < 3; ++c) {
                const long long e = (pix0 + k) * 3 + c;
                const float y = yr != 0 ? yr[e] : mx_to_float(yu[e]);
                float v;
                if (OP == MIX_PIX || OP == MIX_ELEM)
                    v = keep[OP == MIX_PIX ? 0 : c][k] ? zr[e] : y;
                else if (OP == MIX_MUL && yr == 0)
                    v = (mx_pow_x(zr[e], a) * pb[yu[e]]) / 2.0f;
                else
                    v = mx_mix(OP, zr[e], y, a, b, p, seed, 0u, 0u);
                zr[e] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            }
        }
    }
}

// The same as mix_rows_full, one thread per row (the host's form).
extern "C" __global__ void mix_rows_full_rows(float* __restrict__ z, const int* __restrict__ rows,
                                              const unsigned char* __restrict__ partner_a,
                                              const unsigned char* __restrict__ partner_b,
                                              const float* __restrict__ partner_f, int y_is_u8,
                                              const int* __restrict__ prow,
                                              const int* __restrict__ ops,
                                              const float* __restrict__ a,
                                              const float* __restrict__ b,
                                              const float* __restrict__ p,
                                              const unsigned int* __restrict__ seeds,
                                              const float* __restrict__ pow_b, int r,
                                              long long hw) {
    const long long hw3 = hw * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < r; j += stride) {
        float* zr = z + (long long)rows[j] * hw3;
        const int q = prow[j];
        const float* yr = y_is_u8 ? 0 : partner_f + (long long)q * hw3;
        const unsigned char* yu = !y_is_u8 ? 0
                                  : q >= 0 ? partner_a + (long long)q * hw3
                                           : partner_b + (long long)(-1 - q) * hw3;
        const float* pb = pow_b + j * 256;
        if (ops[j] == MIX_ADD)
            mx_mix_row<MIX_ADD>(zr, yr, yu, pb, a[j], b[j], p[j], seeds[j], hw);
        else if (ops[j] == MIX_MUL)
            mx_mix_row<MIX_MUL>(zr, yr, yu, pb, a[j], b[j], p[j], seeds[j], hw);
        else if (ops[j] == MIX_PIX)
            mx_mix_row<MIX_PIX>(zr, yr, yu, pb, a[j], b[j], p[j], seeds[j], hw);
        else
            mx_mix_row<MIX_ELEM>(zr, yr, yu, pb, a[j], b[j], p[j], seeds[j], hw);
    }
}

// IPMix patch steps of many rows in one launch. Row j mixes the box (top, left, height, width)
// of y[rows[j]] (uint8 images (rows, H, W, 3)) with the same box of its partner (partner_a /
// partner_b as prow[j] says) and writes the result back cast to uint8 (wrap or clip). Work
// items: r * max_area * 3; items outside a row's box do nothing. Mask indices are patch-local:
// pixel py * width + px, element (c * height + py) * width + px. Both operands are uint8 data:
// multiply reads both powers from pow_a / pow_b (mix_pow_tables, r x 256).
extern "C" __global__ void mix_patch(unsigned char* __restrict__ y, const int* __restrict__ rows,
                                     const unsigned char* __restrict__ partner_a,
                                     const unsigned char* __restrict__ partner_b,
                                     const int* __restrict__ prow,
                                     const int* __restrict__ box, const int* __restrict__ ops,
                                     const float* __restrict__ a, const float* __restrict__ b,
                                     const float* __restrict__ p,
                                     const unsigned int* __restrict__ seeds,
                                     const float* __restrict__ pow_a,
                                     const float* __restrict__ pow_b, int r, int h, int w,
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
        const int src = prow[j];
        const unsigned char* partner = src >= 0 ? partner_a + (long long)src * hw3
                                                : partner_b + (long long)(-1 - src) * hw3;
        const unsigned char xu = y[yi], pu = partner[off];
        float v;
        if (ops[j] == MIX_MUL)
            v = (pow_a[(long long)j * 256 + xu] * pow_b[(long long)j * 256 + pu]) / 2.0f;
        else
            v = mx_mix(ops[j], mx_to_float(xu), mx_to_float(pu), a[j], b[j], p[j], seeds[j],
                       (unsigned int)q, (unsigned int)(((long long)c * bh + py) * bw + px));
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
