//! The three tokenizers: GPT-2's ids equal the published ones, the trained BPE's equal what
//! Python's `tokenizers` gives for the same `tokenizer.json` (a committed fixture written by
//! `scripts/check_bpe_tokenizer.py`), any UTF-8 text round-trips, and streaming prints only
//! complete characters.

use std::path::Path;

use serde::Deserialize;
use tinygpt::text::tokenizer::{BpeTokenizer, Gpt2Tokenizer};
use tinygpt::text::{
    BUNDLED_CORPUS, CharTokenizer, Split, TextDataset, Tokenizer, TokenizerSpec, Utf8Stream,
};

/// Texts that stress a byte-level tokenizer: emoji (one with a skin-tone modifier), CJK,
/// combining marks, right-to-left script, runs of spaces and newlines.
const HARD_TEXTS: [&str; 8] = [
    "the old cat sees the dog .\n",
    "Hello world",
    "🙂👍🏽 ok",
    "你好，世界",
    "e\u{301} n\u{303} — naïve café",
    "مرحبا بالعالم",
    "  two  spaces\n\n\tand a tab",
    "",
];

fn tokenizers() -> Vec<Tokenizer> {
    vec![
        Tokenizer::Gpt2(Gpt2Tokenizer::new()),
        Tokenizer::Bpe(Box::new(BpeTokenizer::train(BUNDLED_CORPUS, 400).unwrap())),
    ]
}

#[test]
fn gpt2_ids_of_fixed_strings_are_the_published_ones() {
    let gpt2 = Gpt2Tokenizer::new();
    assert_eq!(gpt2.vocab_size(), 50257);
    for (text, ids) in [
        ("Hello world", vec![15496, 995]),
        (" the", vec![262]),
        ("\n", vec![198]),
        ("!", vec![0]),
    ] {
        assert_eq!(gpt2.encode(text), ids, "{text:?}");
    }
    // The special token is text when it appears in the text.
    assert_ne!(gpt2.encode("<|endoftext|>"), vec![50256]);
}

#[test]
fn any_utf8_text_round_trips_through_the_byte_level_tokenizers() {
    for tokenizer in tokenizers() {
        for text in HARD_TEXTS {
            let ids = tokenizer.encode(text).unwrap();
            assert!(ids.iter().all(|&id| id < tokenizer.vocab_size()));
            assert_eq!(
                tokenizer.decode(&ids),
                text,
                "{}: {text:?}",
                tokenizer.kind()
            );
        }
    }
}

#[test]
fn streaming_prints_each_character_once_whole() {
    for tokenizer in tokenizers() {
        for text in HARD_TEXTS {
            let ids = tokenizer.encode(text).unwrap();
            let mut stream = Utf8Stream::new();
            let mut printed = String::new();
            for &id in &ids {
                let piece = stream.push(&tokenizer.token_bytes(id));
                assert!(
                    !piece.contains(char::REPLACEMENT_CHARACTER),
                    "{}: {text:?} printed a partial character",
                    tokenizer.kind()
                );
                printed.push_str(&piece);
            }
            printed.push_str(&stream.finish());
            assert_eq!(printed, text, "{}", tokenizer.kind());
        }
    }
    // GPT-2 splits this emoji over several tokens, so the test above holds something back.
    let gpt2 = Gpt2Tokenizer::new();
    let ids = gpt2.encode("👍🏽");
    assert!(ids.len() > 2, "{ids:?}");
    assert!(String::from_utf8(gpt2.token_bytes(ids[0]).unwrap()).is_err());
}

#[test]
fn a_character_model_names_the_characters_it_does_not_know() {
    let chars = Tokenizer::Char(CharTokenizer::from_text("abc ").unwrap());
    let err = chars.encode("a cab 🙂 x").unwrap_err().to_string();
    assert!(err.contains('🙂') && err.contains('x'), "{err}");
}

#[derive(Deserialize)]
struct PythonIds {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<usize>,
}

#[test]
fn the_trained_bpe_gives_pythons_ids_and_trains_the_same_file_again() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let json = std::fs::read_to_string(fixtures.join("bpe_tokenizer.json")).unwrap();
    let committed = Tokenizer::from_json(&json).unwrap();
    assert_eq!(committed.kind(), "bpe");
    let python: PythonIds =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("bpe_ids.json")).unwrap())
            .unwrap();
    assert!(python.cases.len() >= 10);
    for case in &python.cases {
        assert_eq!(
            committed.encode(&case.text).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
    // The fixture is what `train --tokenizer bpe --vocab-size 512` builds from the bundled
    // corpus: training is deterministic.
    let trained = TokenizerSpec::Bpe { vocab_size: 512 }
        .build(BUNDLED_CORPUS)
        .unwrap();
    assert_eq!(trained, committed);
}

#[test]
fn a_saved_tokenizer_of_each_kind_reads_back_as_itself() {
    let mut all = tokenizers();
    all.push(Tokenizer::Char(CharTokenizer::from_text("hello").unwrap()));
    for tokenizer in all {
        let back = Tokenizer::from_json(&tokenizer.to_json()).unwrap();
        assert_eq!(back, tokenizer, "{}", tokenizer.kind());
    }
    for (bad, says) in [
        ("[1, 2]", "not a tokenizer"),
        ("{\"model\": {\"type\": \"Unigram\"}}", "tokenizer.json"),
        ("nope", "not JSON"),
    ] {
        let err = Tokenizer::from_json(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn bits_per_character_make_losses_comparable_across_tokenizers() {
    let char_data = TextDataset::new(BUNDLED_CORPUS, 32).unwrap();
    let bpe_data =
        TextDataset::with_spec(BUNDLED_CORPUS, &TokenizerSpec::Bpe { vocab_size: 512 }, 32)
            .unwrap();
    assert_eq!(char_data.chars_per_token(Split::Train), 1.0);
    let per_token = bpe_data.chars_per_token(Split::Validation);
    assert!(
        per_token > 2.0,
        "BPE tokens of the corpus hold {per_token} characters"
    );
    // A loss of ln 2 nats per token is one bit per token: 1 bit per character for characters,
    // 1/per_token for BPE tokens.
    let ln2 = std::f64::consts::LN_2;
    assert!((char_data.bits_per_char(ln2, Split::Train) - 1.0).abs() < 1e-12);
    assert!((bpe_data.bits_per_char(ln2, Split::Validation) * per_token - 1.0).abs() < 1e-12);
    let err = TokenizerSpec::Bpe { vocab_size: 100 }
        .build("abc")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--vocab-size 100") && err.contains("256"),
        "{err}"
    );
}
