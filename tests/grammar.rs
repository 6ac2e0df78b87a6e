//! The toy grammar: deterministic, its recognizer accepts everything it generates and rejects
//! what breaks its rules, and the shipped corpus is exactly what it generates.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tinygpt::text::grammar::{
    CORPUS_SEED, CORPUS_TARGET_BYTES, complete_sentences, generate_corpus, generate_sentence,
    is_grammatical, vocabulary,
};

#[test]
fn corpus_generation_is_deterministic() {
    assert_eq!(generate_corpus(5, 5_000), generate_corpus(5, 5_000));
    assert_ne!(generate_corpus(5, 5_000), generate_corpus(6, 5_000));
}

#[test]
fn the_shipped_corpus_is_the_generated_one_byte_for_byte() {
    let shipped = include_str!("../data/corpus.txt");
    assert!((100_000..=300_000).contains(&shipped.len()));
    assert!(
        shipped == generate_corpus(CORPUS_SEED, CORPUS_TARGET_BYTES),
        "regenerate with `cargo run --release --example make_corpus -- data/corpus.txt --force`"
    );
}

#[test]
fn every_generated_sentence_is_accepted_by_the_recognizer() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let words = vocabulary();
    for _ in 0..3_000 {
        let sentence = generate_sentence(&mut rng);
        assert!(
            is_grammatical(&sentence),
            "rejected its own sentence: {sentence}"
        );
        for word in sentence.split_whitespace().filter(|w| *w != ".") {
            assert!(words.contains(word), "`{word}` missing from vocabulary()");
        }
    }
}

#[test]
fn hand_written_grammatical_sentences_are_accepted() {
    for sentence in [
        "the small dog sees a red ball .",
        "an old cat sleeps .",
        "these dogs chase an apple near the tree .",
        "every child that likes the owls sings quickly .",
        "a horse runs and the birds sing .",
        "two foxes jump behind a house",
    ] {
        assert!(is_grammatical(sentence), "{sentence}");
    }
}

#[test]
fn sentences_breaking_a_rule_are_rejected() {
    for (sentence, rule) in [
        (
            "the dog see a cat .",
            "subject-verb agreement: singular subject, plural verb",
        ),
        (
            "the dogs sees a cat .",
            "subject-verb agreement: plural subject, singular verb",
        ),
        (
            "a dogs sleep .",
            "determiner-noun agreement: `a` with a plural noun",
        ),
        (
            "these dog sleeps .",
            "determiner-noun agreement: `these` with a singular noun",
        ),
        ("a old cat sleeps .", "a/an: `a` before a vowel"),
        ("an red ball sleeps .", "a/an: `an` before a consonant"),
        (
            "the dog sleeps the cat .",
            "an intransitive verb with an object",
        ),
        ("the dog sees .", "a transitive verb without its object"),
        ("the dog a cat .", "no verb"),
        ("dog the sees a cat .", "word order"),
        ("the dog sees a unicorn .", "unknown word"),
        ("", "empty"),
        (".", "only a full stop"),
    ] {
        assert!(!is_grammatical(sentence), "accepted `{sentence}` ({rule})");
    }
}

#[test]
fn complete_sentences_drop_the_partial_head_and_tail() {
    let text = "og sees a cat . the birds sing . a horse runs quickly . the small d";
    assert_eq!(
        complete_sentences(text),
        ["the birds sing .", "a horse runs quickly ."]
    );
    assert!(complete_sentences("no full stop at all").is_empty());
}
