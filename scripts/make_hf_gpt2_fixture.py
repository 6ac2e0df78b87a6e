"""Tiny Hugging Face GPT-2 checkpoints with transformers' own logits and greedy tokens beside them.

Run by hand from the crate root (needs `torch`, `transformers` and `safetensors`; CI does not
run it, and the Rust tests read what it writes without Python):

    python3 scripts/make_hf_gpt2_fixture.py                      # (re)write both fixtures
    python3 scripts/make_hf_gpt2_fixture.py check-export DIR     # check a tinygpt export
    python3 scripts/make_hf_gpt2_fixture.py check-export DIR --fixture tests/fixtures/hf_gpt2

The default run writes two model directories, each as `save_pretrained` leaves it
(`config.json`, `model.safetensors`, and the `generation_config.json` transformers adds):

- `tests/fixtures/hf_gpt2/`: `GPT2LMHeadModel`, V=256, 96 positions, D=64, 2 layers, 4 heads,
  `gelu_new`, LayerNorm epsilon 1e-5, head tied to `wte`; the file holds `transformer.*` names
  and no `lm_head.weight` (transformers drops the tied copy).
- `tests/fixtures/hf_gpt2_untied/`: the same with an untied head of its own and epsilon 1e-6
  (not the default, so an importer that ignores the config's epsilon is caught), its
  `model.safetensors` rewritten with every `transformer.` prefix stripped, as a `GPT2Model`
  state dict comes (`lm_head.weight` kept as is).

Every parameter is redrawn away from transformers' initialisation (matrices and embeddings
std 0.15, biases std 0.1, LayerNorm gains 1 + N(0, 0.1^2)), so a dropped bias, an identity
LayerNorm or a missing transpose of a `Conv1D` weight changes the logits visibly. Beside each
model:

- `expected.safetensors`: `logits.{i}`, float32 `[T, V]`, a full forward pass over prompt `i`;
- `expected.json`: `{"prompts": [[int]], "greedy": [{"prompt", "tokens", "min_margin"}],
  "config": {...}, "transformers_version", "torch_version"}`, where `tokens` are 64 tokens of
  `model.generate(do_sample=False, use_cache=True)` and `min_margin` the smallest top-1 minus
  top-2 logit over those steps (kept above 1e-3, so an argmax is never a coin toss).

`check-export DIR` loads a directory tinygpt's exporter wrote with `GPT2LMHeadModel` and
compares transformers' logits with `DIR/expected.*` (tinygpt's own, same format as above) when
they exist, else with the fixture's (an import-export round trip of it); it exits non-zero
when the largest difference exceeds 1e-4.
"""

import argparse
import inspect
import json
import sys
from pathlib import Path

import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
VOCAB, POSITIONS = 256, 96
PROMPT_LENGTHS = [1, 7, 40]
GREEDY_PROMPTS, GREEDY_TOKENS = [0, 1], 64
PROMPT_SEED = 11
MATRIX_STD, BIAS_STD, GAIN_STD = 0.15, 0.1, 0.1
MIN_MARGIN, TOLERANCE = 1e-3, 1e-4
CONFIG_FIELDS = [
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "layer_norm_epsilon",
    "activation_function",
    "tie_word_embeddings",
]


def config(*, tied, epsilon):
    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=64,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        layer_norm_epsilon=epsilon,
        tie_word_embeddings=tied,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # GPT-2's own ids (50256) lie outside a 256-token vocabulary, and transformers warns
        # about them; the last id stands in for <|endoftext|> as it does in GPT-2.
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )


def prompts():
    generator = torch.Generator().manual_seed(PROMPT_SEED)
    return [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in PROMPT_LENGTHS]


def randomise(model, seed):
    """Redraw every parameter; a tied head shares `wte`, so it is drawn once."""
    torch.manual_seed(seed)
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if id(tensor) in norms and name.endswith("weight"):
                tensor.copy_(1.0 + GAIN_STD * torch.randn_like(tensor))
            elif tensor.dim() == 1:
                tensor.copy_(BIAS_STD * torch.randn_like(tensor))
            else:
                tensor.copy_(MATRIX_STD * torch.randn_like(tensor))


def forward_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False).logits[0].float()


def greedy(model, prompt, new_tokens):
    """`generate`'s greedy tokens and the smallest top-1/top-2 gap of the logits it chose by."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
            eos_token_id=None,
            return_dict_in_generate=True,
            output_logits=True,
        )
    tokens = out.sequences[0, len(prompt) :].tolist()
    assert len(tokens) == new_tokens, f"generate stopped after {len(tokens)} tokens"
    margins = []
    for step in out.logits:
        top = step[0].float().topk(2).values
        margins.append((top[0] - top[1]).item())
    return tokens, min(margins)


def check_greedy_uncached(model, prompt, tokens):
    """The same tokens again by full forwards over the growing sequence, no cache."""
    sequence = list(prompt)
    for token in tokens:
        assert forward_logits(model, sequence)[-1].argmax().item() == token, "cache changes argmax"
        sequence.append(token)


def save(model, directory):
    # transformers 5 writes safetensors only and no longer names the option.
    options = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        options["safe_serialization"] = True
    model.save_pretrained(directory, **options)


def strip_prefix(directory):
    """Rewrite model.safetensors with `transformer.` cut off every name, as GPT2Model saves."""
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    renamed = {name.removeprefix("transformer."): t.contiguous() for name, t in tensors.items()}
    save_file(renamed, str(path), metadata={"format": "pt"})


def tensor_names(directory):
    with safetensors.safe_open(str(directory / "model.safetensors"), "pt") as f:
        return sorted(f.keys())


def write_expected(directory, model, cfg, prompt_ids, greedy_runs):
    tensors = {
        f"logits.{i}": forward_logits(model, ids).contiguous() for i, ids in enumerate(prompt_ids)
    }
    save_file(tensors, str(directory / "expected.safetensors"), metadata={"format": "pt"})
    expected = dict(
        prompts=prompt_ids,
        greedy=greedy_runs,
        config={field: getattr(cfg, field) for field in CONFIG_FIELDS},
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
    )
    (directory / "expected.json").write_text(json.dumps(expected) + "\n")
    return tensors


def write(name, *, tied, epsilon, seed, strip):
    directory = FIXTURES / name
    directory.mkdir(parents=True, exist_ok=True)
    cfg = config(tied=tied, epsilon=epsilon)
    model = GPT2LMHeadModel(cfg).eval()
    randomise(model, seed)
    if tied:
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    else:
        assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)

    prompt_ids = prompts()
    greedy_runs = []
    for index in GREEDY_PROMPTS:
        tokens, margin = greedy(model, prompt_ids[index], GREEDY_TOKENS)
        assert margin > MIN_MARGIN, f"{name}: greedy margin {margin:.2e} from prompt {index}"
        check_greedy_uncached(model, prompt_ids[index], tokens)
        if cfg.eos_token_id in tokens:
            print(f"  note: greedy run from prompt {index} emits eos id {cfg.eos_token_id}")
        greedy_runs.append(dict(prompt=prompt_ids[index], tokens=tokens, min_margin=margin))

    for stale in directory.glob("*"):
        stale.unlink()
    save(model, directory)
    names = tensor_names(directory)
    assert all(n.startswith("transformer.") for n in names if n != "lm_head.weight"), names
    assert ("lm_head.weight" in names) == (not tied), f"{name}: lm_head.weight present: {not tied}"
    if strip:
        strip_prefix(directory)
        names = tensor_names(directory)
    tensors = write_expected(directory, model, cfg, prompt_ids, greedy_runs)

    reloaded = GPT2LMHeadModel.from_pretrained(directory).eval()
    for i, ids in enumerate(prompt_ids):
        delta = (forward_logits(reloaded, ids) - tensors[f"logits.{i}"]).abs().max().item()
        assert delta <= 1e-6, f"{name}: reloaded logits.{i} differ by {delta:.2e}"

    logits = torch.cat(list(tensors.values()))
    print(f"wrote {directory.relative_to(ROOT)}: logit std {logits.std().item():.3f}")
    print(f"  tensors: {names}")
    for run in greedy_runs:
        length, margin = len(run["prompt"]), run["min_margin"]
        print(f"  greedy from {length}-token prompt: min margin {margin:.4f}")
    for path in sorted(directory.iterdir()):
        print(f"  {path.name}: {path.stat().st_size} bytes")
    print(f"  total {sum(p.stat().st_size for p in directory.iterdir())} bytes")


def check_export(directory, fixture):
    directory, fixture = Path(directory), Path(fixture)
    model = GPT2LMHeadModel.from_pretrained(directory).eval()
    source = directory if (directory / "expected.json").exists() else fixture
    expected = json.loads((source / "expected.json").read_text())
    tensors = load_file(str(source / "expected.safetensors"))
    print(f"comparing transformers on {directory} with {source}/expected.*")
    worst = 0.0
    for i, ids in enumerate(expected["prompts"]):
        logits = forward_logits(model, ids)
        want = tensors[f"logits.{i}"].float()
        if logits.shape != want.shape:
            print(f"  logits.{i}: shape {list(logits.shape)}, expected {list(want.shape)}")
            return 1
        delta = (logits - want).abs().max().item()
        worst = max(worst, delta)
        print(f"  logits.{i} ({len(ids)} tokens): max |delta| {delta:.3e}")
    tokens, margin = greedy(model, expected["prompts"][0], 20)
    print(f"  greedy (cached) from prompt 0: {tokens} (min margin {margin:.4f})")
    ok = worst <= TOLERANCE
    print(f"max |delta| {worst:.3e} ({'ok' if ok else 'FAIL'}, tolerance {TOLERANCE})")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check-export", help="load a tinygpt export with transformers")
    check.add_argument("directory", help="config.json + model.safetensors written by tinygpt")
    check.add_argument(
        "--fixture",
        default=str(FIXTURES / "hf_gpt2"),
        help="whose logits to compare with when DIR has no expected.* (default: %(default)s)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    if args.command == "check-export":
        sys.exit(check_export(args.directory, args.fixture))
    write("hf_gpt2", tied=True, epsilon=1e-5, seed=21, strip=False)
    write("hf_gpt2_untied", tied=False, epsilon=1e-6, seed=22, strip=True)


if __name__ == "__main__":
    main()
