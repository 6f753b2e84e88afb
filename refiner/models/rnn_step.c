/* One iteration of the fused RNN on a CPU, with each pixel's hidden units kept in registers.
 *
 * Why hand-written (see refiner/models/native.py): with torch ops an iteration is a grouped
 * 5x5 convolution writing K * hidden pre-activation maps, then a pass that reads them back with
 * the image term, applies the ReLU and the output layer. Those maps (384 bytes a pixel for
 * K = 3) do not fit in a core's L2, so the step is bound by cache traffic, not arithmetic.
 * Here a pixel's hidden units go through filter, image term, ReLU and output layer without
 * leaving registers; the only per-pixel traffic is the image term, read once.
 *
 *   out_k(y, x) = u_k(y+r, x+r) + ob_k
 *                 + sum_j ow_kj * relu(term_kj(y, x) + b_kj + sum_taps w_kj(dy, dx) * u_k(y+dy, x+dx))
 *
 * Layouts (floats): u and out planar (K, rows, cols); term row-interleaved,
 * term[(y + t_r0) * t_rs + c * t_plane + (x + t_c0)] for hidden unit c = k * hidden + j, so a
 * row of output reads one contiguous stretch of it. Class strides of 0 share one parameter set
 * between classes (the class-agnostic variant). Each output pixel is computed by the same
 * instructions whatever the row range or lane, so results do not depend on the thread split.
 *
 * Portable C: GCC/Clang vector extensions, which the compiler maps to AVX-512, AVX2, NEON, ...
 * Rows are shared between OpenMP threads when built with -fopenmp: the process's OpenMP runtime,
 * torch's own, so its threads (still spinning after the last torch op) do the work instead of
 * competing with other threads for the cores.
 */

/* Vector width: 16 floats where AVX-512 gives 32 wide registers, else 8 (AVX2's 16 registers
 * hold the JG accumulators, a filter row and a weight). */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define VBYTES 64
#else
#define VBYTES 32
#endif
typedef float vf __attribute__((vector_size(VBYTES)));
typedef int vi __attribute__((vector_size(VBYTES)));
typedef float vfu __attribute__((vector_size(VBYTES), aligned(4))); /* unaligned loads and stores */

#define L (VBYTES / 4) /* pixels per vector */
#ifndef KS
#define KS 5 /* filter side, fixed at compile time so the taps unroll into registers */
#endif
#define JG 8 /* hidden units in flight: independent accumulators hide the FMA latency */

static inline vf ld(const float *p) { return *(const vfu *)p; }
static inline void st(float *p, vf v) { *(vfu *)p = v; }
static inline vf relu(vf a)
{
    const vf z = {0};
    return (vf)((vi)a & (a > z));
}

int rnn_step_kernel_size(void) { return KS; }

int rnn_step_lanes(void) { return L; }

int rnn_step_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* NX output vectors side by side share each weight broadcast: per filter tap, NX loads of u and
 * JG weight broadcasts feed JG * NX FMAs. AVX2 has no broadcast operand for FMA, so with NX = 1
 * every FMA needed its own broadcast load and the step was bound by loads (measured on a 2-core
 * AMD EPYC, Zen 2: 31 % of its FMA peak); 12 accumulators (JG = 2, NX = 4: 8; the fastest of 8x1, 4x2, 4x3, 3x4, 2x4, 2x5, 2x6, 1x8 measured there) also cover Zen 2's
 * 5-cycle FMA latency on two pipes. AVX-512 (32 registers, broadcast operands) keeps JG = 8,
 * NX = 1, as measured on the Xeon. The order of the sums per pixel is the same for any JG, NX,
 * so the blocking changes no bits. */
#ifndef JGB /* overridable for benchmarks: CC="cc -DJGB=4 -DNXB=2" */
#if defined(__AVX512F__)
#define JGB 8
#define NXB 1
#else
#define JGB 2
#define NXB 4
#endif
#endif

/* du for NX vectors of pixels at columns x, x + L, ... of class k; writes them to o. */
static inline __attribute__((always_inline)) void pixels(const float *uk, int cols_in, const float *tk, long t_plane,
                                                         const float *bk, const float *wk, const float *owk, float ob,
                                                         int hidden, int x, float *o, const int nx, const int jg)
{
    const int r = KS / 2, taps = KS * KS;
    vf du[NXB];
#pragma GCC unroll 4
    for (int v = 0; v < nx; v++) du[v] = (vf){0};
    int j = 0;
    for (; j + jg <= hidden; j += jg) {
        vf acc[JG][NXB];
#pragma GCC unroll 8
        for (int i = 0; i < jg; i++)
#pragma GCC unroll 4
            for (int v = 0; v < nx; v++) acc[i][v] = ld(tk + (j + i) * t_plane + x + v * L) + bk[j + i];
#pragma GCC unroll 8
        for (int dy = 0; dy < KS; dy++) {
#pragma GCC unroll 8
            for (int dx = 0; dx < KS; dx++) {
                vf row[NXB];
#pragma GCC unroll 4
                for (int v = 0; v < nx; v++) row[v] = ld(uk + (long)dy * cols_in + dx + x + v * L);
#pragma GCC unroll 8
                for (int i = 0; i < jg; i++) {
                    const float wt = wk[(long)(j + i) * taps + dy * KS + dx];
#pragma GCC unroll 4
                    for (int v = 0; v < nx; v++) acc[i][v] += wt * row[v];
                }
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < jg; i++)
#pragma GCC unroll 4
            for (int v = 0; v < nx; v++) du[v] += owk[j + i] * relu(acc[i][v]);
    }
    for (; j < hidden; j++) { /* hidden not a multiple of jg */
#pragma GCC unroll 4
        for (int v = 0; v < nx; v++) {
            vf acc = ld(tk + j * t_plane + x + v * L) + bk[j];
            for (int t = 0; t < taps; t++) acc += wk[(long)j * taps + t] * ld(uk + (long)(t / KS) * cols_in + t % KS + x + v * L);
            du[v] += owk[j] * relu(acc);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < nx; v++) st(o + x + v * L, ld(uk + (long)r * cols_in + r + x + v * L) + du[v] + ob);
}

/* Output rows [row0, row1) of one step, on the calling thread. */
static void step_rows(const float *u, int k_cls, int rows_in, int cols_in,
                      const float *term, long t_rs, long t_plane, long t_class, int t_r0, int t_c0,
                      const float *bias, long b_class,
                      const float *w, long w_class, const float *ow, long ow_class, const float *ob, long ob_class,
                      int hidden, float *out, int row0, int row1)
{
    const int r = KS / 2;
    const int cols = cols_in - 2 * r;
    const long u_plane = (long)rows_in * cols_in, o_plane = (long)(rows_in - 2 * r) * cols;
    for (int y = row0; y < row1; y++) {
        for (int k = 0; k < k_cls; k++) {
            const float *wk = w + k * w_class, *owk = ow + k * ow_class, *bk = bias + k * b_class;
            const float *tk = term + k * t_class + (long)(y + t_r0) * t_rs + t_c0;
            const float *uk = u + k * u_plane + (long)y * cols_in;
            float *o = out + k * o_plane + (long)y * cols;
            const float obk = ob[k * ob_class];
            int x0 = 0;
            for (; x0 + NXB * L <= cols; x0 += NXB * L) pixels(uk, cols_in, tk, t_plane, bk, wk, owk, obk, hidden, x0, o, NXB, JGB);
            for (; x0 < cols; x0 += L) {
                const int x = x0 + L <= cols ? x0 : cols - L; /* last vector overlaps: same values */
                pixels(uk, cols_in, tk, t_plane, bk, wk, owk, obk, hidden, x, o, 1, JG);
            }
        }
    }
}

/* Output rows [row0, row1) of one step; out has (rows_in - 2r) x (cols_in - 2r) pixels per class. */
void rnn_step(const float *u, int k_cls, int rows_in, int cols_in,
              const float *term, long t_rs, long t_plane, long t_class, int t_r0, int t_c0,
              const float *bias, long b_class,
              const float *w, long w_class, const float *ow, long ow_class, const float *ob, long ob_class,
              int hidden, float *out, int row0, int row1, int threads)
{
    const int r = KS / 2;
    if (cols_in - 2 * r < L) return; /* the caller checks this */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int y = row0; y < row1; y++)
        step_rows(u, k_cls, rows_in, cols_in, term, t_rs, t_plane, t_class, t_r0, t_c0, bias, b_class, w, w_class, ow,
                  ow_class, ob, ob_class, hidden, out, y, y + 1);
}

/* Rows [row0, row1) of u (K planes of rows x cols) refilled past the scene's edges: columns left of
 * `left` and right of cols - right - 1 copy the edge column; rows below rows - bottom - 1 copy that
 * row (which is at most row1 - 1, so already final); row `top`, once in range, is copied into the
 * rows above it. The reference's replicate padding, as fused.py's _replicate_edges does per step. */
static void refill_edges(float *u, int k_cls, int rows, int cols, const int *e, int row0, int row1)
{
    const int top = e[0], bottom = e[1], left = e[2], right = e[3];
    for (int k = 0; k < k_cls; k++) {
        float *uk = u + (long)k * rows * cols;
        for (int y = row0; y < row1; y++) {
            float *row = uk + (long)y * cols;
            for (int x = 0; x < left; x++) row[x] = row[left];
            for (int x = cols - right; x < cols; x++) row[x] = row[cols - right - 1];
        }
        for (int y = row0 > rows - bottom ? row0 : rows - bottom; y < row1; y++)
            memcpy(uk + (long)y * cols, uk + (long)(rows - bottom - 1) * cols, sizeof(float) * cols);
        if (top && row0 <= top && top < row1)
            for (int y = 0; y < top; y++) memcpy(uk + (long)y * cols, uk + (long)top * cols, sizeof(float) * cols);
    }
}

/* Temporal blocking: all `steps` iterations over one block, on the calling thread, band by band.
 *
 * Step-by-step, each step reads the whole block's image term (384 bytes a pixel for K = 3) from
 * the L3 or memory. Here step t computes its next rows as soon as step t - 1 has the rows they
 * read (r more below), so the steps follow each other down the block a few rows apart and each
 * band's term is read T times while it is in the core's cache. u[t] is (K, rows - 2rt, cols - 2rt),
 * u[0] the input; step t reads term[t] from row and column t_off[t] and parameter set t, and
 * refills edges[4t..4t+3] (top, bottom, left, right) of its output like rnn_step's caller does.
 * Every pixel gets the same instructions as in rnn_step, so the results are the same bits.
 *
 * Resumable, so the caller can compute the term a few rows at a time just ahead of its use:
 * done[t] (t = 1..steps) counts the rows of u[t] computed so far (zeros at first), and only the
 * first term_rows rows of the terms are read; a call computes all it can, then returns. */
void rnn_steps(int steps, float *const *u, int k_cls, int rows0, int cols0,
               const float *const *term, long t_rs, long t_plane, long t_class, const int *t_off, int term_rows,
               const float *const *bias, long b_class, const float *const *w, long w_class,
               const float *const *ow, long ow_class, const float *const *ob, long ob_class,
               int hidden, const int *edges, int band, int *done)
{
    const int r = KS / 2;
    if (cols0 - 2 * r * steps < L || band < 1) return; /* the caller checks this */
    for (int moved = 1; moved;) {
        moved = 0;
        for (int t = 1; t <= steps; t++) {
            const int rows_in = rows0 - 2 * r * (t - 1), cols_in = cols0 - 2 * r * (t - 1);
            const int rows = rows_in - 2 * r, cols = cols_in - 2 * r;
            const int top_in = t > 1 ? edges[4 * (t - 2)] : 0; /* rows above it final once it is done */
            const int ready = t == 1 ? rows0 : done[t - 1] > top_in ? done[t - 1] : 0;
            int end = ready - 2 * r; /* output rows whose inputs are final */
            if (end > rows) end = rows;
            if (end > term_rows - t_off[t - 1]) end = term_rows - t_off[t - 1];
            if (t == 1 && end > done[t] + band) end = done[t] + band; /* the first step leads, a band at a time */
            if (end > done[t]) {
                step_rows(u[t - 1], k_cls, rows_in, cols_in, term[t - 1], t_rs, t_plane, t_class, t_off[t - 1],
                          t_off[t - 1], bias[t - 1], b_class, w[t - 1], w_class, ow[t - 1], ow_class, ob[t - 1],
                          ob_class, hidden, u[t], done[t], end);
                refill_edges(u[t], k_cls, rows, cols, edges + 4 * (t - 1), done[t], end);
                done[t] = end;
                moved = 1;
            }
        }
    }
}

/* work(i) on each of `threads` OpenMP threads at once (i = 0 .. threads - 1): the process's own
 * OpenMP threads, torch's, which run torch's ops inside it one thread each (they see they are in
 * a parallel region). Lets Python share independent blocks between threads with one join. */
void rnn_parallel(void (*work)(int), int threads)
{
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    work(omp_get_thread_num());
#else
    for (int i = 0; i < threads; i++) work(i);
#endif
}
