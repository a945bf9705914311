/* examples/segment3d/pictures.c — see pictures.h. Pixels are drawn into an RGB
 * buffer here; libpng encodes it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pictures.h"
#ifdef SEGMENT3D_HAVE_PNG
#include <png.h>
#endif

typedef struct canvas {
    int w, h;
    uint8_t *rgb;     /* h rows of w pixels of 3 bytes */
} canvas;

static bp_status canvas_new(canvas *c, int w, int h, uint8_t fill)
{
    c->w = w;
    c->h = h;
    c->rgb = malloc((size_t)w * (size_t)h * 3);
    if (!c->rgb) return bp_fail(BP_ENOMEM, "out of memory for a %dx%d picture", w, h);
    memset(c->rgb, fill, (size_t)w * (size_t)h * 3);
    return BP_OK;
}

static void put(canvas *c, int x, int y, const uint8_t col[3])
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3, col, 3);
}

bool pictures_available(void)
{
#ifdef SEGMENT3D_HAVE_PNG
    return true;
#else
    return false;
#endif
}

#ifdef SEGMENT3D_HAVE_PNG
/* Writes c to path beside it first, then renames, so a reader never sees half a file. */
static bp_status canvas_write(const canvas *c, const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return bp_fail(BP_EIO, "%s: cannot write: %s", tmp, strerror(errno));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = malloc(sizeof *rows * (size_t)c->h);
    if (!png || !info || !rows) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        fclose(f);
        remove(tmp);
        return bp_fail(BP_ENOMEM, "%s: out of memory", path);
    }
    if (setjmp(png_jmpbuf(png))) { /* libpng reports its errors by longjmp */
        png_destroy_write_struct(&png, &info);
        free(rows);
        fclose(f);
        remove(tmp);
        return bp_fail(BP_EIO, "%s: libpng could not write the picture", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int y = 0; y < c->h; y++) rows[y] = c->rgb + (size_t)y * (size_t)c->w * 3;
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    if (fclose(f) || rename(tmp, path)) {
        remove(tmp);
        return bp_fail(BP_EIO, "%s: cannot write: %s", path, strerror(errno));
    }
    return BP_OK;
}
#else
static bp_status canvas_write(const canvas *c, const char *path)
{
    (void)c;
    return bp_fail(BP_EUNSUPPORTED, "%s: this build has no libpng", path);
}
#endif

static const uint8_t palette[6][3] = {{230, 40, 40}, {40, 200, 60}, {50, 110, 255},
                                      {240, 220, 30}, {230, 60, 230}, {40, 220, 220}};

static void class_colour(int cls, uint8_t col[3])
{
    memcpy(col, palette[(cls - 1) % 6], 3);
}

bp_status picture_slice(const char *path, const bp_tensor *img, const bp_tensor *lab, const uint8_t *pred)
{
    int X = (int)img->shape[0], Y = (int)img->shape[1], Z = (int)img->shape[2], C = (int)img->shape[3];
    int s = X < 128 ? (128 + X - 1) / X : 1, gap = 4, pw = X * s, ph = Y * s;
    canvas c;
    BP_TRY(canvas_new(&c, 3 * pw + 2 * gap, ph, 255));
    const bp_real *x = bp_tensor_creals(img);
    const int32_t *l = lab->data;
    int z = Z / 2;
    for (int i = 0; i < X; i++)
        for (int j = 0; j < Y; j++) {
            int64_t v = ((int64_t)i * Y + j) * Z + z;
            double g = (x[v * C] + 2.5) / 5 * 255;
            uint8_t grey = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
            uint8_t px[3][3];
            int cls[3] = {0, l[v], pred[v]};
            for (int p = 0; p < 3; p++) {
                uint8_t col[3] = {grey, grey, grey};
                if (cls[p] > 0) { /* half image, half class colour */
                    uint8_t k[3];
                    class_colour(cls[p], k);
                    for (int q = 0; q < 3; q++) col[q] = (uint8_t)((grey + 3 * k[q]) / 4);
                }
                memcpy(px[p], col, 3);
            }
            for (int p = 0; p < 3; p++) /* x runs right, y runs down */
                for (int a = 0; a < s; a++)
                    for (int b = 0; b < s; b++) put(&c, p * (pw + gap) + i * s + a, j * s + b, px[p]);
        }
    bp_status st = canvas_write(&c, path);
    free(c.rgb);
    return st;
}

/* A line two pixels thick from (x0, y0) to (x1, y1). */
static void line(canvas *c, double x0, double y0, double x1, double y1, const uint8_t col[3])
{
    int n = (int)(fabs(x1 - x0) + fabs(y1 - y0)) + 1;
    for (int t = 0; t <= n; t++) {
        double x = x0 + (x1 - x0) * t / n, y = y0 + (y1 - y0) * t / n;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) put(c, (int)x + a, (int)y + b, col);
    }
}

bp_status picture_curves(const char *path, int n, const double *loss, const double *dice)
{
    const int W = 480, H = 260, L = 20, R = W - 20, T = 20, B = H - 20;
    canvas c;
    BP_TRY(canvas_new(&c, W, H, 255));
    static const uint8_t grey[3] = {200, 200, 200}, black[3] = {0, 0, 0}, green[3] = {40, 170, 60},
                         red[3] = {220, 40, 40}, blue[3] = {40, 80, 230};
    for (int q = 1; q <= 4; q++) line(&c, L, B - (B - T) * q / 4.0, R, B - (B - T) * q / 4.0, grey);
    line(&c, L, B - (B - T) * 0.9, R, B - (B - T) * 0.9, green);
    line(&c, L, B, R, B, black);
    line(&c, L, T, L, B, black);
    double lmax = 0;
    for (int e = 0; e < n; e++)
        if (isfinite(loss[e]) && loss[e] > lmax) lmax = loss[e];
    double dx = n > 1 ? (double)(R - L) / (n - 1) : 0;
    for (int e = 0; e < n; e++) {
        double xe = L + dx * e, ye_l = lmax > 0 ? B - (B - T) * loss[e] / lmax : B, ye_d = B - (B - T) * dice[e];
        if (e > 0) {
            line(&c, L + dx * (e - 1), lmax > 0 ? B - (B - T) * loss[e - 1] / lmax : B, xe, ye_l, red);
            line(&c, L + dx * (e - 1), B - (B - T) * dice[e - 1], xe, ye_d, blue);
        }
        for (int a = -2; a <= 2; a++) /* a dot at every epoch */
            for (int b = -2; b <= 2; b++) {
                put(&c, (int)xe + a, (int)ye_l + b, red);
                put(&c, (int)xe + a, (int)ye_d + b, blue);
            }
    }
    bp_status st = canvas_write(&c, path);
    free(c.rgb);
    return st;
}
