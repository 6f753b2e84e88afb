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

/* Output rows [row0, row1) of one step; out has (rows_in - 2r) x (cols_in - 2r) pixels per class. */
void rnn_step(const float *u, int k_cls, int rows_in, int cols_in,
              const float *term, long t_rs, long t_plane, long t_class, int t_r0, int t_c0,
              const float *bias, long b_class,
              const float *w, long w_class, const float *ow, long ow_class, const float *ob, long ob_class,
              int hidden, float *out, int row0, int row1, int threads)
{
    const int r = KS / 2, taps = KS * KS;
    const int cols = cols_in - 2 * r;
    const long u_plane = (long)rows_in * cols_in, o_plane = (long)(rows_in - 2 * r) * cols;
    if (cols < L) return; /* the caller checks this */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int y = row0; y < row1; y++) {
        for (int k = 0; k < k_cls; k++) {
            const float *wk = w + k * w_class, *owk = ow + k * ow_class, *bk = bias + k * b_class;
            const float *tk = term + k * t_class + (long)(y + t_r0) * t_rs + t_c0;
            for (int x0 = 0; x0 < cols; x0 += L) {
                const int x = x0 + L <= cols ? x0 : cols - L; /* last vector overlaps: same values */
                const float *uk = u + k * u_plane + (long)y * cols_in + x;
                vf du = {0};
                int j = 0;
                for (; j + JG <= hidden; j += JG) {
                    vf acc[JG];
#pragma GCC unroll 16
                    for (int i = 0; i < JG; i++) acc[i] = ld(tk + (j + i) * t_plane + x) + bk[j + i];
#pragma GCC unroll 8
                    for (int dy = 0; dy < KS; dy++) {
                        vf row[KS];
#pragma GCC unroll 8
                        for (int dx = 0; dx < KS; dx++) row[dx] = ld(uk + (long)dy * cols_in + dx);
#pragma GCC unroll 16
                        for (int i = 0; i < JG; i++) {
                            const float *wr = wk + (long)(j + i) * taps + dy * KS;
#pragma GCC unroll 8
                            for (int dx = 0; dx < KS; dx++) acc[i] += wr[dx] * row[dx];
                        }
                    }
#pragma GCC unroll 16
                    for (int i = 0; i < JG; i++) du += owk[j + i] * relu(acc[i]);
                }
                for (; j < hidden; j++) { /* hidden not a multiple of JG */
                    vf acc = ld(tk + j * t_plane + x) + bk[j];
                    for (int t = 0; t < taps; t++) acc += wk[(long)j * taps + t] * ld(uk + (long)(t / KS) * cols_in + t % KS);
                    du += owk[j] * relu(acc);
                }
                st(out + k * o_plane + (long)y * cols + x, ld(uk + (long)r * cols_in + r) + du + ob[k * ob_class]);
            }
        }
    }
}
