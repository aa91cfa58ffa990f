// affine.cu: the geometry family of the PIL ops (rotate, shear_x, shear_y, translate_x,
// translate_y), batched, with a per-image mode and per-image coefficients.
//
// Layout: images are NHWC uint8, n images of h x w x 3, C-contiguous; element
// ((i * h + y) * w + x) * 3 + c. The output (same layout) is written in full; the input is never
// written. affine_bilinear: one thread per output pixel (all three channels), grid-stride loop
// (the GPU). affine_bilinear_rows: one thread per output row, the same pixel functions (the
// host's native CPU path, ipmix_dali/executors/native.py).
//
// Parameter arrays (built on the host by ipmix_dali/executors/cupy_ops.py, which mirrors
// ipmix_dali/executors/np_ops.py):
//   coef  float64 (n, 6): Pillow's AFFINE data (a0 .. a5) of image i, used as the mode says.
//   mode  int32 (n,): per image
//     AFFINE_GENERAL (0): transform(size, AFFINE, coef, BILINEAR): rotate's general angles
//                         (coef = np_ops.rotate_matrix(angle, w, h)).
//     AFFINE_ROWS    (1): shear_x, data (1, s, 0, 0, 1, 0) with s = coef[1]: the sample row is
//                         exactly y + .5, only the horizontal interpolation remains.
//     AFFINE_COLS    (2): shear_y, data (1, 0, 0, s, 1, 0) with s = coef[3]: the sample column is
//                         exactly x + .5, only the vertical interpolation remains.
//     AFFINE_SHIFT   (3): integer translation, out(x, y) = in(x + tx, y + ty) with tx = coef[2],
//                         ty = coef[5] (integers stored as doubles, clamped by the host to
//                         [-w, w] and [-h, h]), 0 outside: translate_x/y, and rotate by 0.
//     AFFINE_ROT180  (4): rotate's transpose fast path for 180 degrees (any shape).
//     AFFINE_ROT90   (5): rotate's fast path for 90 degrees (square images only, as np.rot90).
//     AFFINE_ROT270  (6): rotate's fast path for 270 degrees (square images only).
//
// Rounding rules (np_ops._warp, Pillow's ImagingGenericTransform + bilinear_filter32RGB), all in
// float64, one rounded operation at a time (compiled with --fmad=false, so nothing is contracted
// into a fused multiply-add):
//   xin = x + .5, yin = y + .5 (exact)
//   AFFINE: xs = (a0 * xin + a1 * yin) + a2, ys = (a3 * xin + a4 * yin) + a5
//   ROWS:   xs = xin + s * yin            COLS: ys = s * xin + yin
//   a sample point outside [0, w) x [0, h) (only the computed coordinates are tested) gives 0;
//   otherwise xs -= .5, fx = floor(xs), dx = xs - fx (likewise y); the neighbours are the pixels
//   at columns fx, fx + 1 and rows fy, fy + 1 clamped to the image (Pillow's XCLIP / YCLIP), and
//   the value is BILINEAR(a, b, d) = a + (double)(b - a) * d along x on both rows, then
//   top + (bottom - top) * dy across the rows (ROWS / COLS: one interpolation), truncated to
//   uint8 (the value is always inside [0, 255]).
//
// No __shared__ memory, __syncthreads, warp intrinsics or CUDA headers: kernels/emulator.py runs
// these kernels on the CPU, one thread after another.

#define AFFINE_GENERAL 0
#define AFFINE_ROWS 1
#define AFFINE_COLS 2
#define AFFINE_SHIFT 3
#define AFFINE_ROT180 4
#define AFFINE_ROT90 5
#define AFFINE_ROT270 6

__device__ __forceinline__ int affine_clampi(int v, int lo, int hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// BILINEAR(a, b, d): a + (b - a) * d with an int difference, in float64.
__device__ __forceinline__ double affine_lerp(int a, int b, double d) {
    double t = (double)(b - a) * d;
    return t + (double)a;
}

// Rotate's exact fast paths and integer translations (mode >= AFFINE_SHIFT): output (x, y)
// copies one source pixel, or is 0 where that pixel lies outside.
__device__ __forceinline__ void affine_move(const unsigned char* __restrict__ src,
                                            unsigned char* __restrict__ dst,
                                            const double* __restrict__ a, int m, int x, int y,
                                            int h, int w) {
    int sx, sy;
    if (m == AFFINE_SHIFT) {
        sx = x + (int)a[2];
        sy = y + (int)a[5];
    } else if (m == AFFINE_ROT180) {
        sx = w - 1 - x;
        sy = h - 1 - y;
    } else if (m == AFFINE_ROT90) {  // np.rot90(k=1): out[y, x] = in[x, w - 1 - y]
        sx = w - 1 - y;
        sy = x;
    } else {  // AFFINE_ROT270, np.rot90(k=-1): out[y, x] = in[h - 1 - x, y]
        sx = y;
        sy = h - 1 - x;
    }
    if (sx >= 0 && sx < w && sy >= 0 && sy < h) {
        const unsigned char* s = src + ((long long)sy * w + sx) * 3;
        dst[0] = s[0];
        dst[1] = s[1];
        dst[2] = s[2];
    } else {
        dst[0] = 0;
        dst[1] = 0;
        dst[2] = 0;
    }
}

// The sample point of output (x, y) along one axis, from its computed coordinate s (xs or ys)
// and the axis length n: whether it is inside [0, n), the clamped neighbours lo, hi and the
// fraction d. An outside point (NaN too) takes the neighbours and fraction of 0.5, unused by
// affine_gather: its coordinate may be far out of int range.
__device__ __forceinline__ int affine_axis(double s, int n, int* lo, int* hi, double* d) {
    const int inside = (s >= 0.0) & (s < (double)n);  // NaN: outside
    s = inside ? s - 0.5 : 0.0;
    const double f = floor(s);
    *d = s - f;
    const int i = (int)f;  // in [-1, n - 1]
    *lo = affine_clampi(i, 0, n - 1);
    *hi = affine_clampi(i + 1, 0, n - 1);
    return inside;
}

// A shear (AFFINE_ROWS, AFFINE_COLS): the coordinate along the sheared axis is
// along + coef * across (one product, one add: the header's xin + s * yin and s * xin + yin, an
// add being the same either way round); the other axis keeps the pixel's own index (fixed,
// fraction 0).
__device__ __forceinline__ int affine_shear(double coef, double across, double along, int n,
                                            int fixed, int* lo, int* hi, double* d, int* flo,
                                            int* fhi, double* fd) {
    double s = coef * across;
    s = along + s;
    *flo = fixed;
    *fhi = fixed;
    *fd = 0.0;
    return affine_axis(s, n, lo, hi, d);
}

// The source of output (x, y) for the interpolating modes: the sample point (in float64, one
// rounded operation at a time, as the header says) and, per axis, its neighbours and fraction.
// Returns whether the point is inside the image.
__device__ __forceinline__ int affine_source(int m, const double* __restrict__ a, int x, int y,
                                             int h, int w, int* x0, int* x1, int* y0, int* y1,
                                             double* dx, double* dy) {
    const double xin = (double)x + 0.5;
    const double yin = (double)y + 0.5;
    if (m == AFFINE_ROWS) return affine_shear(a[1], yin, xin, w, y, x0, x1, dx, y0, y1, dy);
    if (m == AFFINE_COLS) return affine_shear(a[3], xin, yin, h, x, y0, y1, dy, x0, x1, dx);
    double xs = a[0] * xin;  // AFFINE_GENERAL
    double t = a[1] * yin;
    xs = xs + t;
    xs = xs + a[2];
    double ys = a[3] * xin;
    t = a[4] * yin;
    ys = ys + t;
    ys = ys + a[5];
    const int inx = affine_axis(xs, w, x0, x1, dx);
    const int iny = affine_axis(ys, h, y0, y1, dy);
    return inx & iny;
}

// The value of an interpolated output pixel from its source (affine_source): BILINEAR along x
// on both rows, then across the rows (AFFINE_GENERAL); one interpolation for ROWS (along x) and
// COLS (down the column, the neighbours' two rows taken as "x"), truncated to uint8.
__device__ __forceinline__ void affine_gather(const unsigned char* __restrict__ src,
                                              unsigned char* __restrict__ dst, int m, int inside,
                                              int x0, int x1, int y0, int y1, double dx,
                                              double dy, int w) {
    if (!inside) {
        dst[0] = 0;
        dst[1] = 0;
        dst[2] = 0;
        return;
    }
    const unsigned char* r0 = src + (long long)y0 * w * 3;
    const unsigned char* r1 = src + (long long)y1 * w * 3;
    if (m == AFFINE_GENERAL) {
        for (int c = 0; c < 3; ++c) {
            double top = affine_lerp(r0[x0 * 3 + c], r0[x1 * 3 + c], dx);
            double bot = affine_lerp(r1[x0 * 3 + c], r1[x1 * 3 + c], dx);
            bot = bot - top;
            bot = bot * dy;
            top = top + bot;
            dst[c] = (unsigned char)top;
        }
    } else if (m == AFFINE_ROWS) {
        for (int c = 0; c < 3; ++c)
            dst[c] = (unsigned char)affine_lerp(r0[x0 * 3 + c], r0[x1 * 3 + c], dx);
    } else {  // AFFINE_COLS: x0 == x1 == x
        for (int c = 0; c < 3; ++c)
            dst[c] = (unsigned char)affine_lerp(r0[x0 * 3 + c], r1[x0 * 3 + c], dy);
    }
}

extern "C" __global__ void affine_bilinear(const unsigned char* __restrict__ in,
                                           unsigned char* __restrict__ out,
                                           const double* __restrict__ coef,
                                           const int* __restrict__ mode, int n, int h, int w) {
    const long long hw = (long long)h * w;
    const long long total = hw * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const long long i = p / hw;
        const long long r = p - i * hw;
        const int y = (int)(r / w);
        const int x = (int)(r - (long long)y * w);
        const unsigned char* src = in + i * hw * 3;
        unsigned char* dst = out + p * 3;
        const double* a = coef + i * 6;
        const int m = mode[i];
        if (m >= AFFINE_SHIFT) {
            affine_move(src, dst, a, m, x, y, h, w);
            continue;
        }
        int x0, x1, y0, y1;
        double dx, dy;
        const int inside = affine_source(m, a, x, y, h, w, &x0, &x1, &y0, &y1, &dx, &dy);
        affine_gather(src, dst, m, inside, x0, x1, y0, y1, dx, dy, w);
    }
}

// The same pixels, one thread per output row (image i, row y), in chunks of AFFINE_ROW_CHUNK
// pixels: first every pixel's source, then the gathers (g++ 12 vectorises neither: the select
// that keeps an outside point's coordinate finite stays a branch). For the host
// (ipmix_dali.executors.native: one thread for the whole batch, no division per pixel); the GPU
// keeps one thread per pixel. The same functions, so the same bits (tests/test_native.py).
#define AFFINE_ROW_CHUNK 32
extern "C" __global__ void affine_bilinear_rows(const unsigned char* __restrict__ in,
                                                unsigned char* __restrict__ out,
                                                const double* __restrict__ coef,
                                                const int* __restrict__ mode, int n, int h,
                                                int w) {
    const long long hw = (long long)h * w;
    const long long rows = (long long)n * h;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < rows; t += stride) {
        const long long i = t / h;
        const int y = (int)(t - i * h);
        const unsigned char* src = in + i * hw * 3;
        unsigned char* dst = out + t * w * 3;
        const double* a = coef + i * 6;
        const int m = mode[i];
        if (m >= AFFINE_SHIFT) {
            for (int x = 0; x < w; ++x) affine_move(src, dst + (long long)x * 3, a, m, x, y, h, w);
            continue;
        }
        int ok[AFFINE_ROW_CHUNK], x0[AFFINE_ROW_CHUNK], x1[AFFINE_ROW_CHUNK];
        int y0[AFFINE_ROW_CHUNK], y1[AFFINE_ROW_CHUNK];
        double dx[AFFINE_ROW_CHUNK], dy[AFFINE_ROW_CHUNK];
        for (int c0 = 0; c0 < w; c0 += AFFINE_ROW_CHUNK) {
            const int cnt = w - c0 < AFFINE_ROW_CHUNK ? w - c0 : AFFINE_ROW_CHUNK;
            for (int k = 0; k < cnt; ++k) {
                ok[k] = affine_source(m, a, c0 + k, y, h, w, &x0[k], &x1[k], &y0[k], &y1[k],
                                      &dx[k], &dy[k]);
            }
            for (int k = 0; k < cnt; ++k) {
                affine_gather(src, dst + (long long)(c0 + k) * 3, m, ok[k], x0[k], x1[k], y0[k],
                              y1[k], dx[k], dy[k], w);
            }
        }
    }
}
