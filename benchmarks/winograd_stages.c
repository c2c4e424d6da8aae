/*
 * Time the three stages of rave's Winograd F(6x6, 3x3) kernel apart: input transform,
 * transformed-domain products, output transform (with bias and leaky ReLU), on one
 * cin -> cout layer of a side x side crop, one thread, scratch reused as the kernel does.
 * Prints the best of 5 runs of each stage and the products' GFLOP/s.
 *
 * Build and run from the repository root (the kernel's source is included, so any
 * version of it can be timed by pointing WINOGRAD_SOURCE elsewhere):
 *
 *   cc -O3 -march=native -ffp-contract=fast -std=gnu11 \
 *      -DWINOGRAD_SOURCE='"../src/rave/inference/winograd.c"' \
 *      benchmarks/winograd_stages.c -o /tmp/winograd_stages
 *   for layer in "32 32" "32 64" "64 32" "64 64"; do /tmp/winograd_stages $layer 290; done
 */
#include <stdio.h>
#include <time.h>

#ifndef WINOGRAD_SOURCE
#define WINOGRAD_SOURCE "../src/rave/inference/winograd.c"
#endif
#include WINOGRAD_SOURCE

#ifndef PLANE_PAD /* kernels before the padded scratch planes */
static long plane_of(long block, long channels) { return block * channels; }
#endif

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CIN COUT SIDE\n", argv[0]);
        return 2;
    }
    const long cin = atol(argv[1]), cout = atol(argv[2]), side = atol(argv[3]);
    const int m = 6, positions = 64;
    if (cin % VEC || cout % VEC || side < 8) {
        fprintf(stderr, "channels must be multiples of %d and the side at least 8\n", VEC);
        return 2;
    }
    float *in = aligned_alloc(64, (size_t)(side * side * cin) * sizeof(float));
    float *out = aligned_alloc(64, (size_t)(side * side * cout) * sizeof(float));
    float *U = aligned_alloc(64, (size_t)(positions * cin * cout) * sizeof(float));
    float *bias = calloc((size_t)cout, sizeof(float));
    for (long i = 0; i < side * side * cin; i++) in[i] = (float)(i % 97) * 0.01f;
    for (long i = 0; i < positions * cin * cout; i++) U[i] = (float)(i % 13) * 0.01f - 0.06f;
    memset(out, 0, (size_t)(side * side * cout) * sizeof(float));
    const struct padded_input src = {in, side, side, side * cin, cin, {1, 1, 1, 1}, 1};
    const long block = (TILE_BLOCK6 + ACC - 1) / ACC * ACC;
    const long in_floats = positions * plane_of(block, cin);
    const long out_floats = positions * plane_of(block, cout);
    float *V = aligned_alloc(64, (size_t)(in_floats + out_floats) * sizeof(float));
    float *M = V + in_floats;
    memset(V, 0, (size_t)(in_floats + out_floats) * sizeof(float));
    const long tiles_x = (side + m - 1) / m, tiles = tiles_x * tiles_x;
    double best[3] = {1e30, 1e30, 1e30};
    for (int run = 0; run < 6; run++) { /* run 0 warms up */
        double spent[3] = {0, 0, 0};
        for (long t0 = 0; t0 < tiles; t0 += block) {
            long count = tiles - t0 < block ? tiles - t0 : block;
            long padded = (count + ACC - 1) / ACC * ACC;
            double a = seconds();
            transform_input(m, &src, tiles_x, t0, count, block, V);
            double b = seconds();
            multiply(positions, V, U, M, cin, cout, block, padded);
            double c = seconds();
            transform_output(m, M, block, count, t0, tiles_x, side, side, cout, bias, NULL, 0,
                             0.2f, out, side * cout);
            double d = seconds();
            spent[0] += b - a;
            spent[1] += c - b;
            spent[2] += d - c;
        }
        for (int i = 0; run > 0 && i < 3; i++)
            if (spent[i] < best[i]) best[i] = spent[i];
    }
    double flops = 2.0 * positions * cin * cout * tiles;
    printf("%ld->%ld, %ldx%ld, %d floats per vector: input %.2f ms, products %.2f ms "
           "(%.0f GFLOP/s), output %.2f ms, total %.2f ms\n",
           cin, cout, side, side, VEC, best[0] * 1e3, best[1] * 1e3, flops / best[1] / 1e9,
           best[2] * 1e3, (best[0] + best[1] + best[2]) * 1e3);
    free(V);
    free(in);
    free(out);
    free(U);
    free(bias);
    return 0;
}
