"""tinygpt against PyTorch eager on the same CPU: same model, same workloads, same timing.

Run by hand from the crate root (needs `torch`; CI does not run it):

    python3 scripts/pytorch_bench.py            # runs tinygpt's bench example, then PyTorch
    python3 scripts/pytorch_bench.py --quick    # a short smoke run of both
    python3 scripts/pytorch_bench.py --pytorch-only
    python3 scripts/pytorch_bench.py --preset gpt2-small   # GPT-2 small in transformers instead

Each round runs `cargo run --release --example bench -- --json` (tinygpt on its default
backend), then the same workloads in PyTorch with `torch.set_num_threads(--threads)`, and
prints both with the ratio tinygpt / PyTorch (above 1: tinygpt is faster), then every figure
as a JSON line with a `framework` field. The two programs take turns for `--rounds` rounds
(default 3); the table gives each ratio's median over the rounds and its range.

The PyTorch model is tinygpt's, layer for layer: learned token and position embeddings; 4
pre-norm blocks of causal self-attention (separate query, key and value projections, 4 heads,
`scaled_dot_product_attention`) and a 4x GELU MLP; a final LayerNorm; a bias-free head. D=128,
V=64. The workloads mirror `benches/workloads.rs`:

- train: forward, cross-entropy, backward, gradient clipping and AdamW on a [32, 128] batch;
- prefill: a 128-token prompt into an empty, pre-allocated KV cache, last position's logits;
- decode (cached): one token against `context - 1` cached positions, cache rewound after;
- decode (naive): the whole context recomputed, last position's logits;
- decode (cached, 8 rows): one token for each of 8 rows against 511 cached positions each,
  tokens/s over all rows;
- matmul_gflops: the best of five 2048 x 2048 f32 matrix products, each side's own (the peak
  the bench example gives each workload's share of);

inference under `torch.inference_mode()`. Each runs `warmup` times untimed, then `repeats`
times timed one by one; the figure is from the median run, as in tinygpt's bench example.

`--preset gpt2-small` (needs `transformers`) times Hugging Face's own `GPT2LMHeadModel` with
GPT-2 small's configuration (124M parameters, 1024 positions, random weights, eager attention)
instead, against the bench example run with `--preset gpt2-small`: prefill of 128 tokens and
cached decode at contexts 512 and 1024 (no training, no naive decode), plus `weights_bytes`,
`kv_cache_bytes` at each context and the process's `peak_rss_bytes`. For those byte figures
the ratio above 1 means tinygpt holds more. A figure only one side gives is shown with `-` on
the other.
"""

import argparse
import inspect
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, D_MODEL, N_HEADS, N_LAYERS = 64, 128, 4, 4
TRAIN_BATCH, TRAIN_SEQ, PREFILL = 32, 128, 128
CONTEXTS = [128, 512, 2048]
DECODE_BATCH, DECODE_BATCH_CONTEXT = 8, 512
GPT2_CONTEXTS = [512, 1024]


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(D_MODEL, D_MODEL)
        self.key = nn.Linear(D_MODEL, D_MODEL)
        self.value = nn.Linear(D_MODEL, D_MODEL)
        self.output = nn.Linear(D_MODEL, D_MODEL)

    def heads(self, x):
        batch, time, _ = x.shape
        return x.view(batch, time, N_HEADS, D_MODEL // N_HEADS).transpose(1, 2)

    def forward(self, x, cache=None):
        batch, time, _ = x.shape
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values, start = cache
            keys[:, :, start : start + time] = k
            values[:, :, start : start + time] = v
            k, v = keys[:, :, : start + time], values[:, :, : start + time]
            if time == 1:
                y = F.scaled_dot_product_attention(q, k, v)
            else:
                # Bottom-right causal mask: query i sees cached positions and new ones up to i.
                mask = torch.ones(time, start + time, dtype=torch.bool).tril(start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.output(y.transpose(1, 2).reshape(batch, time, D_MODEL))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D_MODEL)
        self.attn = Attention()
        self.ln_2 = nn.LayerNorm(D_MODEL)
        self.fc = nn.Linear(D_MODEL, 4 * D_MODEL)
        self.proj = nn.Linear(4 * D_MODEL, D_MODEL)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class Gpt(nn.Module):
    def __init__(self, max_seq_len):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, D_MODEL)
        self.position_embedding = nn.Embedding(max_seq_len, D_MODEL)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYERS))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.lm_head = nn.Linear(D_MODEL, VOCAB, bias=False)

    def forward(self, tokens, caches=None, start=0, last_only=False):
        time = tokens.shape[1]
        positions = torch.arange(start, start + time)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for index, block in enumerate(self.blocks):
            cache = None if caches is None else (*caches[index], start)
            x = block(x, cache)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.ln_f(x))

    def new_cache(self, capacity, batch=1):
        shape = (batch, N_HEADS, capacity, D_MODEL // N_HEADS)
        return [(torch.zeros(shape), torch.zeros(shape)) for _ in self.blocks]


def median_seconds(warmup, repeats, work, reset=None):
    """Median time of `work`; `reset`, if given, runs untimed after every call."""
    for _ in range(warmup):
        work()
        if reset:
            reset()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
        if reset:
            reset()
    return sorted(times)[len(times) // 2]


def matmul_gflops(n=2048):
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def pytorch_figures(plan):
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(2)
    figures = [dict(metric="matmul_gflops", value=matmul_gflops())]

    model = Gpt(TRAIN_SEQ)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [dict(params=decay, weight_decay=0.1), dict(params=no_decay, weight_decay=0.0)],
        lr=3e-4,
        betas=(0.9, 0.99),
    )
    tokens = torch.randint(0, VOCAB, (TRAIN_BATCH, TRAIN_SEQ + 1), generator=generator)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def train_step():
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    seconds = median_seconds(plan["warmup"], plan["train_repeats"], train_step)
    figures.append(dict(metric="train_tokens_per_s", value=TRAIN_BATCH * TRAIN_SEQ / seconds))

    model = Gpt(CONTEXTS[-1]).eval()
    ids = torch.randint(0, VOCAB, (1, CONTEXTS[-1]), generator=generator)
    caches = model.new_cache(CONTEXTS[-1])
    with torch.inference_mode():
        prefill = lambda: model(ids[:, :PREFILL], caches, 0, last_only=True).tolist()
        seconds = median_seconds(plan["warmup"], plan["repeats"], prefill)
        figures.append(dict(metric="prefill_tokens_per_s", value=PREFILL / seconds))
        for context in CONTEXTS:
            for start in range(0, context - 1, 512):
                end = min(start + 512, context - 1)
                model(ids[:, start:end], caches, start)
            # The cache is pre-allocated, so "rewinding" is decoding at the same position.
            step = lambda: model(ids[:, context - 1 : context], caches, context - 1).tolist()
            cached = 1 / median_seconds(plan["warmup"], plan["repeats"], step)
            naive_repeats = -(-plan["repeats"] // 4) if context >= 2048 else plan["repeats"]
            naive_step = lambda: model(ids[:, :context], last_only=True).tolist()
            naive = 1 / median_seconds(min(plan["warmup"], 1), naive_repeats, naive_step)
            figures.append(
                dict(metric="decode_tokens_per_s", mode="cached", context=context, value=cached)
            )
            figures.append(
                dict(metric="decode_tokens_per_s", mode="naive", context=context, value=naive)
            )
        # Eight rows at once, each its own sequence.
        context = DECODE_BATCH_CONTEXT
        rows = torch.randint(0, VOCAB, (DECODE_BATCH, context), generator=generator)
        caches = model.new_cache(CONTEXTS[-1], DECODE_BATCH)
        model(rows[:, : context - 1], caches, 0)
        step = lambda: model(rows[:, context - 1 : context], caches, context - 1).tolist()
        batched = DECODE_BATCH / median_seconds(plan["warmup"], plan["repeats"], step)
        figures.append(
            dict(metric="decode_tokens_per_s", mode="cached", context=context,
                 batch=DECODE_BATCH, value=batched)
        )
    return figures


def peak_rss_bytes():
    """This process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def unique_bytes(tensors):
    """Bytes of distinct storages (a tied head shares `wte`'s and counts once)."""
    seen = {}
    for tensor in tensors:
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


def cache_tensors(cache):
    """The key and value tensors of a transformers cache, new (`.layers`) or legacy (tuples)."""
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return [t for layer in cache for t in layer[:2]]


def gpt2_small_figures(plan):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(2)
    figures = []
    config = GPT2Config(attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    vocab, positions = config.vocab_size, config.n_positions
    parameters = set(inspect.signature(model.forward).parameters)
    # transformers 5 renames `past_key_values` to `cache` (the old name warns until 5.40).
    cache_arg = "cache" if "cache" in parameters else "past_key_values"
    # Only the last position's logits, as tinygpt's prefill and decode return them.
    last_only = dict(logits_to_keep=1) if "logits_to_keep" in parameters else {}

    def forward(tokens, cache=None):
        """Last position's next token (argmax of its logits: 50257 of them are too many to
        turn into a Python list without that dominating a decode step) and the cache."""
        out = model(tokens, use_cache=True, **{cache_arg: cache}, **last_only)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        return out.logits[0, -1].argmax().item(), cache

    figures.append(dict(metric="weights_bytes", value=unique_bytes(model.state_dict().values())))
    ids = torch.randint(0, vocab, (1, positions), generator=generator)
    with torch.inference_mode():
        # A fresh DynamicCache each time: the prompt goes into an empty cache.
        prefill = lambda: forward(ids[:, :PREFILL])[0]
        seconds = median_seconds(plan["warmup"], plan["repeats"], prefill)
        figures.append(dict(metric="prefill_tokens_per_s", value=PREFILL / seconds))
        for context in GPT2_CONTEXTS:
            _, cache = forward(ids[:, : context - 1])
            assert cache.get_seq_length() == context - 1
            # Timed: one forward of the token at position context - 1 against the context - 1
            # cached positions, its logits' argmax fetched. HF's DynamicCache grows by
            # concatenation, so the step includes copying the cache into one a position
            # longer, as every HF decode step does. Untimed after it: `crop(-1)` drops that
            # position again (a view, no copy), so every timed step starts from context - 1.
            step = lambda: forward(ids[:, context - 1 : context], cache)[0]
            rewind = lambda: cache.crop(-1)
            step()
            kv_bytes = sum(t.nbytes for t in cache_tensors(cache))
            rewind()
            cached = 1 / median_seconds(plan["warmup"], plan["repeats"], step, rewind)
            assert cache.get_seq_length() == context - 1
            figures.append(
                dict(metric="decode_tokens_per_s", mode="cached", context=context, value=cached)
            )
            # 2·L·B·H·Dh·S·4, as tinygpt's bench prints beside its measured figure.
            formula = 2 * config.n_layer * config.n_embd * context * 4
            figures.append(
                dict(metric="kv_cache_bytes", context=context, value=kv_bytes, formula=formula)
            )
            del cache
    figures.append(dict(metric="peak_rss_bytes", value=peak_rss_bytes()))
    return figures


def tinygpt_figures(quick, binary=None, device="default", preset=None):
    if binary:
        command = [binary, "--json"]
    else:
        command = ["cargo", "run", "--release", "--quiet", "--example", "bench", "--", "--json"]
    command += ["--device", device]
    if quick:
        command.append("--quick")
    if preset:
        command += ["--preset", preset]
    print("running:", " ".join(command), file=sys.stderr)
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def key(figure):
    return (figure["metric"], figure.get("mode"), figure.get("context"), figure.get("batch"))


BYTE_METRICS = {"weights_bytes", "kv_cache_bytes", "peak_rss_bytes"}


def label(figure):
    metric, mode, context, batch = key(figure)
    rows = f", {batch} rows" if batch else ""
    names = dict(
        matmul_gflops="f32 matmul 2048², GFLOP/s",
        train_tokens_per_s="training tokens/s",
        prefill_tokens_per_s="prefill tokens/s",
        decode_tokens_per_s=f"decode tokens/s, {mode}, context {context}{rows}",
        weights_bytes="weights MiB",
        kv_cache_bytes=f"KV cache MiB, context {context}",
        peak_rss_bytes="peak RSS MiB",
    )
    if metric in names:
        return names[metric]
    return ", ".join(str(part) for part in key(figure) if part is not None)


def shown(figure_key, value):
    """A figure's value as the table gives it: bytes in MiB, rates as they are."""
    return value / 2**20 if figure_key[0] in BYTE_METRICS else value


def spread(ratios):
    """Median and range of one figure's ratios over the rounds, e.g. `1.02x (0.95-1.10)`."""
    middle = statistics.median(ratios)
    return f"{middle:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for smoke checks")
    parser.add_argument("--pytorch-only", action="store_true", help="skip tinygpt")
    parser.add_argument(
        "--bench-binary",
        help="a built bench example to run instead of `cargo run` (e.g. one built with features)",
    )
    parser.add_argument(
        "--device", default="default", help="tinygpt's backend (default: the build's default)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of both programs (default 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--preset",
        choices=["gpt2-small"],
        help="time this model instead (gpt2-small: transformers' GPT2LMHeadModel, 124M)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workloads = pytorch_figures if args.preset is None else gpt2_small_figures
    plan = (
        dict(warmup=1, repeats=3, train_repeats=2)
        if args.quick
        else dict(warmup=3, repeats=20, train_repeats=10)
    )
    print(f"PyTorch {torch.__version__} eager, {args.threads} threads", file=sys.stderr)

    # Rounds alternate the two programs, so a slow spell of a shared machine hits both; each
    # round gives one ratio per figure, and the table shows their median and range.
    rounds = []
    for round_ in range(args.rounds):
        print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr)
        ours = {} if args.pytorch_only else {
            key(f): f
            for f in tinygpt_figures(args.quick, args.bench_binary, args.device, args.preset)
        }
        theirs = {key(f): f for f in workloads(plan)}
        rounds.append((ours, theirs))

    # PyTorch's figures in its order, then any only tinygpt gave; either side may lack one.
    figures = {}
    for ours, theirs in rounds:
        for figure_key, figure in [*theirs.items(), *ours.items()]:
            figures.setdefault(figure_key, figure)
    figures = dict(sorted(figures.items(), key=lambda item: item[0] not in rounds[-1][1]))
    print(f"\n{'figure':<40} {'tinygpt':>11} {'PyTorch':>11}  ratio, median (range) of {args.rounds}")
    for figure_key, figure in figures.items():
        mine = [ours[figure_key]["value"] for ours, _ in rounds if figure_key in ours]
        pytorch = [theirs[figure_key]["value"] for _, theirs in rounds if figure_key in theirs]
        ratios = [ours[figure_key]["value"] / theirs[figure_key]["value"]
                  for ours, theirs in rounds if figure_key in ours and figure_key in theirs]
        cells = [f"{shown(figure_key, statistics.median(v)):>11.1f}" if v else f"{'-':>11}"
                 for v in (mine, pytorch)]
        ratio = f"  {spread(ratios)}" if ratios else ""
        print(f"{label(figure):<40} {cells[0]} {cells[1]}{ratio}")
    # Naive decode is timed by the default workloads only.
    for context in CONTEXTS if args.preset is None else []:
        speedup = lambda figures: (
            figures[("decode_tokens_per_s", "cached", context, None)]["value"]
            / figures[("decode_tokens_per_s", "naive", context, None)]["value"]
        )
        has = lambda figures: all(
            ("decode_tokens_per_s", mode, context, None) in figures
            for mode in ("cached", "naive")
        )
        pytorch = statistics.median(speedup(theirs) for _, theirs in rounds)
        tinygpt = (
            f"{statistics.median(speedup(ours) for ours, _ in rounds if has(ours)):.1f}x"
            if any(has(ours) for ours, _ in rounds)
            else "-"
        )
        print(f"{'cached / naive, context ' + str(context):<40} {tinygpt:>11} {pytorch:>10.1f}x")
    print()
    for round_, (ours, theirs) in enumerate(rounds, 1):
        for figure in ours.values():
            print(json.dumps(dict(framework="tinygpt", round=round_, **figure)))
        for figure in theirs.values():
            print(json.dumps(dict(framework="pytorch", round=round_, threads=args.threads, **figure)))


if __name__ == "__main__":
    main()
