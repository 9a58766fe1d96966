"""Persistent Hugging Face PyTorch T5 worker for the tools/ benchmarks (started by benchlib.HFWorker).

Reads one JSON object per stdin line and answers each with one stdout line "@@" + JSON (anything a
library prints goes to stderr, so the protocol lines are the only stdout).  The first message
builds the model once:

    {"task": "train", "model": ModelConfig.to_dict(), "batch", "inputs", "targets", "optimizer", "bf16", "threads"}
    {"task": "generate", "hf_dir", "input_ids": [[...]], "bf16", "threads"}
    {"task": "score", "hf_dir", "input_ids": [[...]], "labels": [[...]], "bf16", "threads"}

-> {"ready": true, "params", "device", "threads", "torch", "transformers"}.  Then each
{"cmd": "rep", ...} runs ONE timed repetition and answers {"time_s": seconds, ...}:

    train:    {"steps": N} -> mean seconds per train step over N steps (and the last loss)
    generate: {"num_beams": K, "new_tokens": N, "return_tokens": bool} -> seconds of one generate()
              with min_new_tokens = max_new_tokens = N (EOS is masked until N: every row gets N tokens)
    score:    {"return_scores": bool} -> seconds of one forward with labels + per-token log-probs

{"cmd": "quit"} exits.  It imports torch and transformers only (no JAX, no t5x_lite), so it runs
under $HF_PYTHON too.  `device`: CUDA when torch sees a GPU, else the CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time

PROTOCOL = sys.stdout
sys.stdout = sys.stderr   # library prints must not corrupt the protocol


def reply(obj: dict) -> None:
    PROTOCOL.write("@@" + json.dumps(obj) + "\n")
    PROTOCOL.flush()


class Worker:
    def __init__(self, a: dict):
        import torch
        import transformers
        self.torch, self.a = torch, a
        torch.manual_seed(0)
        torch.set_num_threads(int(a.get("threads") or os.cpu_count() or 1))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if a.get("bf16") else torch.float32
        self.task = a["task"]
        if self.task == "train":
            self.model = self._train_model(a).to(self.device)
        elif self.task in ("generate", "score"):
            from transformers import T5ForConditionalGeneration
            self.model = T5ForConditionalGeneration.from_pretrained(a["hf_dir"]).to(self.device, self.dtype).eval()
            self.x = torch.tensor(a["input_ids"], dtype=torch.long, device=self.device)
            self.mask = (self.x != 0).long()
            if self.task == "score":
                self.y = torch.tensor(a["labels"], dtype=torch.long, device=self.device)
        else:
            raise ValueError(f"unknown task {self.task!r}")
        name = torch.cuda.get_device_name(0) if self.device.type == "cuda" else "cpu"
        self.info = {"ready": True, "params": sum(p.numel() for p in self.model.parameters()), "device": name,
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "transformers": transformers.__version__}

    def _train_model(self, a):
        torch = self.torch
        from transformers import T5Config, T5ForConditionalGeneration
        m = a["model"]
        act = m["mlp_activations"]
        cfg = T5Config(vocab_size=m["vocab_size"], d_model=m["d_model"], d_kv=m["d_kv"], d_ff=m["d_ff"],
                       num_layers=m["num_encoder_layers"], num_decoder_layers=m["num_decoder_layers"],
                       num_heads=m["num_heads"], relative_attention_num_buckets=m["relative_attention_num_buckets"],
                       relative_attention_max_distance=m["relative_attention_max_distance"], dropout_rate=0.0,
                       feed_forward_proj="gated-gelu" if len(act) == 2 else "relu",
                       tie_word_embeddings=m["tie_embeddings"], decoder_start_token_id=0, pad_token_id=0,
                       eos_token_id=1)
        model = T5ForConditionalGeneration(cfg).train()
        if not m["tie_embeddings"]:
            # transformers 5 ties lm_head to `shared` in a freshly built model; T5.1.1 has its own output embedding
            model.lm_head.weight = torch.nn.Parameter(torch.randn(m["vocab_size"], m["d_model"]) * m["d_model"] ** -0.5)
            model.config.tie_word_embeddings = False
        if a.get("bf16"):
            model = model.to(torch.bfloat16)
        if a["optimizer"] == "adafactor":
            from transformers.optimization import Adafactor
            self.opt = Adafactor(model.parameters(), lr=0.01, relative_step=False, scale_parameter=True,
                                 warmup_init=False)
        else:
            self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        hi = min(m["vocab_size"], 32000)
        self.x = torch.randint(2, hi, (a["batch"], a["inputs"]), generator=g).to(self.device)
        self.y = torch.randint(2, hi, (a["batch"], a["targets"]), generator=g).to(self.device)
        return model

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def rep(self, cmd: dict) -> dict:
        torch = self.torch
        out: dict = {}
        self._sync()
        t = time.perf_counter()
        if self.task == "train":
            steps = int(cmd.get("steps", 1))
            for _ in range(steps):
                loss = self.model(input_ids=self.x, labels=self.y).loss
                loss.backward()
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
            out["loss"] = float(loss)
            self._sync()
            out["time_s"] = (time.perf_counter() - t) / steps
            return out
        with torch.inference_mode():
            if self.task == "generate":
                n = int(cmd["new_tokens"])
                seqs = self.model.generate(input_ids=self.x, attention_mask=self.mask, max_new_tokens=n,
                                           min_new_tokens=n, num_beams=int(cmd.get("num_beams", 1)),
                                           num_return_sequences=1, do_sample=False, use_cache=True)
                self._sync()
                out["time_s"] = time.perf_counter() - t
                out["new_tokens"] = int(seqs.shape[1] - 1)   # row 0 of each is decoder_start_token_id
                if cmd.get("return_tokens"):
                    out["tokens"] = seqs[:, 1:].tolist()
                return out
            logits = self.model(input_ids=self.x, attention_mask=self.mask, labels=self.y).logits
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, self.y[..., None])[..., 0]
            sums = logp.sum(-1).tolist()
            self._sync()
            out["time_s"] = time.perf_counter() - t
            if cmd.get("return_scores"):
                out["log_likelihood"] = sums
            return out


def main() -> int:
    worker = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            if worker is None:
                worker = Worker(msg)
                reply(worker.info)
            elif msg.get("cmd") == "quit":
                return 0
            elif msg.get("cmd") == "rep":
                reply(worker.rep(msg))
            else:
                reply({"error": f"unknown command {msg!r}"})
        except Exception as e:   # one line back to the benchmark, which exits with it
            reply({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
