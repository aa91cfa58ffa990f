// fractal.cu: the built-in IFS fractals (ipmix_dali/mixing/fractals.py) rendered on the GPU, many
// fractals per launch. Every step is the NumPy renderer's step, so both give the same pixels:
//
//   fractal_walk_bounds    one thread per (fractal, walker): the chaos game, per-walker box
//   fractal_reduce_bounds  one thread per fractal: the exact box (min/max) and a not-finite flag
//   fractal_raster         one thread per (fractal, walker): the walk again, integer atomics
//                          (hit counts, colour sums in 2^-24 fixed point, hit pixels, max count)
//   fractal_colour         one thread per (fractal, pixel): density, HSV -> RGB, background
//                          upsampling and compositing, uint8 rounding
//
// Twin rules (compiled with --fmad=false): float64 walks with map choice by comparing the hash
// uniform with float64 cumulative probabilities in map order; only integer atomics, so the result
// does not depend on thread order; log1p comes from a host table (device log1p may differ from
// NumPy's in the last bit). Any change here must be made in mixing/fractals.py too.
#include "common.cuh"

#define FRACTAL_MAX_MAPS 7
#define FRACTAL_NCOEF 7

// One chaos-game step of a walker: pick the map with the hash uniform, apply it.
__device__ __forceinline__ void fractal_step(const double* cum, const double* coef, int n,
                                             unsigned int seed, unsigned int index, double& x,
                                             double& y, double& col) {
    double u = (double)ipmix_uniform(seed, index);
    int k = 0;
    while (k < n - 1 && !(u < cum[k])) ++k;
    const double* c = coef + k * FRACTAL_NCOEF;
    double nx = c[0] * x + c[1] * y + c[2];
    double ny = c[3] * x + c[4] * y + c[5];
    x = nx;
    y = ny;
    col = 0.5 * col + c[6];
}

extern "C" __global__ void fractal_walk_bounds(const int* nmaps, const double* cum, const double* coef, const double* start, const unsigned int* wseed, double* wbox, int* wbad, int nf, int walkers, int steps, int burn) {
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (long long)nf * walkers) return;
    int f = (int)(g / walkers);
    int w = (int)(g % walkers);
    const double* fc = cum + f * FRACTAL_MAX_MAPS;
    const double* fk = coef + f * FRACTAL_MAX_MAPS * FRACTAL_NCOEF;
    double x = start[2 * f], y = start[2 * f + 1], col = 0.5;
    double x0 = 0.0, x1 = 0.0, y0 = 0.0, y1 = 0.0;
    int bad = 0;
    for (int t = 0; t < steps; ++t) {
        fractal_step(fc, fk, nmaps[f], wseed[f], (unsigned int)(t * walkers + w), x, y, col);
        if (t < burn) continue;
        if (!(x - x == 0.0 && y - y == 0.0)) bad = 1;  // inf or nan
        if (t == burn) {
            x0 = x1 = x;
            y0 = y1 = y;
        } else {
            if (x < x0) x0 = x;
            if (x > x1) x1 = x;
            if (y < y0) y0 = y;
            if (y > y1) y1 = y;
        }
    }
    wbox[4 * g] = x0;
    wbox[4 * g + 1] = x1;
    wbox[4 * g + 2] = y0;
    wbox[4 * g + 3] = y1;
    wbad[g] = bad;
}

extern "C" __global__ void fractal_reduce_bounds(const double* wbox, const int* wbad, double* box, int* bad, int nf, int walkers) {
    int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= nf) return;
    const double* b = wbox + (long long)f * walkers * 4;
    double x0 = b[0], x1 = b[1], y0 = b[2], y1 = b[3];
    int any_bad = 0;
    for (int w = 0; w < walkers; ++w) {
        const double* v = b + 4 * w;
        if (v[0] < x0) x0 = v[0];
        if (v[1] > x1) x1 = v[1];
        if (v[2] < y0) y0 = v[2];
        if (v[3] > y1) y1 = v[3];
        any_bad |= wbad[(long long)f * walkers + w];
    }
    box[4 * f] = x0;
    box[4 * f + 1] = x1;
    box[4 * f + 2] = y0;
    box[4 * f + 3] = y1;
    bad[f] = any_bad;
}

// rparam per fractal: x0, y0, scale, off_x, off_y (fractals.raster_params).
extern "C" __global__ void fractal_raster(const int* nmaps, const double* cum, const double* coef, const double* start, const unsigned int* wseed, const double* rparam, const int* valid, unsigned int* counts, unsigned long long* colsum, int* hits, int* maxc, int nf, int walkers, int steps, int burn, int size) {
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (long long)nf * walkers) return;
    int f = (int)(g / walkers);
    int w = (int)(g % walkers);
    if (!valid[f]) return;
    const double* fc = cum + f * FRACTAL_MAX_MAPS;
    const double* fk = coef + f * FRACTAL_MAX_MAPS * FRACTAL_NCOEF;
    const double* rp = rparam + 5 * f;
    double px0 = rp[0], py0 = rp[1], scale = rp[2], offx = rp[3], offy = rp[4];
    double hi = (double)(size - 1);
    long long base = (long long)f * size * size;
    double x = start[2 * f], y = start[2 * f + 1], col = 0.5;
    for (int t = 0; t < steps; ++t) {
        fractal_step(fc, fk, nmaps[f], wseed[f], (unsigned int)(t * walkers + w), x, y, col);
        if (t < burn) continue;
        double cx = rint((x - px0) * scale + offx);
        double cy = rint((y - py0) * scale + offy);
        cx = cx < 0.0 ? 0.0 : (cx > hi ? hi : cx);
        cy = cy < 0.0 ? 0.0 : (cy > hi ? hi : cy);
        long long p = base + (long long)((int)cy * size + (int)cx);
        unsigned int old = atomicAdd(&counts[p], 1u);
        atomicAdd(&colsum[p], (unsigned long long)(col * 16777216.0));
        if (old == 0u) atomicAdd(&hits[f], 1);
        // maxc only grows, so a value read here (even a stale one) that is already >= old + 1
        // makes the atomic unnecessary: fewer same-address atomics, the same final maximum.
        if ((int)(old + 1u) > maxc[f]) atomicMax(&maxc[f], (int)(old + 1u));
    }
}

// Fractal a (0..n-1) reads accumulation slot src[a] and writes output image dst[a].
// cparam per fractal: base_hue, hue_span, saturation; bg: (n, low, low, 3) float32 backgrounds,
// upsampled with the tables ui0, uw0, uw1 (fractals.upsample_tables).
extern "C" __global__ void fractal_colour(const unsigned int* counts, const unsigned long long* colsum, const int* maxc, const int* src, const int* dst, const double* cparam, const float* bg, const int* ui0, const float* uw0, const float* uw1, const double* logt, unsigned char* out, int n, int size, int low) {
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long npix = (long long)size * size;
    if (g >= (long long)n * npix) return;
    int a = (int)(g / npix);
    long long pix = g % npix;
    int y = (int)(pix / size);
    int x = (int)(pix % size);
    int s = src[a];

    // Background: rows first, then columns (builtin_mixing.upsample).
    const float* B = bg + (long long)a * low * low * 3;
    int iy = ui0[y], ix = ui0[x];
    float wy0 = uw0[y], wy1 = uw1[y], wx0 = uw0[x], wx1 = uw1[x];
    float o[3];
    for (int c = 0; c < 3; ++c) {
        float r0 = wy0 * B[(iy * low + ix) * 3 + c] + wy1 * B[((iy + 1) * low + ix) * 3 + c];
        float r1 = wy0 * B[(iy * low + ix + 1) * 3 + c] + wy1 * B[((iy + 1) * low + ix + 1) * 3 + c];
        o[c] = wx0 * r0 + wx1 * r1;
    }

    unsigned int cnt = counts[(long long)s * npix + pix];
    if (cnt != 0u) {
        double density = logt[cnt] / logt[maxc[s]];
        double mean = ((double)colsum[(long long)s * npix + pix] / (double)cnt)
                      * 5.9604644775390625e-08;  // 2^-24
        const double* cp = cparam + 3 * a;
        double h = cp[0] + cp[1] * mean;
        double sat = cp[2];
        double v = 0.5 + 0.5 * density;
        double hm = fmod(h, 1.0);
        if (hm < 0.0) hm += 1.0;
        double h6 = hm * 6.0;
        double fl = floor(h6);
        long long i = ((long long)fl) % 6;
        if (i < 0) i += 6;
        double fr = h6 - fl;
        double p = v * (1.0 - sat);
        double q = v * (1.0 - sat * fr);
        double t = v * (1.0 - sat * (1.0 - fr));
        double rgb[3];
        switch (i) {
            case 0: rgb[0] = v; rgb[1] = t; rgb[2] = p; break;
            case 1: rgb[0] = q; rgb[1] = v; rgb[2] = p; break;
            case 2: rgb[0] = p; rgb[1] = v; rgb[2] = t; break;
            case 3: rgb[0] = p; rgb[1] = q; rgb[2] = v; break;
            case 4: rgb[0] = t; rgb[1] = p; rgb[2] = v; break;
            default: rgb[0] = v; rgb[1] = p; rgb[2] = q; break;
        }
        double alpha = 0.6 + 0.4 * density;
        for (int c = 0; c < 3; ++c) o[c] = (float)(alpha * rgb[c] + (1.0 - alpha) * (double)o[c]);
    }
    unsigned char* dst_px = out + ((long long)dst[a] * npix + pix) * 3;
    for (int c = 0; c < 3; ++c) {
        float r = rintf(o[c] * 255.0f);
        r = r < 0.0f ? 0.0f : (r > 255.0f ? 255.0f : r);
        dst_px[c] = (unsigned char)r;
    }
}
