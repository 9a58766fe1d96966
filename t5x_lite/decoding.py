"""Decoding: greedy, beam search (T5X brevity penalty) and temperature/top-k/top-p sampling.

Every algorithm is written against a generic *step function* so it can be
tested on a toy "language model" whose answers are computable by brute force:

    logits0, state = init_fn(prompt)          # logits [B, V] for the first new token
    logits, state = step_fn(state, tokens)    # tokens [B] int32 -> logits [B, V] for the next one

`state` is any pytree whose leaves all have the batch as their leading
dimension (as the models' KV cache in models/decode.py), so beam search can expand it to
B*K rows with `jnp.repeat` and reorder beams with `jnp.take(..., axis=0)`.

The loops are `jax.lax.while_loop`s that stop early once every row has emitted
EOS (id 1), or, for beam search, once no live beam can still beat the worst of
the K finished ones (T5X's finishing rule).  Outputs are `[B, max_decode_length]`
int32 holding the new tokens only, EOS included, 0 (PAD) after it.

`decode(model, prompt, ...)` runs any of them on a t5x_lite model through its
KV cache (`models.init_decode_state` / `models.decode_step`) under `nnx.jit`;
`make_prompt(architecture, inputs)` builds that prompt from token-id lists.
Run inside `partitioning.activate(mesh)` (or pass `mesh=`), the model's
activation sharding constraints apply; a batch the mesh's batch axes do not
divide (e.g. one prompt) is replicated along the batch instead of sharded.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t5x_lite import partitioning
from t5x_lite.data.vocabularies import EOS_ID, PAD_ID
from t5x_lite.errors import UserError
from t5x_lite.models import decode_step, init_decode_state
from t5x_lite.models.decode import BEAM_INVARIANT

# Large negative log-probability for "impossible" (T5X uses the same -1e7: finite, so sums stay finite).
NEG_INF = -1.0e7
METHODS = ("greedy", "beam", "sample")

StepFn = Callable[[Any, jax.Array], tuple[jax.Array, Any]]


class DecodeResult(NamedTuple):
    tokens: jax.Array     # [B, L] int32 (greedy/sample) or [B, K, L] (beam, best first)
    scores: jax.Array     # [B] sum of log-probs (greedy/sample) or [B, K] beam scores
    log_probs: jax.Array  # [B] or [B, K]: the sum of the log-probs of each sequence's tokens (EOS included;
    #                       beam scores divide it by the brevity penalty); NEG_INF for an empty beam slot


def brevity_penalty(alpha: float, length) -> jax.Array:
    """T5X / GNMT length penalty ((5 + length) / 6) ** alpha; 1 when alpha == 0."""
    return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


# ---------------------------------------------------------------------------
# Greedy and sampling: one token per row per step
# ---------------------------------------------------------------------------

def filter_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
    """Scale by 1/temperature, then keep the top_k largest and the smallest set whose
    probability reaches top_p (the most likely token always survives); others -> -inf."""
    x = logits.astype(jnp.float32) / temperature
    if top_k and top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, top_k)[0][..., -1:]              # [B, 1] k-th largest
        x = jnp.where(x < kth, -jnp.inf, x)
    if top_p < 1.0:
        sorted_x = jnp.sort(x, axis=-1)[..., ::-1]               # [B, V] descending
        probs = jax.nn.softmax(sorted_x, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs         # probability of strictly better tokens
        num_kept = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1, keepdims=True), 1)
        cutoff = jnp.take_along_axis(sorted_x, num_kept - 1, axis=-1)
        x = jnp.where(x < cutoff, -jnp.inf, x)
    return x


def _token_by_token(logits0, state0, step_fn: StepFn, select, max_decode_length: int, eos_id: int
                    ) -> DecodeResult:
    """Shared loop of greedy and sampling.  select(logits [B,V], i) -> tokens [B]."""
    batch = logits0.shape[0]
    length = max_decode_length

    def choose(logits, i, done):
        tok = select(logits, i).astype(jnp.int32)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), tok[:, None], -1)[:, 0]
        tok = jnp.where(done, PAD_ID, tok)                       # rows past EOS emit padding
        return tok, jnp.where(done, 0.0, logp)

    done0 = jnp.zeros((batch,), bool)
    tok, logp = choose(logits0, 0, done0)
    tokens = jnp.zeros((batch, length), jnp.int32).at[:, 0].set(tok)

    def cond(carry):
        i, _, _, done, _, _ = carry
        return (i < length) & ~jnp.all(done)

    def body(carry):
        i, tokens, prev, done, state, score = carry
        logits, state = step_fn(state, prev)                     # logits for position i
        tok, logp = choose(logits, i, done)
        tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, i))
        return i + 1, tokens, tok, done | (tok == eos_id), state, score + logp

    carry = (jnp.int32(1), tokens, tok, tok == eos_id, state0, logp)
    _, tokens, _, _, _, score = jax.lax.while_loop(cond, body, carry)
    return DecodeResult(tokens, score, score)


def greedy_search(logits0, state0, step_fn: StepFn, *, max_decode_length: int,
                  eos_id: int = EOS_ID) -> DecodeResult:
    """Argmax at every step (the T5 paper's decoding)."""
    return _token_by_token(logits0, state0, step_fn, lambda logits, i: jnp.argmax(logits, -1),
                           max_decode_length, eos_id)


def temperature_sample(logits0, state0, step_fn: StepFn, rng: jax.Array, *, max_decode_length: int,
                       temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       eos_id: int = EOS_ID) -> DecodeResult:
    """Ancestral sampling from softmax(logits / temperature), optionally truncated to the top_k
    tokens and to the top_p nucleus.  temperature == 0 is greedy.  Step i uses fold_in(rng, i), so
    the same key gives the same output."""
    if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
        raise UserError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got "
                        f"{temperature}, {top_p}, {top_k}")
    if temperature == 0:
        return greedy_search(logits0, state0, step_fn, max_decode_length=max_decode_length, eos_id=eos_id)

    def select(logits, i):
        x = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return jax.random.categorical(jax.random.fold_in(rng, i), x, axis=-1)

    return _token_by_token(logits0, state0, step_fn, select, max_decode_length, eos_id)


# ---------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------

class _BeamState(NamedTuple):
    live_seqs: jax.Array      # [B, K, L] int32
    live_logp: jax.Array      # [B, K] sum of log-probs, sorted best first
    fin_seqs: jax.Array       # [B, K, L]
    fin_scores: jax.Array     # [B, K] logp / brevity_penalty, NEG_INF for empty slots
    fin_flags: jax.Array      # [B, K] bool
    fin_logp: jax.Array       # [B, K] the finished beams' logp (no penalty), NEG_INF for empty slots


def _per_beam(fn, state, invariant: Sequence[str]):
    """fn applied to every leaf of state, except under a dict state's `invariant` keys."""
    apply = lambda tree: jax.tree.map(fn, tree)
    if not invariant or not isinstance(state, dict):
        return apply(state)
    return {k: v if k in invariant else apply(v) for k, v in state.items()}


def beam_search(logits0, state0, step_fn: StepFn, *, max_decode_length: int, beam_size: int = 4,
                alpha: float = 0.6, eos_id: int = EOS_ID, finish_rule: str = "t5x",
                beam_invariant: Sequence[str] = ()) -> DecodeResult:
    """T5X-style beam search.

    Each step extends the K live beams by every token, keeps the 2K best
    candidates by summed log-prob, moves the ones ending in EOS into the finished
    pool (scored logp / ((5 + len) / 6) ** alpha, len counting the EOS; the pool
    keeps the K best) and keeps the K best non-EOS candidates live.  The search
    stops at max_decode_length or when, for every row, the worst finished score
    beats the best live log-prob divided by the largest possible penalty
    (nothing live can still enter the top K).  Rows with no finished beam return
    their live beams, scored by raw log-prob.  Returns tokens [B, K, L] best first.

    finish_rule="hf" reproduces Hugging Face transformers' `generate(num_beams=K)`
    bookkeeping instead: an EOS candidate may finish only if it ranks among the
    top K of the 2K candidates, and beams still live at max_decode_length join the
    finished pool (scored logp / penalty(L)).  With alpha=0 this equals HF with
    length_penalty=0.0 (and any early_stopping, since the bound is then exact).

    beam_invariant: keys of a dict state that depend only on the example (the encoder's projected
    keys/values: models.decode.BEAM_INVARIANT).  They stay [B, ...], neither repeated per beam nor
    reordered (a beam's parent is always in its own example), and step_fn must accept them with
    B*K fed tokens.  For T5.1.1-small, 512 inputs, batch 8 x 4 beams, that is 300 MB less state
    and no 400 MB copy per generated token.
    """
    if beam_size < 1:
        raise UserError(f"beam size must be >= 1, got {beam_size}")
    if finish_rule not in ("t5x", "hf"):
        raise UserError(f"beam finish rule must be t5x or hf, got {finish_rule!r}")
    batch, vocab = logits0.shape
    K, L = beam_size, max_decode_length
    # Every beam of a row starts from the same prompt; only beam 0 is live so the first step
    # does not pick the same token K times.
    state = _per_beam(lambda x: jnp.repeat(x, K, axis=0), state0, beam_invariant)   # leaves [B*K, ...]
    beams = _BeamState(
        live_seqs=jnp.zeros((batch, K, L), jnp.int32),
        live_logp=jnp.tile(jnp.array([0.0] + [NEG_INF] * (K - 1), jnp.float32), (batch, 1)),
        fin_seqs=jnp.zeros((batch, K, L), jnp.int32),
        fin_scores=jnp.full((batch, K), NEG_INF, jnp.float32),
        fin_flags=jnp.zeros((batch, K), bool),
        fin_logp=jnp.full((batch, K), NEG_INF, jnp.float32))
    row_offset = (jnp.arange(batch) * K)[:, None]                           # [B, 1]

    def extend(beams: _BeamState, logits, i, state):
        """Consume logits [B*K, V] for position i; return new beams and the reordered state."""
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, K, vocab)
        cand = (beams.live_logp[:, :, None] + logp).reshape(batch, K * vocab)
        top_logp, top_idx = jax.lax.top_k(cand, 2 * K)                       # [B, 2K]
        src_beam, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(beams.live_seqs, src_beam[:, :, None], axis=1)
        seqs = jax.lax.dynamic_update_slice(seqs, tok[:, :, None], (0, 0, i))  # [B, 2K, L]
        # A candidate descending from a dead (NEG_INF) initial beam is never a real hypothesis.
        is_eos = (tok == eos_id) & (top_logp > NEG_INF / 2)
        if finish_rule == "hf":
            is_eos = is_eos & (jnp.arange(2 * K) < K)[None, :]

        # Finished pool: old K plus the new EOS candidates, keep the best K.
        new_scores = jnp.where(is_eos, top_logp / brevity_penalty(alpha, i + 1), NEG_INF)
        all_scores = jnp.concatenate([beams.fin_scores, new_scores], axis=1)    # [B, 3K]
        all_flags = jnp.concatenate([beams.fin_flags, is_eos], axis=1)
        all_seqs = jnp.concatenate([beams.fin_seqs, seqs], axis=1)
        all_logp = jnp.concatenate([beams.fin_logp, jnp.where(is_eos, top_logp, NEG_INF)], axis=1)
        fin_scores, keep = jax.lax.top_k(all_scores, K)
        fin_flags = jnp.take_along_axis(all_flags, keep, axis=1)
        fin_seqs = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)
        fin_logp = jnp.take_along_axis(all_logp, keep, axis=1)

        # Live beams: the K best candidates that did not end.
        live_logp, keep = jax.lax.top_k(jnp.where(is_eos | (tok == eos_id), NEG_INF, top_logp), K)
        live_seqs = jnp.take_along_axis(seqs, keep[:, :, None], axis=1)
        parent = jnp.take_along_axis(src_beam, keep, axis=1) + row_offset      # [B, K] flat rows
        state = _per_beam(lambda x: jnp.take(x, parent.reshape(-1), axis=0), state, beam_invariant)
        last = jnp.take_along_axis(tok, keep, axis=1).reshape(-1)              # [B*K] fed next
        return _BeamState(live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, fin_logp), state, last

    beams, state, last = extend(beams, jnp.repeat(logits0, K, axis=0), 0, state)
    max_penalty = brevity_penalty(alpha, L)

    def cond(carry):
        i, beams, _, _ = carry
        best_live = beams.live_logp[:, 0] / max_penalty                         # optimistic bound
        worst_fin = jnp.min(beams.fin_scores, axis=1)                           # NEG_INF until K finished
        return (i < L) & ~jnp.all(worst_fin > best_live)

    def body(carry):
        i, beams, state, last = carry
        logits, state = step_fn(state, last)
        beams, state, last = extend(beams, logits, i, state)
        return i + 1, beams, state, last

    i, beams, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), beams, state, last))
    if finish_rule == "hf":
        # Live beams that reached the length limit count as finished hypotheses.
        live_scores = jnp.where((i >= L) & (beams.live_logp > NEG_INF / 2), beams.live_logp / max_penalty, NEG_INF)
        all_scores = jnp.concatenate([beams.fin_scores, live_scores], axis=1)
        all_flags = jnp.concatenate([beams.fin_flags, live_scores > NEG_INF / 2], axis=1)
        all_seqs = jnp.concatenate([beams.fin_seqs, beams.live_seqs], axis=1)
        all_logp = jnp.concatenate([beams.fin_logp, jnp.where(live_scores > NEG_INF / 2, beams.live_logp, NEG_INF)],
                                   axis=1)
        fin_scores, keep = jax.lax.top_k(all_scores, K)
        beams = beams._replace(fin_scores=fin_scores, fin_flags=jnp.take_along_axis(all_flags, keep, axis=1),
                               fin_seqs=jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1),
                               fin_logp=jnp.take_along_axis(all_logp, keep, axis=1))
    any_fin = jnp.any(beams.fin_flags, axis=1)                                  # [B]
    tokens = jnp.where(any_fin[:, None, None], beams.fin_seqs, beams.live_seqs)
    scores = jnp.where(any_fin[:, None], beams.fin_scores, beams.live_logp)
    return DecodeResult(tokens, scores, jnp.where(any_fin[:, None], beams.fin_logp, beams.live_logp))


# ---------------------------------------------------------------------------
# Running a t5x_lite model
# ---------------------------------------------------------------------------

def make_prompt(architecture: str, inputs: Sequence[Sequence[int]], *, length: int | None = None,
                batch_size: int | None = None) -> dict[str, np.ndarray]:
    """The prompt `models.init_decode_state` takes, from token-id lists, right-padded with 0 to `length` (default: the
    longest) and with all-padding rows up to `batch_size` (fixed shapes = one compile)."""
    rows = [list(map(int, x)) for x in inputs]
    longest = max([len(r) for r in rows] + [1])
    length = longest if length is None else length
    if longest > length:
        raise UserError(f"prompt of {longest} tokens is longer than the allowed {length}")
    n = len(rows) if batch_size is None else batch_size
    if len(rows) > n:
        raise UserError(f"{len(rows)} prompts do not fit a batch of {n}")
    toks = np.zeros((n, length), np.int32)
    for b, r in enumerate(rows):
        toks[b, :len(r)] = r
    if architecture == "encoder_decoder":
        return {"encoder_input_tokens": toks}
    if architecture == "decoder_only":
        lengths = np.zeros((n,), np.int32)
        lengths[:len(rows)] = [len(r) for r in rows]
        return {"decoder_prompt_tokens": toks, "prompt_lengths": lengths}
    raise UserError(f"cannot decode with a {architecture!r} model (need encoder_decoder or decoder_only)")


def fit_decode_length(cfg, prompt_length: int, max_decode_length: int) -> int:
    """The most new tokens (at most `max_decode_length`) a model with learned absolute positions
    can decode after a prompt of `prompt_length` tokens: model.max_position_embeddings bounds the
    positions fed to the decoder.  Decoder-only: BOS + prompt take positions 0..P and new token k is
    fed at P+1+k (the last one is never fed), so P + N <= max_position_embeddings.  Encoder-decoder:
    the encoder reads P positions and the decoder BOS + N-1 new tokens.  Relative and sinusoidal
    positions have no limit.  A prompt that does not fit at all is a UserError."""
    if getattr(cfg, "position_embedding", None) != "learned":
        return max_decode_length
    limit = int(cfg.max_position_embeddings)
    if cfg.architecture == "decoder_only":
        if prompt_length + 1 > limit:
            raise UserError(f"a prompt of {prompt_length} tokens does not fit model.max_position_embeddings="
                            f"{limit} (BOS + prompt must be at most {limit} positions)")
        return min(max_decode_length, limit - prompt_length)
    if prompt_length > limit:
        raise UserError(f"an input of {prompt_length} tokens does not fit the encoder's "
                        f"model.max_position_embeddings={limit}")
    return min(max_decode_length, limit)


@functools.partial(nnx.jit, static_argnames=("method", "max_decode_length", "beam_size", "alpha",
                                             "temperature", "top_k", "top_p", "eos_id", "finish_rule"))
def _decode_jit(model, prompt, rng, *, method, max_decode_length, beam_size, alpha, temperature, top_k,
                top_p, eos_id, finish_rule):
    logits0, state = init_decode_state(model, prompt, max_decode_length)
    step = lambda s, t: decode_step(model, s, t)
    if method == "greedy":
        return greedy_search(logits0, state, step, max_decode_length=max_decode_length, eos_id=eos_id)
    if method == "beam":
        return beam_search(logits0, state, step, max_decode_length=max_decode_length,
                           beam_size=beam_size, alpha=alpha, eos_id=eos_id, finish_rule=finish_rule,
                           beam_invariant=BEAM_INVARIANT)
    return temperature_sample(logits0, state, step, rng, max_decode_length=max_decode_length,
                              temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id)


def decode(model, prompt: dict, *, method: str = "greedy", max_decode_length: int = 64,
           beam_size: int = 4, alpha: float = 0.6, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, rng: jax.Array | None = None, eos_id: int = EOS_ID,
           finish_rule: str = "t5x", return_scores: bool = False, all_beams: bool = False, mesh=None,
           return_log_probs: bool = False):
    """Decode a batch with a t5x_lite model (encoder-decoder, decoder-only or prefix LM).

    prompt: from `make_prompt`.  Returns np.int32 [B, max_decode_length] (for beam search the best
    beam; all_beams=True: [B, K, L] best first), and with return_scores=True also the scores
    ([B] log-prob, or the beam scores); return_log_probs=True returns (tokens, scores, log_probs),
    log_probs being each sequence's summed token log-probs (DecodeResult.log_probs).
    finish_rule: see `beam_search`.  mesh: trace and run inside `partitioning.activate(mesh)`;
    None keeps the caller's context (if any).
    """
    if method not in METHODS:
        raise UserError(f"decode method must be one of {METHODS}, got {method!r}")
    if max_decode_length < 1:
        raise UserError(f"max decode length must be >= 1, got {max_decode_length}")
    if method == "sample" and temperature > 0 and rng is None:
        raise UserError("sampling needs a PRNG key (seed)")
    if rng is None:
        rng = jax.random.key(0)
    prompt = {k: jnp.asarray(v, jnp.int32) for k, v in prompt.items()}
    cfg = getattr(model, "config", None)
    length = next((prompt[k].shape[1] for k in ("decoder_prompt_tokens", "encoder_input_tokens") if k in prompt), 0)
    fits = fit_decode_length(cfg, length, int(max_decode_length))
    if fits < max_decode_length:   # past the learned positions the output would be junk: refuse
        raise UserError(f"max decode length {max_decode_length} does not fit model.max_position_embeddings="
                        f"{cfg.max_position_embeddings} after a {length}-token prompt; at most {fits}")
    with contextlib.nullcontext() if mesh is None else partitioning.activate(mesh):
        out = _decode_jit(model, prompt, rng, method=method, max_decode_length=int(max_decode_length),
                          beam_size=int(beam_size), alpha=float(alpha), temperature=float(temperature),
                          top_k=int(top_k), top_p=float(top_p), eos_id=int(eos_id),
                          finish_rule=finish_rule)
    tokens, scores, log_probs = np.asarray(out.tokens), np.asarray(out.scores), np.asarray(out.log_probs)
    if method == "beam" and not all_beams:
        tokens, scores, log_probs = tokens[:, 0], scores[:, 0], log_probs[:, 0]
    if return_log_probs:
        return tokens, scores, log_probs
    return (tokens, scores) if return_scores else tokens


class Generation(NamedTuple):
    ids: list[int]    # the new tokens up to and including EOS (all of them when it never ended)
    log_prob: float   # sum of their log-probs under the model (natural log, EOS included)


def generate(model, prompts: Sequence[Sequence[int]], *, max_decode_length: int, num_return_sequences: int = 1,
             method: str = "greedy", batch_size: int = 32, seed: int = 0, beam_size: int = 4, alpha: float = 0.6,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, finish_rule: str = "t5x",
             progress: bool | str = False) -> list[list[Generation]]:
    """Decode every prompt (token-id lists); for each, `num_return_sequences` Generations: beam search's
    best N of its K beams (best first; fewer when fewer than N beams finished), or N samples (each prompt
    repeated N times in the batch, so each row draws its own), or the one greedy answer.  Batches have
    one fixed shape (one compile); batch n samples with fold_in(key(seed), n).  A model with learned
    positions decodes at most what they leave after the longest prompt (one warning line)."""
    n = int(num_return_sequences)
    if n < 1:
        raise UserError(f"number of return sequences must be >= 1, got {n}")
    if n > 1 and method == "greedy":
        raise UserError("more than one return sequence needs beam search or sampling (greedy has one answer)")
    if method == "beam" and n > beam_size:
        raise UserError(f"{n} return sequences need a beam size of at least {n} (it is {beam_size})")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    cfg = model.config
    length = max([len(p) for p in prompts] + [1])
    fits = fit_decode_length(cfg, length, max_decode_length)
    if fits < max_decode_length:   # as Hugging Face's generate: warn and stop at the model's length
        print(f"warning: decoding at most {fits} new tokens, not {max_decode_length}: a {length}-token prompt "
              f"leaves only {fits} of model.max_position_embeddings={cfg.max_position_embeddings} "
              "learned positions", file=sys.stderr)
        max_decode_length = fits
    rows = [list(p) for p in prompts for _ in range(n if method == "sample" else 1)]
    bs = min(batch_size, len(rows)) or 1
    starts = range(0, len(rows), bs)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, total=-(-len(rows) // bs), unit="batch", file=sys.stderr,
                      desc=progress if isinstance(progress, str) else "decode")
    rng = jax.random.key(seed)
    flat: list[list[Generation]] = []
    for b, start in enumerate(starts):
        chunk = rows[start:start + bs]
        prompt = make_prompt(cfg.architecture, chunk, length=length, batch_size=bs)
        tokens, _, logp = decode(model, prompt, method=method, max_decode_length=max_decode_length,
                                 beam_size=beam_size, alpha=alpha, temperature=temperature, top_k=top_k, top_p=top_p,
                                 rng=jax.random.fold_in(rng, b), finish_rule=finish_rule, all_beams=True,
                                 return_log_probs=True)
        if method != "beam":
            tokens, logp = tokens[:, None], logp[:, None]
        for r in range(len(chunk)):
            flat.append([Generation(_until_eos(tokens[r, k].tolist()), float(logp[r, k]))
                         for k in range(min(n, tokens.shape[1])) if k == 0 or logp[r, k] > NEG_INF / 2])
    if method == "sample":   # the N rows of each prompt are one prompt's N samples
        return [[g[0] for g in flat[i * n:(i + 1) * n]] for i in range(len(prompts))]
    return flat


def _until_eos(row: list[int]) -> list[int]:
    return row[: row.index(EOS_ID) + 1] if EOS_ID in row else row
