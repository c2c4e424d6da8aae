/*
 * Winograd F(4x4, 3x3) and F(6x6, 3x3) convolutions of a channels-last (NHWC) float32
 * crop, single-threaded.
 *
 * Why this file exists: on CPU the enhancement network is 3x3 convolutions of 32 and 64
 * channels, and PyTorch's oneDNN convolutions already run them at the machine's fp32 FMA
 * rate. Doing fewer multiplications is the only way left to go faster at float32
 * precision: F(m x m, 3x3) computes an m x m output tile from a (m + 2) x (m + 2) input
 * tile with (m + 2)^2 multiplications per input/output channel pair, instead of 9 m^2:
 * F(4x4) needs 36 per 16 outputs (a quarter of the direct convolution's), F(6x6) 64 per
 * 36 (a fifth: 21% fewer than F(4x4)). Neither PyTorch nor another maintained library
 * exposes a Winograd CPU convolution (oneDNN 3 dropped its f32 one; NNPACK's was no
 * faster here), and running the transforms through separate PyTorch ops costs more
 * memory traffic than it saves (tried: 1.0x end to end), so the transforms, the
 * (m + 2)^2 small matrix products and the epilogue (bias, residual, leaky ReLU) are fused
 * here.
 *
 * Where the time goes (AMD EPYC Zen 3, AVX2, F(4x4), crops of 290x290 pixels, before the
 * broadcast fix of splat() below): the products 50-65% of the kernel, at about two thirds
 * of the core's FMA peak; the input and output transforms the rest. After it (Xeon,
 * AVX-512, F(6x6), one thread, benchmarks/winograd_stages.c): the products run at 100-155
 * GFLOP/s of a measured 160, 50-60% of the kernel's time; the transforms take the rest,
 * bound by memory traffic: their scattered stores to and loads from the scratch planes and
 * the reads of the input share it (docs/performance.md: what was tried). F(6x6) cuts the
 * products by 21% at about the same transform cost per output pixel (its 8-point
 * transforms do more arithmetic per tile but move less data per output). Its price is
 * accuracy: its transforms hold larger constants (up to 32, and 21/4 in B^T), so float32
 * rounding is about 2.5x F(4x4)'s (relative error of a 64-channel layer about 1e-5 instead
 * of 4e-6). Which tile size each layer uses is the caller's choice (winograd.py); both
 * share every loop below, the tile size being a compile-time constant of each
 * always-inlined instance.
 *
 * Written with GCC/Clang vector extensions, not intrinsics, so that one source compiles
 * to AVX-512, AVX2 or NEON. Matrices from Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks" (2016), F(6x6) with interpolation points
 * 0, +-1, +-2, +-1/2 and infinity:
 *   out tile = A^T [ (G g G^T) . (B^T d B) ] A,   d: (m + 2)^2 input tile, g: 3x3 kernel.
 * G is applied by the caller in float64; scaling its rows (and A^T's columns inversely)
 * to balance the magnitudes was tried in a float32 model and changed the error by less
 * than its spread between random draws, so the textbook matrices are used.
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
#define TILE_BLOCK 48 /* F(4x4) output tiles transformed together: V and M stay in L2 */
#endif
#ifndef TILE_BLOCK6
/* F(6x6) tiles: about as many output pixels and as much scratch (0.8 MB at 64 channels);
 * blocks of 12 to 72 tiles ran within 5% of each other (Zen 3, AVX2). */
#define TILE_BLOCK6 24
#endif

/* Scratch layout: V and M hold each Winograd position's block of tiles as one plane of
 * block * channels floats, planes one cache line apart more than that. Without the extra
 * line the plane stride is a multiple of 1 or 2 KB (24 tiles x 32 or 64 channels), so the
 * 64 stores of one tile's input transform (and the 64 loads of its output transform) fall
 * into 2 to 4 of L1's 64 sets and evict each other: the padding took the input transform
 * of a 64-channel tile from 236 to 137 ns with its input in L1 (Xeon, AVX-512). */
#define PLANE_PAD 16

static inline long plane_of(long block, long channels) { return block * channels + PLANE_PAD; }

typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VEC * sizeof(float))));

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v); /* unaligned load */
    return v;
}

static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* s in every lane. Written as s - 0, which is s for every float (-0 - 0 = -0), so the
 * compiler drops the subtraction and broadcasts straight from memory (a load, or an FMA's
 * broadcast operand with AVX-512). The former s + 0 is not s for s = -0, so it stayed a
 * scalar add plus a register broadcast on the FMA ports in the products' inner loop:
 * they ran at half the speed (32->32 products in L1, Xeon, AVX-512: 68-79 -> 144 GFLOP/s). */
static inline vf splat(float s) { return s - (vf){0}; }

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

/* B^T d for one column of eight vectors (F(6x6): points 0, +-1, +-2, +-1/2, infinity),
 * in the factored form that shares the even and odd halves of each pair of rows. */
static inline void input_1d8(const vf d[8], vf *t) {
    const vf c525 = splat(5.25f), c425 = splat(4.25f), c125 = splat(1.25f), c25 = splat(2.5f);
    const vf half = splat(0.5f), quarter = splat(0.25f), two = splat(2.0f), four = splat(4.0f),
             five = splat(5.0f);
    t[0] = d[0] - d[6] + c525 * (d[4] - d[2]);
    t[7] = d[7] - d[1] + c525 * (d[3] - d[5]);
    vf even = d[2] + d[6] - c425 * d[4], odd = d[1] + d[5] - c425 * d[3];
    t[1] = even + odd;
    t[2] = even - odd;
    even = d[6] + quarter * d[2] - c125 * d[4];
    odd = half * d[1] - c25 * d[3] + two * d[5];
    t[3] = even + odd;
    t[4] = even - odd;
    even = d[6] + four * d[2] - five * d[4];
    odd = two * d[1] - c25 * d[3] + half * d[5];
    t[5] = even + odd;
    t[6] = even - odd;
}

/* A^T m for one column of eight vectors (F(6x6)). */
static inline void output_1d8(const vf m[8], vf *y) {
    vf s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    vf s56 = m[5] + m[6], d56 = m[5] - m[6];
    y[0] = m[0] + s12 + s34 + s56;
    y[1] = d12 + splat(2.0f) * d34 + splat(0.5f) * d56;
    y[2] = s12 + splat(4.0f) * s34 + splat(0.25f) * s56;
    y[3] = d12 + splat(8.0f) * d34 + splat(0.125f) * d56;
    y[4] = s12 + splat(16.0f) * s34 + splat(0.0625f) * s56;
    y[5] = d12 + splat(32.0f) * d34 + splat(0.03125f) * d56 + m[7];
}

/* B^T d for one column of T = m + 2 vectors (T is a constant after inlining). */
static inline __attribute__((always_inline)) void input_1d_any(const int T, const vf *d, vf *t) {
    if (T == 8)
        input_1d8(d, t);
    else
        input_1d(d[0], d[1], d[2], d[3], d[4], d[5], t);
}

/* A^T m for one column of T = m + 2 vectors. */
static inline __attribute__((always_inline)) void output_1d_any(const int T, const vf *m, vf *y) {
    if (T == 8)
        output_1d8(m, y);
    else
        output_1d(m[0], m[1], m[2], m[3], m[4], m[5], y);
}

/* B^T d B of one T x T tile of one channel vector: pixel (i, j) at base[i * row + j * pixel];
 * position (i, j) is stored at V[(T * i + j) * plane]. */
static inline __attribute__((always_inline)) void input_tile(const int T, const float *base,
                                                             long row, long pixel, float *V,
                                                             long plane) {
    vf t[8][8];
#pragma GCC unroll 8
    for (int j = 0; j < T; j++) {
        const float *col = base + j * pixel;
        vf in[8], out[8];
#pragma GCC unroll 8
        for (int i = 0; i < T; i++) in[i] = load(col + i * row);
        input_1d_any(T, in, out);
#pragma GCC unroll 8
        for (int i = 0; i < T; i++) t[i][j] = out[i];
    }
#pragma GCC unroll 8
    for (int i = 0; i < T; i++) {
        vf out[8];
        input_1d_any(T, t[i], out);
#pragma GCC unroll 8
        for (int j = 0; j < T; j++) store(V + (T * i + j) * plane, out[j]);
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
 * left, right (zeros, or reflection when `reflect`). Its cin channels may come from two
 * tensors of the same height and width, as if concatenated: the first cin - cin2 from `in`
 * (rows in_row floats apart), the last cin2 from `in2` (rows in2_row apart), each
 * pixel-major with its own channel count; cin2 = 0: all from `in`. The network's pyramid
 * pooling concatenates its input with the pooled context before a conv: reading both in
 * place saves writing and reading the concatenation (a 64-channel copy of every pixel). */
struct padded_input {
    const float *in;
    long in_h, in_w, in_row, cin;
    long pad[4];
    int reflect;
    const float *in2;
    long in2_row, cin2;
};

/* Where channel c of pixel (y, x) of the input is: its address, the floats between two
 * pixels (its part's channel count) and between two rows of that part. */
static inline const float *channel_at(const struct padded_input *src, long y, long x, long c,
                                      long *pixel, long *row) {
    long cin1 = src->cin - src->cin2;
    if (c < cin1) {
        *pixel = cin1;
        *row = src->in_row;
        return src->in + y * src->in_row + x * cin1 + c;
    }
    *pixel = src->cin2;
    *row = src->in2_row;
    return src->in2 + y * src->in2_row + x * src->cin2 + (c - cin1);
}

/* Transform input tiles [t0, t0 + count) into V[p][t - t0][cin] (p = T * row + col) for
 * output tiles of m x m pixels (T = m + 2). */
static inline __attribute__((always_inline)) void transform_input(
    const int m, const struct padded_input *src, long tiles_x, long t0, long count, long block,
    float *V) {
    const int T = m + 2;
    const long cin = src->cin, plane = plane_of(block, cin);
    long pixel, row;
    for (long k = 0; k < count; k++) {
        long ty = (t0 + k) / tiles_x, tx = (t0 + k) % tiles_x;
        long y0 = m * ty - src->pad[0], x0 = m * tx - src->pad[2]; /* unpadded coordinates */
        float *Vk = V + k * cin;
        if (y0 >= 0 && x0 >= 0 && y0 + T <= src->in_h && x0 + T <= src->in_w) {
            for (long c = 0; c < cin; c += VEC) {
                const float *base = channel_at(src, y0, x0, c, &pixel, &row);
                input_tile(T, base, row, pixel, Vk + c, plane);
            }
            continue;
        }
        /* A tile over the padding or past the end: gather it into a local copy first. */
        long rows[8], cols[8];
        for (int i = 0; i < T; i++) {
            rows[i] = source_index(m * ty + i, src->in_h, src->pad[0], src->pad[1], src->reflect);
            cols[i] = source_index(m * tx + i, src->in_w, src->pad[2], src->pad[3], src->reflect);
        }
        float padded[64 * VEC];
        for (long c = 0; c < cin; c += VEC) {
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) {
                    vf v = (vf){0};
                    if (rows[i] >= 0 && cols[j] >= 0)
                        v = load(channel_at(src, rows[i], cols[j], c, &pixel, &row));
                    store(padded + (T * i + j) * VEC, v);
                }
            input_tile(T, padded, T * VEC, VEC, Vk + c, plane);
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

/* All `positions` ((m + 2)^2) products for a block of `padded` tiles (a multiple of the
 * kernel's rows). */
static void multiply(int positions, const float *V, const float *U, float *M, long cin,
                     long cout, long block, long padded) {
    for (int p = 0; p < positions; p++) {
        const float *Vp = V + p * plane_of(block, cin), *Up = U + p * cin * cout;
        float *Mp = M + p * plane_of(block, cout);
        long co = 0;
#if ACC >= 12
        /* Four vectors of output channels per row first, also with AVX2's 12 accumulators
         * (3 rows x 4 vectors): 10% faster there than 6 rows x 2 (Zen 3, every layer of
         * the network, both tile sizes), as each V element loaded feeds 4 FMAs. */
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

/* A^T m A of one tile of one channel vector: position (i, j) at M[(T * i + j) * plane],
 * output pixel (i, j) into y[i][j] (i, j < m = T - 2). */
static inline __attribute__((always_inline)) void output_tile(const int T, const float *M,
                                                              long plane, vf y[6][6]) {
    const int m = T - 2;
    vf t[6][8];
#pragma GCC unroll 8
    for (int j = 0; j < T; j++) {
        vf in[8], out[6];
#pragma GCC unroll 8
        for (int i = 0; i < T; i++) in[i] = load(M + (T * i + j) * plane);
        output_1d_any(T, in, out);
#pragma GCC unroll 6
        for (int i = 0; i < m; i++) t[i][j] = out[i];
    }
#pragma GCC unroll 6
    for (int i = 0; i < m; i++) output_1d_any(T, t[i], y[i]);
}

/* Output transform, bias, residual and activation for m x m tiles [t0, t0 + count). */
static inline __attribute__((always_inline)) void transform_output(
    const int m, const float *M, long block, long count, long t0, long tiles_x, long out_h,
    long out_w, long cout, const float *bias, const float *residual, long res_row, float slope,
    float *out, long out_row) {
    const long plane = plane_of(block, cout);
    for (long k = 0; k < count; k++) {
        long ty = (t0 + k) / tiles_x, tx = (t0 + k) % tiles_x;
        long y0 = m * ty, x0 = m * tx;
        int rows = out_h - y0 < m ? (int)(out_h - y0) : m;
        int cols = out_w - x0 < m ? (int)(out_w - x0) : m;
        float *dst = out + y0 * out_row + x0 * cout;
        const float *res = residual ? residual + y0 * res_row + x0 * cout : NULL;
        for (long c = 0; c < cout; c += VEC) {
            vf y[6][6];
            output_tile(m + 2, M + k * cout + c, plane, y);
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

/* The convolution of tiles [tile_begin, tile_end) with m x m output tiles, `block` tiles
 * at a time; V and M: scratch of (m + 2)^2 planes of block * cin and * cout floats. */
static inline __attribute__((always_inline)) void convolve(
    const int m, const struct padded_input *src, const float *U, const float *bias, long cout,
    const float *residual, long res_row, float slope, float *out, long out_row, long tile_begin,
    long tile_end, long block, float *V, float *M) {
    long out_h = src->in_h + src->pad[0] + src->pad[1] - 2;
    long out_w = src->in_w + src->pad[2] + src->pad[3] - 2;
    long tiles_x = (out_w + m - 1) / m;
    for (long t0 = tile_begin; t0 < tile_end; t0 += block) {
        long count = tile_end - t0 < block ? tile_end - t0 : block;
        long padded = (count + ACC - 1) / ACC * ACC; /* a multiple of every kernel's rows */
        transform_input(m, src, tiles_x, t0, count, block, V);
        multiply((m + 2) * (m + 2), V, U, M, src->cin, cout, block, padded);
        transform_output(m, M, block, count, t0, tiles_x, out_h, out_w, cout, bias, residual,
                         res_row, slope, out, out_row);
    }
}

/*
 * 3x3 convolution of output tiles [tile_begin, tile_end) (row-major m x m tiles of the
 * output, m = `tile` = 4 or 6), so that callers may split one image across threads. The
 * input is padded by pad_top, pad_bottom, pad_left, pad_right pixels (zeros, or
 * reflection when `reflect`; reflection needs at least 2 pixels on a padded axis), so the
 * output has (in_h + pad_top + pad_bottom - 2) x (in_w + pad_left + pad_right - 2) pixels.
 *
 *   U: transformed weights [(m + 2)^2][cin][cout] (G g G^T of this tile size, computed by
 *   the caller). bias: [cout] or NULL. residual: NULL or a tensor shaped like the output,
 *   added before the activation. slope: leaky-ReLU slope (1: none, 0: ReLU).
 * in2, in2_row, cin2: the input's last cin2 channels, read from in2 (see struct
 * padded_input; NULL, 0, 0 for none). cin, cin2 and cout must be multiples of
 * rave_winograd_vector_width().
 * Returns 0, -1 if scratch memory could not be allocated, -2 for another tile size.
 */
int rave_winograd_conv3x3(const float *in, long in_h, long in_w, long in_row, long cin,
                          long pad_top, long pad_bottom, long pad_left, long pad_right,
                          int reflect, const float *U, const float *bias, long cout,
                          const float *residual, long res_row, float slope, float *out,
                          long out_row, long tile_begin, long tile_end, int tile,
                          const float *in2, long in2_row, long cin2) {
    if (tile != 4 && tile != 6) return -2;
    const struct padded_input src = {
        .in = in, .in_h = in_h, .in_w = in_w, .in_row = in_row, .cin = cin,
        .pad = {pad_top, pad_bottom, pad_left, pad_right}, .reflect = reflect,
        .in2 = in2, .in2_row = in2_row, .cin2 = cin2,
    };
    long wanted = tile == 4 ? TILE_BLOCK : TILE_BLOCK6;
    long block = (wanted + ACC - 1) / ACC * ACC; /* a multiple of every kernel's rows */
    long positions = (tile + 2) * (tile + 2);
    long in_floats = positions * plane_of(block, cin);
    long out_floats = positions * plane_of(block, cout);
    float *V = aligned_alloc(64, (size_t)(in_floats + out_floats) * sizeof(float));
    if (!V) return -1;
    float *M = V + in_floats;
    /* Rows past the last tile are multiplied too (their products are never stored): keep
     * them finite. */
    memset(V, 0, (size_t)in_floats * sizeof(float));
    if (tile == 4)
        convolve(4, &src, U, bias, cout, residual, res_row, slope, out, out_row, tile_begin,
                 tile_end, block, V, M);
    else
        convolve(6, &src, U, bias, cout, residual, res_row, slope, out, out_row, tile_begin,
                 tile_end, block, V, M);
    free(V);
    return 0;
}
