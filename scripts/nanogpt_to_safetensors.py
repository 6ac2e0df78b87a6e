"""Convert a nanoGPT checkpoint (`ckpt.pt`) and its `meta.pkl` into what tinygpt imports.

    python3 scripts/nanogpt_to_safetensors.py out-shakespeare-char/ckpt.pt \
        data/shakespeare_char/meta.pkl --out shakespeare_char

writes `shakespeare_char.safetensors` (the weights, under nanoGPT's own names) and
`shakespeare_char.json` (the vocabulary, `{"itos": {...}}`), and prints the import command
with the head count read from the checkpoint's `model_args`. Needs `torch` and `safetensors`.
"""

import argparse
import json
import pickle

import torch
from safetensors.torch import save_file


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="nanoGPT's ckpt.pt")
    parser.add_argument("meta", help="the dataset's meta.pkl (character vocabulary)")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    # A model trained with torch.compile saves its parameters under `_orig_mod.`.
    state = {
        name.removeprefix("_orig_mod."): tensor.float().contiguous()
        for name, tensor in checkpoint["model"].items()
    }
    # The head is tied to the token embedding; safetensors stores one tensor once.
    if "lm_head.weight" in state and torch.equal(
        state["lm_head.weight"], state["transformer.wte.weight"]
    ):
        del state["lm_head.weight"]
    save_file(state, f"{args.out}.safetensors")

    with open(args.meta, "rb") as handle:
        meta = pickle.load(handle)
    itos = {str(token): char for token, char in meta["itos"].items()}
    with open(f"{args.out}.json", "w") as handle:
        json.dump({"vocab_size": meta["vocab_size"], "itos": itos}, handle)

    n_head = checkpoint["model_args"]["n_head"]
    print(f"wrote {args.out}.safetensors and {args.out}.json; import with")
    print(
        "  cargo run --release --example import -- "
        f"--nanogpt {args.out}.safetensors --vocab {args.out}.json --n-heads {n_head}"
    )


if __name__ == "__main__":
    main()
