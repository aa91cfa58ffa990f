// lut_ops.cu: the LUT and histogram families of the PIL ops, batched, per-image parameters.
//
// Layout: images are NHWC uint8, n images of h x w x 3, C-contiguous; element
// ((i * h + y) * w + x) * 3 + c. Outputs have the same layout and are written in full; the input
// is never written.
//
// Ops (ids of ipmix_dali.ops.table.PIL_OPS) and their launch sequences (host side:
// ipmix_dali/executors/cupy_ops.py, which mirrors ipmix_dali/executors/np_ops.py):
//   posterize, solarize, invert: the host builds the (n, 3, 256) uint8 LUT, then lut_apply.
//   mirror:                     lut_mirror (a gather, out(x) = in(w - 1 - x)).
//   equalize:                   lut_histogram -> lut_equalize_build -> lut_apply.
//   autocontrast:               lut_histogram -> lut_autocontrast_build (per-image cut)
//                               -> lut_apply.
//
// Parameter arrays:
//   lut   uint8 (n, 3, 256): lut[(i * 3 + c) * 256 + v] is the output value of input value v in
//         channel c of image i.
//   hist  int32 (n, 3, 256), zero-initialised by the host, filled with atomicAdd.
//   cuts  int32 (n,): autocontrast's pixel count cut = int(h * w * cutoff // 100) computed by the
//         host in Python float arithmetic like Pillow (0 when cutoff is 0), clamped by the host to
//         [-1, h * w + 1] (every negative cut gives the identity, every cut >= h * w clears the
//         histogram: the clamp does not change a result).
//
// Rounding rules: integer arithmetic throughout, except autocontrast's LUT, which is Pillow's
// float64 expression trunc(v * scale + offset) with scale = 255.0 / (hi - lo) and
// offset = -lo * scale, evaluated one rounded double operation at a time (no fused multiply-add:
// compiled with --fmad=false), then clipped to [0, 255]. Equalize: step = (total - h[last]) / 255,
// lut[v] = min((step / 2 + cumsum_before(v)) / step, 255) in integers (identity when at most one
// bin is used or step is 0).
//
// No __shared__ memory, __syncthreads, warp intrinsics or CUDA headers: kernels/emulator.py runs
// these kernels on the CPU, one thread after another. Every kernel uses a grid-stride loop.

__device__ __forceinline__ long long lut_clampll(long long v, long long lo, long long hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// out[e] = lut[(i * 3 + c) * 256 + in[e]] for every element e of the batch.
extern "C" __global__ void lut_apply(const unsigned char* __restrict__ in,
                                     unsigned char* __restrict__ out,
                                     const unsigned char* __restrict__ lut, int n, int h, int w) {
    const long long per_image = (long long)h * w * 3;
    const long long total = per_image * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long i = e / per_image;
        const int c = (int)(e % 3);
        out[e] = lut[(i * 3 + c) * 256 + in[e]];
    }
}

// ImageOps.mirror: out[i, y, x, c] = in[i, y, w - 1 - x, c].
extern "C" __global__ void lut_mirror(const unsigned char* __restrict__ in,
                                      unsigned char* __restrict__ out, int n, int h, int w) {
    const long long total = (long long)n * h * w * 3;
    const long long row = (long long)w * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long r = e / row;          // image * h + y
        const long long k = e - r * row;      // x * 3 + c
        const long long x = k / 3;
        const long long c = k - x * 3;
        out[e] = in[r * row + ((long long)w - 1 - x) * 3 + c];
    }
}

// Per image, per channel histograms: hist[(i * 3 + c) * 256 + v] += 1 (hist zeroed by the host).
// One thread per pixel.
extern "C" __global__ void lut_histogram(const unsigned char* __restrict__ in, int* hist, int n,
                                         int h, int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const long long i = p / hw;
        const unsigned char* px = in + p * 3;
        int* hi = hist + i * 768;
        atomicAdd(hi + px[0], 1);
        atomicAdd(hi + 256 + px[1], 1);
        atomicAdd(hi + 512 + px[2], 1);
    }
}

// ImageOps.equalize's LUT, one thread per (image, channel) t in [0, 3n): np_ops._equalize_lut.
extern "C" __global__ void lut_equalize_build(const int* __restrict__ hist,
                                              unsigned char* __restrict__ lut, int n) {
    const long long total = (long long)n * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int* hc = hist + t * 256;
        unsigned char* lc = lut + t * 256;
        long long sum = 0;
        int count = 0;
        int last = 255;  // no used bin: NumPy's argmax over all-False gives 255 - 0
        for (int v = 0; v < 256; ++v) {
            sum += hc[v];
            if (hc[v] > 0) {
                ++count;
                last = v;
            }
        }
        const long long step = (sum - hc[last]) / 255;  // both >= 0: C division is floor
        if (count <= 1 || step == 0) {
            for (int v = 0; v < 256; ++v) lc[v] = (unsigned char)v;
            continue;
        }
        long long cum = 0;  // histogram sum below v
        for (int v = 0; v < 256; ++v) {
            long long value = (step / 2 + cum) / step;
            lc[v] = (unsigned char)(value > 255 ? 255 : value);
            cum += hc[v];
        }
    }
}

// ImageOps.autocontrast's LUT with a per-image cut, one thread per (image, channel):
// np_ops._autocontrast_lut.
extern "C" __global__ void lut_autocontrast_build(const int* __restrict__ hist,
                                                  const int* __restrict__ cuts,
                                                  unsigned char* __restrict__ lut, int n) {
    const long long total = (long long)n * 3;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const int* hc = hist + t * 256;
        unsigned char* lc = lut + t * 256;
        const long long cut = cuts[t / 3];
        // Low end: with cut > 0 each bin keeps clip(cumsum - cut, 0, h); with cut < 0 bin 0
        // gains -cut.
        long long h1[256];
        long long cum = 0;
        for (int v = 0; v < 256; ++v) {
            if (cut > 0) {
                cum += hc[v];
                h1[v] = lut_clampll(cum - cut, 0, hc[v]);
            } else {
                h1[v] = hc[v];
            }
        }
        if (cut < 0) h1[0] += -cut;
        // High end, the same from the top on h1; only the first and last used bins matter.
        int lo = 255, hi = 0;  // values when no bin is left (NumPy's argmax defaults)
        bool any = false;
        long long suffix = 0;
        for (int v = 255; v >= 0; --v) {
            long long h2;
            if (cut > 0) {
                suffix += h1[v];
                h2 = lut_clampll(suffix - cut, 0, h1[v]);
            } else {
                h2 = h1[v];
            }
            if (v == 255 && cut < 0) h2 += -cut;
            if (h2 > 0) {
                if (!any) hi = v;
                any = true;
                lo = v;
            }
        }
        if (hi <= lo) {
            for (int v = 0; v < 256; ++v) lc[v] = (unsigned char)v;
            continue;
        }
        const double span = (double)(hi - lo);
        const double scale = 255.0 / span;
        const double offset = (double)(-lo) * scale;
        for (int v = 0; v < 256; ++v) {
            double x = (double)v * scale;
            x = x + offset;
            x = trunc(x);
            x = x < 0.0 ? 0.0 : (x > 255.0 ? 255.0 : x);
            lc[v] = (unsigned char)x;
        }
    }
}
