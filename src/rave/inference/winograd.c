/*
 * Winograd F(4x4, 3x3) convolution of a channels-last (NHWC) float32 crop, single-threaded.
 *
 * Why this file exists: on CPU the enhancement network is 3x3 convolutions of 32 and 64
 * channels, and PyTorch's oneDNN convolutions already run them at the machine's fp32 FMA
 * rate. Doing fewer multiplications is the only way left to go faster at float32
 * precision: F(4x4, 3x3) computes a 4x4 output tile with 36 multiplications per
 * input/output channel pair instead of 144. Neither PyTorch nor another maintained
 * library exposes a Winograd CPU convolution (oneDNN 3 dropped its f32 one; NNPACK's was
 * no faster here), and running the transforms through separate PyTorch ops costs more
 * memory traffic than it saves (tried: 1.0x end to end), so the transforms, the 36
 * small matrix products and the epilogue (bias, residual, leaky ReLU) are fused here.
 *
 * Written with GCC/Clang vector extensions, not intrinsics, so that one source compiles
 * to AVX-512, AVX2 or NEON. Matrices from Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks" (2016):
 *   out tile = A^T [ (G g G^T) . (B^T d B) ] A,   d: 6x6 input tile, g: 3x3 kernel.
 *
 * Layout: input pixel (y, x), channel c at in[y * in_row + x * cin + c]; output and
 * residual likewise with cout channels. Padding (zeros or reflection, per side) is read
 * in place, never copied: an H x W input padded by t, b, l, r gives an
 * (H + t + b - 2) x (W + l + r - 2) output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VEC 16 /* floats per vector register */
#define ACC 24 /* accumulators the matrix-product kernel may keep in 32 registers */
#elif defined(__AVX__)
#define VEC 8
#define ACC 12 /* 16 registers */
#elif defined(__aarch64__)
#define VEC 4
#define ACC 24
#else
#define VEC 4
#define ACC 8
#endif

#ifndef TILE_BLOCK
#define TILE_BLOCK 48 /* output tiles transformed together: V and M stay in L2 */
#endif

typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VEC * sizeof(float))));

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v); /* unaligned load */
    return v;
}

static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf splat(float s) { return (vf){0} + s; }

/* y > 0 ? y : slope * y, for any slope (PReLU slopes are learned, not only in [0, 1]) */
static inline vf leaky(vf y, float slope) {
    vi positive = y > (vf){0};
    vf scaled = y * slope;
    return (vf)(((vi)y & positive) | ((vi)scaled & ~positive));
}

int rave_winograd_vector_width(void) { return VEC; }

/* B^T d for one column of six vectors (in place into t). */
static inline void input_1d(const vf d0, const vf d1, const vf d2, const vf d3, const vf d4,
                            const vf d5, vf *t) {
    const vf four = splat(4.0f), five = splat(5.0f), two = splat(2.0f);
    vf p = d4 - four * d2, q = d3 - four * d1;
    vf r = d4 - d2, s = two * (d3 - d1);
    t[0] = four * d0 - five * d2 + d4;
    t[1] = p + q;
    t[2] = p - q;
    t[3] = r + s;
    t[4] = r - s;
    t[5] = four * d1 - five * d3 + d5;
}

/* A^T m for one column of six vectors. */
static inline void output_1d(const vf m0, const vf m1, const vf m2, const vf m3, const vf m4,
                             const vf m5, vf *y) {
    vf s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    y[0] = m0 + s12 + s34;
    y[1] = d12 + splat(2.0f) * d34;
    y[2] = s12 + splat(4.0f) * s34;
    y[3] = d12 + splat(8.0f) * d34 + m5;
}

/* B^T d B of one 6x6 tile of one channel vector: pixel (i, j) at base[i * row + j * pixel];
 * position (i, j) is stored at V[(6 * i + j) * plane]. */
static inline __attribute__((always_inline)) void input_tile(const float *base, long row,
                                                             long pixel, float *V, long plane) {
    vf t[6][6];
#pragma GCC unroll 6
    for (int j = 0; j < 6; j++) {
        const float *col = base + j * pixel;
        vf out[6];
        input_1d(load(col), load(col + row), load(col + 2 * row), load(col + 3 * row),
                 load(col + 4 * row), load(col + 5 * row), out);
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) t[i][j] = out[i];
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
        vf out[6];
        input_1d(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], out);
#pragma GCC unroll 6
        for (int j = 0; j < 6; j++) store(V + (6 * i + j) * plane, out[j]);
    }
}

/* Where padded coordinate p (of an axis padded by `before` and `after` pixels, length n
 * unpadded) reads from: its source index, or -1 for a zero. */
static inline long source_index(long p, long n, long before, long after, int reflect) {
    long i = p - before;
    if (i >= 0 && i < n) return i;
    if (i < -before || i >= n + after || !reflect) return -1; /* zero pad, or past the end */
    return i < 0 ? -i : 2 * (n - 1) - i;
}

/* The input as the conv sees it: in_h x in_w pixels, padded by pad[0..3] = top, bottom,
 * left, right (zeros, or reflection when `reflect`). */
struct padded_input {
    const float *in;
    long in_h, in_w, in_row, cin;
    long pad[4];
    int reflect;
};

/* Transform input tiles [t0, t0 + count) into V[p][t - t0][cin] (p = 6 * row + col). */
static void transform_input(const struct padded_input *src, long tiles_x, long t0, long count,
                            long block, float *V) {
    const long cin = src->cin, in_row = src->in_row, plane = block * cin;
    for (long k = 0; k < count; k++) {
        long ty = (t0 + k) / tiles_x, tx = (t0 + k) % tiles_x;
        long y0 = 4 * ty - src->pad[0], x0 = 4 * tx - src->pad[2]; /* unpadded coordinates */
        float *Vk = V + k * cin;
        if (y0 >= 0 && x0 >= 0 && y0 + 6 <= src->in_h && x0 + 6 <= src->in_w) {
            const float *base = src->in + y0 * in_row + x0 * cin;
            for (long c = 0; c < cin; c += VEC) input_tile(base + c, in_row, cin, Vk + c, plane);
            continue;
        }
        /* A tile over the padding or past the end: gather it into a local copy first. */
        long rows[6], cols[6];
        for (int i = 0; i < 6; i++) {
            rows[i] = source_index(4 * ty + i, src->in_h, src->pad[0], src->pad[1], src->reflect);
            cols[i] = source_index(4 * tx + i, src->in_w, src->pad[2], src->pad[3], src->reflect);
        }
        float padded[36 * VEC];
        for (long c = 0; c < cin; c += VEC) {
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++) {
                    vf v = (vf){0};
                    if (rows[i] >= 0 && cols[j] >= 0)
                        v = load(src->in + rows[i] * in_row + cols[j] * cin + c);
                    store(padded + (6 * i + j) * VEC, v);
                }
            input_tile(padded, 6 * VEC, VEC, Vk + c, plane);
        }
    }
}

/*
 * M[rows x cout_chunk] = V[rows x cin] U[cin x cout_chunk] for one Winograd position:
 * a register-blocked kernel of `rows` x `nv` vector accumulators. Always inlined with
 * constant rows and nv, so the accumulators live in registers.
 */
static inline __attribute__((always_inline)) void gemm_block(const float *V, const float *U,
                                                             float *M, long cin, long cout,
                                                             long co, const int rows,
                                                             const int nv) {
    vf acc[ACC];
#pragma GCC unroll 32
    for (int a = 0; a < rows * nv; a++) acc[a] = (vf){0};
    for (long k = 0; k < cin; k++) {
        vf u[4];
#pragma GCC unroll 4
        for (int j = 0; j < nv; j++) u[j] = load(U + k * cout + co + j * VEC);
#pragma GCC unroll 32
        for (int r = 0; r < rows; r++) {
            vf b = splat(V[r * cin + k]);
#pragma GCC unroll 4
            for (int j = 0; j < nv; j++) acc[r * nv + j] += b * u[j];
        }
    }
#pragma GCC unroll 32
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < nv; j++) store(M + r * cout + co + j * VEC, acc[r * nv + j]);
}

/* All 36 products for a block of `padded` tiles (a multiple of the kernel's rows). */
static void multiply(const float *V, const float *U, float *M, long cin, long cout, long block,
                     long padded) {
    for (int p = 0; p < 36; p++) {
        const float *Vp = V + p * block * cin, *Up = U + p * cin * cout;
        float *Mp = M + p * block * cout;
        long co = 0;
#if ACC >= 24
        for (; co + 4 * VEC <= cout; co += 4 * VEC)
            for (long t = 0; t < padded; t += ACC / 4)
                gemm_block(Vp + t * cin, Up, Mp + t * cout, cin, cout, co, ACC / 4, 4);
#endif
        for (; co + 2 * VEC <= cout; co += 2 * VEC)
            for (long t = 0; t < padded; t += ACC / 2)
                gemm_block(Vp + t * cin, Up, Mp + t * cout, cin, cout, co, ACC / 2, 2);
        for (; co < cout; co += VEC)
            for (long t = 0; t < padded; t += ACC / 2)
                gemm_block(Vp + t * cin, Up, Mp + t * cout, cin, cout, co, ACC / 2, 1);
    }
}

/* A^T m A of one tile of one channel vector: position (i, j) at M[(6 * i + j) * plane]. */
static inline __attribute__((always_inline)) void output_tile(const float *M, long plane,
                                                              vf y[4][4]) {
    vf t[4][6];
#pragma GCC unroll 6
    for (int j = 0; j < 6; j++) {
        vf out[4];
        output_1d(load(M + j * plane), load(M + (6 + j) * plane), load(M + (12 + j) * plane),
                  load(M + (18 + j) * plane), load(M + (24 + j) * plane),
                  load(M + (30 + j) * plane), out);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) t[i][j] = out[i];
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) output_1d(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], y[i]);
}

/* Output transform, bias, residual and activation for tiles [t0, t0 + count). */
static void transform_output(const float *M, long block, long count, long t0, long tiles_x,
                             long out_h, long out_w, long cout, const float *bias,
                             const float *residual, long res_row, float slope, float *out,
                             long out_row) {
    const long plane = block * cout;
    for (long k = 0; k < count; k++) {
        long ty = (t0 + k) / tiles_x, tx = (t0 + k) % tiles_x;
        long y0 = 4 * ty, x0 = 4 * tx;
        int rows = out_h - y0 < 4 ? (int)(out_h - y0) : 4;
        int cols = out_w - x0 < 4 ? (int)(out_w - x0) : 4;
        float *dst = out + y0 * out_row + x0 * cout;
        const float *res = residual ? residual + y0 * res_row + x0 * cout : NULL;
        for (long c = 0; c < cout; c += VEC) {
            vf y[4][4];
            output_tile(M + k * cout + c, plane, y);
            vf b = bias ? load(bias + c) : (vf){0};
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) {
                    vf v = y[i][j] + b;
                    if (res) v += load(res + i * res_row + j * cout + c);
                    if (slope != 1.0f) v = leaky(v, slope);
                    store(dst + i * out_row + j * cout + c, v);
                }
        }
    }
}

/*
 * 3x3 convolution of output tiles [tile_begin, tile_end) (row-major 4x4 tiles of the
 * output), so that callers may split one image across threads. The input is padded by
 * pad_top, pad_bottom, pad_left, pad_right pixels (zeros, or reflection when `reflect`;
 * reflection needs at least 2 pixels on a padded axis), so the output has
 * (in_h + pad_top + pad_bottom - 2) x (in_w + pad_left + pad_right - 2) pixels.
 *
 *   U: transformed weights [36][cin][cout] (G g G^T, computed by the caller).
 *   bias: [cout] or NULL. residual: NULL or a tensor shaped like the output, added
 *   before the activation. slope: leaky-ReLU slope (1: none, 0: ReLU).
 * cin and cout must be multiples of rave_winograd_vector_width().
 * Returns 0, or -1 if scratch memory could not be allocated.
 */
int rave_winograd_conv3x3(const float *in, long in_h, long in_w, long in_row, long cin,
                          long pad_top, long pad_bottom, long pad_left, long pad_right,
                          int reflect, const float *U, const float *bias, long cout,
                          const float *residual, long res_row, float slope, float *out,
                          long out_row, long tile_begin, long tile_end) {
    const struct padded_input src = {in, in_h, in_w, in_row, cin,
                                     {pad_top, pad_bottom, pad_left, pad_right}, reflect};
    long out_h = in_h + pad_top + pad_bottom - 2, out_w = in_w + pad_left + pad_right - 2;
    long tiles_x = (out_w + 3) / 4;
    long rows_multiple = ACC; /* padded block: a multiple of every kernel's row count */
    long block = (TILE_BLOCK + rows_multiple - 1) / rows_multiple * rows_multiple;
    long width = cin > cout ? cin : cout;
    float *V = aligned_alloc(64, (size_t)(36 * block * width) * sizeof(float) * 2);
    if (!V) return -1;
    float *M = V + 36 * block * width;
    /* Rows past the last tile are multiplied too (their products are never stored): keep
     * them finite. */
    memset(V, 0, (size_t)(36 * block * cin) * sizeof(float));
    for (long t0 = tile_begin; t0 < tile_end; t0 += block) {
        long count = tile_end - t0 < block ? tile_end - t0 : block;
        long padded = (count + rows_multiple - 1) / rows_multiple * rows_multiple;
        transform_input(&src, tiles_x, t0, count, block, V);
        multiply(V, U, M, cin, cout, block, padded);
        transform_output(M, block, count, t0, tiles_x, out_h, out_w, cout, bias, residual,
                         res_row, slope, out, out_row);
    }
    free(V);
    return 0;
}
