// resample.cu: the training crop's resize and flip on the CPU stage, as torchvision's
// RandomResizedCrop + RandomHorizontalFlip do them to a PIL image once the crop box is drawn:
// Pillow's Image.resize(size, Image.BILINEAR) of the (already cropped) uint8 RGB image, 8-bit
// path (Pillow 13.0's results), then a mirror of the columns where the flip is on.
// The twin: ipmix_dali/corruptions/pil_resample.py's resize(..., "bilinear") (NumPy), driven by
// ipmix_dali/crop_resize.py.
//
// What is reproduced, per axis of n_in -> n_out pixels (docs/cpu_stage.md, "The crop's resize"):
//   scale = n_in / n_out, filterscale = max(scale, 1), support = filterscale (bilinear: 1),
//   center = (o + 0.5) * scale, first = max((int)(center - support + 0.5), 0),
//   stop = min((int)(center + support + 0.5), n_in),
//   w_t = bilinear((first + t - center + 0.5) / filterscale) normalised to sum 1 (double, in
//   order), fixed point (int)(0.5 + w_t * 2^22); out = clip(sum(w_t * in) + 2^21) >> 22.
// The two passes go through a uint8 intermediate (its rounding is part of the result), in
// Pillow 13's order (vertical first when the height loses more than twice as many pixels as
// the width); an axis whose size does not change is not resampled.
//
// Two forms of the same arithmetic (integer sums: the order of the additions does not matter):
//   resample_pixels  one thread per output pixel, both passes fused (the intermediate pixels it
//                    needs recomputed on the fly, each rounded as Pillow rounds it): the GPU form
//                    and the emulator's reference.
//   resample_images  the host form: one thread, sample after sample, the taps once per axis, the
//                    intermediate in `mid`; the vertical pass runs along whole rows (g++
//                    vectorises it), the horizontal pass pixel by pixel.
//
// Layout: sample i's crop is in_h[i] x in_w[i] x 3 bytes at address src[i] (rows dense); its
// output is out_h x out_w x 3 bytes at dst + i * s_n (rows dense), columns mirrored where
// flip[i] != 0.

#define RS_BITS 22
#define RS_HALF (1 << (RS_BITS - 1))

__device__ __forceinline__ double rs_bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

__device__ __forceinline__ unsigned char rs_clip8(int sum) {
    const int v = sum >> RS_BITS;  // arithmetic shift, as Pillow's clip8
    return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// The taps of output pixel `o` of an n_in -> n_out axis: its first input pixel (returned), the
// tap count (*count) and the fixed-point weights k[0 .. count). Pillow's
// precompute_coeffs + normalize_coeffs_8bpc, the same double operations in the same order (the
// filter values are computed twice, once for the sum and once to normalise: the same doubles).
__device__ inline int rs_taps(int n_in, int n_out, int o, int* count, int* k) {
    const double scale = (double)n_in / n_out;
    double filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    const double support = 1.0 * filterscale;
    const double center = (o + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int first = (int)(center - support + 0.5);
    if (first < 0) first = 0;
    int stop = (int)(center + support + 0.5);
    if (stop > n_in) stop = n_in;
    const int m = stop - first;
    *count = m;
    double ww = 0.0;
    for (int t = 0; t < m; ++t) ww += rs_bilinear((t + first - center + 0.5) * ss);
    for (int t = 0; t < m; ++t) {
        double w = rs_bilinear((t + first - center + 0.5) * ss);
        if (ww != 0.0) w /= ww;
        k[t] = w < 0 ? (int)(-0.5 + w * (1 << RS_BITS)) : (int)(0.5 + w * (1 << RS_BITS));
    }
    return first;
}

// Pillow 13: the vertical pass first when the height shrinks and loses more than twice as many
// pixels as the width (python-pillow/Pillow#9549; measured: pil_resample.vertical_pass_first);
// Pillow 12 and earlier always go horizontally first.
__device__ __forceinline__ bool rs_vertical_first(int in_h, int in_w, int out_h, int out_w) {
    return in_h > out_h && in_h - out_h > 2 * (in_w - out_w);
}

#define RS_ROWS 16      // the host form's horizontal pass: rows at a time
#define RS_MAX_TAPS 64  // the GPU form's per-thread weights: crops up to 31x the output side

// One output pixel per thread (n * out_h * out_w of them), both passes fused.
extern "C" __global__ void resample_pixels(const unsigned long long* __restrict__ src,
                                           const int* __restrict__ in_h,
                                           const int* __restrict__ in_w,
                                           const int* __restrict__ flip,
                                           unsigned char* __restrict__ dst, long long s_n, int n,
                                           int out_h, int out_w) {
    const long long count = (long long)n * out_h * out_w;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride) {
        const int i = (int)(t / ((long long)out_h * out_w));
        const int rem = (int)(t % ((long long)out_h * out_w));
        const int y = rem / out_w, xo = rem % out_w;
        const int x = flip[i] ? out_w - 1 - xo : xo;  // the resized column this pixel shows
        const int h = in_h[i], w = in_w[i];
        const unsigned char* img = (const unsigned char*)src[i];
        unsigned char* o = dst + i * s_n + ((long long)y * out_w + xo) * 3;
        const bool horiz = w != out_w, vert = h != out_h;
        int kx[RS_MAX_TAPS], ky[RS_MAX_TAPS];
        int nx = 1, ny = 1, fx = x, fy = y;
        if (horiz) fx = rs_taps(w, out_w, x, &nx, kx);
        if (vert) fy = rs_taps(h, out_h, y, &ny, ky);
        const bool vfirst = horiz && vert && rs_vertical_first(h, w, out_h, out_w);
        for (int c = 0; c < 3; ++c) {
            if (!horiz && !vert) {  // the crop is already the output size: a copy
                o[c] = img[((long long)y * w + x) * 3 + c];
            } else if (!(horiz && vert)) {  // one pass
                int sum = RS_HALF;
                const int m = vert ? ny : nx;
                for (int a = 0; a < m; ++a) {
                    const int yy = vert ? fy + a : y, xx = vert ? x : fx + a;
                    sum += img[((long long)yy * w + xx) * 3 + c] * (vert ? ky[a] : kx[a]);
                }
                o[c] = rs_clip8(sum);
            } else {  // two passes: the second's taps read the first's rounded pixels
                const int n_outer = vfirst ? nx : ny, n_inner = vfirst ? ny : nx;
                int outer = RS_HALF;
                for (int a = 0; a < n_outer; ++a) {
                    int inner = RS_HALF;
                    for (int b = 0; b < n_inner; ++b) {
                        const int yy = vfirst ? fy + b : fy + a, xx = vfirst ? fx + a : fx + b;
                        inner += img[((long long)yy * w + xx) * 3 + c] * (vfirst ? ky[b] : kx[b]);
                    }
                    outer += rs_clip8(inner) * (vfirst ? kx[a] : ky[a]);
                }
                o[c] = rs_clip8(outer);
            }
        }
    }
}

// The host form: one thread does every sample (launch it as one thread). Scratch: `mid` holds
// the largest intermediate (max over samples of out_w * in_h or out_h * in_w pixels, x3 bytes),
// `taps` (out_w + out_h) * (2 + kmax) ints with kmax >= every sample's larger ksize, `acc`
// 3 * max(in_w, out_w) ints, `block` RS_ROWS * 3 * max(in_w, out_w) bytes.
extern "C" __global__ void resample_images(const unsigned long long* __restrict__ src,
                                           const int* __restrict__ in_h,
                                           const int* __restrict__ in_w,
                                           const int* __restrict__ flip,
                                           unsigned char* __restrict__ dst, long long s_n, int n,
                                           int out_h, int out_w, unsigned char* __restrict__ mid,
                                           int* __restrict__ taps, int kmax,
                                           int* __restrict__ acc,
                                           unsigned char* __restrict__ block) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int* hx_first = taps;                     // out_w first-tap indices
    int* hx_count = hx_first + out_w;         // out_w tap counts
    int* hx_k = hx_count + out_w;             // out_w * kmax weights
    int* vy_first = hx_k + (long long)out_w * kmax;
    int* vy_count = vy_first + out_h;
    int* vy_k = vy_count + out_h;
    for (int i = 0; i < n; ++i) {
        const int h = in_h[i], w = in_w[i];
        const unsigned char* img = (const unsigned char*)src[i];
        unsigned char* out = dst + i * s_n;
        const bool horiz = w != out_w, vert = h != out_h;
        if (horiz)
            for (int x = 0; x < out_w; ++x)
                hx_first[x] = rs_taps(w, out_w, x, &hx_count[x], hx_k + (long long)x * kmax);
        if (vert)
            for (int y = 0; y < out_h; ++y)
                vy_first[y] = rs_taps(h, out_h, y, &vy_count[y], vy_k + (long long)y * kmax);
        const bool vfirst = horiz && vert && rs_vertical_first(h, w, out_h, out_w);
        // Pass 1 into `mid` (or straight into the output when it is the only pass), pass 2 from
        // it. Horizontal-first: rows first_row .. last_row of the input are the ones used.
        const unsigned char* cur = img;
        int cur_h = h, cur_w = w, row0 = 0;
        for (int pass = 0; pass < 2; ++pass) {
            const bool do_vert = (pass == 0) == vfirst;  // this pass's axis
            if (do_vert ? !vert : !horiz) continue;
            const bool last = pass == 1 || !(vert && horiz);
            unsigned char* target = last ? out : mid;
            if (!do_vert) {  // horizontal: each used row, pixel by pixel
                int r0 = 0, r1 = cur_h;
                if (!last) {  // only the rows the vertical pass reads
                    r0 = vy_first[0];
                    r1 = vy_first[out_h - 1] + vy_count[out_h - 1];
                }
                // RS_ROWS rows at a time, interleaved first into `block` (pixel x of the rows
                // as 3 * RS_ROWS contiguous bytes): each output pixel's taps then add that many
                // lanes of contiguous bytes (g++ vectorises it), its taps loaded once for all.
                // (Per 224 px output from 224x270: 0.26 ms one row at a time, 0.27 four rows,
                // 0.22 eight, 0.20 sixteen; one core.)
                int r = r0;
                const long long rs = (long long)cur_w * 3, os = (long long)out_w * 3;
                for (; r + RS_ROWS <= r1; r += RS_ROWS) {
                    const unsigned char* in = cur + (long long)r * rs;
                    for (int x = 0; x < cur_w; ++x)
                        for (int q = 0; q < RS_ROWS; ++q)
                            for (int c = 0; c < 3; ++c)
                                block[(x * RS_ROWS + q) * 3 + c] = in[q * rs + x * 3 + c];
                    unsigned char* o = target + (long long)(r - r0) * os;
                    for (int x = 0; x < out_w; ++x) {
                        const int* k = hx_k + (long long)x * kmax;
                        const unsigned char* p = block + (long long)hx_first[x] * (RS_ROWS * 3);
                        int s[RS_ROWS * 3];
                        for (int j = 0; j < RS_ROWS * 3; ++j) s[j] = RS_HALF;
                        for (int t = 0; t < hx_count[x]; ++t) {
                            const int kt = k[t];
                            const unsigned char* pt = p + t * (RS_ROWS * 3);
                            for (int j = 0; j < RS_ROWS * 3; ++j) s[j] += pt[j] * kt;
                        }
                        const int xo = (last && flip[i]) ? out_w - 1 - x : x;
                        for (int q = 0; q < RS_ROWS; ++q)
                            for (int c = 0; c < 3; ++c) o[q * os + xo * 3 + c] = rs_clip8(s[q * 3 + c]);
                    }
                }
                for (; r < r1; ++r) {
                    const unsigned char* in = cur + (long long)r * cur_w * 3;
                    unsigned char* o = target + (long long)(r - r0) * out_w * 3;
                    for (int x = 0; x < out_w; ++x) {
                        const int* k = hx_k + (long long)x * kmax;
                        const unsigned char* p = in + (long long)hx_first[x] * 3;
                        int s0 = RS_HALF, s1 = RS_HALF, s2 = RS_HALF;
                        for (int t = 0; t < hx_count[x]; ++t) {
                            s0 += p[t * 3] * k[t];
                            s1 += p[t * 3 + 1] * k[t];
                            s2 += p[t * 3 + 2] * k[t];
                        }
                        const int xo = (last && flip[i]) ? out_w - 1 - x : x;
                        o[xo * 3] = rs_clip8(s0);
                        o[xo * 3 + 1] = rs_clip8(s1);
                        o[xo * 3 + 2] = rs_clip8(s2);
                    }
                }
                row0 = r0;
                cur = target;
                cur_h = r1 - r0;
                cur_w = out_w;
            } else {  // vertical: whole rows at a time
                const int row_len = cur_w * 3;
                for (int y = 0; y < out_h; ++y) {
                    const int* k = vy_k + (long long)y * kmax;
                    const unsigned char* base = cur + (long long)(vy_first[y] - row0) * row_len;
                    for (int e = 0; e < row_len; ++e) acc[e] = RS_HALF;
                    for (int t = 0; t < vy_count[y]; ++t) {
                        const unsigned char* in = base + (long long)t * row_len;
                        const int kt = k[t];
                        for (int e = 0; e < row_len; ++e) acc[e] += in[e] * kt;
                    }
                    unsigned char* o = target + (long long)y * row_len;
                    if (last && flip[i]) {
                        for (int x = 0; x < cur_w; ++x)
                            for (int c = 0; c < 3; ++c)
                                o[(cur_w - 1 - x) * 3 + c] = rs_clip8(acc[x * 3 + c]);
                    } else {
                        for (int e = 0; e < row_len; ++e) o[e] = rs_clip8(acc[e]);
                    }
                }
                cur = target;
                cur_h = out_h;
                row0 = 0;
            }
        }
        if (!horiz && !vert) {  // the crop is already the output size: a copy (mirrored)
            for (int y = 0; y < out_h; ++y) {
                const unsigned char* in = img + (long long)y * w * 3;
                unsigned char* o = out + (long long)y * out_w * 3;
                for (int x = 0; x < out_w; ++x) {
                    const int xs = flip[i] ? out_w - 1 - x : x;
                    o[x * 3] = in[xs * 3];
                    o[x * 3 + 1] = in[xs * 3 + 1];
                    o[x * 3 + 2] = in[xs * 3 + 2];
                }
            }
        }
    }
}
