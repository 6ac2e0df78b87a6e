//! The toy English grammar behind the bundled corpus, and its recognizer.
//!
//! Small enough for a tiny character-level model to learn in a couple of minutes, rich enough
//! that getting it right takes more than memorising words:
//!
//! ```text
//! sentence  -> clause ("and" clause)? "."
//! clause    -> np(n) vp(n)                      n = singular | plural: subject-verb agreement
//! np(n)     -> det(n) adj{0,2} noun(n) pp? rel(n)?
//! rel(n)    -> "that" vp(n)                     "the dog that sees a cat ..."
//! pp        -> prep det(m) adj? noun(m)
//! vp(n)     -> tverb(n) np(any)                 transitive verbs need an object
//!            | iverb(n) adverb? pp?             intransitive verbs take none
//! ```
//!
//! Determiners agree in number with their noun (`a dog`, `these dogs`, never `a dogs`), and the
//! indefinite article is `an` before a vowel (`an old cat`, `a red apple`).
//!
//! The generator and the recognizer read the same word tables, so they cannot drift apart; the
//! recognizer is a backtracking parser over those rules (it accepts exactly what the generator
//! can produce), not a list of known sentences.

use std::collections::BTreeSet;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seed of the shipped `data/corpus.txt`.
pub const CORPUS_SEED: u64 = 2024;
/// Size the shipped corpus is grown to, in bytes (the last sentence may overshoot it).
pub const CORPUS_TARGET_BYTES: usize = 200_000;

/// Grammatical number: what determiners, nouns and verbs must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Number {
    Singular,
    Plural,
}

/// Nouns as (singular, plural).
const NOUNS: [(&str, &str); 16] = [
    ("dog", "dogs"),
    ("cat", "cats"),
    ("bird", "birds"),
    ("fox", "foxes"),
    ("child", "children"),
    ("girl", "girls"),
    ("boy", "boys"),
    ("owl", "owls"),
    ("horse", "horses"),
    ("apple", "apples"),
    ("egg", "eggs"),
    ("ball", "balls"),
    ("box", "boxes"),
    ("tree", "trees"),
    ("house", "houses"),
    ("hat", "hats"),
];

const ADJECTIVES: [&str; 10] = [
    "small", "big", "red", "old", "happy", "green", "tall", "angry", "empty", "lazy",
];

/// Verbs that need an object, as (plural/base form, third person singular).
const TRANSITIVE: [(&str, &str); 8] = [
    ("see", "sees"),
    ("like", "likes"),
    ("chase", "chases"),
    ("find", "finds"),
    ("watch", "watches"),
    ("carry", "carries"),
    ("want", "wants"),
    ("help", "helps"),
];

/// Verbs that take no object, as (plural/base form, third person singular).
const INTRANSITIVE: [(&str, &str); 6] = [
    ("sleep", "sleeps"),
    ("run", "runs"),
    ("sing", "sings"),
    ("jump", "jumps"),
    ("swim", "swims"),
    ("laugh", "laughs"),
];

const PREPOSITIONS: [&str; 4] = ["near", "under", "behind", "on"];

const ADVERBS: [&str; 4] = ["quickly", "slowly", "again", "today"];

/// Determiners other than `a`/`an`, by the number they take.
const SINGULAR_DETERMINERS: [&str; 3] = ["the", "this", "every"];
const PLURAL_DETERMINERS: [&str; 4] = ["the", "these", "some", "two"];

fn starts_with_vowel(word: &str) -> bool {
    word.starts_with(['a', 'e', 'i', 'o', 'u'])
}

fn noun(number: Number, entry: (&'static str, &'static str)) -> &'static str {
    match number {
        Number::Singular => entry.0,
        Number::Plural => entry.1,
    }
}

/// A verb agrees with its subject: third person singular takes the `-s` form.
fn verb(number: Number, entry: (&'static str, &'static str)) -> &'static str {
    match number {
        Number::Singular => entry.1,
        Number::Plural => entry.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Writes one sentence word by word, drawing each choice from `rng`.
struct SentenceWriter<'r, R: Rng> {
    rng: &'r mut R,
    words: Vec<&'static str>,
}

impl<R: Rng> SentenceWriter<'_, R> {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(self.rng).expect("word tables are not empty")
    }

    fn number(&mut self) -> Number {
        if self.rng.random_bool(0.5) {
            Number::Singular
        } else {
            Number::Plural
        }
    }

    fn sentence(&mut self) {
        self.clause();
        if self.rng.random_bool(0.12) {
            self.words.push("and");
            self.clause();
        }
        self.words.push(".");
    }

    fn clause(&mut self) {
        let number = self.number();
        let with_rel = self.rng.random_bool(0.1);
        self.noun_phrase(number, true, with_rel);
        self.verb_phrase(number);
    }

    /// `det adj* noun pp? rel?`; nested phrases (inside a pp) stay short.
    fn noun_phrase(&mut self, number: Number, allow_pp: bool, with_rel: bool) {
        let adjectives = match self.rng.random_range(0..25) {
            0..15 => 0,
            15..23 => 1,
            _ => 2,
        };
        let adjectives = if allow_pp {
            adjectives
        } else {
            adjectives.min(1)
        };
        let mut modifiers: Vec<&'static str> = Vec::new();
        while modifiers.len() < adjectives {
            let adjective = self.pick(&ADJECTIVES);
            if !modifiers.contains(&adjective) {
                modifiers.push(adjective);
            }
        }
        let head = noun(number, self.pick(&NOUNS));
        let next = modifiers.first().copied().unwrap_or(head);
        let determiner = match number {
            Number::Singular if self.rng.random_bool(0.4) => {
                if starts_with_vowel(next) {
                    "an"
                } else {
                    "a"
                }
            }
            Number::Singular => self.pick(&SINGULAR_DETERMINERS),
            Number::Plural => self.pick(&PLURAL_DETERMINERS),
        };
        self.words.push(determiner);
        self.words.extend(modifiers);
        self.words.push(head);
        if allow_pp && self.rng.random_bool(0.1) {
            self.prepositional_phrase();
        }
        if with_rel {
            self.words.push("that");
            self.verb_phrase(number);
        }
    }

    fn prepositional_phrase(&mut self) {
        let preposition = self.pick(&PREPOSITIONS);
        self.words.push(preposition);
        let number = self.number();
        self.noun_phrase(number, false, false);
    }

    fn verb_phrase(&mut self, number: Number) {
        if self.rng.random_bool(0.6) {
            let entry = self.pick(&TRANSITIVE);
            self.words.push(verb(number, entry));
            let object = self.number();
            self.noun_phrase(object, true, false);
        } else {
            let entry = self.pick(&INTRANSITIVE);
            self.words.push(verb(number, entry));
            if self.rng.random_bool(0.35) {
                let adverb = self.pick(&ADVERBS);
                self.words.push(adverb);
            }
            if self.rng.random_bool(0.25) {
                self.prepositional_phrase();
            }
        }
    }
}

/// Generate one sentence, e.g. `the small dog sees an apple .` (words separated by single
/// spaces, ending with ` .`).
pub fn generate_sentence(rng: &mut impl Rng) -> String {
    let mut writer = SentenceWriter {
        rng,
        words: Vec::new(),
    };
    writer.sentence();
    writer.words.join(" ")
}

/// The corpus: sentences from a ChaCha8 RNG seeded with `seed`, one per line, until the text is
/// at least `target_bytes` long. The same arguments give the same bytes on every machine.
pub fn generate_corpus(seed: u64, target_bytes: usize) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut text = String::with_capacity(target_bytes + 128);
    while text.len() < target_bytes {
        text.push_str(&generate_sentence(&mut rng));
        text.push('\n');
    }
    text
}

/// Every word the grammar can produce.
pub fn vocabulary() -> BTreeSet<&'static str> {
    let mut words: BTreeSet<&'static str> = BTreeSet::new();
    words.extend(NOUNS.iter().flat_map(|&(s, p)| [s, p]));
    words.extend(
        TRANSITIVE
            .iter()
            .chain(&INTRANSITIVE)
            .flat_map(|&(b, s)| [b, s]),
    );
    words.extend(ADJECTIVES);
    words.extend(PREPOSITIONS);
    words.extend(ADVERBS);
    words.extend(SINGULAR_DETERMINERS);
    words.extend(PLURAL_DETERMINERS);
    words.extend(["a", "an", "and", "that"]);
    words
}

// ---------------------------------------------------------------------------------------------
// Recognition
// ---------------------------------------------------------------------------------------------

/// A backtracking parser: every rule takes a start position and returns every position where a
/// parse of that rule can end, so ambiguity (does a prepositional phrase belong to the object or
/// to the verb?) costs nothing to get right.
struct Parser<'w> {
    words: &'w [&'w str],
}

impl Parser<'_> {
    fn word(&self, at: usize) -> Option<&str> {
        self.words.get(at).copied()
    }

    fn clause(&self, at: usize) -> Vec<usize> {
        [Number::Singular, Number::Plural]
            .into_iter()
            .flat_map(|number| {
                self.noun_phrase(at, number, true, true)
                    .into_iter()
                    .flat_map(move |end| self.verb_phrase(end, number))
            })
            .collect()
    }

    fn noun_phrase(&self, at: usize, number: Number, full: bool, allow_rel: bool) -> Vec<usize> {
        let Some(determiner) = self.word(at) else {
            return Vec::new();
        };
        let article = matches!(determiner, "a" | "an");
        let determiner_fits = match number {
            Number::Singular => article || SINGULAR_DETERMINERS.contains(&determiner),
            Number::Plural => PLURAL_DETERMINERS.contains(&determiner),
        };
        if !determiner_fits {
            return Vec::new();
        }
        let mut pos = at + 1;
        // `a` or `an` must match the sound of the word right after it.
        if article {
            let Some(next) = self.word(pos) else {
                return Vec::new();
            };
            if (determiner == "an") != starts_with_vowel(next) {
                return Vec::new();
            }
        }
        let max_adjectives = if full { 2 } else { 1 };
        let mut seen: Vec<&str> = Vec::new();
        while let Some(word) = self.word(pos) {
            if seen.len() == max_adjectives || !ADJECTIVES.contains(&word) || seen.contains(&word) {
                break;
            }
            seen.push(word);
            pos += 1;
        }
        let Some(head) = self.word(pos) else {
            return Vec::new();
        };
        if !NOUNS.iter().any(|&entry| noun(number, entry) == head) {
            return Vec::new();
        }
        let mut ends = vec![pos + 1];
        if full {
            let with_pp: Vec<usize> = ends
                .iter()
                .flat_map(|&end| self.prepositional_phrase(end))
                .collect();
            ends.extend(with_pp);
        }
        if allow_rel {
            let with_rel: Vec<usize> = ends
                .iter()
                .filter(|&&end| self.word(end) == Some("that"))
                .flat_map(|&end| self.verb_phrase(end + 1, number))
                .collect();
            ends.extend(with_rel);
        }
        ends
    }

    fn prepositional_phrase(&self, at: usize) -> Vec<usize> {
        match self.word(at) {
            Some(word) if PREPOSITIONS.contains(&word) => [Number::Singular, Number::Plural]
                .into_iter()
                .flat_map(|number| self.noun_phrase(at + 1, number, false, false))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn verb_phrase(&self, at: usize, number: Number) -> Vec<usize> {
        let Some(word) = self.word(at) else {
            return Vec::new();
        };
        let mut ends = Vec::new();
        if TRANSITIVE.iter().any(|&entry| verb(number, entry) == word) {
            for object in [Number::Singular, Number::Plural] {
                ends.extend(self.noun_phrase(at + 1, object, true, false));
            }
        }
        if INTRANSITIVE
            .iter()
            .any(|&entry| verb(number, entry) == word)
        {
            let mut after_verb = vec![at + 1];
            if self.word(at + 1).is_some_and(|w| ADVERBS.contains(&w)) {
                after_verb.push(at + 2);
            }
            for end in after_verb {
                ends.push(end);
                ends.extend(self.prepositional_phrase(end));
            }
        }
        ends
    }

    fn sentence(&self) -> bool {
        let full = self.words.len();
        self.clause(0).into_iter().any(|end| {
            end == full || (self.word(end) == Some("and") && self.clause(end + 1).contains(&full))
        })
    }
}

/// Is `sentence` one the grammar can produce? Words are separated by whitespace; the final `.`
/// may be attached, separate or missing. An empty sentence is not grammatical.
pub fn is_grammatical(sentence: &str) -> bool {
    let trimmed = sentence.trim();
    let body = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let words: Vec<&str> = body.split_whitespace().collect();
    !words.is_empty() && Parser { words: &words }.sentence()
}

/// The complete sentences in free text such as a model's output: each run of text ending with
/// `.`, trimmed. The text before the first `.` is left out (it may continue a sentence the
/// prompt began) and so is whatever follows the last `.` (cut off by the length limit).
pub fn complete_sentences(text: &str) -> Vec<String> {
    let Some(first_end) = text.find('.') else {
        return Vec::new();
    };
    text[first_end + 1..]
        .split_inclusive('.')
        .filter(|piece| piece.ends_with('.'))
        .map(|piece| piece.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|sentence| sentence != ".")
        .collect()
}
