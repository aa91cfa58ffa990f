// affine.cu: the geometry family of the PIL ops (rotate, shear_x, shear_y, translate_x,
// translate_y), batched, with a per-image mode and per-image coefficients.
//
// Layout: images are NHWC uint8, n images of h x w x 3, C-contiguous; element
// ((i * h + y) * w + x) * 3 + c. The output (same layout) is written in full; the input is never
// written. One thread per output pixel (all three channels), grid-stride loop.
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

        if (m >= AFFINE_SHIFT) {  // exact pixel moves
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
            continue;
        }

        const double xin = (double)x + 0.5;
        const double yin = (double)y + 0.5;
        if (m == AFFINE_GENERAL) {
            double xs = a[0] * xin;
            double t = a[1] * yin;
            xs = xs + t;
            xs = xs + a[2];
            double ys = a[3] * xin;
            t = a[4] * yin;
            ys = ys + t;
            ys = ys + a[5];
            if (!(xs >= 0.0 && xs < (double)w && ys >= 0.0 && ys < (double)h)) {
                dst[0] = 0;
                dst[1] = 0;
                dst[2] = 0;
                continue;
            }
            xs = xs - 0.5;
            const double fx = floor(xs);
            const double dx = xs - fx;
            ys = ys - 0.5;
            const double fy = floor(ys);
            const double dy = ys - fy;
            const int ix = (int)fx, iy = (int)fy;  // in [-1, w - 1] and [-1, h - 1]
            const int x0 = affine_clampi(ix, 0, w - 1), x1 = affine_clampi(ix + 1, 0, w - 1);
            const int y0 = affine_clampi(iy, 0, h - 1), y1 = affine_clampi(iy + 1, 0, h - 1);
            const unsigned char* r0 = src + (long long)y0 * w * 3;
            const unsigned char* r1 = src + (long long)y1 * w * 3;
            for (int c = 0; c < 3; ++c) {
                double top = affine_lerp(r0[x0 * 3 + c], r0[x1 * 3 + c], dx);
                double bot = affine_lerp(r1[x0 * 3 + c], r1[x1 * 3 + c], dx);
                bot = bot - top;
                bot = bot * dy;
                top = top + bot;
                dst[c] = (unsigned char)top;
            }
        } else if (m == AFFINE_ROWS) {
            double xs = a[1] * yin;
            xs = xin + xs;
            if (!(xs >= 0.0 && xs < (double)w)) {
                dst[0] = 0;
                dst[1] = 0;
                dst[2] = 0;
                continue;
            }
            xs = xs - 0.5;
            const double fx = floor(xs);
            const double dx = xs - fx;
            const int ix = (int)fx;
            const int x0 = affine_clampi(ix, 0, w - 1), x1 = affine_clampi(ix + 1, 0, w - 1);
            const unsigned char* r0 = src + (long long)y * w * 3;
            for (int c = 0; c < 3; ++c)
                dst[c] = (unsigned char)affine_lerp(r0[x0 * 3 + c], r0[x1 * 3 + c], dx);
        } else {  // AFFINE_COLS
            double ys = a[3] * xin;
            ys = ys + yin;
            if (!(ys >= 0.0 && ys < (double)h)) {
                dst[0] = 0;
                dst[1] = 0;
                dst[2] = 0;
                continue;
            }
            ys = ys - 0.5;
            const double fy = floor(ys);
            const double dy = ys - fy;
            const int iy = (int)fy;
            const int y0 = affine_clampi(iy, 0, h - 1), y1 = affine_clampi(iy + 1, 0, h - 1);
            const unsigned char* c0 = src + ((long long)y0 * w + x) * 3;
            const unsigned char* c1 = src + ((long long)y1 * w + x) * 3;
            for (int c = 0; c < 3; ++c)
                dst[c] = (unsigned char)affine_lerp(c0[c], c1[c], dy);
        }
    }
}
