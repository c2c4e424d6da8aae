/*
 * The float32 FMA rate this CPU actually sustains: THREADS threads at once, each running
 * independent chains of vector FMAs from registers (no memory traffic). bench_peers.py
 * builds and runs it to state the Winograd limit at the clock the cores really run at,
 * which on turbo-boosted or virtualised CPUs is not the "cpu MHz" of /proc/cpuinfo
 * (a Xeon VM reading 2100 MHz ran its FMAs at about 2.6 GHz).
 *
 * Each chain starts from a different value, so the compiler cannot merge them (a version
 * whose chains started equal was folded into one chain by GCC and "measured" twice the
 * peak), and each step multiplies the chain itself (acc * b + u), so no product is
 * loop-invariant (acc += b * u became one hoisted product and a loop of additions).
 *
 *   cc -O2 -march=native -ffp-contract=fast -std=gnu11 -pthread \
 *      benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak 2
 * prints one line: "<GFLOP/s of all threads together> <floats per vector>".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define VEC 16
#elif defined(__AVX__)
#define VEC 8
#else
#define VEC 4
#endif
/* 12 chains cover 2 FMA units x 4-5 cycles of latency and, with the two operands, fit the
 * 16 vector registers of AVX2. */
#define CHAINS 12
#define ITERATIONS 50000000L

typedef float vf __attribute__((vector_size(VEC * sizeof(float))));

static volatile float operand = 0.9999f; /* volatile: unknown to the compiler */
static float results[64];

static void *chains(void *slot) {
    const vf b = operand - (vf){0}, u = (1.0f - operand) - (vf){0}; /* fixed point 1 */
    vf acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = (float)(i + 1) - (vf){0};
    for (long k = 0; k < ITERATIONS; k++)
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * b + u; /* not hoistable */
    float sum = 0;
    for (int i = 0; i < CHAINS; i++)
        for (int lane = 0; lane < VEC; lane++) sum += acc[i][lane];
    results[(long)slot % 64] = sum;
    return NULL;
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "usage: %s THREADS (1 to 64)\n", argv[0]);
        return 2;
    }
    pthread_t ids[64];
    double best = 1e30;
    for (int run = 0; run < 3; run++) {
        double start = seconds();
        for (long t = 0; t < threads; t++) pthread_create(&ids[t], NULL, chains, (void *)t);
        for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
        double elapsed = seconds() - start;
        if (elapsed < best) best = elapsed;
    }
    double flops = 2.0 * VEC * CHAINS * ITERATIONS * threads;
    printf("%.1f %d\n", flops / best / 1e9, VEC);
    return results[0] == 12345.0f; /* keeps the sums alive */
}
