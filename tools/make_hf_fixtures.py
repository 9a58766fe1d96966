"""Make the Hugging Face T5 golden files under tests/fixtures/hf_t5_1_{0,1}/.

Needs torch + transformers, which the package and CI do NOT need.  Run it from a
separate virtualenv (see docs/interop.md)::

    python3 -m venv /tmp/hfenv
    /tmp/hfenv/bin/pip install torch==2.13.0 transformers safetensors numpy
    /tmp/hfenv/bin/python tools/make_hf_fixtures.py --out tests/fixtures

For each of two tiny random models with a fixed seed it writes

    hf_t5_1_X/config.json, model.safetensors, generation_config.json   (save_pretrained)
    hf_t5_1_X/reference.npz   encoder_input_ids [2, Lin] (row 1 right-padded with 0),
                              encoder_attention_mask, decoder_input_tokens [2, Ldec] (BOS=0, targets
                              shifted right; row 1 right-padded), decoder_target_tokens, decoder_loss_weights,
                              logits [2, Ldec, V] fp32 (HF forward pass, the reference for the converter),
                              greedy_sequences [2, 1 + max_new_tokens] (starts with decoder_start 0, 0-padded),
                              beam_sequences [2, num_beams, 1 + max_new_tokens], beam_scores [2, num_beams]
    hf_t5_1_X/reference.json  the settings above, which beams ended with EOS, torch/transformers versions.

T5.1.0: relu MLP, tied input/output embedding, decoder output scaled by d_model**-0.5.
T5.1.1: gated-GELU (tanh approximation, HF "gelu_new") MLP, separate lm_head, no scaling; its decoder is
deeper than its encoder (2 vs 3 layers) so a mix-up of the two stacks cannot go unnoticed.

The EOS row of the output embedding is set to a multiple of the mean decoder output direction, and the
sub-layer output kernels are scaled (see MODELS), so that decoding gives non-trivial outputs;
the reference logits, greedy and beam outputs are all computed with those final weights, from the model
re-loaded from disk with from_pretrained, so they describe exactly the files that are saved.

Beam search uses length_penalty=0.0 and early_stopping="never": the hypothesis score is the plain sum of
token log-probs (EOS included), as T5X's brevity penalty with alpha=0.0, and the search stops only when no
live beam can still beat the worst finished one.  HF's beam bookkeeping still differs from T5X's in two
places (see docs/interop.md); t5x_lite.decoding's finish_rule="hf" reproduces HF.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import torch
import transformers
from transformers import T5Config, T5ForConditionalGeneration

SEED = 20240601
VOCAB = 128
LIN, LIN_ROW1 = 32, 23          # encoder length; row 1 has 23 real tokens then padding
LDEC, LDEC_ROW1 = 24, 17        # decoder length; row 1 has 17 real target tokens then padding
MAX_NEW_TOKENS = 10
NUM_BEAMS = 4

# name -> (T5Config overrides, output_gain, eos_scale).  output_gain multiplies the attention-output and
# MLP-output kernels ("o", "wo") after HF's init: with tied embeddings the residual stream of a random model is
# dominated by the input embedding and greedy decoding just repeats its input token; a larger gain makes the
# sub-layers matter.  eos_scale sets how likely EOS is.  The values were picked by looking at the outputs:
# T5.1.0 -> every beam hypothesis ends with EOS, at lengths 1-6; greedy runs to max_new_tokens;
# T5.1.1 -> none ends within max_new_tokens (long, varied sequences; no finished/unfinished mix, where
# T5X and HF legitimately differ: T5X drops live beams once any beam finished, HF keeps them).
MODELS = {
    "hf_t5_1_0": (dict(feed_forward_proj="relu", tie_word_embeddings=True, num_layers=2, num_decoder_layers=2),
                  3.0, 0.5),
    "hf_t5_1_1": (dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=2,
                       num_decoder_layers=3), 1.0, 0.3),
}


def make_config(spec: dict) -> T5Config:
    return T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, layer_norm_epsilon=1e-6,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **spec)


def make_inputs(rng: np.random.Generator) -> dict:
    """Token ids in [2, VOCAB) (0 = pad, 1 = EOS), each sequence ending in EOS."""
    enc = rng.integers(2, VOCAB, size=(2, LIN)).astype(np.int64)
    enc[0, -1] = 1
    enc[1, LIN_ROW1 - 1] = 1
    enc[1, LIN_ROW1:] = 0
    tgt = rng.integers(2, VOCAB, size=(2, LDEC)).astype(np.int64)
    tgt[0, -1] = 1
    tgt[1, LDEC_ROW1 - 1] = 1
    tgt[1, LDEC_ROW1:] = 0
    dec_in = np.zeros_like(tgt)
    dec_in[:, 1:] = tgt[:, :-1]        # shift right, BOS = 0
    dec_in[1, LDEC_ROW1:] = 0
    return {
        "encoder_input_ids": enc,
        "encoder_attention_mask": (enc != 0).astype(np.int64),
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": (tgt != 0).astype(np.float32),
    }


@torch.no_grad()
def boost_eos(model: T5ForConditionalGeneration, inputs: dict, scale: float) -> None:
    """Point the EOS output-embedding row along the mean decoder output so EOS becomes likely."""
    enc = torch.from_numpy(inputs["encoder_input_ids"])
    out = model(input_ids=enc, attention_mask=torch.from_numpy(inputs["encoder_attention_mask"]),
                decoder_input_ids=torch.from_numpy(inputs["decoder_input_tokens"]), output_hidden_states=True)
    h = out.decoder_hidden_states[-1].reshape(-1, model.config.d_model).mean(0)
    h = h / h.norm()
    w = model.get_output_embeddings().weight
    w[1] = scale * h * w.norm(dim=1).mean()


@torch.no_grad()
def reference(model: T5ForConditionalGeneration, inputs: dict) -> tuple[dict, dict]:
    enc = torch.from_numpy(inputs["encoder_input_ids"])
    mask = torch.from_numpy(inputs["encoder_attention_mask"])
    logits = model(input_ids=enc, attention_mask=mask,
                   decoder_input_ids=torch.from_numpy(inputs["decoder_input_tokens"])).logits
    greedy = model.generate(input_ids=enc, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                            do_sample=False, num_beams=1, use_cache=False)
    beam = model.generate(input_ids=enc, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS,
                          do_sample=False, num_beams=NUM_BEAMS, num_return_sequences=NUM_BEAMS,
                          length_penalty=0.0, early_stopping="never", use_cache=False,
                          output_scores=True, return_dict_in_generate=True)
    seqs = beam.sequences.numpy()
    seqs = np.pad(seqs, ((0, 0), (0, 1 + MAX_NEW_TOKENS - seqs.shape[1])))
    greedy = greedy.numpy()
    greedy = np.pad(greedy, ((0, 0), (0, 1 + MAX_NEW_TOKENS - greedy.shape[1])))
    arrays = {
        **inputs,
        "logits": logits.numpy().astype(np.float32),
        "greedy_sequences": greedy.astype(np.int32),
        "beam_sequences": seqs.reshape(2, NUM_BEAMS, -1).astype(np.int32),
        "beam_scores": beam.sequences_scores.numpy().reshape(2, NUM_BEAMS).astype(np.float32),
    }
    meta = {
        "greedy_ended_with_eos": [bool((row[1:] == 1).any()) for row in greedy],
        "beam_ended_with_eos": [[bool((s[1:] == 1).any()) for s in b] for b in arrays["beam_sequences"]],
    }
    return arrays, meta


def make_one(name: str, spec: dict, out_dir: str, output_gain: float, eos_scale: float) -> None:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED + len(name))
    config = make_config(spec)
    model = T5ForConditionalGeneration(config).eval()
    if not spec["tie_word_embeddings"]:
        # transformers 5 ties lm_head to `shared` in a freshly built model; T5.1.1 has its own output
        # embedding, so give it one (from_pretrained keeps them apart when both are saved and differ).
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, config.d_model) * config.d_model ** -0.5)
        model.config.tie_word_embeddings = False
    with torch.no_grad():
        for key, w in model.named_parameters():
            if key.endswith(("o.weight", "wo.weight")):
                w.mul_(output_gain)
            if "layer_norm" in key:  # HF inits them to 1.0; random scales catch a mixed-up mapping
                w.copy_(1.0 + 0.2 * torch.randn_like(w))
    inputs = make_inputs(rng)
    boost_eos(model, inputs, eos_scale)
    path = os.path.join(out_dir, name)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    reloaded = T5ForConditionalGeneration.from_pretrained(path).eval()
    arrays, meta = reference(reloaded, inputs)
    np.savez_compressed(os.path.join(path, "reference.npz"), **arrays)
    meta = {
        "description": f"tiny random {name.replace('hf_', '').replace('_', '.')} model made by tools/make_hf_fixtures.py",
        "seed": SEED,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "feed_forward_proj": spec["feed_forward_proj"],
        "tie_word_embeddings": spec["tie_word_embeddings"],
        "eos_row_scale": eos_scale,
        "output_gain": output_gain,
        "encoder_lengths": [LIN, LIN_ROW1],
        "decoder_lengths": [LDEC, LDEC_ROW1],
        "max_new_tokens": MAX_NEW_TOKENS,
        "greedy": {"num_beams": 1, "do_sample": False},
        "beam": {"num_beams": NUM_BEAMS, "num_return_sequences": NUM_BEAMS, "length_penalty": 0.0,
                 "early_stopping": "never",
                 "t5x_equivalent": "scores = T5X brevity-penalty alpha=0.0 (sum of token log-probs including "
                                   "EOS); HF's beam bookkeeping differs from T5X's (which EOS candidates may "
                                   "finish, live beams at the length limit), see docs/interop.md; sequences are "
                                   "[decoder_start=0, tokens..., EOS, EOS/0 padding]"},
        **meta,
    }
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(name, {k: meta[k] for k in ("greedy_ended_with_eos", "beam_ended_with_eos")})


@torch.no_grad()
def verify_export(export_dir: str, fixture_dir: str) -> None:
    """Load a `t5x-lite convert t5x-to-hf` export with transformers and compare it with a fixture."""
    model = T5ForConditionalGeneration.from_pretrained(export_dir).eval()
    ref = dict(np.load(os.path.join(fixture_dir, "reference.npz")))
    got, _ = reference(model, {k: ref[k] for k in ("encoder_input_ids", "encoder_attention_mask",
                                                    "decoder_input_tokens", "decoder_target_tokens",
                                                    "decoder_loss_weights")})
    err = float(np.abs(got["logits"] - ref["logits"]).max())
    same = {k: bool(np.array_equal(got[k], ref[k])) for k in ("greedy_sequences", "beam_sequences")}
    print(f"{export_dir}: logits max-abs diff vs {fixture_dir}: {err:.3g}; identical outputs: {same}")
    if err > 1e-5 or not all(same.values()):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    parser.add_argument("--verify-export", nargs=2, metavar=("EXPORT_DIR", "FIXTURE_DIR"),
                        help="instead of writing fixtures: load EXPORT_DIR (written by t5x-lite convert "
                             "t5x-to-hf) with from_pretrained and check it against FIXTURE_DIR's reference")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    if args.verify_export:
        verify_export(*args.verify_export)
        return
    for name, (spec, output_gain, eos_scale) in MODELS.items():
        make_one(name, spec, args.out, output_gain, eos_scale)


if __name__ == "__main__":
    main()
