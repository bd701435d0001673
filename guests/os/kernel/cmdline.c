/* cmdline.c: "workload=NAME iterations=N" from the Multiboot command line.
 *
 * Words without '=' are skipped (QEMU puts the kernel's file name first),
 * as are keys we do not know (boot loaders add their own). */
#include "kernel.h"

static int word_eq(const char *w, u32 n, const char *s)
{
    return strlen(s) == n && strncmp(w, s, n) == 0;
}

int cmdline_parse(const char *s, struct cmdline *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->workload, "mixed", 6);
    while (*s) {
        while (*s == ' ')
            s++;
        const char *w = s;
        while (*s && *s != ' ')
            s++;
        u32 n = (u32)(s - w);
        const char *eq = w;
        while (eq < s && *eq != '=')
            eq++;
        if (eq == s)
            continue;
        u32 klen = (u32)(eq - w);
        const char *v = eq + 1;
        u32 vlen = (u32)(s - v);
        (void)n;
        if (word_eq(w, klen, "workload")) {
            if (vlen == 0 || vlen >= sizeof out->workload) {
                fmt(out->error, sizeof out->error, "bad workload name (1-%u characters)",
                    (u32)sizeof out->workload - 1);
                return -1;
            }
            memcpy(out->workload, v, vlen);
            out->workload[vlen] = '\0';
        } else if (word_eq(w, klen, "iterations")) {
            u32 val = 0;
            if (vlen == 0 || vlen > 9) {
                fmt(out->error, sizeof out->error, "iterations must be 1..999999999");
                return -1;
            }
            for (u32 i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9') {
                    fmt(out->error, sizeof out->error, "iterations must be a decimal number");
                    return -1;
                }
                val = val * 10 + (u32)(v[i] - '0');
            }
            if (val == 0) {
                fmt(out->error, sizeof out->error, "iterations must be 1..999999999");
                return -1;
            }
            out->iterations = val;
            out->iterations_given = 1;
        }
    }
    return 0;
}
