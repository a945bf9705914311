/* examples/train3d/shapes3d.c — the synthetic shape dataset (see shapes3d.h).
 *
 * Each shape is an implicit function in its own frame: a point p (voxel
 * coordinates relative to the centre, rotated by a random orientation and
 * divided by the size r) is inside when f(p) < 0. Voxels get 1 inside, 0
 * outside, a random contrast and Gaussian noise. */
#include <math.h>
#include <bpc/random.h>
#include "shapes3d.h"

#define TWO_PI 6.283185307179586

const char *const shapes3d_names[SHAPES3D_CLASSES] = {"sphere", "cube", "torus", "cylinder",
                                                      "cone", "shell", "octahedron", "cross"};

/* Negative inside the unit shape of class c at local point (x, y, z). */
static double shape_fn(int c, double x, double y, double z)
{
    double ax = fabs(x), ay = fabs(y), az = fabs(z), q;
    switch (c) {
    case 0: return sqrt(x * x + y * y + z * z) - 1.0;                 /* sphere */
    case 1: return fmax(ax, fmax(ay, az)) - 0.8;                      /* cube */
    case 2: q = sqrt(x * x + y * y) - 0.75;                           /* torus */
            return sqrt(q * q + z * z) - 0.3;
    case 3: return fmax(sqrt(x * x + y * y) - 0.6, az - 1.0);         /* cylinder */
    case 4: return fmax(sqrt(x * x + y * y) - 0.5 * (1.0 - z), az - 1.0); /* cone, apex at z = 1 */
    case 5: q = sqrt(x * x + y * y + z * z);                          /* hollow shell */
            return fabs(q - 0.85) - 0.15;
    case 6: return ax + ay + az - 1.2;                                /* octahedron */
    default: {                                                        /* three orthogonal bars */
        double bx = fmax(ay, az), by = fmax(ax, az), bz = fmax(ax, ay);
        return fmax(fmin(bx, fmin(by, bz)) - 0.25, fmax(ax, fmax(ay, az)) - 1.0);
    }
    }
}

/* A random rotation matrix from a uniform random unit quaternion. */
static void random_rotation(bp_rng *r, double R[9])
{
    double u1 = bp_rng_uniform(r), u2 = TWO_PI * bp_rng_uniform(r), u3 = TWO_PI * bp_rng_uniform(r);
    double a = sqrt(1 - u1) * sin(u2), b = sqrt(1 - u1) * cos(u2), c = sqrt(u1) * sin(u3), d = sqrt(u1) * cos(u3);
    R[0] = 1 - 2 * (c * c + d * d), R[1] = 2 * (b * c - a * d), R[2] = 2 * (b * d + a * c);
    R[3] = 2 * (b * c + a * d), R[4] = 1 - 2 * (b * b + d * d), R[5] = 2 * (c * d - a * b);
    R[6] = 2 * (b * d - a * c), R[7] = 2 * (c * d + a * b), R[8] = 1 - 2 * (b * b + c * c);
}

int shapes3d_sample(uint64_t seed, int64_t index, int S, float *vol)
{
    bp_rng r;
    /* One independent stream per (seed, index). */
    bp_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)index);
    int label = (int)bp_rng_below(&r, SHAPES3D_CLASSES);
    double size = S * (0.17 + 0.10 * bp_rng_uniform(&r));
    double margin = S / 2.0 - size;
    double cx = S / 2.0 + (2 * bp_rng_uniform(&r) - 1) * 0.5 * margin;
    double cy = S / 2.0 + (2 * bp_rng_uniform(&r) - 1) * 0.5 * margin;
    double cz = S / 2.0 + (2 * bp_rng_uniform(&r) - 1) * 0.5 * margin;
    double contrast = 0.7 + 0.6 * bp_rng_uniform(&r), noise = 0.05 + 0.25 * bp_rng_uniform(&r);
    double R[9];
    random_rotation(&r, R);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            for (int k = 0; k < S; k++) {
                double px = (i + 0.5 - cx) / size, py = (j + 0.5 - cy) / size, pz = (k + 0.5 - cz) / size;
                double x = R[0] * px + R[1] * py + R[2] * pz;
                double y = R[3] * px + R[4] * py + R[5] * pz;
                double z = R[6] * px + R[7] * py + R[8] * pz;
                double v = shape_fn(label, x, y, z) < 0 ? contrast : 0.0;
                vol[((int64_t)i * S + j) * S + k] = (float)(v + noise * bp_rng_normal(&r));
            }
    return label;
}
