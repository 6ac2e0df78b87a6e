"""Hugging Face `tokenizers`' ids for a fixed set of awkward strings, for tinygpt's BPE to match.

Run by hand from the crate root (needs `tokenizers`; CI does not run it):

    python3 scripts/check_bpe_tokenizer.py TOKENIZER_JSON
    python3 scripts/check_bpe_tokenizer.py TOKENIZER_JSON --write tests/fixtures/bpe_ids.json

It loads TOKENIZER_JSON with `tokenizers.Tokenizer.from_file`, encodes each string below
(plain English, newlines and runs of spaces, punctuation, emoji with a skin-tone modifier, CJK,
combining marks, Arabic, the empty string, spaces only) and prints the ids and their decoding.
With `--write` it saves them as

    {"tokenizers_version": str, "cases": [{"text": str, "ids": [int], "decoded": str}]}

where `decoded` is `decode(ids)`. It also reports every case whose decoding is not the text
it came from (a byte-level BPE should have none); those are reported, not fatal.
"""

import argparse
import json
import sys
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

CASES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 2024; isn't it?",
    "first line\nsecond line\n\n  indented   by   three\tand a tab\n",
    "    leading and trailing spaces    ",
    "(a+b)*c = d/e - f % g; [x] {y} <z> \"quoted\" 'single' ... !!! ???",
    "emoji: \U0001f642\U0001f44d\U0001f3fd",
    "\U0001f642\U0001f44d\U0001f3fd",
    "\u4f60\u597d\uff0c\u4e16\u754c",
    "e\u0301 n\u0303",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "mixed: caf\u00e9 na\u00efve \u00fcber \u4e16\u754c \U0001f642 done",
    "",
    "     ",
]


def encode_cases(tokenizer):
    cases = []
    for text in CASES:
        # No special tokens: the ids are the text's alone, as tinygpt's encoder gives them.
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        decoded = tokenizer.decode(ids, skip_special_tokens=False)
        cases.append(dict(text=text, ids=ids, decoded=decoded))
    return cases


def show(text):
    return json.dumps(text, ensure_ascii=False)


def document(cases):
    """The JSON file, one case a line, so a change to one case is a one-line diff."""
    lines = [json.dumps(case, ensure_ascii=False) for case in cases]
    version = json.dumps(tokenizers.__version__)
    body = ",\n  ".join(lines)
    return f'{{"tokenizers_version": {version},\n "cases": [\n  {body}\n ]}}\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer", help="a tokenizer.json file")
    parser.add_argument(
        "--write", help="write the cases as JSON here (e.g. tests/fixtures/bpe_ids.json)"
    )
    args = parser.parse_args()
    tokenizer = Tokenizer.from_file(args.tokenizer)
    size = tokenizer.get_vocab_size()
    print(f"tokenizers {tokenizers.__version__}, vocabulary {size}", file=sys.stderr)

    cases = encode_cases(tokenizer)
    failures = []
    for case in cases:
        ok = case["decoded"] == case["text"]
        if not ok:
            failures.append(case)
        print(f"{show(case['text'])}: {len(case['ids'])} ids {case['ids']}")
        if not ok:
            print(f"  decodes to {show(case['decoded'])}, not the text")

    if args.write:
        Path(args.write).write_text(document(cases))
        print(f"wrote {args.write}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(cases)} cases do not decode back to their text")
    else:
        print(f"all {len(cases)} cases decode back to their text")


if __name__ == "__main__":
    main()
