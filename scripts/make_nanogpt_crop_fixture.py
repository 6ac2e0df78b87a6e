"""nanoGPT's own `generate` past its context window, for `generate --window crop`.

Run by hand from the crate root, with a checkout of nanoGPT (github.com/karpathy/nanoGPT; its
`model.py` is imported, not copied) and `torch` and `safetensors` installed:

    python3 scripts/make_nanogpt_crop_fixture.py --nanogpt PATH/TO/nanoGPT

It loads the committed `tests/fixtures/nanogpt_tied.safetensors` (written by
`make_nanogpt_fixture.py`, nanoGPT's module names) into nanoGPT's `GPT`, and greedily generates
(`generate(..., top_k=1)`: the top token only, so sampling is the argmax) three times the
context window of new tokens from the fixture's prompt. nanoGPT crops its input to the last
`block_size` tokens at every step, positions counted from 0: what tinygpt's `crop` window
policy must reproduce token for token (`tests/nanogpt.rs`).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nanogpt", required=True, help="a checkout of karpathy/nanoGPT")
    args = parser.parse_args()
    sys.path.insert(0, args.nanogpt)
    from model import GPT, GPTConfig  # nanoGPT's model.py

    meta = json.loads((FIXTURES / "nanogpt_tied.json").read_text())
    config = meta["config"]
    model = GPT(
        GPTConfig(
            block_size=config["block_size"],
            vocab_size=config["vocab"],
            n_layer=config["n_layer"],
            n_head=config["n_head"],
            n_embd=config["n_embd"],
            dropout=0.0,
            bias=config["bias"],
        )
    )
    state = load_file(str(FIXTURES / "nanogpt_tied.safetensors"))
    # The file keeps one of the two tied names (save_model drops the other); nanoGPT's GPT
    # shares one parameter between them, so loading either sets both.
    tied = {"lm_head.weight", "transformer.wte.weight"}
    assert tied & set(state), "the tied embedding is missing"
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= tied, missing
    assert not unexpected, unexpected
    model.eval()
    prompt = meta["tokens"][:20]
    new_tokens = 3 * config["block_size"]
    with torch.no_grad():
        torch.manual_seed(0)  # top_k=1 leaves one token with probability 1: no randomness
        out = model.generate(torch.tensor([prompt]), new_tokens, top_k=1)
    tokens = out[0, len(prompt):].tolist()
    payload = {
        "description": "nanoGPT's GPT.generate(idx, max_new_tokens, top_k=1) on "
        "nanogpt_tied.safetensors: greedy, cropping to the last block_size tokens every step",
        "torch_version": torch.__version__,
        "block_size": config["block_size"],
        "prompt": prompt,
        "new_tokens": tokens,
    }
    path = FIXTURES / "nanogpt_crop.json"
    path.write_text(json.dumps(payload) + "\n")
    print(f"wrote {path.name}: {len(prompt)} prompt tokens, {len(tokens)} new")


if __name__ == "__main__":
    main()
